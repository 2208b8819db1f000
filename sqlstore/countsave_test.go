package sqlstore

import (
	"context"
	"fmt"
	"sync/atomic"
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

// TestCountsSavedInSteps: while the store runs, a save writes only what
// changed since the last one, countSaveStep rows a transaction with the
// writer free in between, so that it never holds inserts back for long. A
// crash between two steps loads true counts. The rows of counts dropped
// from the cache for room are deleted.
func TestCountsSavedInSteps(t *testing.T) {
	ctx := context.Background()
	db, _, _ := openCountsFile(t, searchData("a", 0, 100))
	holdCheckpointer(t, db)
	// Made-up counts, all true: no message holds "no such text".
	key := func(i int) countKey { return countKey{text: fmt.Sprint("no such text ", i)} }
	maxID := maxMessageID(t, db)
	const made = 2*countSaveStep + 10
	for i := range made {
		db.remember(key(i), 0, maxID)
	}
	// The writer waits in each step while pause is set.
	var pause atomic.Bool
	var steps atomic.Int64
	stepped, resume, quit := make(chan struct{}), make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(quit) }) // before Close: a failed test leaves no step waiting
	db.countSaveStepped = func() {
		steps.Add(1)
		if pause.Load() {
			select {
			case stepped <- struct{}{}:
				select {
				case <-resume:
				case <-quit:
				}
			case <-quit:
			}
		}
	}
	waitStep := func() {
		t.Helper()
		select {
		case <-stepped:
		case <-time.After(10 * time.Second):
			t.Fatal("no step of a save within 10 s")
		}
	}
	pause.Store(true)
	db.countSaveNanos.Store(1) // due at once: the next batch starts a save
	insert := func(id string) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := db.Insert(ctx, []msgsvc.Message{testMessage(id)})
			done <- err
		}()
		return done
	}
	inserted := insert("due")
	waitStep()
	if n := savedCounts(t, db); n != countSaveStep {
		t.Fatalf("%d counts saved by the first step, want %d", n, countSaveStep)
	}
	if got := crashLoaded(t, db); got != countSaveStep {
		t.Fatalf("a crash after the first step loaded %d counts, want %d", got, countSaveStep)
	}
	for range 2 {
		resume <- struct{}{}
		waitStep()
	}
	if n := savedCounts(t, db); n != made {
		t.Fatalf("%d counts saved after three steps, want %d", n, made)
	}
	resume <- struct{}{}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	noMoreSteps := func() {
		t.Helper()
		select {
		case <-stepped:
			t.Fatal("a save went on with nothing left to save")
		case <-time.After(200 * time.Millisecond):
		}
	}
	noMoreSteps()

	// Only a count that moved forward is written: a row changed behind the
	// store's back stays as it is.
	if _, err := db.write.ExecContext(ctx, `UPDATE search_counts SET n = 7 WHERE text = ?`, key(0).text); err != nil {
		t.Fatal(err)
	}
	if err := <-insert("moved"); err != nil {
		t.Fatal(err)
	}
	moved := maxMessageID(t, db)
	db.remember(key(1), 0, moved)
	inserted = insert("after moved")
	waitStep()
	savedRow := func(k countKey) (n, upTo int64) {
		t.Helper()
		err := db.read.QueryRowContext(ctx, `SELECT n, up_to FROM search_counts WHERE sender = ? AND since = ? AND text = ?`,
			k.from, k.since, k.text).Scan(&n, &upTo)
		if err != nil {
			t.Fatalf("the row of %+v: %v", k, err)
		}
		return n, upTo
	}
	if n, _ := savedRow(key(0)); n != 7 {
		t.Errorf("an unchanged count was written again: n = %d", n)
	}
	if _, upTo := savedRow(key(1)); upTo != moved {
		t.Errorf("the count that moved forward is saved up to %d, want %d", upTo, moved)
	}
	resume <- struct{}{}
	if err := <-inserted; err != nil {
		t.Fatal(err)
	}
	noMoreSteps()
	if _, err := db.write.ExecContext(ctx, `UPDATE search_counts SET n = 0 WHERE text = ?`, key(0).text); err != nil {
		t.Fatal(err)
	}

	// A full cache of new counts drops every made-up one: their rows go
	// (three steps), and the new ones are written (sixteen).
	pause.Store(false)
	maxID = maxMessageID(t, db)
	for i := range countCacheEntries {
		db.remember(key(made+i), 0, maxID)
	}
	before := steps.Load()
	if err := <-insert("full"); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, countCacheEntries, func() int { return savedCounts(t, db) })
	var old int
	if err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM search_counts WHERE text IN (?, ?, ?)`,
		key(0).text, key(1).text, key(made-1).text).Scan(&old); err != nil {
		t.Fatal(err)
	}
	if old != 0 {
		t.Errorf("%d rows of dropped counts are left", old)
	}
	want := int64((made+countSaveStep-1)/countSaveStep + countCacheEntries/countSaveStep)
	for deadline := time.Now().Add(5 * time.Second); steps.Load()-before < want && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if got := steps.Load() - before; got != want {
		t.Errorf("the save took %d steps, want %d", got, want)
	}
	copied := openURL(t, crashCopy(t, db))
	if got := copied.counts.len(); got != countCacheEntries {
		t.Errorf("a copy loaded %d counts, want %d", got, countCacheEntries)
	}
	if _, _, ok := copied.counts.get(key(made + countCacheEntries - 1)); !ok {
		t.Error("the newest count was not loaded")
	}
}
