// Package sqlstore implements msgsvc.Store on SQL databases through bun:
// SQLite (pure Go, embedded, the default) and Postgres (through pgx), for
// several replicas sharing one database.
//
// Writes go through a single writer goroutine that batches concurrent
// inserts into one transaction (group commit) and answers each caller only
// after COMMIT has reached disk; on SQLite the fsync of one batch overlaps
// the writing of the next (walsync.go). Reads use a separate pool of read-only
// connections, so they never wait for the writer. On SQLite the search
// indexes live in a file of their own, which an indexer goroutine fills
// beside the writer (indexdb.go, indexer.go).
package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/sqlitedialect"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/msgsvc/msgsvc"
)

// ErrBadURL is wrapped by the error Open returns for a database URL it cannot
// use.
var ErrBadURL = errors.New("sqlstore: unsupported database URL")

// ErrInUse is wrapped by the error Open returns for a SQLite file that
// another open store, in this process or another, is using. One store at a
// time writes a SQLite file: the writer keeps what it last committed in
// memory (the top ten senders, Stats's cache, the durable watermark), which
// another writer's commits would make false.
var ErrInUse = errors.New("sqlstore: the database is in use by another store")

// Target is what a database URL names.
type Target struct {
	// Driver is "sqlite" or "postgres".
	Driver string
	// Path is the SQLite file, or ":memory:".
	Path string
}

// ParseURL checks a database URL of the forms the daemon accepts:
// sqlite:///relative/path, sqlite:////absolute/path, sqlite://:memory:,
// postgres://... and postgresql://....
func ParseURL(databaseURL string) (Target, error) {
	switch {
	case databaseURL == "sqlite://:memory:":
		return Target{Driver: "sqlite", Path: ":memory:"}, nil
	case strings.HasPrefix(databaseURL, "sqlite:///"):
		path := strings.TrimPrefix(databaseURL, "sqlite:///")
		if path == "" || path == "/" {
			return Target{}, fmt.Errorf("%w: %q names no file", ErrBadURL, databaseURL)
		}
		if strings.ContainsAny(path, "?#") {
			return Target{}, fmt.Errorf("%w: %q: a SQLite path must not contain '?' or '#'", ErrBadURL, databaseURL)
		}
		return Target{Driver: "sqlite", Path: path}, nil
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		return Target{Driver: "postgres"}, nil
	}
	return Target{}, fmt.Errorf("%w: %q: use sqlite:///relative/path, sqlite:////absolute/path, sqlite://:memory: or postgres://", ErrBadURL, databaseURL)
}

// The page caches of one store's connections, in KiB (SQLite's
// cache_size, negated): together they are what the page buffer holds
// (pagebuf.go).
const (
	writerCacheKiB       = 8000 // the writer's connection
	readerCacheKiB       = 2000 // each reader's, for the messages file
	readerIndexCacheKiB  = 1000 // each reader's, for the index file
	indexerCacheKiB      = 2000 // the indexer's, for the messages file
	indexerIndexCacheKiB = 8000 // the indexer's, for the index file
	checkpointCacheKiB   = 2000 // the checkpointer's
)

// readConns is the size of the read pool. More readers than cores keeps a
// slow query (a text search) from holding up the quick ones behind it.
const readConns = 8

// DB is a msgsvc.Store on a SQL database. Open makes one; Close releases it.
type DB struct {
	postgres bool    // the database is Postgres, not SQLite
	write    *bun.DB // one connection: the single writer
	read     *bun.DB // read-only pool; the same as write for :memory:
	readTx   *sql.TxOptions

	inserts  map[int]*sql.Stmt // prepared multi-row INSERTs by row count; writer goroutine only
	top      []senderDelta     // top_senders as last committed, when topKnown; writer goroutine only
	topKnown bool
	stmts    map[string]*sql.Stmt // the writer's other statements (writerSQL), prepared at open (SQLite)

	// The write generation: the writer adds one after each transaction
	// (SQLite). stats is the last answer of Stats and its generation
	// (statscache.go).
	writes atomic.Uint64
	stats  statsCache

	// file is the SQLite file, open from Open to Close (openDBFile): it
	// holds the store's lock (ErrInUse) until closed. nil for :memory: and
	// Postgres.
	file *os.File

	// The read path's fixed queries (readSQL), Stats's among them, prepared
	// once on the read pool (SQLite): each reader connection compiles them
	// the first time it runs them. Read-only once Open returns.
	readStmts map[string]*sql.Stmt
	// The page queries prepared so far, by their text (SQLite): each the
	// first time a page of its shape is read (preparePage), if it is one of
	// pageShapes. pageStmts is nil once closed.
	shapes    map[string]bool
	pageMu    sync.Mutex
	pageStmts map[string]*sql.Stmt

	// The search indexes' file and goroutine (indexdb.go, indexer.go;
	// SQLite). idx is the indexer's connection, with the index file
	// attached; for :memory: it is the writer's, which has it attached.
	idx       *sql.DB
	idxStmts  map[string]*sql.Stmt // the indexer's statements (indexerSQL)
	durable   atomic.Int64         // every message with id <= durable is synced: the most the indexer indexes
	indexWake chan struct{}        // more rows are synced: the indexer may have work
	indexStop chan struct{}        // closed by Close once the writer has stopped
	indexDone chan struct{}        // closed when the indexer has returned

	checkpoints    chan struct{} // a commit happened: the checkpointer has work
	checkpointDone chan struct{}
	checkpointDB   *sql.DB    // nil for :memory:
	gate           sync.Mutex // held by the writer for each transaction; the checkpointer takes it to let the WAL start over
	walRestart     int        // WAL frames past which the checkpointer makes the WAL start over (walRestartFrames; tests lower it)

	queue    chan *insertRequest
	mu       sync.RWMutex  // held for writing only to close the queue
	closed   atomic.Bool   // set under mu, for write1; Stats reads it without
	done     chan struct{} // closed when the writer has drained the queue
	closeErr error
	once     sync.Once

	maxBatch int

	searches chan struct{} // a slot per text search allowed to run at once: one per core
	counts   countCache    // exact counts of searches: up to an id on SQLite, below a transaction id on Postgres
	trigrams trigramStats  // how common each trigram is, to plan searches (SQLite)
	words    wordIndex     // the word index's token ids and state (words.go; SQLite)
	probeMax int64         // if > 0, the ids a search plan reads at most (tests)

	// The writer's saves of counts while it runs (saveCountsDue); the
	// interval is a field so that tests can shorten it.
	countSaveNanos atomic.Int64
	countsSavedAt  time.Time // writer goroutine only
	countsSaved    uint64    // Postgres: counts.version() at the last save; writer goroutine only
	countSave      countSave // SQLite: the save under way; writer goroutine only
	// countSaveStepped, if set, is called by the writer after each step of
	// a save on SQLite (tests).
	countSaveStepped func()
	pgTimeline       int64 // Postgres: the timeline at the last load or save of counts

	writeFailed atomic.Bool // the last batch failed: Ping probes the writer

	metrics   *storeMetrics // GET /metrics (metrics.go)
	indexedTo atomic.Int64  // the largest id the trigram index holds, as the indexer last saw it (SQLite)

	// Pipelined durability (walsync.go).
	walPath      string                // the SQLite WAL file; "" where commits are durable by themselves
	wal          *os.File              // syncer goroutine only
	aio          *aioSyncer            // syncer goroutine only: its asynchronous fsync, once set up
	aioOff       bool                  // syncer goroutine only: the kernel refused asynchronous fsync
	walInfo      os.FileInfo           // of wal, to notice a new WAL file
	syncErr      atomic.Pointer[error] // a WAL fsync failed: no more writes
	syncHook     func(err error) error // tests: replaces the outcome of each WAL fsync
	fileSyncHook func(err error) error // tests: replaces the outcome of the file's sync before the WAL starts over (runCheckpointer)
	failed       chan struct{}         // closed once a WAL fsync has failed (Failed)
	failOnce     sync.Once
}

var _ msgsvc.Store = (*DB)(nil)

// Open opens the database that databaseURL names, creating the file and its
// folder when missing, and migrates its schema.
func Open(ctx context.Context, databaseURL string) (*DB, error) {
	t, err := ParseURL(databaseURL)
	if err != nil {
		return nil, err
	}
	if t.Driver == "postgres" {
		return openPostgres(ctx, databaseURL)
	}
	return openSQLite(ctx, t.Path)
}

// openDBFile opens the SQLite database file, creating it if there is none,
// as SQLite would (following symbolic links, as SQLite does). The store
// keeps it open from Open to Close: it takes the store's lock (lockStore),
// and the checkpointer syncs the file through it (runCheckpointer).
func openDBFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644) //nolint:gosec // G304: the operator's database path, which SQLite opens next
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		// A file this process may only read still takes the lock; the
		// store then fails on its first write, as SQLite decides.
		f, err = os.Open(path) //nolint:gosec // G304: as above
	}
	if err != nil {
		return nil, fmt.Errorf("sqlstore: opening %s: %w", path, err)
	}
	return f, nil
}

func openSQLite(ctx context.Context, path string) (*DB, error) {
	memory := path == ":memory:"
	var file *os.File // nil for :memory:; closing it drops the lock (Close of a nil *os.File only returns ErrInvalid)
	if !memory {
		if dir := filepath.Dir(path); dir != "." {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("sqlstore: creating the database folder: %w", err)
			}
		}
		var err error
		if file, err = openDBFile(path); err != nil {
			return nil, err
		}
		if err := lockStore(file); err != nil {
			_ = file.Close()
			return nil, err
		}
	}
	// SQLite reads a "file:" DSN as a URI and decodes %XX escapes in it, so
	// '%' is escaped to keep the path literal.
	uri := "file:" + strings.ReplaceAll(path, "%", "%25")
	// Pragmas go in the DSN, so every connection the pool opens gets them.
	// The writer does no checkpoints itself (wal_autocheckpoint(0)): the
	// checkpointer goroutine copies the WAL back on a connection of its own.
	// Its commits do not fsync (synchronous(NORMAL)): the syncer goroutine
	// fsyncs the WAL before any caller is answered (walsync.go). Statement
	// journals stay in memory (temp_store(MEMORY)): a multi-row INSERT ...
	// ON CONFLICT keeps one, and a file would cost a write per page. When
	// the WAL starts over, it keeps walKeepBytes of its file
	// (journal_size_limit), for the next cycle to overwrite (see
	// checkpoint.go). modernc's SQLite is built with
	// SQLITE_ENABLE_MEMORY_MANAGEMENT, so every connection's page cache
	// draws on one pool, as large as their cache_size together, set aside
	// at start (pagebuf.go). The writer's 8 MB (writerCacheKiB) is most of
	// it; 16 MB ingested no faster at 1M rows.
	writeDSN := uri + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_pragma=wal_autocheckpoint(0)" +
		"&_pragma=cache_size(-" + strconv.Itoa(writerCacheKiB) + ")&_pragma=temp_store(MEMORY)&_pragma=journal_size_limit(" + strconv.Itoa(walKeepBytes) + ")&_txlock=immediate"
	// The writer's WAL writes are gathered into one write per commit
	// (walbuf.go).
	vfs, err := walVFSReady()
	if err != nil {
		_ = file.Close()
		return nil, err
	}
	if vfs != "" {
		writeDSN += "&vfs=" + vfs
	}
	var wsql *sql.DB
	if memory {
		// The only connection: the index is attached to it, in memory.
		wsql, err = openAttached(":memory:?_pragma=busy_timeout(5000)&_txlock=immediate", ":memory:")
	} else {
		wsql, err = sql.Open("sqlite", writeDSN)
	}
	if err != nil {
		_ = file.Close()
		return nil, fmt.Errorf("sqlstore: opening %s: %w", path, err)
	}
	wsql.SetMaxOpenConns(1)
	wsql.SetMaxIdleConns(1)
	wsql.SetConnMaxLifetime(0)
	wsql.SetConnMaxIdleTime(0)
	db := &DB{
		write:          bun.NewDB(wsql, sqlitedialect.New()),
		queue:          make(chan *insertRequest, 4096),
		inserts:        map[int]*sql.Stmt{},
		searches:       make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		checkpoints:    make(chan struct{}, 1),
		checkpointDone: make(chan struct{}),
		indexWake:      make(chan struct{}, 1),
		indexStop:      make(chan struct{}),
		indexDone:      make(chan struct{}),
		done:           make(chan struct{}),
		failed:         make(chan struct{}),
		maxBatch:       2048,
		walRestart:     walRestartFrames,
		file:           file,
	}
	db.metrics = newStoreMetrics(db, true, !memory)
	fail := func(err error) (*DB, error) {
		_ = db.write.Close()
		if db.read != nil && db.read != db.write {
			_ = db.read.Close()
		}
		if db.idx != nil && db.idx != db.write.DB {
			_ = db.idx.Close()
		}
		_ = db.file.Close()
		return nil, err
	}
	if err := db.write.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("sqlstore: opening %s: %w", path, err))
	}
	if err := migrate(ctx, db.write); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
	}
	if err := db.prepareWriter(ctx); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
	}
	// The search index file, checked against the messages before anything
	// reads it (indexdb.go).
	if memory {
		db.idx = db.write.DB
		_, err = checkIndex(ctx, db.idx)
	} else {
		db.idx, err = openIndex(ctx, uri)
	}
	if err != nil {
		return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
	}
	if err := db.prepareIndexer(ctx); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
	}
	// Every row stored before open counts as synced: it is what SQLite
	// recovered.
	var maxID int64
	if err := db.write.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM messages`).Scan(&maxID); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
	}
	db.durable.Store(maxID)
	// Where the index stands, for store_index_lag_messages until the
	// indexer's first look.
	var st indexState
	if err := db.indexPrepared(ctx, nil, indexStateSQL).QueryRowContext(ctx, maxID).Scan(&st.textTo, &st.wordsTo, &st.maxID); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: reading the index state: %w", path, err))
	}
	db.indexedTo.Store(st.textTo)
	if memory {
		db.read = db.write // each :memory: connection is a database of its own
	} else {
		rsql, err := openAttached(uri+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)&_pragma=cache_size(-"+strconv.Itoa(readerCacheKiB)+")", indexURI(uri),
			"PRAGMA idx.cache_size = -"+strconv.Itoa(readerIndexCacheKiB))
		if err != nil {
			return fail(fmt.Errorf("sqlstore: opening %s for reading: %w", path, err))
		}
		rsql.SetMaxOpenConns(readConns)
		rsql.SetMaxIdleConns(readConns)
		db.read = bun.NewDB(rsql, sqlitedialect.New())
		// A checkpoint syncs the WAL before it copies frames into the file,
		// and the file after: the writer's unsynced commits rely on it.
		db.checkpointDB, err = sql.Open("sqlite", uri+"?_pragma=busy_timeout(5000)&_pragma=synchronous(FULL)&_pragma=cache_size(-"+strconv.Itoa(checkpointCacheKiB)+")")
		if err != nil {
			return fail(fmt.Errorf("sqlstore: opening %s for checkpoints: %w", path, err))
		}
		db.checkpointDB.SetMaxOpenConns(1)
	}
	if !memory {
		if db.walPath, err = walFile(ctx, db.write.DB); err != nil {
			return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
		}
	}
	if db.readStmts, err = prepareEach(ctx, db.read.DB, readSQL); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: preparing: %w", path, err))
	}
	db.pageStmts = make(map[string]*sql.Stmt)
	db.shapes = make(map[string]bool)
	for _, query := range pageShapes() {
		db.shapes[query] = true
	}
	if err := db.loadCounts(ctx); err != nil {
		return fail(fmt.Errorf("sqlstore: %s: %w", path, err))
	}
	db.startCountSaves()
	go db.runWriter()
	go db.runCheckpointer()
	go db.runIndexer()
	return db, nil
}

// prepareEach prepares every query on pool, by its text, and closes what it
// prepared when one fails. A statement of a pool of several connections is
// compiled on each the first time it runs there.
func prepareEach(ctx context.Context, pool *sql.DB, queries []string) (map[string]*sql.Stmt, error) {
	stmts := make(map[string]*sql.Stmt, len(queries))
	for _, query := range queries {
		st, err := pool.PrepareContext(ctx, query)
		if err != nil {
			for _, st := range stmts {
				err = errors.Join(err, st.Close())
			}
			return nil, err
		}
		stmts[query] = st
	}
	return stmts, nil
}

// Close stops taking inserts, commits every insert already queued, and closes
// the database. Inserts after Close fail with msgsvc.ErrClosed.
func (db *DB) Close() error {
	db.once.Do(func() {
		db.mu.Lock()
		db.closed.Store(true)
		close(db.queue)
		db.mu.Unlock()
		<-db.done
		if !db.postgres {
			close(db.indexStop) // it indexes what is left, then returns
			<-db.indexDone
		}
		close(db.checkpoints)
		<-db.checkpointDone
		saveCtx, cancel := db.countSaveContext()
		db.closeErr = errors.Join(db.closeErr, db.saveCounts(saveCtx)) // the writer and the checkpointer have stopped
		cancel()
		for _, st := range db.inserts {
			db.closeErr = errors.Join(db.closeErr, st.Close())
		}
		db.pageMu.Lock()
		pages := db.pageStmts
		db.pageStmts = nil // preparePage closes what it prepares from now on
		db.pageMu.Unlock()
		stmts := slices.Concat(slices.Collect(maps.Values(db.stmts)), slices.Collect(maps.Values(db.readStmts)),
			slices.Collect(maps.Values(pages)))
		for _, st := range stmts {
			db.closeErr = errors.Join(db.closeErr, st.Close())
		}
		for _, st := range db.idxStmts {
			db.closeErr = errors.Join(db.closeErr, st.Close())
		}
		if db.checkpointDB != nil {
			db.closeErr = errors.Join(db.closeErr, db.checkpointDB.Close())
		}
		if db.idx != nil && db.idx != db.write.DB {
			db.closeErr = errors.Join(db.closeErr, db.idx.Close())
		}
		// Closing the last connection checkpoints the WAL into the file.
		db.closeErr = errors.Join(db.closeErr, db.write.Close())
		if db.read != db.write {
			db.closeErr = errors.Join(db.closeErr, db.read.Close())
		}
		if db.file != nil { // nil for :memory: and Postgres: closing it drops the lock
			db.closeErr = errors.Join(db.closeErr, db.file.Close())
		}
	})
	return db.closeErr
}

// Ping reports whether the database answers and its schema is migrated,
// and, after a write failed, whether writes succeed again: it then commits a
// trivial write through the writer, so readiness follows a full disk or a
// read-only file and recovers by itself when the fault clears.
func (db *DB) Ping(ctx context.Context) error {
	var version sql.NullInt64
	if err := db.read.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&version); err != nil {
		return unavailable(err)
	}
	if want := db.schemaVersion(); int(version.Int64) != want {
		return fmt.Errorf("%w: schema version %d, want %d", msgsvc.ErrUnavailable, version.Int64, want)
	}
	if db.writeFailed.Load() {
		if err := db.write1(ctx, &insertRequest{probe: true}); err != nil {
			return unavailable(err)
		}
	}
	return nil
}

// unavailable marks err as a store outage, so the handler answers 503.
func unavailable(err error) error {
	if err == nil || errors.Is(err, msgsvc.ErrUnavailable) || errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: %w", msgsvc.ErrUnavailable, err)
}

// messageRow is one row of messages as List reads it.
type messageRow struct {
	MessageID string  `bun:"message_id"`
	Sender    string  `bun:"sender"`
	Recipient string  `bun:"recipient"`
	TS        string  `bun:"ts"`
	TSKey     string  `bun:"ts_key"`
	Text      *string `bun:"text"`
}

// List returns one page of messages matching q, in list order, with the
// exact total of the filters, from one consistent snapshot.
func (db *DB) List(ctx context.Context, q msgsvc.Query) (msgsvc.Page, error) {
	if q.Limit < 1 || q.Limit > msgsvc.MaxLimit {
		q.Limit = min(max(q.Limit, 0), msgsvc.MaxLimit)
		if q.Limit == 0 {
			q.Limit = msgsvc.DefaultLimit
		}
	}
	q.Offset = max(q.Offset, 0)
	// Text searches are the expensive reads: they take turns, at most one
	// per core, so that searches never hold the pool's connections from the
	// quick pages. On SQLite a search first plans without a turn, and runs
	// at once when its plan is cheap (see search.go).
	turn := q.Text != "" && (db.postgres || db.surelyExpensive(q))
	if turn {
		if err := db.takeTurn(ctx); err != nil {
			return msgsvc.Page{}, err
		}
		defer db.endTurn()
	}
	page, err := db.list(ctx, q, turn)
	if errors.Is(err, errNeedTurn) {
		if err := db.takeTurn(ctx); err != nil {
			return msgsvc.Page{}, err
		}
		defer db.endTurn()
		page, err = db.list(ctx, q, true)
	}
	if err != nil {
		return msgsvc.Page{}, unavailable(err)
	}
	return page, nil
}

// takeTurn waits for a slot to run a text search in.
func (db *DB) takeTurn(ctx context.Context) error {
	select {
	case db.searches <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// endTurn gives back the slot of takeTurn.
func (db *DB) endTurn() { <-db.searches }

// list reads one page of List in one read transaction. A text search
// without its turn fails with errNeedTurn when its plan is expensive.
func (db *DB) list(ctx context.Context, q msgsvc.Query, turn bool) (msgsvc.Page, error) {
	var page msgsvc.Page
	var unprepared string // the page query, when its shape had no statement yet
	err := db.read.RunInTx(ctx, db.readTx, func(ctx context.Context, tx bun.Tx) error {
		if db.postgres {
			var err error
			page, err = listPostgres(ctx, tx.Tx, q, &db.counts)
			return err
		}
		search, err := db.planSearch(ctx, tx, q, turn)
		if err != nil {
			return err
		}
		if search.collect {
			page, err = collectPage(ctx, tx, q, search)
			if err == nil && search.remember {
				db.remember(totalKey(q), page.Total, search.maxID)
			}
			return err
		}
		rows, query, err := db.pageRows(ctx, tx, q, search)
		if err != nil {
			return err
		}
		unprepared = query
		page = pageOf(q, rows)
		page.Total, err = db.count(ctx, tx, q, search)
		return err
	})
	if err == nil && unprepared != "" {
		db.preparePage(ctx, unprepared)
	}
	return page, err
}

// pageOf returns the page of rows read by pageQuery: q.Limit of them, and
// the position of the last one when a row follows it.
func pageOf(q msgsvc.Query, rows []messageRow) msgsvc.Page {
	var page msgsvc.Page
	if len(rows) > q.Limit {
		last := rows[q.Limit-1]
		page.Next = &msgsvc.Position{Key: last.TSKey, MessageID: last.MessageID}
		rows = rows[:q.Limit]
	}
	page.Messages = make([]msgsvc.Message, len(rows))
	for i, r := range rows {
		page.Messages[i] = msgsvc.Message{MessageID: r.MessageID, From: r.Sender, To: r.Recipient, TS: r.TS, Text: r.Text}
	}
	return page
}

// matchKey is where one match of a collected search stands in list order.
type matchKey struct {
	ID        int64  `bun:"id"`
	TSKey     string `bun:"ts_key"`
	MessageID string `bun:"message_id"`
}

// collectPage reads a page and its total in one pass over the matches:
// the list positions of every match of q's filters, whose number is the
// total, and then the rows of the page, cut from them in memory. The plan
// chooses it when the matches are few and reading them twice, once for the
// page and once for the count, would cost a second pass of random reads.
func collectPage(ctx context.Context, tx bun.Tx, q msgsvc.Query, search textSearch) (msgsvc.Page, error) {
	filters := q
	filters.After = nil // the total ignores the position
	var keys []matchKey
	err := listFilter(filters, search)(tx.NewSelect().TableExpr("messages").Column("id", "ts_key", "message_id")).
		OrderExpr("ts_key, message_id").Scan(ctx, &keys)
	if err != nil {
		return msgsvc.Page{}, err
	}
	start := 0
	if a := q.After; a != nil {
		// The first match after the position, as (ts_key, message_id) >
		// (?, ?) compares: byte order, column by column.
		start = sort.Search(len(keys), func(i int) bool {
			k := keys[i]
			return k.TSKey > a.Key || (k.TSKey == a.Key && k.MessageID > a.MessageID)
		})
	}
	if q.Offset < len(keys)-start { // not start+q.Offset: it could overflow
		start += q.Offset
	} else {
		start = len(keys)
	}
	ids := make([]int64, 0, q.Limit+1)
	for _, k := range keys[start:min(start+q.Limit+1, len(keys))] {
		ids = append(ids, k.ID)
	}
	var rows []messageRow
	if len(ids) > 0 {
		err = tx.NewSelect().TableExpr("messages").Column("message_id", "sender", "recipient", "ts", "ts_key", "text").
			Where("id IN (SELECT value FROM json_each(?))", idList(ids)).OrderExpr("ts_key, message_id").Scan(ctx, &rows)
		if err != nil {
			return msgsvc.Page{}, err
		}
	}
	page := pageOf(q, rows)
	page.Total = int64(len(keys))
	return page, nil
}

// cond is one condition of a WHERE clause, with the arguments of its
// placeholders in order.
type cond struct {
	sql  string
	args []any
}

// listConds returns q's filters (not its position) on messages, with q's
// text searched as search says.
func listConds(q msgsvc.Query, search textSearch) []cond {
	var conds []cond
	if q.From != "" {
		conds = append(conds, cond{"sender = ?", []any{q.From}})
	}
	if q.Since != nil {
		conds = append(conds, cond{"ts_key >= ?", []any{msgsvc.InstantKey(*q.Since)}})
	}
	if q.Text != "" {
		conds = append(conds, search.cond(q.Text))
	}
	return conds
}

// listFilter returns a function that adds q's filters (not its position) to
// a query on messages, with q's text searched as search says.
func listFilter(q msgsvc.Query, search textSearch) func(*bun.SelectQuery) *bun.SelectQuery {
	return func(s *bun.SelectQuery) *bun.SelectQuery {
		for _, c := range listConds(q, search) {
			s = s.Where(c.sql, c.args...)
		}
		return s
	}
}

// pageQuery returns the query for one page of List, and its arguments: the
// filters, the position, the order, and one row more than the page, which
// tells whether a next page exists. Every value is an argument, bound, not
// formatted into the text, so the text depends only on the shape of the
// request (pageShapes), and List runs a statement prepared once.
func pageQuery(q msgsvc.Query, search textSearch) (string, []any) {
	filters := q
	if q.After != nil && q.Since != nil && q.After.Key >= msgsvc.InstantKey(*q.Since) {
		// Every row after the position is at or after since. Without the
		// redundant since bound, the index seeks to the position instead of
		// reading every row from since up to it.
		filters.Since = nil
	}
	conds := listConds(filters, search)
	if q.After != nil {
		conds = append(conds, cond{"(ts_key, message_id) > (?, ?)", []any{q.After.Key, q.After.MessageID}})
	}
	var b strings.Builder
	var args []any
	b.WriteString("SELECT message_id, sender, recipient, ts, ts_key, text FROM ")
	b.WriteString(search.table())
	for i, c := range conds {
		if i == 0 {
			b.WriteString(" WHERE (")
		} else {
			b.WriteString(" AND (")
		}
		b.WriteString(c.sql)
		b.WriteByte(')')
		args = append(args, c.args...)
	}
	b.WriteString(" ORDER BY ts_key, message_id LIMIT ? OFFSET ?")
	return b.String(), append(args, q.Limit+1, q.Offset)
}

// pageShapes returns the text of every page query pageQuery builds: each
// combination of from, since, position and way of searching q.
func pageShapes() []string {
	epoch := time.Unix(0, 0)
	searches := []textSearch{
		{mode: searchScan}, // searchIndexWalk is the same query
		{mode: searchIndexSorted, ids: "[]"}, {mode: searchIndexMember, ids: "[]"},
		{mode: searchIndexSorted, words: "w0"}, {mode: searchIndexMember, words: "w0"},
		{mode: searchIndexSorted}, {mode: searchIndexMember},
	}
	var shapes []string
	for _, from := range []string{"", "+1"} {
		for _, since := range []*time.Time{nil, &epoch} {
			for _, after := range []*msgsvc.Position{nil, {}} { // before since: both bounds stay
				q := msgsvc.Query{From: from, Since: since, After: after}
				query, _ := pageQuery(q, textSearch{})
				shapes = append(shapes, query)
				q.Text = "q"
				for _, s := range searches {
					query, _ := pageQuery(q, s)
					shapes = append(shapes, query)
				}
			}
		}
	}
	slices.Sort(shapes)
	return slices.Compact(shapes)
}

// pageRows reads the rows of q's page in tx, searching q's text as search
// says, with the statement prepared for the query's shape. When its shape
// has none yet, it runs the query unprepared and returns its text, for
// preparePage.
func (db *DB) pageRows(ctx context.Context, tx bun.Tx, q msgsvc.Query, search textSearch) (page []messageRow, unprepared string, err error) {
	query, args := pageQuery(q, search)
	db.pageMu.Lock()
	st := db.pageStmts[query]
	db.pageMu.Unlock()
	var rows *sql.Rows
	if st != nil {
		rows, err = tx.Tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	} else {
		unprepared = query
		rows, err = tx.Tx.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	for rows.Next() {
		var r messageRow
		if err := rows.Scan(&r.MessageID, &r.Sender, &r.Recipient, &r.TS, &r.TSKey, &r.Text); err != nil {
			return nil, "", err
		}
		page = append(page, r)
	}
	return page, unprepared, rows.Err()
}

// preparePage prepares query, a page query whose shape has no statement
// yet, for the pages after it. It runs outside any transaction: preparing
// on the pool may wait for a free connection, and one held by this
// goroutine would never come. Only pageShapes' 64 texts are kept, so the
// map is bounded. A failure leaves the shape unprepared: its pages are read
// all the same, and the next one tries again.
func (db *DB) preparePage(ctx context.Context, query string) {
	if !db.shapes[query] {
		return
	}
	st, err := db.read.DB.PrepareContext(ctx, query)
	if err != nil {
		return
	}
	db.pageMu.Lock()
	defer db.pageMu.Unlock()
	if db.pageStmts == nil || db.pageStmts[query] != nil { // closed, or prepared meanwhile
		_ = st.Close()
		return
	}
	db.pageStmts[query] = st
}

// count returns the exact number of matches of q's filters, from the
// counters or the search index when they answer it alone.
func (db *DB) count(ctx context.Context, tx bun.Tx, q msgsvc.Query, search textSearch) (int64, error) {
	var n int64
	switch {
	case q.From == "" && q.Since == nil && q.Text == "":
		err := db.queryRow(ctx, tx, totalQuery).Scan(&n)
		return n, err
	case q.From != "" && q.Since == nil && q.Text == "":
		err := db.queryRow(ctx, tx, senderCountQuery, q.From).Scan(&n)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil
		}
		return n, err
	case q.Text != "" && search.known:
		return search.total, nil
	case q.From == "" && q.Text == "":
		return db.countSince(ctx, tx, msgsvc.InstantKey(*q.Since))
	}
	// Counting is driven by the search index when there is one: a rowid
	// lookup a match beats testing every row.
	if search.indexed() {
		search.mode = searchIndexSorted
	}
	err := listFilter(q, search)(tx.NewSelect().TableExpr("messages").ColumnExpr("count(*)")).Scan(ctx, &n)
	if err == nil && q.Text != "" && search.remember {
		db.remember(totalKey(q), n, search.maxID)
	}
	return n, err
}

// countSince counts messages at or after key: whole hours from ts_hours,
// and the rows of key's own hour from the index.
func (db *DB) countSince(ctx context.Context, tx bun.Tx, key string) (int64, error) {
	const hourLen = len("YYYY-MM-DDTHH")
	var whole, partial int64
	if len(key) < hourLen { // a bound before year 1 or after 9999
		if key > "9999" {
			return 0, nil
		}
		err := db.queryRow(ctx, tx, totalQuery).Scan(&whole)
		return whole, err
	}
	hour := key[:hourLen]
	err := db.queryRow(ctx, tx, hoursAfterQuery, hour).Scan(&whole)
	if err != nil {
		return 0, err
	}
	// Every key of that hour is below hour+";": the key goes on with ':'.
	err = db.queryRow(ctx, tx, keyRangeCountQuery, key, hour+";").Scan(&partial)
	return whole + partial, err
}

// The fixed queries of the read path that every list or search runs, one
// to four of them a request. List's transaction runs them as statements
// prepared once (queryRow): compiling them anew each time took about a
// twentieth of the daemon's CPU under a mixed /messages load.
const (
	totalQuery         = `SELECT messages FROM totals WHERE id = 1`
	senderCountQuery   = `SELECT n FROM senders WHERE sender = ?`
	hoursAfterQuery    = `SELECT coalesce(sum(n), 0) FROM ts_hours WHERE hour > ?`
	keyRangeCountQuery = `SELECT count(*) FROM messages WHERE ts_key >= ? AND ts_key < ?`
)

// readSQL lists the statements Open prepares for queryRow and Stats
// (SQLite).
var readSQL = []string{
	totalQuery, senderCountQuery, hoursAfterQuery, keyRangeCountQuery,
	searchIndexStateQuery, searchRowsStateQuery, wordsHoldingSQL,
	statsTotalsQuery, statsTopSendersQuery,
}

// queryRow runs query with args in tx. A query of readSQL in a transaction
// runs as its prepared statement, with args bound, not formatted into the
// text; anything else as bun runs it.
func (db *DB) queryRow(ctx context.Context, tx bun.IDB, query string, args ...any) *sql.Row {
	if st := db.readStmts[query]; st != nil {
		if t, ok := tx.(bun.Tx); ok {
			return t.Tx.StmtContext(ctx, st).QueryRowContext(ctx, args...)
		}
	}
	return tx.QueryRowContext(ctx, query, args...)
}

// The queries of Stats: a handful of rows of the counters, never a scan of
// messages.
const (
	statsTotalsQuery     = `SELECT messages, senders, first_ts, last_ts FROM totals WHERE id = 1`
	statsTopSendersQuery = `SELECT sender, n FROM top_senders ORDER BY rank`
)

// Stats returns the exact statistics from the counters that every insert
// transaction keeps. On SQLite it answers from its cache while no
// transaction has been written since (statscache.go). After Close it fails
// with msgsvc.ErrClosed.
func (db *DB) Stats(ctx context.Context) (msgsvc.Stats, error) {
	if db.closed.Load() {
		return msgsvc.Stats{}, msgsvc.ErrClosed
	}
	if db.postgres {
		return statsPostgres(ctx, db.read.DB)
	}
	gen := db.writes.Load() // before the read transaction begins
	if st, ok := db.stats.get(gen); ok {
		return st, nil
	}
	var st msgsvc.Stats
	err := db.read.RunInTx(ctx, db.readTx, func(ctx context.Context, tx bun.Tx) error {
		err := db.queryRow(ctx, tx, statsTotalsQuery).
			Scan(&st.TotalMessages, &st.SendersCount, &st.FirstTS, &st.LastTS)
		if err != nil {
			return err
		}
		rows, err := tx.Tx.StmtContext(ctx, db.readStmts[statsTopSendersQuery]).QueryContext(ctx)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var sc msgsvc.SenderCount
			if err := rows.Scan(&sc.From, &sc.Count); err != nil {
				return err
			}
			st.TopSenders = append(st.TopSenders, sc)
		}
		return rows.Err()
	})
	if err != nil {
		return msgsvc.Stats{}, unavailable(err)
	}
	db.stats.put(gen, st)
	return st, nil
}
