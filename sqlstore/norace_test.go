//go:build !race

package sqlstore

// raceEnabled reports whether the tests run under the race detector, which
// makes SQLite's transpiled C about ten times slower: TestSearchExact runs
// two of its four configurations under it, and .ci/run runs all four without
// it.
const raceEnabled = false
