package sqlstore

import (
	"context"
	"time"
)

// walRestartFrames is the WAL length, in frames (pages), past which the
// checkpointer makes the WAL start over from the beginning. SQLite does that
// by itself only when a write transaction begins with the WAL wholly copied
// back, which under steady inserts never happens: the writer commits while
// a checkpoint runs. So the checkpointer then holds the writer back between
// two batches for one more, short, checkpoint (see runCheckpointer). That
// pause is one fsync of the database file: a long WAL (256 MiB of 4 KiB
// pages) makes it rare. Readers look frames up only in the part of the WAL
// not yet copied back, so its length costs them nothing.
const walRestartFrames = 65536

// Past twice walRestartFrames, the checkpointer waits for readers too (a
// RESTART checkpoint): a long read still in the WAL keeps it from starting
// over, and the WAL must not grow without bound.

// walKeepBytes is how much of its file the WAL keeps when it starts over
// (journal_size_limit): twice walRestartFrames of 4 KiB pages, more than it
// reaches in a normal cycle. So from the second cycle on, commits overwrite
// blocks the file already has instead of appending. An append makes the
// file system allocate blocks and change the file's size, which the fsync
// must then write out too. On the benchmark machine an fsync after
// overwriting 240 KB took 0.50–0.56 ms against 0.80–0.84 ms after appending
// it, and ingest at 1M stored did 4.9% more over six interleaved rounds
// (README, Benchmarks). SQLite tells old frames from new ones by the salt in
// each frame's header, so the stale tail is never read as committed. A WAL
// that grew past this (a long reader held it) is cut back to it.
const walKeepBytes = 2 * walRestartFrames * 4096

// checkpointPause is the least time between two checkpoints.
const checkpointPause = 250 * time.Millisecond

// afterCommit tells the checkpointer there is work, without ever blocking
// the writer.
func (db *DB) afterCommit() {
	select {
	case db.checkpoints <- struct{}{}:
	default:
	}
}

// runCheckpointer copies committed WAL frames back into the database file
// off the writer's path. Durability does not depend on it: a commit is
// durable once its WAL frames are synced.
func (db *DB) runCheckpointer() {
	defer close(db.checkpointDone)
	if db.checkpointDB == nil {
		for range db.checkpoints { // :memory: has no WAL
		}
		return
	}
	mode := "PASSIVE"
	for range db.checkpoints {
		log, err := db.checkpoint(mode)
		mode = "PASSIVE"
		if err == nil && log > db.walRestart {
			// Most of the WAL is copied back now; copy the rest while the
			// writer waits, so its next transaction finds the WAL fully
			// copied and starts it over. The writer waits for a few
			// frames and one fsync, not for the whole WAL and readers as
			// a RESTART checkpoint would make it.
			//
			// SQLite syncs the database file only after a checkpoint
			// that copied the whole WAL: under steady inserts, only this
			// one. Its fsync would write back every page the cycle's
			// checkpoints copied, while the writer waits: 68–104 ms at
			// 1M stored. Syncing the file first, with the writer going
			// on, leaves it the pages copied since: 5–30 ms.
			err = db.file.Sync()
			if db.fileSyncHook != nil {
				err = db.fileSyncHook(err)
			}
			if err == nil { // else the WAL starts over on a later try
				db.gate.Lock()
				start := time.Now()
				log, err = db.checkpoint("PASSIVE")
				db.metrics.hold.Observe(since(start))
				db.gate.Unlock()
			}
			if err == nil && log > 2*db.walRestart {
				mode = "RESTART"
			}
		}
		// A checkpoint ends with an fsync of the database file, which
		// competes with the commits' own WAL fsyncs for the disk: at most
		// a few a second leaves the disk to the commits.
		select {
		case <-time.After(checkpointPause):
		case <-db.done: // closing: no more commits to wait for
		}
	}
}

// checkpoint runs one checkpoint and returns the WAL's length in frames.
func (db *DB) checkpoint(mode string) (log int, err error) {
	var busy, done int
	defer func(start time.Time) { db.metrics.checkpoint.Observe(since(start)) }(time.Now())
	err = db.checkpointDB.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &log, &done)
	return log, err
}
