package sqlstore

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/uptrace/bun"
)

// Exact counts of text searches, remembered per database.
//
// Counting every match of a common q is most of a search's cost, and a
// client paging through the results asks for the same count on every page.
// Messages are only ever appended, each with an id above every id committed
// before it (an INTEGER PRIMARY KEY without AUTOINCREMENT takes max(id)+1,
// and rows are never deleted or updated), so the number of matches among the
// rows with id <= upTo never changes once a snapshot holding upTo is
// committed. A later snapshot's count is that number plus the matches above
// upTo, which a range of the rowid b-tree answers. A snapshot older than an
// entry (its largest id below upTo) cannot use it and counts by itself.
//
// On a SQLite file the counts outlive the process: Close saves them in
// search_counts and Open loads them back (saveCounts, loadCounts), so a
// restart does not count every common q anew. The writer also saves them
// while the store runs, at most every countSaveEvery and only when they
// changed, so that a crash (a kill, a power loss) loses at most that much
// of them.
//
// Postgres uses the same cache with another watermark, a transaction id
// (see countMatchesPostgres): there, upTo is a snapshot's xmin and n counts
// the matches among the rows with xid below it. Its counts are saved and
// loaded the same way, in a table of the database that every replica
// shares (postgres_counts.go).

// countSaveEvery is how often, at most, the writer saves the remembered
// counts while the store runs (saveCountsDue). A save is one transaction
// between two batches, a few ms for a full cache: on SQLite it replaces
// every row of search_counts, on Postgres it upserts them.
const countSaveEvery = time.Minute

// countSaveTimeout bounds one save of the counts on Postgres, so that a
// server that does not answer holds up neither the writer nor Close for
// long; the counts are only a cache.
const countSaveTimeout = 10 * time.Second

// countSaveContext returns the context of one save of the counts: bounded
// by countSaveTimeout on Postgres, and unbounded on SQLite, whose save
// cannot wait on a network. There a context that can be done would cost a
// goroutine per statement (the driver watches it to interrupt SQLite), and
// a save of a full cache runs thousands of statements.
func (db *DB) countSaveContext() (context.Context, context.CancelFunc) {
	if db.postgres {
		return context.WithTimeout(context.Background(), countSaveTimeout)
	}
	return context.Background(), func() {}
}

// countCacheEntries bounds the number of remembered counts.
const countCacheEntries = 4096

// countKeyMaxLen is the longest from+q (in bytes) whose count is
// remembered; with countCacheEntries it bounds the cache's memory to a few
// MiB.
const countKeyMaxLen = 512

// countDeltaMax is the most rows above a remembered count that a search
// tests one by one to bring it up to date; further behind, it counts anew.
const countDeltaMax = 2048

// countKey names one count: the filters of a List call that decide its
// total (not its position or page).
type countKey struct {
	from  string // sender, "" for any
	since string // msgsvc.InstantKey of since, "" for none
	text  string // msgsvc.Fold of q
	// server is the system identifier of the Postgres cluster whose
	// transaction ids the count's watermark is ("" on SQLite): a count
	// never serves a snapshot of another cluster, whose counter may be
	// behind (a restore elsewhere, a logical replica taking over).
	server string
}

type countEntry struct {
	key  countKey
	n    int64 // matches among the rows with id <= upTo
	upTo int64
}

// countCache is a bounded LRU of exact counts. Its zero value is empty and
// ready to use; it is safe for concurrent use.
type countCache struct {
	mu      sync.Mutex
	entries map[countKey]*list.Element // of *countEntry
	order   list.List                  // most recently used first
	changes uint64                     // counts added, moved forward or cleared so far
}

func (k countKey) cacheable() bool {
	return len(k.from)+len(k.since)+len(k.text) <= countKeyMaxLen
}

// get returns the count remembered for k: n matches among the rows with
// id <= upTo.
func (c *countCache) get(k countKey) (n, upTo int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return 0, 0, false
	}
	c.order.MoveToFront(el)
	e := el.Value.(*countEntry)
	return e.n, e.upTo, true
}

// put remembers that n rows with id <= upTo match k. A count up to a
// smaller id than the one remembered is dropped: entries only move forward.
func (c *countCache) put(k countKey, n, upTo int64) {
	if !k.cacheable() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.order.MoveToFront(el)
		if e := el.Value.(*countEntry); upTo > e.upTo {
			e.n, e.upTo = n, upTo
			c.changes++
		}
		return
	}
	c.changes++
	if c.entries == nil {
		c.entries = make(map[countKey]*list.Element)
	}
	c.entries[k] = c.order.PushFront(&countEntry{key: k, n: n, upTo: upTo})
	for c.order.Len() > countCacheEntries {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*countEntry).key)
	}
}

// clear forgets every count.
func (c *countCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.order.Init()
	c.changes++
}

// version returns a number that changes whenever the remembered counts do.
func (c *countCache) version() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes
}

// len returns the number of remembered counts.
func (c *countCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// all returns a copy of every remembered count, most recently used first.
func (c *countCache) all() []countEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	entries := make([]countEntry, 0, c.order.Len())
	for el := c.order.Front(); el != nil; el = el.Next() {
		entries = append(entries, *el.Value.(*countEntry))
	}
	return entries
}

// persistsCounts reports whether the count cache is kept in search_counts
// across restarts: on Postgres (postgres_counts.go) and on a SQLite file. A
// :memory: database (the only SQLite store without a WAL file) ends with
// the store.
func (db *DB) persistsCounts() bool {
	return db.postgres || db.walPath != ""
}

// startCountSaves starts the writer's saves of counts (saveCountsDue) from
// what loadCounts loaded, which is saved already. Open calls it before the
// writer starts.
func (db *DB) startCountSaves() {
	db.countSaveNanos.Store(int64(countSaveEvery))
	db.countsSavedAt, db.countsSaved = time.Now(), db.counts.version()
}

// loadCounts fills the count cache with the counts that the last Close
// saved, or the last save while the store ran. Open calls it before the
// writer starts. An error means the database cannot be read, and fails
// Open. What follows is SQLite's; Postgres's is loadCountsPostgres.
//
// A saved count holds only for the messages it was taken on: n matches
// among the rows with id <= up_to, with every later row above up_to. Close
// saves after the rows it counts are committed (see saveCounts), so up_to
// is never above max(id) of the same table. If one is, the messages table
// is not the one the counts were taken on (say it was restored from an
// older copy), and new rows would take ids at or below that up_to, which
// a remembered count never tests: every saved count is then dropped, from
// the table too, lest they load once the ids have grown past them.
//
// The table holds at most countCacheEntries rows, as the cache it was
// saved from; should it hold more, the counts taken the furthest (the
// largest up_to, in practice the most recently used) are loaded, and
// they are the most recently used in the cache.
func (db *DB) loadCounts(ctx context.Context) error {
	if !db.persistsCounts() {
		return nil
	}
	if db.postgres {
		return db.loadCountsPostgres(ctx)
	}
	err := db.write.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var maxID, maxUpTo int64
		err := tx.Tx.QueryRowContext(ctx, `SELECT (SELECT coalesce(max(id), 0) FROM messages),
			(SELECT coalesce(max(up_to), 0) FROM search_counts)`).Scan(&maxID, &maxUpTo)
		if err != nil {
			return err
		}
		if maxUpTo > maxID {
			_, err := tx.Tx.ExecContext(ctx, `DELETE FROM search_counts`)
			return err
		}
		rows, err := tx.Tx.QueryContext(ctx, `SELECT sender, since, text, n, up_to FROM (
			SELECT * FROM search_counts ORDER BY up_to DESC LIMIT ?
		) ORDER BY up_to`, countCacheEntries)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var k countKey
			var n, upTo int64
			if err := rows.Scan(&k.from, &k.since, &k.text, &n, &upTo); err != nil {
				return err
			}
			db.remember(k, n, upTo)
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("loading the search counts: %w", err)
	}
	return nil
}

// saveCountsDue saves the remembered counts if they changed since the last
// save and the last save is at least the interval stored in
// db.countSaveNanos old. Only the writer goroutine calls it, between
// batches; it holds the gate like a batch. A failed save is tried again at
// the next one: it costs only the counts a crash would lose.
func (db *DB) saveCountsDue() {
	if !db.persistsCounts() || time.Since(db.countsSavedAt) < time.Duration(db.countSaveNanos.Load()) {
		return
	}
	db.countsSavedAt = time.Now()
	v := db.counts.version()
	if v == db.countsSaved {
		return
	}
	ctx, cancel := db.countSaveContext()
	defer cancel()
	db.gate.Lock()
	err := db.saveCounts(ctx)
	db.gate.Unlock()
	if err == nil {
		db.countsSaved = v
	}
}

// saveCounts replaces the counts in search_counts with those of the count
// cache, in one transaction on the writer's connection. Close calls it once
// the writer has stopped, and the writer between two batches
// (saveCountsDue). Once a WAL fsync has failed it does nothing: writes are
// refused then, and the file may lack rows that were counted. What follows
// is SQLite's; Postgres's is saveCountsPostgres.
//
// Why a saved count never counts a row the database lacks: every row it
// counts was committed before the count was taken, so before this
// transaction commits. Recovery after a crash or power loss keeps the WAL
// up to its last valid commit, a prefix of the commits in order
// (walsync.go): if this transaction survives, so does every commit before
// it, and with them every row it counts. This holds for a save while the
// writer runs too, whose commit no fsync has covered yet. Losing the save
// itself only costs the counts.
func (db *DB) saveCounts(ctx context.Context) error {
	if !db.persistsCounts() || db.walBroken() != nil {
		return nil
	}
	if db.postgres {
		if err := db.saveCountsPostgres(ctx); err != nil {
			return fmt.Errorf("sqlstore: saving the search counts: %w", err)
		}
		return nil
	}
	entries := db.counts.all()
	err := db.write.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.Tx.ExecContext(ctx, `DELETE FROM search_counts`); err != nil {
			return err
		}
		ins, err := tx.PrepareContext(ctx, `INSERT INTO search_counts (sender, since, text, n, up_to) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for _, e := range entries {
			if _, err := ins.ExecContext(ctx, e.key.from, e.key.since, e.key.text, e.n, e.upTo); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlstore: saving the search counts: %w", err)
	}
	return nil
}
