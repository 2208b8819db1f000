package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// dataVersion returns PRAGMA data_version as conn sees it: it changes when
// another connection commits a change to the database.
func dataVersion(t *testing.T, conn *sql.Conn) int64 {
	t.Helper()
	var v int64
	if err := conn.QueryRowContext(context.Background(), `PRAGMA data_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestProbeCommitsAChange checks that the probe Ping runs after a failed
// write really writes: its commit must append to the WAL and sync it, or a
// full disk or an unwritable file would pass it. Overwriting a value with
// itself commits nothing (SQLite leaves the page clean), which is what the
// probe once did.
func TestProbeCommitsAChange(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("a")}); err != nil {
		t.Fatal(err)
	}
	path := strings.TrimPrefix(url, "sqlite:///")
	other, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	before := dataVersion(t, conn)

	db.writeFailed.Store(true) // as after a failed batch
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if dataVersion(t, conn) == before {
		t.Error("the probe committed no change: it cannot tell a writable database from an unwritable one")
	}
	if db.writeFailed.Load() {
		t.Error("a successful probe left the failure standing")
	}
	checkCounters(t, db) // the probe leaves the counters as they were
	var total int64
	if err := conn.QueryRowContext(ctx, `SELECT messages FROM totals WHERE id = 1`).Scan(&total); err != nil || total != 1 {
		t.Errorf("totals.messages = %d, %v after the probe; want 1", total, err)
	}
}

// TestDuplicatesDoNotEndWriteFailure checks that readiness stays down when
// only duplicates succeed during a write failure: their transaction writes
// nothing, so it proves nothing about the disk.
func TestDuplicatesDoNotEndWriteFailure(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("stored")}); err != nil {
		t.Fatal(err)
	}
	// Every write transaction updates totals; failing that update stands in
	// for a full disk or a read-only file.
	if _, err := db.write.ExecContext(ctx, `CREATE TRIGGER totals_fail BEFORE UPDATE ON totals
		BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("new")}); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Insert during the fault: %v, want ErrUnavailable", err)
	}
	created, err := db.Insert(ctx, []msgsvc.Message{testMessage("stored")})
	if err != nil || len(created) != 1 || created[0] {
		t.Fatalf("duplicate during the fault: %v, %v; want a duplicate, acknowledged", created, err)
	}
	if err := db.Ping(ctx); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Ping after a duplicate during the fault: %v, want ErrUnavailable", err)
	}
	if _, err := db.write.ExecContext(ctx, `DROP TRIGGER totals_fail`); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping after the fault cleared: %v", err)
	}
}

// TestCheckRoomLeavesNothing checks that the room check removes its file,
// and that it fails when it cannot write one.
func TestCheckRoomLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	if err := checkRoom(dir, "app.db", probeRoom); err != nil {
		t.Fatalf("checkRoom: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("checkRoom left %v behind", left)
	}
	if err := checkRoom(filepath.Join(dir, "missing"), "app.db", 1); err == nil {
		t.Error("checkRoom in a missing folder succeeded")
	}
}
