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
	type count struct{ n, upTo int64 }
	want := map[countKey]count{}
	for i := range qs {
		qs[i].Limit = 10
		checkTotal(t, db, msgs, qs[i])
		k := totalKey(qs[i])
		n, upTo, ok := db.counts.get(k)
		if !ok {
			t.Fatalf("the total of %+v was not remembered", qs[i])
		}
		want[k] = count{n, upTo}
	}
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
	deadline := time.Now().Add(10 * time.Second)
	for savedCounts(t, db) != len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%d counts saved, want %d", savedCounts(t, db), len(want))
		}
		time.Sleep(10 * time.Millisecond)
	}
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
