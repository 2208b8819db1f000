package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

func TestCountCache(t *testing.T) {
	k := countKey{text: "HELLO"}
	for _, c := range []struct {
		name     string
		puts     [][2]int64 // n, upTo
		wantN    int64
		wantUpTo int64
	}{
		{"one", [][2]int64{{5, 100}}, 5, 100},
		{"forward", [][2]int64{{5, 100}, {7, 120}}, 7, 120},
		{"an older count is dropped", [][2]int64{{7, 120}, {5, 100}}, 7, 120},
		{"the same id keeps the first", [][2]int64{{7, 120}, {7, 120}}, 7, 120},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cache countCache
			if _, _, ok := cache.get(k); ok {
				t.Fatal("an empty cache has an entry")
			}
			for _, p := range c.puts {
				cache.put(k, p[0], p[1])
			}
			n, upTo, ok := cache.get(k)
			if !ok || n != c.wantN || upTo != c.wantUpTo {
				t.Fatalf("get = %d, %d, %v; want %d, %d, true", n, upTo, ok, c.wantN, c.wantUpTo)
			}
		})
	}
}

func TestCountCacheBounded(t *testing.T) {
	var cache countCache
	for i := range countCacheEntries + 100 {
		cache.put(countKey{text: fmt.Sprint(i)}, int64(i), 1)
		if i == countCacheEntries-1 {
			cache.get(countKey{text: "0"}) // used last before the cache fills: stays
		}
	}
	if got := cache.len(); got != countCacheEntries {
		t.Fatalf("%d entries, want %d", got, countCacheEntries)
	}
	if _, _, ok := cache.get(countKey{text: "0"}); !ok {
		t.Error("the entry used recently was evicted")
	}
	if _, _, ok := cache.get(countKey{text: "1"}); ok {
		t.Error("the least recently used entry was kept")
	}
	if _, _, ok := cache.get(countKey{text: fmt.Sprint(countCacheEntries + 99)}); !ok {
		t.Error("the newest entry is missing")
	}
	long := countKey{from: "+12345", text: strings.Repeat("x", countKeyMaxLen)}
	cache.put(long, 1, 1)
	if _, _, ok := cache.get(long); ok {
		t.Error("a key longer than countKeyMaxLen was kept")
	}
}

func TestCountCacheConcurrent(t *testing.T) {
	var cache countCache
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				k := countKey{text: fmt.Sprint(i % 50)}
				cache.put(k, int64(i), int64(g*1000+i))
				if n, upTo, ok := cache.get(k); ok && (n < 0 || upTo < 0) {
					t.Errorf("get(%v) = %d, %d", k, n, upTo)
				}
			}
		}()
	}
	wg.Wait()
}

// openCountsFile opens a fresh database file, inserts msgs and waits until
// they are indexed; it returns the store, the file and its URL.
func openCountsFile(t *testing.T, msgs []msgsvc.Message) (db *DB, path, url string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "app.db")
	url = fileURL(t, path)
	db = openURL(t, url)
	if _, err := db.Insert(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	return db, path, url
}

// closeStore closes db and fails t on an error.
func closeStore(t *testing.T, db *DB) {
	t.Helper()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// execFile runs query on the database file at path, which no store has
// open, outside the store.
func execFile(t *testing.T, path, query string, args ...any) {
	t.Helper()
	conn, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// savedCounts returns the number of rows in search_counts.
func savedCounts(t *testing.T, db *DB) int {
	t.Helper()
	var n int
	if err := db.read.QueryRowContext(context.Background(), `SELECT count(*) FROM search_counts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// maxMessageID returns the largest id in messages.
func maxMessageID(t *testing.T, db *DB) int64 {
	t.Helper()
	var id int64
	if err := db.read.QueryRowContext(context.Background(), `SELECT coalesce(max(id), 0) FROM messages`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// checkTotal fails t unless List answers q with the total of a scan of msgs.
func checkTotal(t *testing.T, db *DB, msgs []msgsvc.Message, q msgsvc.Query) {
	t.Helper()
	page, err := db.List(context.Background(), q)
	if err != nil {
		t.Fatalf("List(%+v): %v", q, err)
	}
	if _, _, want := scanList(msgs, q); page.Total != want {
		t.Errorf("q %q from %q since %v: total %d, want %d", q.Text, q.From, q.Since, page.Total, want)
	}
}

// TestCountsSurviveReopen: the counts that searches remember are saved by
// Close and loaded by Open, key for key, before any search; List still
// answers exact totals from them, also once rows were added since.
func TestCountsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	// Enough messages of bigSender that a search of them is remembered.
	msgs := searchData("a", 0, 1000)
	db, _, url := openCountsFile(t, msgs)
	since := time.Date(2025, 3, 16, 12, 0, 0, 0, time.UTC)
	// Each filter of the key is set in one of them, so a load that mixed up
	// columns would miss a key.
	qs := []msgsvc.Query{
		{Text: "ALPHA"},
		{Text: "beta", From: bigSender},
		{Text: "alpha", Since: &since},
		{Text: "a", From: bigSender, Since: &since},
		{Text: `"quoted"`},
	}
	saved := rememberTotals(t, db, msgs, qs)
	remembered := db.counts.all()
	closeStore(t, db)

	db = openURL(t, url)
	if got := db.counts.len(); got != len(remembered) {
		t.Errorf("%d counts loaded, %d saved", got, len(remembered))
	}
	for k, want := range saved {
		if n, upTo, ok := db.counts.get(k); !ok || n != want.n || upTo != want.upTo {
			t.Errorf("after reopening, the count of %+v is %d up to %d (%v), want %d up to %d", k, n, upTo, ok, want.n, want.upTo)
		}
	}
	for _, step := range []struct {
		name string
		more []msgsvc.Message
	}{
		{"reopened", nil},
		{"rows added since", searchData("b", 1000, 200)},
	} {
		t.Run(step.name, func(t *testing.T) {
			if len(step.more) > 0 {
				if _, err := db.Insert(ctx, step.more); err != nil {
					t.Fatal(err)
				}
				msgs = append(msgs, step.more...)
			}
			maxID := maxMessageID(t, db)
			for _, q := range qs {
				checkTotal(t, db, msgs, q)
				if _, upTo, ok := db.counts.get(totalKey(q)); !ok || upTo != maxID {
					t.Errorf("the count of %+v is up to %d (%v), want up to %d", q, upTo, ok, maxID)
				}
			}
		})
	}
}

// TestLoadedCountIsUsed: List answers from the loaded count, not by
// counting again: a count altered in the table shows in the total, exactly
// as saved and brought up to date with rows added since.
func TestLoadedCountIsUsed(t *testing.T) {
	ctx := context.Background()
	msgs := searchData("a", 0, 600)
	db, path, url := openCountsFile(t, msgs)
	q := msgsvc.Query{Text: "alpha", Limit: 10}
	checkTotal(t, db, msgs, q)
	closeStore(t, db)
	const extra = 1000
	execFile(t, path, `UPDATE search_counts SET n = n + ? WHERE sender = '' AND since = '' AND text = ?`, extra, msgsvc.Fold(q.Text))

	db = openURL(t, url)
	more := searchData("b", 600, 100)
	for _, step := range []struct {
		name string
		more []msgsvc.Message
	}{
		{"as saved", nil},
		{"brought up to date", more},
	} {
		t.Run(step.name, func(t *testing.T) {
			if _, err := db.Insert(ctx, step.more); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, step.more...)
			page, err := db.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, want := scanList(msgs, q); page.Total != want+extra {
				t.Errorf("total %d, want the altered count %d", page.Total, want+extra)
			}
		})
	}
}

// TestSavedCountsBeyondMaxID: a saved count up to an id above the largest
// in messages cannot have been taken on these messages, and then none of
// the saved counts is loaded, nor kept.
func TestSavedCountsBeyondMaxID(t *testing.T) {
	for _, c := range []struct {
		name string
		past int64 // how far past max(id) the added row counts
		load bool
	}{
		{"up to max id", 0, true},
		{"past max id", 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			msgs := searchData("a", 0, 300)
			db, path, url := openCountsFile(t, msgs)
			alpha := msgsvc.Query{Text: "alpha", Limit: 10}
			checkTotal(t, db, msgs, alpha)
			maxID := maxMessageID(t, db)
			closeStore(t, db)
			// A count of beta that is wrong for any table with more than
			// one match, as one from another table would be.
			beta := msgsvc.Query{Text: "beta", Limit: 10}
			execFile(t, path, `INSERT INTO search_counts (sender, since, text, n, up_to) VALUES ('', '', ?, 1, ?)`,
				msgsvc.Fold(beta.Text), maxID+c.past)

			db = openURL(t, url)
			_, _, alphaLoaded := db.counts.get(totalKey(alpha))
			_, _, betaLoaded := db.counts.get(totalKey(beta))
			if alphaLoaded != c.load || betaLoaded != c.load {
				t.Fatalf("alpha's count loaded: %v, beta's: %v; want %v", alphaLoaded, betaLoaded, c.load)
			}
			if n := savedCounts(t, db); c.load != (n > 0) {
				t.Errorf("%d counts left in search_counts", n)
			}
			if c.load {
				return // beta's count is wrong on purpose
			}
			// The messages that take the ids the dropped count claimed.
			more := searchData("b", 300, 20)
			if _, err := db.Insert(context.Background(), more); err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, more...)
			checkTotal(t, db, msgs, alpha)
			checkTotal(t, db, msgs, beta)
		})
	}
}

// TestLoadCountsBounded: from a table holding more counts than the cache,
// Open loads countCacheEntries of them, those counted the furthest.
func TestLoadCountsBounded(t *testing.T) {
	db, path, url := openCountsFile(t, searchData("a", 0, 10))
	closeStore(t, db)
	const extra = 10
	// Counts of made-up keys, all true of an empty match: the last extra
	// rows count up to id 2, the rest up to id 1.
	execFile(t, path, `WITH RECURSIVE i(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM i WHERE x < ?)
		INSERT INTO search_counts (sender, since, text, n, up_to)
		SELECT '', '', 'no such text ' || x, 0, iif(x > ?, 2, 1) FROM i`,
		countCacheEntries+extra, countCacheEntries)

	db = openURL(t, url)
	if got := db.counts.len(); got != countCacheEntries {
		t.Fatalf("%d counts loaded, want %d", got, countCacheEntries)
	}
	for x := countCacheEntries + 1; x <= countCacheEntries+extra; x++ {
		if _, upTo, ok := db.counts.get(countKey{text: fmt.Sprint("no such text ", x)}); !ok || upTo != 2 {
			t.Errorf("count %d, up to id 2: loaded %v up to %d", x, ok, upTo)
		}
	}
}

// TestCloseAfterWALSyncFailure: once a WAL fsync has failed, Close still
// returns, and saves no counts: the file may lack rows they count.
func TestCloseAfterWALSyncFailure(t *testing.T) {
	msgs := searchData("a", 0, 300)
	db, _, url := openCountsFile(t, msgs)
	checkTotal(t, db, msgs, msgsvc.Query{Text: "alpha", Limit: 10})
	g := newSyncGate(db)
	res := insertAsync(db, "lost")
	g.wait(t)
	g.release <- errors.New("input/output error")
	if r := <-res; !errors.Is(r.err, errWALSync) {
		t.Fatalf("insert covered by a failed fsync: err %v, want errWALSync", r.err)
	}
	// A count taken now counts the row whose fsync failed.
	hello := msgsvc.Query{Text: "hello", Limit: 10}
	checkTotal(t, db, append(msgs, testMessage("lost")), hello)
	if n, _, ok := db.counts.get(totalKey(hello)); !ok || n != 1 {
		t.Fatalf("the count of hello, %d (%v), was not remembered", n, ok)
	}
	closed := make(chan error, 1)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s")
	}

	db = openURL(t, url)
	if n := savedCounts(t, db); n != 0 {
		t.Errorf("%d counts saved after a failed WAL fsync", n)
	}
	if n := db.counts.len(); n != 0 {
		t.Errorf("%d counts loaded after a failed WAL fsync", n)
	}
}

// TestCountsNotSavedInMemory: a :memory: store keeps its counts to itself,
// and closes cleanly with some.
func TestCountsNotSavedInMemory(t *testing.T) {
	db := openURL(t, "sqlite://:memory:")
	msgs := searchData("a", 0, 100)
	if _, err := db.Insert(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	checkTotal(t, db, msgs, msgsvc.Query{Text: "alpha", Limit: 10})
	if savedCounts(t, db) != 0 {
		t.Error("counts saved before Close")
	}
	closeStore(t, db)
}

// TestCountCacheUnsaved: a count is unsaved until markSaved records it as
// written, and again once it moves forward; counts dropped for room are
// listed for a save to delete, up to countCacheEntries of them.
func TestCountCacheUnsaved(t *testing.T) {
	a, b := countKey{text: "a"}, countKey{text: "b"}
	unsaved := func(c *countCache) []countKey {
		var keys []countKey
		for _, e := range c.unsaved() {
			keys = append(keys, e.key)
		}
		return keys
	}
	for _, c := range []struct {
		name string
		do   func(c *countCache)
		want []countKey // most recently used first
	}{
		{"new counts are unsaved", func(c *countCache) {
			c.put(a, 1, 10)
			c.put(b, 2, 10)
		}, []countKey{b, a}},
		{"saved counts are not", func(c *countCache) {
			c.put(a, 1, 10)
			c.put(b, 2, 10)
			c.markSaved(c.all())
		}, nil},
		{"a count that moves forward is unsaved again", func(c *countCache) {
			c.put(a, 1, 10)
			c.put(b, 2, 10)
			c.markSaved(c.all())
			c.put(a, 3, 20)
		}, []countKey{a}},
		{"a count that moved forward while it was written stays unsaved", func(c *countCache) {
			c.put(a, 1, 10)
			written := c.unsaved()
			c.put(a, 3, 20)
			c.markSaved(written)
		}, []countKey{a}},
		{"an older count changes nothing", func(c *countCache) {
			c.put(a, 3, 20)
			c.markSaved(c.all())
			c.put(a, 1, 10)
		}, nil},
		{"a count dropped and counted again is unsaved", func(c *countCache) {
			c.put(a, 1, 10)
			c.markSaved(c.all())
			for i := range countCacheEntries {
				c.put(countKey{text: fmt.Sprint(i)}, 0, 10)
			}
			c.markSaved(c.all())
			c.put(a, 1, 10)
		}, []countKey{a}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cache countCache
			c.do(&cache)
			if got := unsaved(&cache); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("unsaved: %v, want %v", got, c.want)
			}
		})
	}

	t.Run("dropped counts are listed once", func(t *testing.T) {
		var cache countCache
		for i := range countCacheEntries + 3 {
			cache.put(countKey{text: fmt.Sprint(i)}, 0, 1)
		}
		keys, lost := cache.takeEvicted()
		if fmt.Sprint(keys) != fmt.Sprint([]countKey{{text: "0"}, {text: "1"}, {text: "2"}}) || lost {
			t.Errorf("takeEvicted = %v, %v; want the three oldest, false", keys, lost)
		}
		if keys, lost := cache.takeEvicted(); len(keys) != 0 || lost {
			t.Errorf("takeEvicted again = %v, %v; want none", keys, lost)
		}
	})
	t.Run("past countCacheEntries dropped counts, a loss", func(t *testing.T) {
		var cache countCache
		for i := range 2*countCacheEntries + 1 {
			cache.put(countKey{text: fmt.Sprint(i)}, 0, 1)
		}
		if keys, lost := cache.takeEvicted(); len(keys) != countCacheEntries || !lost {
			t.Errorf("takeEvicted: %d keys, lost %v; want %d, true", len(keys), lost, countCacheEntries)
		}
		cache.loseEvicted()
		if keys, lost := cache.takeEvicted(); len(keys) != 0 || !lost {
			t.Errorf("after loseEvicted, takeEvicted = %v, %v; want none, true", keys, lost)
		}
	})
}
