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
	indexStateSQL = `SELECT indexed_to, words_indexed_to, (SELECT coalesce(max(id), 0) FROM messages) FROM fts_state WHERE id = 1`
	indexAddSQL   = `INSERT INTO messages_fts (rowid, text_fold)
		SELECT id, text_fold FROM messages WHERE id > ? AND id <= ? AND text_fold IS NOT NULL`
	indexMarkSQL = `UPDATE fts_state SET indexed_to = ?, words_indexed_to = ? WHERE id = 1`
)

// indexState is how far the trigram index (textTo) and the word index
// (wordsTo, see words.go) have got, and the largest id.
type indexState struct {
	textTo, wordsTo, maxID int64
}

// next returns how far one chunk takes each index. The trigram index goes
// as indexText says. The word index goes along with it when it has caught
// up (the two then move together), and otherwise, when build is set, by
// one chunk of its own, up to the trigram index's new watermark.
func (st indexState) next(force, build bool) (textTo, wordsTo int64) {
	textTo, wordsTo = st.textTo, st.wordsTo
	if st.maxID > st.textTo && (force || st.maxID-st.textTo >= indexEvery) {
		textTo = min(st.maxID, st.textTo+indexChunk)
	}
	if wordsTo < textTo && (build || (st.wordsTo >= st.textTo && textTo > st.textTo)) {
		wordsTo = min(textTo, st.wordsTo+indexChunk)
	}
	return textTo, wordsTo
}

// indexText adds unindexed rows to messages_fts and the word index.
// Between batches (force unset) it indexes one chunk once indexEvery rows
// wait, so inserts queued behind it wait for one chunk at most; with force
// set it indexes all of them. Only the writer goroutine calls it. A
// failure leaves the rows unindexed, which costs search time, not
// correctness; the next call tries again.
//
// The word index of rows indexed before it existed is built a chunk per
// call while no insert waits, and with force set until one does; never
// while closing.
func (db *DB) indexText(force bool) {
	if db.postgres {
		return // Postgres keeps its trigram index in the insert transaction
	}
	ctx := context.Background()
	for {
		build := db.mayBuildWords()
		var st indexState
		err := db.prepared(ctx, nil, indexStateSQL).QueryRowContext(ctx).Scan(&st.textTo, &st.wordsTo, &st.maxID)
		if err != nil {
			return
		}
		if textTo, wordsTo := st.next(force, build); textTo == st.textTo && wordsTo == st.wordsTo {
			return
		}
		if err := db.indexRange(ctx, force, build); err != nil {
			return
		}
		db.afterCommit()
		if !force {
			return
		}
	}
}

// indexRange indexes one chunk, as next says from the state it reads in
// its own transaction, with both watermarks.
func (db *DB) indexRange(ctx context.Context, force, build bool) error {
	tx, err := db.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var st indexState
	if err := db.prepared(ctx, tx, indexStateSQL).QueryRowContext(ctx).Scan(&st.textTo, &st.wordsTo, &st.maxID); err != nil {
		return fmt.Errorf("sqlstore: indexing text: %w", err)
	}
	textTo, wordsTo := st.next(force, build)
	if textTo > st.textTo {
		if _, err := db.prepared(ctx, tx, indexAddSQL).ExecContext(ctx, st.textTo, textTo); err != nil {
			return fmt.Errorf("sqlstore: indexing text: %w", err)
		}
	}
	var learned map[string]int64
	if wordsTo > st.wordsTo {
		if learned, err = db.indexWords(ctx, tx, st.wordsTo, wordsTo); err != nil {
			return fmt.Errorf("sqlstore: indexing words: %w", err)
		}
	}
	if _, err := db.prepared(ctx, tx, indexMarkSQL).ExecContext(ctx, textTo, wordsTo); err != nil {
		return fmt.Errorf("sqlstore: indexing text: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.words.learn(learned)
	db.words.ready.Store(wordsTo >= textTo)
	return nil
}
