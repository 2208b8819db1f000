package sqlstore

import (
	"container/list"
	"context"
	"fmt"
	"math"
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
	// saved is the upTo of this count as search_counts holds it (SQLite),
	// 0 when it holds none: the count is to be saved while it differs.
	saved int64
}

// countCache is a bounded LRU of exact counts. Its zero value is empty and
// ready to use; it is safe for concurrent use.
type countCache struct {
	mu      sync.Mutex
	entries map[countKey]*list.Element // of *countEntry
	order   list.List                  // most recently used first
	changes uint64                     // counts added, moved forward or cleared so far
	// evicted lists the counts dropped for room since takeEvicted, so that
	// a save can delete their rows; past countCacheEntries of them it
	// stops listing and sets evictedLost instead.
	evicted     []countKey
	evictedLost bool
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
		k := last.Value.(*countEntry).key
		delete(c.entries, k)
		if len(c.evicted) < countCacheEntries {
			c.evicted = append(c.evicted, k)
		} else {
			c.evictedLost = true
		}
	}
}

// loseEvicted makes the next takeEvicted report a loss: the rows of counts
// dropped for room, listed or not, are to be trimmed.
func (c *countCache) loseEvicted() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.evictedLost = true
}

// takeEvicted returns the counts dropped for room since the last call, and
// whether more were dropped than it lists.
func (c *countCache) takeEvicted() (keys []countKey, lost bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys, lost = c.evicted, c.evictedLost
	c.evicted, c.evictedLost = nil, false
	return keys, lost
}

// clear forgets every count.
func (c *countCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.order.Init()
	c.changes++
	c.evicted, c.evictedLost = nil, true
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

// unsaved returns a copy of every remembered count that differs from what
// search_counts holds (see markSaved), most recently used first.
func (c *countCache) unsaved() []countEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	var entries []countEntry
	for el := c.order.Front(); el != nil; el = el.Next() {
		if e := el.Value.(*countEntry); e.upTo != e.saved {
			entries = append(entries, *e)
		}
	}
	return entries
}

// markSaved records that search_counts holds each of entries as it is
// there: a count that moved forward since stays unsaved.
func (c *countCache) markSaved(entries []countEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range entries {
		if el, ok := c.entries[w.key]; ok {
			if e := el.Value.(*countEntry); w.upTo > e.saved {
				e.saved = w.upTo
			}
		}
	}
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
		var saved int
		err := tx.Tx.QueryRowContext(ctx, `SELECT (SELECT coalesce(max(id), 0) FROM messages),
			(SELECT coalesce(max(up_to), 0) FROM search_counts), (SELECT count(*) FROM search_counts)`).Scan(&maxID, &maxUpTo, &saved)
		if err != nil {
			return err
		}
		if saved > countCacheEntries {
			db.counts.loseEvicted() // the first save trims the rows not loaded
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
	// What was loaded is saved already.
	db.counts.markSaved(db.counts.all())
	if err != nil {
		return fmt.Errorf("loading the search counts: %w", err)
	}
	return nil
}

// countSaveStep is the most rows one transaction of a save writes or
// deletes while a SQLite store runs. The writer takes no batch during it,
// so a save is spread over transactions of a few ms between batches: a
// save of a whole cache in one transaction held inserts back for 28–32 ms
// once a minute (3,000 counts, in the benchmark's query workloads).
const countSaveStep = 256

// saveCountsDue goes on with a save of the remembered counts: a save starts
// once the last one is at least the interval stored in db.countSaveNanos
// old and a count changed. Only the writer goroutine calls it, between
// batches; it holds the gate like a batch. A failed save is tried again at
// the next one: it costs only the counts a crash would lose.
//
// On SQLite a save writes only what changed: it deletes the rows of the
// counts dropped from the cache for room and upserts those added or moved
// forward, countSaveStep rows per transaction and per call, while the
// writer calls again between batches, or at once when none waits
// (countSaveBusy). Each row is true on its own (see saveCounts), so a crash
// between two steps leaves true counts. Postgres upserts every count in one
// transaction.
func (db *DB) saveCountsDue() {
	if !db.persistsCounts() {
		return
	}
	if db.postgres || !db.countSaveBusy() {
		// A new save: due yet?
		if time.Since(db.countsSavedAt) < time.Duration(db.countSaveNanos.Load()) {
			return
		}
		db.countsSavedAt = time.Now()
	}
	if db.postgres {
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
		return
	}
	if !db.countSaveBusy() {
		if db.startCountSave(); !db.countSaveBusy() {
			return
		}
	}
	db.gate.Lock()
	err := db.saveCountsStep(context.Background(), countSaveStep)
	db.gate.Unlock()
	if db.countSaveStepped != nil {
		db.countSaveStepped()
	}
	if err != nil {
		// The unsaved counts stay unsaved for the next save, which trims
		// the table of the rows of dropped counts left.
		db.countSave = countSave{}
		db.counts.loseEvicted()
	}
}

// countSave is what a save under way on SQLite has still to write. Only the
// writer goroutine (and Close, once it has stopped) uses it.
type countSave struct {
	drop  []countKey   // counts dropped from the cache: their rows go
	write []countEntry // counts added or moved forward: their rows are upserted
	trim  bool         // the table may hold rows of dropped counts not in drop
}

// countSaveBusy reports whether a save on SQLite has steps left.
func (db *DB) countSaveBusy() bool {
	return len(db.countSave.drop) > 0 || len(db.countSave.write) > 0 || db.countSave.trim
}

// startCountSave starts a save on SQLite of what changed since the last:
// after one that failed, what is still unsaved, with a trim. A save still
// under way (at Close) keeps its drops, which go first, and its trim; its
// writes are among the unsaved counts.
func (db *DB) startCountSave() {
	drop, lost := db.counts.takeEvicted()
	db.countSave = countSave{
		drop:  append(db.countSave.drop, drop...),
		write: db.counts.unsaved(),
		trim:  lost || db.countSave.trim,
	}
}

// saveCounts saves the remembered counts in search_counts. Close calls it
// once the writer has stopped: on SQLite it finishes any save under way and
// saves what changed since, in a few transactions. Once a WAL fsync has
// failed it does nothing: writes are refused then, and the file may lack
// rows that were counted. Postgres's is saveCountsPostgres.
//
// Why a saved count never counts a row the database lacks: every row it
// counts was committed before the count was taken, so before the
// transaction that saves it commits. Recovery after a crash or power loss
// keeps the WAL up to its last valid commit, a prefix of the commits in
// order (walsync.go): if that transaction survives, so does every commit
// before it, and with them every row it counts. This holds for a save
// while the writer runs too, whose commit no fsync has covered yet. Losing
// a save itself only costs the counts.
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
	db.startCountSave()
	for db.countSaveBusy() {
		if err := db.saveCountsStep(ctx, math.MaxInt); err != nil {
			return err
		}
	}
	return nil
}

// saveCountsStep takes the next step of the save under way on SQLite, in
// one transaction on the writer's connection: it deletes the rows of up to
// limit dropped counts; once none is left, it upserts up to limit counts;
// once none is left, when the table may hold rows of dropped counts it
// could not list, it deletes up to limit of the rows counted the least far
// past countCacheEntries (the rows Open would not load).
func (db *DB) saveCountsStep(ctx context.Context, limit int) error {
	if db.walBroken() != nil {
		db.countSave = countSave{}
		return nil
	}
	s := &db.countSave
	drop := s.drop[:min(limit, len(s.drop))]
	var write []countEntry
	if len(drop) == 0 {
		write = s.write[:min(limit, len(s.write))]
	}
	trimmed := false
	err := db.write.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		switch {
		case len(drop) > 0:
			del, err := tx.PrepareContext(ctx, `DELETE FROM search_counts WHERE sender = ? AND since = ? AND text = ?`)
			if err != nil {
				return err
			}
			defer del.Close()
			for _, k := range drop {
				if _, err := del.ExecContext(ctx, k.from, k.since, k.text); err != nil {
					return err
				}
			}
		case len(write) > 0:
			// A row counted further than this count (a count dropped for
			// room and counted again from older rows) stays.
			ups, err := tx.PrepareContext(ctx, `INSERT INTO search_counts (sender, since, text, n, up_to) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (sender, since, text) DO UPDATE SET n = excluded.n, up_to = excluded.up_to
				WHERE excluded.up_to > search_counts.up_to`)
			if err != nil {
				return err
			}
			defer ups.Close()
			for _, e := range write {
				if _, err := ups.ExecContext(ctx, e.key.from, e.key.since, e.key.text, e.n, e.upTo); err != nil {
					return err
				}
			}
		default:
			var rows int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM search_counts`).Scan(&rows); err != nil {
				return err
			}
			excess := rows - countCacheEntries
			if excess > 0 {
				_, err := tx.ExecContext(ctx, `DELETE FROM search_counts WHERE (sender, since, text) IN (
					SELECT sender, since, text FROM search_counts ORDER BY up_to LIMIT ?)`, min(excess, limit))
				if err != nil {
					return err
				}
			}
			trimmed = excess <= limit
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlstore: saving the search counts: %w", err)
	}
	switch {
	case len(drop) > 0:
		s.drop = s.drop[len(drop):]
	case len(write) > 0:
		db.counts.markSaved(write)
		s.write = s.write[len(write):]
	case trimmed:
		s.trim = false
	}
	return nil
}
