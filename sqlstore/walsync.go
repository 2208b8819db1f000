package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/msgsvc/msgsvc"
)

// Pipelined durability. The writer's connection runs with
// synchronous=NORMAL: COMMIT writes the transaction's frames to the WAL and
// returns without an fsync. The writer hands the committed batch to the
// syncer goroutine and starts on the next batch at once; the syncer fsyncs
// the WAL file and only then answers the batch's callers. So batch n's fsync
// overlaps batch n+1's work: one commit and one fsync in flight.
//
// Why an acknowledged row survives a power loss: its commit frame was
// written (write(2)) before the fsync that preceded its answer began, and
// fsync makes every write to the file before it durable. SQLite's recovery
// replays the WAL up to the last commit frame whose checksum chain holds, so
// it keeps that transaction and drops only later ones, whose callers have no
// answer yet. A duplicate found in the database is answered only after an
// fsync too, one that comes after the commit of the row it found. The
// checkpointer's connection keeps synchronous=FULL: a checkpoint syncs the
// WAL before copying it and the database file after, so a frame moved to
// the file and a WAL emptied by a checkpoint lose nothing either.
//
// What this gives up: a committed row is visible to readers up to one
// fsync before its caller is answered. A power loss in that window can take
// back a row that a query returned but that no sender was told was stored;
// the sender retries it.
//
// A failed fsync is final. Linux may drop the unwritten pages and report
// the error once, so the file can lack rows that this process still reads
// from its cache, and a later fsync would succeed anyway. The store then
// refuses every write (ErrUnavailable, readiness 503) until it is reopened,
// which recovers from what is really on disk; this is what PostgreSQL does
// on an fsync failure.

// committed is one batch the writer has committed (err == nil) or failed.
type committed struct {
	batch []*insertRequest
	maxID int64 // the largest id the batch gave a new message; 0 for none
	err   error
}

// errWALSync wraps the error of a failed WAL fsync.
var errWALSync = errors.New("sqlstore: syncing the WAL failed; rows committed since the last sync may not be on disk, so writes stay refused until the store is reopened")

// walBroken returns the failure that ends all writes, or nil.
func (db *DB) walBroken() error {
	if p := db.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

// runSyncer answers committed batches in the order the writer committed
// them: a failed batch at once, a committed one after an fsync of the WAL
// that began after its commit. It returns when acks is closed and drained.
func (db *DB) runSyncer(acks <-chan committed, synced chan<- struct{}) {
	defer close(synced)
	defer db.closeWAL()
	defer db.closeAIO()
	for c := range acks {
		err := c.err
		if err == nil {
			err = db.syncWAL()
		}
		if err == nil && c.maxID > db.durable.Load() {
			// Only the syncer moves durable on, so load and store need
			// no compare-and-swap.
			db.durable.Store(c.maxID)
			db.wakeIndexer()
		}
		db.answer(c.batch, err)
	}
}

// answer records the outcome of one batch and answers its callers.
func (db *DB) answer(batch []*insertRequest, err error) {
	if err != nil {
		db.writeFailed.Store(true)
		for _, req := range batch {
			req.created, req.err = nil, err
		}
	} else if wrote(batch) {
		// A batch of duplicates commits a transaction that wrote nothing:
		// it says nothing about whether writes succeed again, so only a
		// batch that wrote (a new row, or the probe) ends a failure.
		db.writeFailed.Store(false)
	}
	for _, req := range batch {
		close(req.done)
	}
}

// syncWAL makes every commit so far durable: it fsyncs the WAL file. It
// does nothing where commits are durable by themselves (Postgres, whose
// COMMIT waits for its own WAL flush) or there is no file (:memory:). Only
// the syncer calls it.
func (db *DB) syncWAL() error {
	if db.walPath == "" {
		return nil
	}
	if err := db.walBroken(); err != nil {
		return err
	}
	start := time.Now()
	err := db.fsyncWAL()
	db.metrics.walSync.Observe(since(start))
	if db.syncHook != nil {
		err = db.syncHook(err)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w: %w", msgsvc.ErrUnavailable, errWALSync, err)
		db.syncErr.Store(&err)
		db.failOnce.Do(func() { close(db.failed) })
	}
	return err
}

// Failed returns a channel that is closed when the store can no longer
// write until it is reopened: a WAL fsync failed, and the file may lack
// rows this process still reads (see walsync.go). A daemon should then stop
// and be restarted; cmd/msgsvcd does. It is never closed on Postgres, whose
// server handles its own fsync failures.
func (db *DB) Failed() <-chan struct{} { return db.failed }

// walFile returns the path of the WAL file SQLite writes beside the
// database open on w: SQLite names it after the file it really opened, past
// any symbolic link, so the path comes from SQLite. The file must exist: a
// connection in WAL mode holds it open, and fsyncing another path would
// leave commits unsynced.
func walFile(ctx context.Context, w *sql.DB) (string, error) {
	var file string
	if err := w.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&file); err != nil {
		return "", fmt.Errorf("finding the WAL file: %w", err)
	}
	wal := file + "-wal"
	if _, err := os.Stat(wal); err != nil {
		return "", fmt.Errorf("finding the WAL file: %w", err)
	}
	return wal, nil
}

// fsyncWAL fsyncs the WAL file through a descriptor of the syncer's own,
// reopened when SQLite has made a new WAL file since. A missing WAL is one
// that SQLite checkpointed into the database file, synced, and removed:
// there is nothing left to sync.
func (db *DB) fsyncWAL() error {
	fi, err := os.Stat(db.walPath)
	if errors.Is(err, fs.ErrNotExist) {
		db.closeWAL()
		return nil
	}
	if err != nil {
		return err
	}
	if db.wal != nil && !os.SameFile(fi, db.walInfo) {
		db.closeWAL()
	}
	if db.wal == nil {
		// Write access, because some systems (Windows) flush only files
		// open for writing; the syncer never writes through it.
		f, err := os.OpenFile(db.walPath, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		db.wal, db.walInfo = f, fi
	}
	return db.syncFile(db.wal)
}

// errAIOUnsupported marks a refusal of an asynchronous fsync (aiosync.go)
// that a plain fsync answers instead.
var errAIOUnsupported = errors.New("asynchronous fsync unsupported")

// syncFile fsyncs f: through Linux AIO where the kernel takes it, so that
// the syncer parks instead of holding a thread and its P (aiosync.go), and
// with a plain fsync otherwise.
func (db *DB) syncFile(f *os.File) error {
	if db.aio == nil && !db.aioOff {
		a, err := newAIOSyncer()
		if err != nil {
			db.aioOff = true
		} else {
			db.aio = a
		}
	}
	if db.aio != nil {
		err := db.aio.sync(f)
		if !errors.Is(err, errAIOUnsupported) {
			db.countSync("aio")
			return err
		}
		db.closeAIO()
		db.aioOff = true
	}
	db.countSync("fsync")
	return f.Sync()
}

// countSync counts one WAL fsync made via ("aio" or "fsync").
func (db *DB) countSync(via string) {
	if db.metrics != nil && db.metrics.walSyncs != nil {
		db.metrics.walSyncs.WithLabelValues(via).Inc()
	}
}

// closeAIO releases the syncer's AIO context, if it has one.
func (db *DB) closeAIO() {
	if db.aio != nil {
		db.aio.close()
		db.aio = nil
	}
}

// closeWAL closes the syncer's descriptor of the WAL file, if open.
func (db *DB) closeWAL() {
	if db.wal != nil {
		_ = db.wal.Close() // opened only to fsync: nothing to lose
		db.wal, db.walInfo = nil, nil
	}
}
