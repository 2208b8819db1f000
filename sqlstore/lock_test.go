//go:build unix

package sqlstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// TestOpenInUse checks that a SQLite file is written by one store at a
// time: a second Open of the same file, by its path or through a symbolic
// link, fails with ErrInUse until the first store is closed, and a failed
// Open leaves the lock free. The lock leaves no file behind.
func TestOpenInUse(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "app.db")
	link := filepath.Join(dir, "link.db")
	first, err := Open(ctx, fileURL(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"same path", path},
		{"symbolic link", link},
	} {
		t.Run(tc.name, func(t *testing.T) {
			second, err := Open(ctx, fileURL(t, tc.path))
			if err == nil {
				_ = second.Close()
				t.Fatal("a second store opened a file in use")
			}
			if !errors.Is(err, ErrInUse) {
				t.Fatalf("Open: %v, want ErrInUse", err)
			}
		})
	}
	if _, err := first.Insert(ctx, []msgsvc.Message{testMessage("a")}); err != nil {
		t.Fatalf("the first store after the refused opens: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "app.db" && e.Name() != "app.db"+indexSuffix && e.Name() != "link.db" {
			t.Errorf("%s left beside the database after Close", e.Name())
		}
	}
	again := openURL(t, fileURL(t, link))
	if st, err := again.Stats(ctx); err != nil || st.TotalMessages != 1 {
		t.Fatalf("reopened after Close: %+v, %v", st, err)
	}

	// An Open that fails after taking the lock lets it go.
	bad := filepath.Join(dir, "bad.db")
	if err := os.WriteFile(bad, []byte("not a database, and long enough to be read as one: ................................................................................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, fileURL(t, bad)); err == nil || errors.Is(err, ErrInUse) {
		t.Fatalf("Open of a file that is no database: %v, want an error other than ErrInUse", err)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	openURL(t, fileURL(t, bad)) // a new database in its place
}
