package sqlstore

import "testing"

// raceTrimmed matches the tests that slowUnderRace trims: each checks
// SQLite's answers over thousands of rows. .ci/run runs them whole without
// the race detector, after the race run.
const raceTrimmed = `^(TestSearchExact|TestSearchExactUnindexed|TestWordSearchExact|TestIndexFileChecked)$`

// slowUnderRace skips t under the race detector unless keep. The detector
// makes SQLite's transpiled C about ten times slower, and the cases it
// skips check the same goroutines as the one each test keeps, only over
// other data or another plan.
func slowUnderRace(t *testing.T, keep bool) {
	t.Helper()
	if raceEnabled && !keep {
		t.Skip("slow under the race detector; run without it: go test -run '" + raceTrimmed + "' ./sqlstore")
	}
}
