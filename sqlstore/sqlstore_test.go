package sqlstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/storetest"
)

// fileURL returns the sqlite:////absolute/path URL of path.
func fileURL(tb testing.TB, path string) string {
	tb.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		tb.Fatal(err)
	}
	return "sqlite:///" + abs
}

// openURL opens databaseURL and closes the store when the test ends.
func openURL(tb testing.TB, databaseURL string) *DB {
	tb.Helper()
	db, err := Open(context.Background(), databaseURL)
	if err != nil {
		tb.Fatalf("Open(%q): %v", databaseURL, err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	return db
}

// openFile opens a fresh database file in a temporary folder and returns the
// store and the file's URL.
func openFile(tb testing.TB) (*DB, string) {
	tb.Helper()
	url := fileURL(tb, filepath.Join(tb.TempDir(), "app.db"))
	return openURL(tb, url), url
}

func TestConformanceFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) msgsvc.Store {
		db, err := Open(context.Background(), fileURL(t, filepath.Join(t.TempDir(), "app.db")))
		if err != nil {
			t.Fatal(err)
		}
		return db // Run closes it
	})
}

func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T) msgsvc.Store {
		db, err := Open(context.Background(), "sqlite://:memory:")
		if err != nil {
			t.Fatal(err)
		}
		return db
	})
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct {
		url  string
		want Target
	}{
		{"sqlite:///data/app.db", Target{Driver: "sqlite", Path: "data/app.db"}},
		{"sqlite:///app.db", Target{Driver: "sqlite", Path: "app.db"}},
		{"sqlite:///./data/app.db", Target{Driver: "sqlite", Path: "./data/app.db"}},
		{"sqlite:////data/app.db", Target{Driver: "sqlite", Path: "/data/app.db"}},
		{"sqlite:////var/lib/msgsvc/app.db", Target{Driver: "sqlite", Path: "/var/lib/msgsvc/app.db"}},
		{"sqlite:///dir with space/ünï.db", Target{Driver: "sqlite", Path: "dir with space/ünï.db"}},
		{"sqlite://:memory:", Target{Driver: "sqlite", Path: ":memory:"}},
		{"sqlite:///:memory:", Target{Driver: "sqlite", Path: ":memory:"}}, // as SQLAlchemy reads it
		{"postgres://user:pw@db.example:5432/msgs?sslmode=disable", Target{Driver: "postgres"}},
		{"postgresql://user@localhost/msgs", Target{Driver: "postgres"}},
		{"postgres:///msgs?host=/run/postgresql", Target{Driver: "postgres"}},
	} {
		got, err := ParseURL(c.url)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", c.url, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseURL(%q) = %+v, want %+v", c.url, got, c.want)
		}
	}
	for _, bad := range []string{
		"",
		"sqlite:",
		"sqlite://",
		"sqlite:///",
		"sqlite:////",
		"sqlite://app.db", // a host, not a path
		"sqlite://host/app.db",
		"sqlite:app.db",
		"sqlite::memory:",
		"sqlite://:memory:?cache=shared",
		"sqlite:///app.db?mode=ro",
		"sqlite:///app.db#x",
		"app.db",
		"/data/app.db",
		"file:app.db",
		"mysql://user@host/db",
		"postgres:/db",
		"postgres//db",
		"http://example.com/db",
		" sqlite:///app.db",
	} {
		if got, err := ParseURL(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("ParseURL(%q) = %+v, %v; want an error wrapping ErrBadURL", bad, got, err)
		}
	}
}

func TestOpenCreatesFolderAndFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "c", "app.db")
	db := openURL(t, fileURL(t, path))
	if err := db.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("the database file %s: %v, %v", path, fi, err)
	}
}

func TestOpenRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	db := openURL(t, "sqlite:///data/sub/app.db")
	if _, err := db.Insert(context.Background(), []msgsvc.Message{testMessage("m1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "sub", "app.db")); err != nil {
		t.Fatalf("the relative path is not under the working folder: %v", err)
	}
}

// TestOpenPathIsLiteral checks that the file opened is the one the URL
// names, even when its name looks like URI escapes to SQLite.
func TestOpenPathIsLiteral(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x%41y")
	path := filepath.Join(dir, "a%20b.db")
	db := openURL(t, fileURL(t, path))
	if _, err := db.Insert(context.Background(), []msgsvc.Message{testMessage("m1")}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("the database file %s was not created (%v); the folder holds %q", path, err, names)
	}
}

func TestOpenBadPath(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("not a folder"), 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(context.Background(), fileURL(t, filepath.Join(file, "app.db"))); err == nil {
		db.Close()
		t.Fatal("Open under a regular file succeeded")
	}
	notDB := filepath.Join(t.TempDir(), "garbage.db")
	if err := os.WriteFile(notDB, []byte("this is not a SQLite database, not at all, no"), 0o600); err != nil {
		t.Fatal(err)
	}
	if db, err := Open(context.Background(), fileURL(t, notDB)); err == nil {
		db.Close()
		t.Fatal("Open of a file that is not a database succeeded")
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	url := fileURL(t, path)
	ctx := context.Background()
	for i := range 3 {
		db, err := Open(ctx, url)
		if err != nil {
			t.Fatalf("Open #%d: %v", i+1, err)
		}
		if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("m1"), testMessage("m" + string(rune('2'+i)))}); err != nil {
			t.Fatalf("Insert after Open #%d: %v", i+1, err)
		}
		var versions, maxVersion int
		if err := db.read.QueryRowContext(ctx, `SELECT count(*), max(version) FROM schema_migrations`).Scan(&versions, &maxVersion); err != nil {
			t.Fatal(err)
		}
		if versions != db.schemaVersion() || maxVersion != db.schemaVersion() {
			t.Errorf("after Open #%d: %d schema versions up to %d, want %d", i+1, versions, maxVersion, db.schemaVersion())
		}
		if err := db.Ping(ctx); err != nil {
			t.Errorf("Ping after Open #%d: %v", i+1, err)
		}
		st, err := db.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.TotalMessages != int64(i+2) {
			t.Errorf("after Open #%d: %d messages, want %d", i+1, st.TotalMessages, i+2)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPingUnmigrated(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name, sql string
	}{
		{"no versions", `DELETE FROM schema_migrations`},
		{"older version", `DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)`},
		{"newer version", `INSERT INTO schema_migrations (version) SELECT max(version) + 1 FROM schema_migrations`},
		{"no table", `DROP TABLE schema_migrations`},
	} {
		t.Run(c.name, func(t *testing.T) {
			db, _ := openFile(t)
			if err := db.Ping(ctx); err != nil {
				t.Fatalf("Ping before: %v", err)
			}
			if _, err := db.write.ExecContext(ctx, c.sql); err != nil {
				t.Fatal(err)
			}
			if err := db.Ping(ctx); !errors.Is(err, msgsvc.ErrUnavailable) {
				t.Fatalf("Ping = %v, want an error wrapping msgsvc.ErrUnavailable", err)
			}
		})
	}
	t.Run("closed", func(t *testing.T) {
		db, _ := openFile(t)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if err := db.Ping(ctx); !errors.Is(err, msgsvc.ErrUnavailable) {
			t.Fatalf("Ping after Close = %v, want an error wrapping msgsvc.ErrUnavailable", err)
		}
	})
}

func TestPragmas(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	var mode string
	var synchronous, busy int
	if err := db.write.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("writer journal_mode = %q, want wal", mode)
	}
	if err := db.write.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&synchronous); err != nil {
		t.Fatal(err)
	}
	// NORMAL: the commit does not fsync, the syncer does (walsync.go).
	if synchronous != 1 {
		t.Errorf("writer synchronous = %d, want 1 (NORMAL)", synchronous)
	}
	// FULL for checkpoints: the writer's unsynced commits rely on a
	// checkpoint syncing the WAL before it copies frames into the file.
	if err := db.checkpointDB.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&synchronous); err != nil {
		t.Fatal(err)
	}
	if synchronous != 2 {
		t.Errorf("checkpointer synchronous = %d, want 2 (FULL)", synchronous)
	}
	for pragma, want := range map[string]int{"temp_store": 2, "journal_size_limit": 512 << 20, "wal_autocheckpoint": 0} {
		var got int
		if err := db.write.QueryRowContext(ctx, `PRAGMA `+pragma).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("writer %s = %d, want %d", pragma, got, want)
		}
	}
	if err := db.write.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if busy <= 0 {
		t.Errorf("writer busy_timeout = %d, want > 0", busy)
	}
	if n := db.write.Stats().MaxOpenConnections; n != 1 {
		t.Errorf("writer pool allows %d connections, want 1", n)
	}

	// Every reader connection, not only the first the pool hands out.
	n := db.read.Stats().MaxOpenConnections
	if n < 1 {
		t.Fatalf("reader pool allows %d connections", n)
	}
	var conns []interface{ Close() error }
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		conn, err := db.read.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		var queryOnly int
		if err := conn.QueryRowContext(ctx, `PRAGMA query_only`).Scan(&queryOnly); err != nil {
			t.Fatal(err)
		}
		if queryOnly != 1 {
			t.Errorf("reader connection %d: query_only = %d, want 1", i, queryOnly)
		}
		if err := conn.QueryRowContext(ctx, `PRAGMA busy_timeout`).Scan(&busy); err != nil {
			t.Fatal(err)
		}
		if busy <= 0 {
			t.Errorf("reader connection %d: busy_timeout = %d, want > 0", i, busy)
		}
		if err := conn.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" {
			t.Errorf("reader connection %d: journal_mode = %q, want wal", i, mode)
		}
		if _, err := conn.ExecContext(ctx, `DELETE FROM messages`); err == nil {
			t.Errorf("reader connection %d accepted a write", i)
		}
	}
}

func testMessage(id string) msgsvc.Message {
	text := "hello " + id
	return msgsvc.Message{MessageID: id, From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z", Text: &text}
}
