//go:build !race

package sqlstore

// raceEnabled reports whether the tests run under the race detector, which
// makes SQLite's transpiled C about ten times slower: slowUnderRace trims
// the tests of raceTrimmed under it.
const raceEnabled = false
