package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"

	"github.com/msgsvc/msgsvc"
)

// indexBun returns db's indexer connection as a bun.DB, for tests that
// change the index file by hand. It must not be closed: it is the store's.
func indexBun(db *DB) *bun.DB { return bun.NewDB(db.idx, sqlitedialect.New()) }

// openRaw opens the database file at path on one connection, with its
// index file attached as the store attaches it.
func openRaw(path string) (*sql.DB, error) {
	raw, err := openAttached("file:"+path, indexURI("file:"+path))
	if err != nil {
		return nil, err
	}
	raw.SetMaxOpenConns(1)
	return raw, nil
}

// copyFile copies the file src to dst, which it creates or truncates.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// taggedMessages returns n messages whose texts all hold tag, and each a
// word of its own.
func taggedMessages(prefix, tag string, from, n int) []msgsvc.Message {
	msgs := make([]msgsvc.Message, 0, n)
	for i := from; i < from+n; i++ {
		m := testMessage(fmt.Sprintf("%s%05d", prefix, i))
		text := fmt.Sprintf("%s uniq%sx%05d", tag, prefix, i)
		m.Text = &text
		msgs = append(msgs, m)
	}
	return msgs
}

// searchIDs returns the message ids of every match of q, in list order,
// walking its pages with cursors, and checks that each page's total agrees.
func searchIDs(t *testing.T, db *DB, q string) []string {
	t.Helper()
	var ids []string
	var total int64 = -1
	query := msgsvc.Query{Text: q, Limit: msgsvc.MaxLimit}
	for {
		page, err := db.List(context.Background(), query)
		if err != nil {
			t.Fatalf("List(q=%q): %v", q, err)
		}
		if total >= 0 && page.Total != total {
			t.Fatalf("q=%q: total %d, then %d", q, total, page.Total)
		}
		total = page.Total
		for _, m := range page.Messages {
			ids = append(ids, m.MessageID)
		}
		if page.Next == nil {
			break
		}
		query.After = page.Next
	}
	if total != int64(len(ids)) {
		t.Fatalf("q=%q: total %d for %d messages", q, total, len(ids))
	}
	return ids
}

// idsOf returns the message ids of msgs, sorted as List sorts messages of
// one instant.
func idsOf(msgs []msgsvc.Message) []string {
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.MessageID)
	}
	slices.Sort(ids)
	return ids
}

// indexState reads the index file's state through the indexer's
// connection: its store, its watermarks, and the store_id of the messages.
func readIndexState(t *testing.T, db *DB) (store, mainStore string, to, wordsTo int64) {
	t.Helper()
	err := db.idx.QueryRow(`SELECT store, (SELECT value FROM main.store_id), indexed_to, words_indexed_to FROM idx.fts_state`).
		Scan(&store, &mainStore, &to, &wordsTo)
	if err != nil {
		t.Fatal(err)
	}
	return store, mainStore, to, wordsTo
}

// TestIndexFileChecked checks that an index file that does not belong to
// the messages beside it is built anew on open, and that searches are
// exact once it has caught up: without the check, each case below returns
// rows that are not there or misses rows that are.
func TestIndexFileChecked(t *testing.T) {
	ctx := context.Background()
	const n = 3 * indexChunk / 2
	base := taggedMessages("a", "alphaword", 0, n)
	xs := taggedMessages("x", "xenonword", n, n/2)
	ys := taggedMessages("y", "yttriumword", n, n/2)

	// build makes a database file holding base and then more, closed, and
	// returns its path.
	build := func(t *testing.T, more []msgsvc.Message) string {
		t.Helper()
		db, url := openFile(t)
		for _, batch := range [][]msgsvc.Message{base, more} {
			if len(batch) == 0 {
				continue
			}
			if _, err := db.Insert(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		waitIndexed(t, db)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return strings.TrimPrefix(url, "sqlite:///")
	}
	tests := []struct {
		name string
		// setup returns a closed database file whose messages are want,
		// with an index file that may not fit them.
		setup func(t *testing.T) (path string, want []msgsvc.Message)
		// rebuilt says whether the index must be built anew.
		rebuilt bool
	}{
		{"its own index", func(t *testing.T) (string, []msgsvc.Message) {
			return build(t, xs), append(slices.Clone(base), xs...)
		}, false},
		{"another database's index", func(t *testing.T) (string, []msgsvc.Message) {
			path := build(t, xs)
			other := build(t, ys)
			copyFile(t, other+indexSuffix, path+indexSuffix)
			return path, append(slices.Clone(base), xs...)
		}, true},
		{"an older copy of the messages", func(t *testing.T) (string, []msgsvc.Message) {
			path := build(t, nil)
			old := filepath.Join(t.TempDir(), "old.db")
			copyFile(t, path, old)
			db := openURL(t, "sqlite:///"+path)
			if _, err := db.Insert(ctx, xs); err != nil {
				t.Fatal(err)
			}
			waitIndexed(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			copyFile(t, old, path) // the index stays ahead of it
			return path, base
		}, true},
		{"a copy that went another way", func(t *testing.T) (string, []msgsvc.Message) {
			// As many messages on both sides, different ones: only
			// the mark tells.
			path := build(t, nil)
			fork := filepath.Join(t.TempDir(), "fork.db")
			copyFile(t, path, fork)
			db := openURL(t, "sqlite:///"+path)
			if _, err := db.Insert(ctx, xs); err != nil {
				t.Fatal(err)
			}
			waitIndexed(t, db)
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			db = openURL(t, "sqlite:///"+fork)
			if _, err := db.Insert(ctx, ys); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			copyFile(t, path+indexSuffix, fork+indexSuffix)
			return fork, append(slices.Clone(base), ys...)
		}, true},
		{"an index of another version", func(t *testing.T) (string, []msgsvc.Message) {
			path := build(t, xs)
			raw, err := sql.Open("sqlite", path+indexSuffix)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, indexSchemaVersion+1)); err != nil {
				t.Fatal(err)
			}
			return path, append(slices.Clone(base), xs...)
		}, true},
		{"a corrupt index file", func(t *testing.T) (string, []msgsvc.Message) {
			path := build(t, xs)
			if err := os.WriteFile(path+indexSuffix, []byte(strings.Repeat("not a database ", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
			return path, append(slices.Clone(base), xs...)
		}, true},
		{"no index file", func(t *testing.T) (string, []msgsvc.Message) {
			path := build(t, xs)
			if err := os.Remove(path + indexSuffix); err != nil {
				t.Fatal(err)
			}
			return path, append(slices.Clone(base), xs...)
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Under the race detector: one index kept, one rebuilt after a
			// failed check, one built where there was none.
			slowUnderRace(t, tc.name == "its own index" || tc.name == "a corrupt index file" || tc.name == "no index file")
			path, want := tc.setup(t)
			db := openURL(t, "sqlite:///"+path)
			store, mainStore, to, _ := readIndexState(t, db)
			if store != mainStore {
				t.Fatalf("index of store %q opened with store %q", store, mainStore)
			}
			// Nothing was inserted since open: a rebuilt index starts
			// from 0, and the indexer has not had a whole indexIdle yet.
			if rebuilt := to < int64(len(want)); rebuilt != tc.rebuilt {
				t.Fatalf("indexed_to %d of %d messages right after open: rebuilt %v, want %v", to, len(want), rebuilt, tc.rebuilt)
			}
			waitIndexed(t, db)
			for _, q := range []struct {
				text string
				want []msgsvc.Message
			}{
				{"alphaword", base},
				{"xenonword", xs},
				{"yttriumword", ys},
				{"uniqax00007", base[7:8]},
				{"nonword", nil},
			} {
				var wantIDs []string
				for _, m := range want {
					if strings.Contains(*m.Text, q.text) {
						wantIDs = append(wantIDs, m.MessageID)
					}
				}
				slices.Sort(wantIDs)
				if got := searchIDs(t, db, q.text); !slices.Equal(got, wantIDs) {
					t.Errorf("q=%q: %d ids %.3v…, want %d %.3v…", q.text, len(got), got, len(wantIDs), wantIDs)
				}
			}
		})
	}
}

// TestIndexHoldsOnlySyncedRows checks that the indexer never indexes a row
// whose WAL frames are not synced yet: a power loss could take such a row
// back while the index file kept it.
func TestIndexHoldsOnlySyncedRows(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	if _, err := db.Insert(ctx, taggedMessages("a", "alphaword", 0, 10)); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	g := newSyncGate(db)
	held := insertAsync(db, "held")
	g.wait(t)        // committed, its fsync held
	db.wakeIndexer() // as a sync would: it indexes what it may after indexIdle
	time.Sleep(3 * indexIdle)
	// Errors, not Fatal, until the fsync is released: Close waits for it.
	if _, _, to, wordsTo := readIndexState(t, db); to != 10 || wordsTo != 10 {
		t.Errorf("indexed to %d (words %d) while message 11 waits for its fsync; want 10", to, wordsTo)
	}
	// The row is visible and found, through the unindexed tail.
	if got := searchIDs(t, db, "hello held"); !slices.Equal(got, []string{"held"}) {
		t.Errorf("q=%q while unindexed: %v", "hello held", got)
	}
	g.release <- nil
	if res := <-held; res.err != nil || !res.created[0] {
		t.Fatalf("insert: %+v", res)
	}
	db.syncHook = nil
	waitIndexed(t, db)
	if got := searchIDs(t, db, "hello held"); !slices.Equal(got, []string{"held"}) {
		t.Fatalf("q=%q once indexed: %v", "hello held", got)
	}
}

// TestIndexMovesOut checks the migration that moves the search indexes out
// of a database that held them (schema 7): it drops them there, and the
// index file is built from the messages.
func TestIndexMovesOut(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	msgs := taggedMessages("a", "alphaword", 0, indexChunk+10)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	path := strings.TrimPrefix(url, "sqlite:///")
	// Put the database back at schema 7: the tables as the migrations
	// that made them left them, filled, and no store_id.
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(1)
	moved := len(sqliteMigrations)
	if !strings.Contains(sqliteMigrations[moved-1], "CREATE TABLE store_id") {
		t.Fatal("the last migration is not the one that moves the indexes out")
	}
	for _, step := range []string{
		sqliteMigrations[1], // messages_fts, rebuilt from messages
		sqliteMigrations[3], // fts_state
		sqliteMigrations[6], // the word index, empty
		`DROP TABLE store_id`,
		fmt.Sprintf(`DELETE FROM schema_migrations WHERE version = %d`, moved),
	} {
		if _, err := raw.Exec(step); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}

	db = openURL(t, url)
	var left []string
	rows, err := db.read.Query(`SELECT name FROM main.sqlite_schema WHERE name IN ('messages_fts', 'fts_state', 'words', 'words_fts', 'message_words')`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		left = append(left, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	if len(left) > 0 {
		t.Fatalf("tables left in the database file after the migration: %v", left)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping after the migration: %v", err)
	}
	waitIndexed(t, db)
	if got := searchIDs(t, db, "alphaword"); !slices.Equal(got, idsOf(msgs)) {
		t.Errorf("q=alphaword after the migration: %d ids, want %d", len(got), len(msgs))
	}
	if got := searchIDs(t, db, "uniqax00042"); !slices.Equal(got, []string{"a00042"}) {
		t.Errorf("q=uniqax00042 after the migration: %v", got)
	}
}
