package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

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
	// The handler validated already; a library caller may not have, and one
	// bad message must fail its own call, not the writer.
	for i := range msgs {
		if err := msgsvc.ValidateMessage(msgs[i], nil); err != nil {
			return nil, err
		}
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
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	for {
		var first *insertRequest
		select {
		case req, ok := <-db.queue:
			if !ok {
				db.indexText(true) // leave the index whole for the next start
				return
			}
			first = req
		case <-idle.C:
			db.indexText(true) // quiet: catch the search index up
			continue
		}
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
		db.indexText(false)
		idle.Reset(indexIdle)
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
	// Prepare the statements first: inside the transaction the writer's only
	// connection is taken.
	rows := 0
	for _, req := range batch {
		rows += len(req.msgs)
	}
	for _, n := range []int{min(rows, insertChunk), rows % insertChunk} {
		if n > 0 {
			if _, err := db.insertStmt(ctx, n); err != nil {
				return err
			}
		}
	}
	tx, err := db.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlstore: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	// Flatten the batch: rows[k] is message j of request i.
	type ref struct{ req, msg int }
	var refs []ref
	for i, req := range batch {
		req.created = make([]bool, len(req.msgs))
		for j := range req.msgs {
			refs = append(refs, ref{i, j})
		}
	}
	msg := func(k int) *msgsvc.Message { return &batch[refs[k].req].msgs[refs[k].msg] }
	for lo := 0; lo < len(refs); lo += insertChunk {
		hi := min(lo+insertChunk, len(refs))
		chunk := make([]*msgsvc.Message, hi-lo)
		for k := lo; k < hi; k++ {
			chunk[k-lo] = msg(k)
		}
		created, err := db.insertChunk(ctx, tx, chunk)
		if err != nil {
			return err
		}
		for k, c := range created {
			if c {
				r := refs[lo+k]
				batch[r.req].created[r.msg] = true
			}
		}
	}

	var deltas []senderDelta
	index := map[string]int{}
	hours := map[string]int64{}
	var first, last *msgsvc.Message
	var firstKey, lastKey string
	for k := range refs {
		r := refs[k]
		if !batch[r.req].created[r.msg] {
			continue
		}
		m := msg(k)
		j, ok := index[m.From]
		if !ok {
			j = len(deltas)
			index[m.From] = j
			deltas = append(deltas, senderDelta{sender: m.From})
		}
		deltas[j].n++
		key := msgsvc.TimestampKey(m.TS)
		hours[key[:len("YYYY-MM-DDTHH")]]++
		if first == nil || key < firstKey || (key == firstKey && m.MessageID < first.MessageID) {
			first, firstKey = m, key
		}
		if last == nil || key > lastKey || (key == lastKey && m.MessageID > last.MessageID) {
			last, lastKey = m, key
		}
	}
	if len(deltas) > 0 {
		if err := updateCounters(ctx, tx, deltas, first, firstKey, last, lastKey); err != nil {
			return err
		}
		if err := updateHours(ctx, tx, hours); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlstore: commit: %w", err)
	}
	db.afterCommit()
	return nil
}

// insertChunk is the most rows one INSERT statement carries. Fewer, larger
// statements cost far less per row than one statement a row.
const insertChunk = 64

// insertChunk inserts msgs with one multi-row INSERT ... ON CONFLICT DO
// NOTHING RETURNING message_id and reports which of them were new. Of two
// rows with the same id in one statement, SQLite inserts the first.
func (db *DB) insertChunk(ctx context.Context, tx *sql.Tx, msgs []*msgsvc.Message) ([]bool, error) {
	stmt, err := db.insertStmt(ctx, len(msgs))
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, 7*len(msgs))
	firstAt := make(map[string]int, len(msgs))
	for i, m := range msgs {
		var text, fold any
		if m.Text != nil {
			text, fold = *m.Text, msgsvc.Fold(*m.Text)
		}
		args = append(args, m.MessageID, m.From, m.To, m.TS, msgsvc.TimestampKey(m.TS), text, fold)
		if _, seen := firstAt[m.MessageID]; !seen {
			firstAt[m.MessageID] = i
		}
	}
	rows, err := tx.StmtContext(ctx, stmt).QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: insert: %w", err)
	}
	defer rows.Close()
	created := make([]bool, len(msgs))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sqlstore: insert: %w", err)
		}
		created[firstAt[id]] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlstore: insert: %w", err)
	}
	return created, nil
}

// insertStmt returns the prepared INSERT for n rows. Only the writer
// goroutine calls it, so the cache needs no lock.
func (db *DB) insertStmt(ctx context.Context, n int) (*sql.Stmt, error) {
	if st := db.inserts[n]; st != nil {
		return st, nil
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO messages (message_id, sender, recipient, ts, ts_key, text, text_fold) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?,?,?,?,?,?)`)
	}
	b.WriteString(` ON CONFLICT (message_id) DO NOTHING RETURNING message_id`)
	st, err := db.write.DB.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("sqlstore: preparing insert: %w", err)
	}
	db.inserts[n] = st
	return st, nil
}

// updateCounters adds a batch's new messages to the per-sender counts and
// the totals, inside the batch's transaction.
func updateCounters(ctx context.Context, tx *sql.Tx, deltas []senderDelta, first *msgsvc.Message, firstKey string, last *msgsvc.Message, lastKey string) error {
	var messages, newSenders int64
	for lo := 0; lo < len(deltas); lo += insertChunk {
		chunk := deltas[lo:min(lo+insertChunk, len(deltas))]
		var b strings.Builder
		b.WriteString(`INSERT INTO senders (sender, n) VALUES `)
		args := make([]any, 0, 2*len(chunk))
		want := make(map[string]int64, len(chunk))
		for i, d := range chunk {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`(?,?)`)
			args = append(args, d.sender, d.n)
			want[d.sender] = d.n
			messages += d.n
		}
		b.WriteString(` ON CONFLICT (sender) DO UPDATE SET n = n + excluded.n RETURNING sender, n`)
		rows, err := tx.QueryContext(ctx, b.String(), args...)
		if err != nil {
			return fmt.Errorf("sqlstore: counting senders: %w", err)
		}
		for rows.Next() {
			var sender string
			var n int64
			if err := rows.Scan(&sender, &n); err != nil {
				rows.Close()
				return fmt.Errorf("sqlstore: counting senders: %w", err)
			}
			if n == want[sender] {
				newSenders++ // the count is what this batch added: a new sender
			}
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return fmt.Errorf("sqlstore: counting senders: %w", err)
		}
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

// updateHours adds a batch's new messages to the per-hour counts.
func updateHours(ctx context.Context, tx *sql.Tx, hours map[string]int64) error {
	var b strings.Builder
	b.WriteString(`INSERT INTO ts_hours (hour, n) VALUES `)
	args := make([]any, 0, 2*len(hours))
	for hour, n := range hours {
		if len(args) > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`(?,?)`)
		args = append(args, hour, n)
	}
	b.WriteString(` ON CONFLICT (hour) DO UPDATE SET n = n + excluded.n`)
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		return fmt.Errorf("sqlstore: counting hours: %w", err)
	}
	return nil
}
