package sqlstore

import (
	"context"
	"time"
)

// walRestartFrames is the WAL length, in frames (pages), past which the
// checkpointer asks for a RESTART checkpoint: it waits for the writer and
// readers briefly, so the next commit starts the WAL from the beginning
// again instead of letting it grow under sustained load.
const walRestartFrames = 16384

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
		var busy, log, done int
		err := db.checkpointDB.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &log, &done)
		mode = "PASSIVE"
		if err == nil && log > walRestartFrames {
			mode = "RESTART"
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
