package sqlstore

import (
	"context"
	"fmt"
	"time"
)

// The trigram search index is kept off the commit path. Insert transactions
// write only messages and the counters; the writer goroutine adds committed
// rows to messages_fts afterwards, many at a time, and records in fts_state
// the last id it indexed, in the same transaction. FTS5 then writes one
// segment per few thousand rows instead of one per commit, which is what
// made indexing in the insert transaction expensive.
//
// Search stays exact: rows above fts_state.indexed_to, read in the same
// snapshot as the index, are tested with instr (see search.go). That tail
// is at most indexEvery rows, plus what arrived in the last indexIdle.
const (
	// indexEvery is how many unindexed rows make the writer index them
	// after its next commit.
	indexEvery = 1024
	// indexIdle is how long the writer waits without inserts before it
	// indexes whatever is left.
	indexIdle = 200 * time.Millisecond
	// indexChunk bounds one indexing transaction, so inserts queued behind
	// it wait for a bounded time.
	indexChunk = 1024
)

// The indexer's statements, prepared once (see writerSQL).
const (
	indexStateSQL = `SELECT indexed_to, (SELECT coalesce(max(id), 0) FROM messages) FROM fts_state WHERE id = 1`
	indexAddSQL   = `INSERT INTO messages_fts (rowid, text_fold)
		SELECT id, text_fold FROM messages WHERE id > ? AND id <= ? AND text_fold IS NOT NULL`
	indexMarkSQL = `UPDATE fts_state SET indexed_to = ? WHERE id = 1`
)

// indexText adds unindexed rows to messages_fts. Between batches (force
// unset) it indexes one chunk once indexEvery rows wait, so inserts queued
// behind it wait for one chunk at most; with force set it indexes all of
// them. Only the writer goroutine calls it. A failure leaves the rows
// unindexed, which costs search time, not correctness; the next call tries
// again.
func (db *DB) indexText(force bool) {
	if db.postgres {
		return // Postgres keeps its trigram index in the insert transaction
	}
	ctx := context.Background()
	for {
		var from, to int64
		err := db.prepared(ctx, nil, indexStateSQL).QueryRowContext(ctx).Scan(&from, &to)
		if err != nil || to <= from || (!force && to-from < indexEvery) {
			return
		}
		to = min(to, from+indexChunk)
		if err := db.indexRange(ctx, from, to); err != nil {
			return
		}
		db.afterCommit()
		if !force {
			return
		}
	}
}

func (db *DB) indexRange(ctx context.Context, from, to int64) error {
	tx, err := db.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := db.prepared(ctx, tx, indexAddSQL).ExecContext(ctx, from, to); err != nil {
		return fmt.Errorf("sqlstore: indexing text: %w", err)
	}
	if _, err := db.prepared(ctx, tx, indexMarkSQL).ExecContext(ctx, to); err != nil {
		return fmt.Errorf("sqlstore: indexing text: %w", err)
	}
	return tx.Commit()
}
