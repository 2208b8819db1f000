package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/tmpfs"
)

// TestPingOnFullDisk fills a small tmpfs until an insert fails with
// SQLITE_FULL. Ping must then fail, though the WAL keeps the room the failed
// commit's partial writes took, where a one-page probe commit fits; and it
// must pass again, with inserts, once the file system grows.
func TestPingOnFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := tmpfs.Mount(t, "2m")
	path := filepath.Join(dir, "app.db")
	db, err := Open(ctx, "sqlite:///"+path)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = db.Close()
		}
	})
	// The checkpointer waits for its connection while the disk fills: a
	// checkpoint completing at the edge would let the WAL start over, and
	// the commits after a failure fit again for a while.
	hold, err := db.checkpointDB.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(func() { _ = hold.Close() })
	t.Cleanup(release) // runs before Close, which waits for the checkpointer

	// Rows of about 6 KB: every message takes the same pages.
	text := strings.Repeat("full disk ", 300)
	message := func(id string) []msgsvc.Message {
		return []msgsvc.Message{{MessageID: id, From: "+12025550123", To: "+14155550100", TS: "2025-01-15T10:00:00Z", Text: &text}}
	}
	acked := map[string]bool{}
	var failure error
	for i := 0; failure == nil; i++ {
		if i == 10000 {
			t.Fatal("10000 messages fit on a 2 MiB file system")
		}
		id := fmt.Sprintf("m%06d", i)
		if _, err := db.Insert(ctx, message(id)); err != nil {
			failure = err
		} else {
			acked[id] = true
		}
	}
	if !errors.Is(failure, msgsvc.ErrUnavailable) || !strings.Contains(failure.Error(), "full") {
		t.Fatalf("Insert on a full disk: %v; want ErrUnavailable, disk full", failure)
	}
	for range 3 {
		if err := db.Ping(ctx); !errors.Is(err, msgsvc.ErrUnavailable) {
			t.Fatalf("Ping on a full disk: %v, want ErrUnavailable", err)
		}
	}
	if _, err := db.Insert(ctx, message("refused")); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Insert on a full disk after the probes: %v, want ErrUnavailable", err)
	}
	if page, err := db.List(ctx, msgsvc.Query{Limit: 1}); err != nil || page.Total != int64(len(acked)) {
		t.Fatalf("List on a full disk: total %d, %v; want %d", page.Total, err, len(acked))
	}

	release()
	tmpfs.Resize(t, dir, "64m")
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping once there is room: %v", err)
	}
	if _, err := db.Insert(ctx, message("after")); err != nil {
		t.Fatalf("Insert once there is room: %v", err)
	}
	acked["after"] = true
	closed = true
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "app.db" && e.Name() != "app.db"+indexSuffix {
			t.Errorf("%s left beside the database after Close", e.Name())
		}
	}
	checkAckedAfterReopen(t, "sqlite:///"+path, acked)
	reopened := openURL(t, "sqlite:///"+path)
	var check string
	if err := reopened.read.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q, %v", check, err)
	}
}
