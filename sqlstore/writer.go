package sqlstore

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/msgsvc/msgsvc"
)

// insertRequest is one Insert call waiting for the writer.
type insertRequest struct {
	msgs    []msgsvc.Message
	created []bool
	err     error
	done    chan struct{}
}

// Insert queues msgs for the writer and waits until the transaction that
// holds them has committed (or failed). See msgsvc.Store.
func (db *DB) Insert(ctx context.Context, msgs []msgsvc.Message) ([]bool, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	req := &insertRequest{msgs: msgs, done: make(chan struct{})}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return nil, msgsvc.ErrClosed
	}
	select {
	case db.queue <- req:
	case <-ctx.Done():
		db.mu.RUnlock()
		return nil, ctx.Err()
	}
	db.mu.RUnlock()
	// Once queued, the request is committed or failed by the writer whatever
	// the caller does; waiting keeps the answer truthful.
	<-req.done
	return req.created, req.err
}

// runWriter is the single writer: it takes every request waiting in the queue
// (up to maxBatch messages), writes them in one transaction, commits, and
// only then answers each caller. It returns when the queue is closed and
// drained.
func (db *DB) runWriter() {
	defer close(db.done)
	var batch []*insertRequest
	for first := range db.queue {
		batch = append(batch[:0], first)
		n := len(first.msgs)
	drain:
		for n < db.maxBatch {
			select {
			case req, ok := <-db.queue:
				if !ok {
					break drain
				}
				batch = append(batch, req)
				n += len(req.msgs)
			default:
				break drain
			}
		}
		db.commit(batch)
		for _, req := range batch {
			close(req.done)
		}
		clear(batch)
	}
}

// senderDelta is what one batch adds to a sender's count.
type senderDelta struct {
	sender string
	n      int64
}

// commit writes one batch in one transaction and commits it. Any error
// fails every request of the batch and stores none of them: after an I/O
// error SQLite may already have rolled the transaction back, and going on
// would write outside it.
func (db *DB) commit(batch []*insertRequest) {
	err := db.writeBatch(batch)
	if err != nil {
		err = unavailable(err)
		for _, req := range batch {
			req.created, req.err = nil, err
		}
	}
}

func (db *DB) writeBatch(batch []*insertRequest) error {
	ctx := context.Background() // one caller's cancellation must not fail the others
	tx, err := db.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	ins := tx.StmtContext(ctx, db.insert)
	var deltas []senderDelta
	index := map[string]int{}
	var first, last *msgsvc.Message
	var firstKey, lastKey string
	for _, req := range batch {
		req.created = make([]bool, len(req.msgs))
		for i := range req.msgs {
			m := &req.msgs[i]
			key := msgsvc.TimestampKey(m.TS)
			var text, fold any
			if m.Text != nil {
				text, fold = *m.Text, msgsvc.Fold(*m.Text)
			}
			res, err := ins.ExecContext(ctx, m.MessageID, m.From, m.To, m.TS, key, text, fold)
			if err != nil {
				return fmt.Errorf("sqlstore: insert: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				continue // a duplicate: the first write won
			}
			req.created[i] = true
			j, ok := index[m.From]
			if !ok {
				j = len(deltas)
				index[m.From] = j
				deltas = append(deltas, senderDelta{sender: m.From})
			}
			deltas[j].n++
			if first == nil || key < firstKey || (key == firstKey && m.MessageID < first.MessageID) {
				first, firstKey = m, key
			}
			if last == nil || key > lastKey || (key == lastKey && m.MessageID > last.MessageID) {
				last, lastKey = m, key
			}
		}
	}
	if len(deltas) > 0 {
		if err := updateCounters(ctx, tx, deltas, first, firstKey, last, lastKey); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: commit: %w", err)
	}
	return nil
}

// updateCounters adds a batch's new messages to the per-sender counts and
// the totals, inside the batch's transaction.
func updateCounters(ctx context.Context, tx *sql.Tx, deltas []senderDelta, first *msgsvc.Message, firstKey string, last *msgsvc.Message, lastKey string) error {
	var messages, newSenders int64
	for _, d := range deltas {
		var n int64
		err := tx.QueryRowContext(ctx, `INSERT INTO senders (sender, n) VALUES (?, ?)
			ON CONFLICT (sender) DO UPDATE SET n = n + excluded.n RETURNING n`, d.sender, d.n).Scan(&n)
		if err != nil {
			return fmt.Errorf("sqlstore: counting sender: %w", err)
		}
		if n == d.n {
			newSenders++
		}
		messages += d.n
	}
	_, err := tx.ExecContext(ctx, `UPDATE totals SET messages = messages + ?, senders = senders + ?,
		first_key = CASE WHEN first_key IS NULL OR (?3, ?4) < (first_key, first_id) THEN ?3 ELSE first_key END,
		first_ts  = CASE WHEN first_key IS NULL OR (?3, ?4) < (first_key, first_id) THEN ?5 ELSE first_ts END,
		first_id  = CASE WHEN first_key IS NULL OR (?3, ?4) < (first_key, first_id) THEN ?4 ELSE first_id END,
		last_key  = CASE WHEN last_key IS NULL OR (?6, ?7) > (last_key, last_id) THEN ?6 ELSE last_key END,
		last_ts   = CASE WHEN last_key IS NULL OR (?6, ?7) > (last_key, last_id) THEN ?8 ELSE last_ts END,
		last_id   = CASE WHEN last_key IS NULL OR (?6, ?7) > (last_key, last_id) THEN ?7 ELSE last_id END
		WHERE id = 1`,
		messages, newSenders, firstKey, first.MessageID, first.TS, lastKey, last.MessageID, last.TS)
	if err != nil {
		return fmt.Errorf("sqlstore: updating totals: %w", err)
	}
	return nil
}
