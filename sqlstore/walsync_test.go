package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// syncGate replaces the WAL fsync's outcome with a hook that reports each
// sync on entered and waits for release, which may send an error to fail
// the sync with.
type syncGate struct {
	entered chan struct{}
	release chan error
}

// wait waits for the next WAL fsync to begin.
func (g *syncGate) wait(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no WAL fsync began within 10s")
	}
}

func newSyncGate(db *DB) *syncGate {
	g := &syncGate{entered: make(chan struct{}), release: make(chan error)}
	db.syncHook = func(err error) error {
		g.entered <- struct{}{}
		if injected := <-g.release; injected != nil {
			return injected
		}
		return err
	}
	return g
}

// insertAsync runs db.Insert of one message in a goroutine.
func insertAsync(db *DB, id string) <-chan insertResult {
	out := make(chan insertResult, 1)
	go func() {
		created, err := db.Insert(context.Background(), []msgsvc.Message{testMessage(id)})
		out <- insertResult{id: id, created: created, err: err}
	}()
	return out
}

// notAnswered fails t if r already holds an answer, without waiting.
func notAnswered(t *testing.T, r <-chan insertResult) {
	t.Helper()
	select {
	case res := <-r:
		t.Fatalf("insert %q answered before its WAL fsync ended: %+v", res.id, res)
	default:
	}
}

// TestAnswerWaitsForWALSync: a committed insert, and a duplicate of it, are
// answered only after an fsync of the WAL that began after the commit, though
// readers see the row as soon as it commits.
func TestAnswerWaitsForWALSync(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	g := newSyncGate(db)

	first := insertAsync(db, "a")
	g.wait(t) // batch 1 committed, its fsync under way
	if !storedIDs(t, db)["a"] {
		t.Fatal("row a is not visible while its fsync runs: the sync should follow the commit")
	}
	notAnswered(t, first)

	dup := insertAsync(db, "a")
	// The duplicate's batch commits (writing nothing) while batch 1 is
	// still syncing; the writer then waits to hand it over.
	g.release <- nil // batch 1's fsync ends
	if res := <-first; res.err != nil || !res.created[0] {
		t.Fatalf("first insert: created %v, err %v; want created", res.created, res.err)
	}
	g.wait(t) // the duplicate's batch: its own fsync
	notAnswered(t, dup)
	g.release <- nil
	if res := <-dup; res.err != nil || res.created[0] {
		t.Fatalf("duplicate: created %v, err %v; want a duplicate", res.created, res.err)
	}

	db.syncHook = nil // the writer is idle: no sync in flight
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("b")}); err != nil {
		t.Fatal(err)
	}
	checkCounters(t, db)
}

// TestWALSyncFailureIsFinal: a failed fsync fails every caller whose batch
// it covered, and every write after it, until the store is reopened;
// readiness reports it. Reopening recovers from the file.
func TestWALSyncFailureIsFinal(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("before")}); err != nil {
		t.Fatal(err)
	}
	g := newSyncGate(db)
	res := insertAsync(db, "lost")
	g.wait(t)
	select {
	case <-db.Failed():
		t.Fatal("Failed() closed before any fsync failed")
	default:
	}
	g.release <- errors.New("input/output error")
	r := <-res
	if !errors.Is(r.err, msgsvc.ErrUnavailable) || !errors.Is(r.err, errWALSync) {
		t.Fatalf("insert covered by a failed fsync: err %v, want ErrUnavailable and errWALSync", r.err)
	}
	select {
	case <-db.Failed():
	default:
		t.Fatal("Failed() not closed after a failed fsync")
	}

	// Later writes are refused without being written: the file may lack
	// rows this process still sees.
	db.syncHook = nil
	for _, id := range []string{"after", "lost"} {
		if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(id)}); !errors.Is(err, errWALSync) {
			t.Fatalf("insert %q after a failed fsync: err %v, want errWALSync", id, err)
		}
	}
	if storedIDs(t, db)["after"] {
		t.Fatal("a write after the failed fsync was stored")
	}
	if err := db.Ping(ctx); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Ping after a failed fsync: %v, want ErrUnavailable", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db2 := openURL(t, url)
	if err := db2.Ping(ctx); err != nil {
		t.Fatalf("Ping after reopening: %v", err)
	}
	created, err := db2.Insert(ctx, []msgsvc.Message{testMessage("after")})
	if err != nil || !created[0] {
		t.Fatalf("insert after reopening: created %v, err %v", created, err)
	}
	if !storedIDs(t, db2)["before"] {
		t.Fatal("a row acknowledged before the failure is gone")
	}
	checkCounters(t, db2)
}

// TestWALStartsOverUnderLoad: under inserts that never pause, the
// checkpointer still makes the WAL start over from the beginning (without
// it, the WAL would grow by every frame written), and nothing is lost.
func TestWALStartsOverUnderLoad(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	db.walRestart = 200 // frames
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("first")}); err != nil {
		t.Fatal(err)
	}
	salt := walSalt(t, db)

	// Rounds of inserts go on until the WAL has started over: the
	// checkpointer pauses checkpointPause between checkpoints, and a fast
	// machine writes a round in less. SQLite changes the salt in the WAL
	// header each time the WAL starts over.
	const writers, each, rounds = 4, 300, 20
	inserted := 1
	for round := 0; walSalt(t, db) == salt; round++ {
		if round == rounds {
			t.Fatalf("the WAL never started over during %d inserts (restart past %d frames)", inserted-1, db.walRestart)
		}
		inParallel(t, writers, func(w int) error {
			for i := range each {
				if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(fmt.Sprintf("r%d-w%d-%d", round, w, i))}); err != nil {
					return err
				}
			}
			return nil
		})
		inserted += writers * each
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(storedIDs(t, openURL(t, url))); n != inserted {
		t.Fatalf("%d rows after reopening, want %d", n, inserted)
	}
}

// TestWALStartsOverAfterFileSync: the checkpointer syncs the database file
// before the checkpoint that holds the writer so that the WAL can start
// over, and while that sync fails it does not hold the writer for it (the
// WAL's frames may be the only durable copy of pages the file lost); once
// the sync succeeds again, it does, the WAL starts over, and nothing is
// lost. (SQLite itself may still start the WAL over when a checkpoint
// happens to copy all of it while the writer is idle: that checkpoint
// synced the file itself.)
func TestWALStartsOverAfterFileSync(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	db.walRestart = 200 // frames
	var syncs atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	db.fileSyncHook = func(err error) error {
		syncs.Add(1)
		if failing.Load() {
			return errors.New("input/output error")
		}
		return err
	}
	holds := func() uint64 {
		n, _ := histogram(t, gather(t, db), "store_checkpoint_hold_seconds")
		return n
	}
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("first")}); err != nil {
		t.Fatal(err)
	}
	inserted := 1
	round := 0
	insertRound := func() {
		t.Helper()
		inParallel(t, 4, func(w int) error {
			for i := range 300 {
				if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(fmt.Sprintf("r%d-w%d-%d", round, w, i))}); err != nil {
					return err
				}
			}
			return nil
		})
		inserted += 4 * 300
		round++
	}
	for syncs.Load() < 3 {
		if round == 40 {
			t.Fatalf("the file was synced %d times in %d inserts past %d frames, want 3", syncs.Load(), inserted-1, db.walRestart)
		}
		insertRound()
	}
	if n := holds(); n != 0 {
		t.Fatalf("the writer was held %d times for the WAL to start over while the database file could not be synced", n)
	}
	failing.Store(false)
	salt := walSalt(t, db)
	for start := round; holds() == 0 || walSalt(t, db) == salt; {
		if round == start+20 {
			t.Fatalf("once the file synced again, the writer was held %d times and the WAL salt changed: %v (%d inserts)", holds(), walSalt(t, db) != salt, inserted-1)
		}
		insertRound()
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(storedIDs(t, openURL(t, url))); n != inserted {
		t.Fatalf("%d rows after reopening, want %d", n, inserted)
	}
}

// walSalt returns the salt-1 field of the WAL header.
func walSalt(t *testing.T, db *DB) [4]byte {
	t.Helper()
	salt, err := readSalt(db.walPath)
	if err != nil {
		t.Fatal(err)
	}
	return salt
}

// TestWALFileThroughSymlink: opened through a symbolic link, the store
// fsyncs the WAL SQLite really writes, beside the link's target.
func TestWALFileThroughSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "data", "app.db")
	if err := os.MkdirAll(filepath.Dir(real), 0o750); err != nil {
		t.Fatal(err)
	}
	openURL(t, fileURL(t, real)).Close()
	link := filepath.Join(dir, "link.db")
	if err := os.Symlink(real, link); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	db := openURL(t, fileURL(t, link))
	if _, err := db.Insert(context.Background(), []msgsvc.Message{testMessage("a")}); err != nil {
		t.Fatal(err)
	}
	want, err := os.Stat(real + "-wal")
	if err != nil {
		t.Fatalf("no WAL beside the real file: %v", err)
	}
	got, err := os.Stat(db.walPath)
	if err != nil || !os.SameFile(got, want) {
		t.Fatalf("the store syncs %s (%v), not the WAL SQLite writes, %s-wal", db.walPath, err, real)
	}
}
