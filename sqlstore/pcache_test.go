//go:build linux && (amd64 || arm64)

package sqlstore

import (
	"bytes"
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

func TestPageCacheInstalled(t *testing.T) {
	if !pageCacheInstalled {
		t.Fatal("SQLite did not take the page cache wrapper (pcache.go): it was started before this package initialized")
	}
}

// TestTruncCache walks the wrapper's bookkeeping through the calls SQLite
// makes and checks when a truncation must reach the default cache.
func TestTruncCache(t *testing.T) {
	type step = tcStep
	const lockPage = 262145
	tests := []struct {
		name  string
		steps []step
	}{
		{"a new cache calls through for a page past the limit", []step{
			{"note", 5, false}, {"truncate", 3, true}, {"truncate", 3, false},
		}},
		{"an empty cache needs no truncation", []step{
			{"note", 1, false}, {"truncate", 2, false}, {"truncate", 2, false},
		}},
		{"a page past the limit is dropped", []step{
			{"truncate", 101, false}, {"note", 101, false}, {"truncate", 101, true}, {"truncate", 101, false},
		}},
		{"a grown file needs no truncation", []step{
			{"truncate", 101, false}, {"note", 101, false}, {"note", 102, false}, {"truncate", 103, false},
		}},
		{"the lock page renumbered back is forgotten", []step{
			{"truncate", 101, false}, {"note", lockPage, false}, {"forget", lockPage, false}, {"note", 50, false}, {"truncate", 101, false},
		}},
		{"the lock page left in place is truncated", []step{
			{"truncate", 101, false}, {"note", lockPage, false}, {"truncate", 101, true}, {"truncate", 101, false},
		}},
		{"a lower limit calls through", []step{
			{"truncate", 101, false}, {"truncate", 100, true}, {"truncate", 100, false},
		}},
		{"pages below the limit do not count", []step{
			{"truncate", 101, false}, {"note", 7, false}, {"note", 100, false}, {"truncate", 101, false},
		}},
		{"a page renumbered past the limit counts", []step{
			{"truncate", 101, false}, {"note", 150, false}, {"forget", 50, false}, {"truncate", 101, true},
		}},
		{"many new pages spill, the lock page stays forgettable", append(append([]step{{"truncate", 101, false}},
			notes(101, 130)...), step{"note", lockPage, false}, step{"forget", lockPage, false}, step{"truncate", 131, false})},
		{"a spilled page past the limit still counts", append(append([]step{{"truncate", 101, false}},
			notes(101, 130)...), step{"truncate", 115, true})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c truncCache
			for i, s := range tt.steps {
				switch s.op {
				case "note":
					c.note(s.key)
				case "forget":
					c.forget(s.key)
				case "truncate":
					if got := c.mustTruncate(s.key); got != s.want {
						t.Fatalf("step %d: truncate to %d calls the default cache: %v, want %v", i, s.key, got, s.want)
					}
					c.limit, c.n, c.spilled = s.key, 0, 0
				}
			}
		})
	}
}

// tcStep is one call in TestTruncCache: "note", "forget" or "truncate",
// with whether a truncation calls the default cache.
type tcStep struct {
	op   string
	key  uint32
	want bool
}

// notes returns a note step for each page number from lo to hi.
func notes(lo, hi uint32) []tcStep {
	var s []tcStep
	for k := lo; k <= hi; k++ {
		s = append(s, tcStep{"note", k, false})
	}
	return s
}

// TestPageCacheWrapper drives the wrapper as SQLite does, over SQLite's
// own cache, and checks which pages each truncation leaves.
func TestPageCacheWrapper(t *testing.T) {
	tls := libc.NewTLS()
	defer tls.Close()
	if rc := sqlite3.Xsqlite3_initialize(tls); rc != sqlite3.SQLITE_OK {
		t.Fatalf("sqlite3_initialize: %d", rc)
	}
	p := tcCreate(tls, 4096, 64, 1)
	if p == 0 {
		t.Fatal("tcCreate: out of memory")
	}
	defer tcDestroy(tls, p)
	tcCachesize(tls, p, 1000)
	fetch := func(key uint32) uintptr {
		t.Helper()
		pg := tcFetch(tls, p, key, 2)
		if pg == 0 {
			t.Fatalf("fetching page %d: out of memory", key)
		}
		return pg
	}
	has := func(key uint32) bool { return tcFetch(tls, p, key, 0) != 0 }
	const lockPage = 262145
	for k := uint32(1); k <= 10; k++ {
		tcUnpin(tls, p, fetch(k), 0)
	}
	tcTruncate(tls, p, 11) // the end of a transaction on a file of 10 pages
	if n := tcPagecount(tls, p); n != 10 {
		t.Fatalf("%d pages after truncating nothing, want 10", n)
	}
	// A transaction grows the file by 5 pages and rolls back.
	for k := uint32(11); k <= 15; k++ {
		fetch(k)
	}
	tcTruncate(tls, p, 11)
	if n := tcPagecount(tls, p); n != 10 || has(11) || has(15) {
		t.Fatalf("after a rolled-back growth: %d pages, page 11 cached %v, page 15 cached %v; want 10, false, false", tcPagecount(tls, p), has(11), has(15))
	}
	// A balance files a new page under the lock page's number for a
	// moment, then under its own; the next truncation has nothing to drop.
	pg := fetch(11)
	tcRekey(tls, p, pg, 11, lockPage)
	tcRekey(tls, p, pg, lockPage, 12)
	tcUnpin(tls, p, pg, 0)
	if c := tcOf(p); c.mustTruncate(13) {
		t.Fatalf("after a renumbering back from the lock page, truncation to 13 must not reach the default cache (high %v, spilled %d)", c.high[:c.n], c.spilled)
	}
	tcTruncate(tls, p, 13)
	if !has(12) || tcPagecount(tls, p) != 11 {
		t.Fatalf("page 12 cached %v, %d pages; want true, 11", has(12), tcPagecount(tls, p))
	}
	// A page left under the lock page's number is dropped.
	pg = fetch(13)
	tcRekey(tls, p, pg, 13, lockPage)
	tcTruncate(tls, p, 13)
	if has(lockPage) || tcPagecount(tls, p) != 11 {
		t.Fatalf("the lock page cached %v, %d pages; want false, 11", has(lockPage), tcPagecount(tls, p))
	}
	// A lower limit drops what lies past it.
	tcTruncate(tls, p, 6)
	if has(6) || !has(5) || tcPagecount(tls, p) != 5 {
		t.Fatalf("after truncating to 6: page 6 cached %v, page 5 cached %v, %d pages; want false, true, 5", has(6), has(5), tcPagecount(tls, p))
	}
}

// TestPageCacheRollback grows a file in a transaction that rolls back,
// then grows it again with other content, in both journal modes. The
// rollback leaves pages past the end of the file in the cache; were they
// kept, the second growth would read the first one's content.
func TestPageCacheRollback(t *testing.T) {
	for _, mode := range []string{"WAL", "DELETE"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "rollback.db")
			db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode("+mode+")&_pragma=synchronous(OFF)&_pragma=cache_size(-4000)")
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			mustExec := func(q string, args ...any) {
				t.Helper()
				if _, err := db.ExecContext(ctx, q, args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			row := func(i int, gen byte) []byte { return bytes.Repeat([]byte{gen, byte(i), byte(i >> 8)}, 300) }
			mustExec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)`)
			mustExec(`CREATE INDEX t_v ON t (v)`)
			for i := range 50 {
				mustExec(`INSERT INTO t (id, v) VALUES (?, ?)`, i, row(i, 'a'))
			}
			for round := range 3 {
				tx, err := db.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				for i := 50; i < 2000; i++ {
					if _, err := tx.ExecContext(ctx, `INSERT INTO t (id, v) VALUES (?, ?)`, i, row(i, 'x')); err != nil {
						t.Fatal(err)
					}
				}
				if err := tx.Rollback(); err != nil {
					t.Fatal(err)
				}
				gen := byte('b' + round)
				for i := 50; i < 1200; i++ {
					mustExec(`INSERT OR REPLACE INTO t (id, v) VALUES (?, ?)`, i, row(i, gen))
				}
				var check string
				if err := db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
					t.Fatalf("round %d: integrity_check = %q, %v", round, check, err)
				}
				rows, err := db.QueryContext(ctx, `SELECT id, v FROM t ORDER BY id`)
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for rows.Next() {
					var id int
					var v []byte
					if err := rows.Scan(&id, &v); err != nil {
						t.Fatal(err)
					}
					want := row(id, 'a')
					if id >= 50 {
						want = row(id, gen)
					}
					if id != n || !bytes.Equal(v, want) {
						t.Fatalf("round %d: row %d (want id %d) holds %q..., want %q...", round, id, n, v[:6], want[:6])
					}
					n++
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				rows.Close()
				if n != 1200 {
					t.Fatalf("round %d: %d rows, want 1200", round, n)
				}
				mustExec(`DELETE FROM t WHERE id >= 50`)
				mustExec(`PRAGMA wal_checkpoint(TRUNCATE)`)
			}
		})
	}
}
