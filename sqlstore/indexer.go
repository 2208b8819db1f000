package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// The search indexes are kept off the commit path. Insert transactions
// write only messages and the counters; the indexer goroutine adds
// committed rows to messages_fts and the word index afterwards, many at a
// time, on a connection and in a file of their own (indexdb.go), and
// records in fts_state the last id it indexed, in the same transaction.
// FTS5 then writes one segment per thousand rows instead of one per
// commit, which is what made indexing in the insert transaction expensive,
// and the writer never waits for it.
//
// Search stays exact: rows above fts_state.indexed_to, read in the same
// snapshot as the index, are tested with instr (see search.go). That tail
// is at most indexEvery rows, plus what arrived in the last indexIdle,
// plus what the indexer has not caught up with under a load it cannot
// follow.
const (
	// indexEvery is how many unindexed rows make the indexer index them
	// as soon as their WAL frames are synced.
	indexEvery = 1024
	// indexIdle is how long the indexer waits without a commit before it
	// indexes whatever is left.
	indexIdle = 200 * time.Millisecond
	// indexChunk bounds one indexing transaction, so that a search's
	// snapshot, the close and the index file's checkpoints never wait
	// long for one.
	indexChunk = 1024
)

// The indexer's statements, prepared once on its connection (see
// prepareIndexer). The largest id indexed is bounded by DB.durable, the
// first parameter of indexStateSQL.
const (
	indexStateSQL = `SELECT indexed_to, words_indexed_to, min(?, (SELECT coalesce(max(id), 0) FROM messages)) FROM fts_state WHERE id = 1`
	indexAddSQL   = `INSERT INTO messages_fts (rowid, text_fold)
		SELECT id, text_fold FROM messages WHERE id > ? AND id <= ? AND text_fold IS NOT NULL`
	indexMarkSQL = `UPDATE fts_state SET indexed_to = ?1, words_indexed_to = ?2,
		mark = coalesce((SELECT message_id FROM messages WHERE id = ?1), '') WHERE id = 1`
)

// indexerSQL lists every statement prepareIndexer prepares.
var indexerSQL = []string{indexStateSQL, indexAddSQL, indexMarkSQL}

// prepareIndexer prepares the indexer's statements on its connection.
func (db *DB) prepareIndexer(ctx context.Context) (err error) {
	if db.idxStmts, err = prepareEach(ctx, db.idx, indexerSQL); err != nil {
		return fmt.Errorf("sqlstore: preparing the indexer's statements: %w", err)
	}
	return nil
}

// runIndexer indexes committed rows until Close stops it: a chunk at a
// time once indexEvery of them are synced, and all of them once no commit
// has come for indexIdle. Soon after open it catches up with what an
// earlier run left unindexed (or builds the word index of an older
// database). Stopped, it indexes every row left, so that the next open
// finds the index whole.
func (db *DB) runIndexer() {
	defer close(db.indexDone)
	quiet := time.NewTimer(indexIdle)
	defer quiet.Stop()
	for {
		select {
		case <-db.indexStop:
			db.indexText(true)
			return
		case <-db.indexWake:
			db.indexText(false)
			quiet.Reset(indexIdle)
		case <-quiet.C:
			db.indexText(true)
		}
	}
}

// wakeIndexer tells the indexer that more rows are synced, without ever
// blocking the caller.
func (db *DB) wakeIndexer() {
	select {
	case db.indexWake <- struct{}{}:
	default:
	}
}

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

// indexText adds unindexed rows to messages_fts and the word index, a
// chunk per transaction. Without force it indexes while indexEvery rows
// wait; with force, all of them. Only the indexer goroutine calls it. A
// failure leaves the rows unindexed, which costs search time, not
// correctness; the next call tries again.
//
// The word index of rows indexed before it existed is built a chunk at a
// time while no insert waits, and never while closing.
func (db *DB) indexText(force bool) {
	if db.postgres {
		return // Postgres keeps its trigram index in the insert transaction
	}
	ctx := context.Background()
	for {
		build := db.mayBuildWords()
		var st indexState
		err := db.indexPrepared(ctx, nil, indexStateSQL).QueryRowContext(ctx, db.durable.Load()).Scan(&st.textTo, &st.wordsTo, &st.maxID)
		if err != nil {
			return
		}
		db.indexedTo.Store(st.textTo)
		if textTo, wordsTo := st.next(force, build); textTo == st.textTo && wordsTo == st.wordsTo {
			return
		}
		if err := db.indexRange(ctx, force, build); err != nil {
			return
		}
	}
}

// indexPrepared returns the indexer's prepared statement for query, inside
// tx when tx is not nil.
func (db *DB) indexPrepared(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	st := db.idxStmts[query]
	if tx != nil {
		return tx.StmtContext(ctx, st)
	}
	return st
}

// indexRange indexes one chunk, as next says from the state it reads in
// its own transaction, with both watermarks.
func (db *DB) indexRange(ctx context.Context, force, build bool) error {
	tx, err := db.idx.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var st indexState
	if err := db.indexPrepared(ctx, tx, indexStateSQL).QueryRowContext(ctx, db.durable.Load()).Scan(&st.textTo, &st.wordsTo, &st.maxID); err != nil {
		return fmt.Errorf("sqlstore: indexing text: %w", err)
	}
	textTo, wordsTo := st.next(force, build)
	if textTo > st.textTo {
		if _, err := db.indexPrepared(ctx, tx, indexAddSQL).ExecContext(ctx, st.textTo, textTo); err != nil {
			return fmt.Errorf("sqlstore: indexing text: %w", err)
		}
	}
	var learned map[string]int64
	if wordsTo > st.wordsTo {
		if learned, err = db.indexWords(ctx, tx, st.wordsTo, wordsTo); err != nil {
			return fmt.Errorf("sqlstore: indexing words: %w", err)
		}
	}
	if _, err := db.indexPrepared(ctx, tx, indexMarkSQL).ExecContext(ctx, textTo, wordsTo); err != nil {
		return fmt.Errorf("sqlstore: indexing text: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	db.indexedTo.Store(textTo)
	db.words.learn(learned)
	db.words.ready.Store(wordsTo >= textTo)
	return nil
}
