package sqlstore

import (
	"context"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// TestCountsSavedWhileRunning: the writer saves the remembered counts
// while the store runs, so that a crash does not lose them: a copy of the
// files as a power loss would leave them loads every count. Before a save
// is due, such a copy has none.
func TestCountsSavedWhileRunning(t *testing.T) {
	ctx := context.Background()
	msgs := searchData("a", 0, 1000)
	db, _, _ := openCountsFile(t, msgs)
	holdCheckpointer(t, db)
	qs := []msgsvc.Query{{Text: "ALPHA"}, {Text: "beta", From: bigSender}}
	want := rememberTotals(t, db, msgs, qs)
	// A batch before a save is due saves nothing.
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("before")}); err != nil {
		t.Fatal(err)
	}
	if n := savedCounts(t, db); n != 0 {
		t.Fatalf("%d counts saved before a save was due", n)
	}
	if got := crashLoaded(t, db); got != 0 {
		t.Fatalf("a crash before any save loaded %d counts", got)
	}

	// Due at once: the next batch is followed by a save.
	db.countSaveNanos.Store(1)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("after")}); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, len(want), func() int { return savedCounts(t, db) })
	copied := openURL(t, crashCopy(t, db))
	for k, c := range want {
		if n, upTo, ok := copied.counts.get(k); !ok || n != c.n || upTo != c.upTo {
			t.Errorf("after a crash, the count of %+v is %d up to %d (%v), want %d up to %d", k, n, upTo, ok, c.n, c.upTo)
		}
	}
	all := append(msgs, testMessage("before"), testMessage("after"))
	for _, q := range qs {
		checkTotal(t, copied, all, q)
	}
}

// crashLoaded opens a copy of db's files as a power loss would leave them
// and returns how many counts it loaded.
func crashLoaded(t *testing.T, db *DB) int {
	t.Helper()
	copied, err := Open(context.Background(), crashCopy(t, db))
	if err != nil {
		t.Fatal(err)
	}
	defer closeStore(t, copied)
	return copied.counts.len()
}

// countAt is a remembered count: n matches up to a watermark.
type countAt struct{ n, upTo int64 }

// rememberTotals lists each of qs (10 to a page) on db, checks its total
// against a scan of msgs, and returns the count db remembered for each.
func rememberTotals(t *testing.T, db *DB, msgs []msgsvc.Message, qs []msgsvc.Query) map[countKey]countAt {
	t.Helper()
	counts := map[countKey]countAt{}
	for i := range qs {
		qs[i].Limit = 10
		checkTotal(t, db, msgs, qs[i])
		k := totalKey(qs[i])
		n, upTo, ok := db.counts.get(k)
		if !ok {
			t.Fatalf("the total of %+v was not remembered", qs[i])
		}
		counts[k] = countAt{n, upTo}
	}
	return counts
}

// waitSaved waits up to 10 s for saved to report want saved counts.
func waitSaved(t *testing.T, want int, saved func() int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for saved() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%d counts saved, want %d", saved(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCountSaveContext: a SQLite save runs with a context that is never
// done, since modernc's driver starts a goroutine per statement to watch
// one that can be (a soak counted 898 goroutines during a save of a full
// cache); a Postgres save gives up after countSaveTimeout.
func TestCountSaveContext(t *testing.T) {
	ctx, cancel := (&DB{}).countSaveContext()
	defer cancel()
	if ctx.Done() != nil {
		t.Error("a SQLite save's context can be done")
	}
	ctx, cancel = (&DB{postgres: true}).countSaveContext()
	defer cancel()
	if d, ok := ctx.Deadline(); !ok || time.Until(d) > countSaveTimeout {
		t.Errorf("a Postgres save's deadline: %v, %v; want within %v", d, ok, countSaveTimeout)
	}
}
