//go:build !race

package sqlstore

// raceEnabled reports whether the tests run under the race detector, which
// makes SQLite's transpiled C about ten times slower: the largest matrices
// run part of their cases under it (the rest run without it; .ci/run runs
// both).
const raceEnabled = false
