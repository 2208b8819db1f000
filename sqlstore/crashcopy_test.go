package sqlstore

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// crashCopy copies the database file and its WAL to a new folder, as a
// power loss would leave them once every acknowledged commit is synced: no
// WAL index, so opening the copy recovers the WAL from the file alone and
// keeps only the transactions whose frames and checksums are all there.
// The caller holds the checkpointer, so the database file is not being
// written.
func crashCopy(t *testing.T, db *DB) string {
	t.Helper()
	dir := t.TempDir()
	main := strings.TrimSuffix(db.walPath, "-wal")
	for _, p := range []string{db.walPath, main} {
		in, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dir, filepath.Base(p)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		_ = in.Close()
		if err := out.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return fileURL(t, filepath.Join(dir, filepath.Base(main)))
}

// holdCheckpointer keeps the checkpointer's only connection until the test
// ends, so that no checkpoint writes the database file or starts the WAL
// over.
func holdCheckpointer(t *testing.T, db *DB) {
	t.Helper()
	hold, err := db.checkpointDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hold.Close() })
}

// checkRecovered opens url and checks that it holds exactly ids, with exact
// counters and a sound file.
func checkRecovered(t *testing.T, url string, ids map[string]bool) {
	t.Helper()
	db := openURL(t, url)
	got := storedIDs(t, db)
	if len(got) != len(ids) {
		t.Errorf("recovered %d rows, want %d", len(got), len(ids))
	}
	for id := range ids {
		if !got[id] {
			t.Fatalf("acknowledged %s is not in the recovered file", id)
		}
	}
	checkCounters(t, db)
	var ok string
	if err := db.read.QueryRowContext(context.Background(), `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Fatalf("integrity_check: %q, %v", ok, err)
	}
}
