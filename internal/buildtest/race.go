//go:build race

package buildtest

// Race reports whether this program runs under the race detector.
const Race = true
