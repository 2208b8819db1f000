//go:build race

package main

// raceEnabled reports whether the tests run under the race detector, so the
// daemon they build gets it too.
const raceEnabled = true
