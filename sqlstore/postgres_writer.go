package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/msgsvc/msgsvc"
)

// postgresAttempts is how many times the writer runs a batch's transaction
// when Postgres aborts it as a deadlock's or serialization conflict's victim.
const postgresAttempts = 3

// writeBatchPostgres writes one batch in one transaction on Postgres. The
// rows go in sorted by message_id and the counters sorted by key, so two
// replicas' transactions lock rows in the same order.
func (db *DB) writeBatchPostgres(batch []*insertRequest) error {
	ctx := context.Background() // one caller's cancellation must not fail the others
	var msgs []*msgsvc.Message
	var created []*bool
	seen := map[string]bool{}
	probe := false
	for _, req := range batch {
		probe = probe || req.probe
		req.created = make([]bool, len(req.msgs))
		for j := range req.msgs {
			// A later copy of an id in the batch is a duplicate of the first.
			if id := req.msgs[j].MessageID; !seen[id] {
				seen[id] = true
				msgs = append(msgs, &req.msgs[j])
				created = append(created, &req.created[j])
			}
		}
	}
	order := make([]int, len(msgs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(msgs[a].MessageID, msgs[b].MessageID) })
	sorted := make([]*msgsvc.Message, len(msgs))
	for i, k := range order {
		sorted[i] = msgs[k]
	}
	var isNew map[string]bool
	var err error
	for attempt := 1; ; attempt++ {
		isNew, err = db.insertPostgres(ctx, sorted, probe)
		if err == nil || !retryable(err) || attempt == postgresAttempts {
			break
		}
	}
	if err != nil {
		return err
	}
	for i, m := range msgs {
		*created[i] = isNew[m.MessageID]
	}
	return nil
}

// insertPostgres runs one batch's transaction: msgs sorted by id, each id
// once. It returns the ids that were new.
func (db *DB) insertPostgres(ctx context.Context, msgs []*msgsvc.Message, probe bool) (map[string]bool, error) {
	tx, err := db.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("sqlstore: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	isNew := make(map[string]bool, len(msgs))
	var t tally
	if len(msgs) > 0 {
		cols := [7][]*string{}
		for i := range cols {
			cols[i] = make([]*string, len(msgs))
		}
		for i, m := range msgs {
			key := msgsvc.TimestampKey(m.TS)
			cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i] = &m.MessageID, &m.From, &m.To, &m.TS, &key
			if m.Text != nil {
				fold := msgsvc.Fold(*m.Text)
				cols[5][i], cols[6][i] = m.Text, &fold
			}
		}
		rows, err := tx.QueryContext(ctx, `INSERT INTO messages (message_id, sender, recipient, ts, ts_key, text, text_fold)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
			ON CONFLICT (message_id) DO NOTHING RETURNING message_id`,
			cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
		if err != nil {
			return nil, fmt.Errorf("sqlstore: insert: %w", err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlstore: insert: %w", err)
			}
			isNew[id] = true
		}
		if err := errors.Join(rows.Err(), rows.Close()); err != nil {
			return nil, fmt.Errorf("sqlstore: insert: %w", err)
		}
		for _, m := range msgs {
			if isNew[m.MessageID] {
				t.add(m)
			}
		}
	}
	if t.messages > 0 {
		if err := t.writePostgres(ctx, tx); err != nil {
			return nil, err
		}
	} else if probe {
		// Nothing new, but the probe asks whether writes commit: lock and
		// rewrite the totals row, so the commit writes WAL like any other.
		if _, err := tx.ExecContext(ctx, `UPDATE totals SET messages = messages WHERE id = 1`); err != nil {
			return nil, fmt.Errorf("sqlstore: probe: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("sqlstore: commit: %w", err)
	}
	return isNew, nil
}

// writePostgres adds the tally to senders, ts_hours and totals, in that
// order and each sorted by key. The totals row, which every batch locks,
// comes last, so it is held for the shortest time.
func (t *tally) writePostgres(ctx context.Context, tx *sql.Tx) error {
	senders := slices.Clone(t.senders)
	slices.SortFunc(senders, func(a, b senderDelta) int { return cmp.Compare(a.sender, b.sender) })
	names, counts := make([]string, len(senders)), make([]int64, len(senders))
	for i, d := range senders {
		names[i], counts[i] = d.sender, d.n
	}
	rows, err := tx.QueryContext(ctx, `INSERT INTO senders (sender, n)
		SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT (sender) DO UPDATE SET n = senders.n + excluded.n RETURNING sender, n`, names, counts)
	if err != nil {
		return fmt.Errorf("sqlstore: counting senders: %w", err)
	}
	// A sender is new when its count is now exactly what this batch added.
	var newSenders int64
	for rows.Next() {
		var sender string
		var n int64
		if err := rows.Scan(&sender, &n); err != nil {
			rows.Close()
			return fmt.Errorf("sqlstore: counting senders: %w", err)
		}
		if n == t.senders[t.senderIndex[sender]].n {
			newSenders++
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return fmt.Errorf("sqlstore: counting senders: %w", err)
	}

	hours := make([]string, 0, len(t.hours))
	for h := range t.hours {
		hours = append(hours, h)
	}
	slices.Sort(hours)
	hourCounts := make([]int64, len(hours))
	for i, h := range hours {
		hourCounts[i] = t.hours[h]
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO ts_hours (hour, n)
		SELECT * FROM unnest($1::text[], $2::bigint[])
		ON CONFLICT (hour) DO UPDATE SET n = ts_hours.n + excluded.n`, hours, hourCounts); err != nil {
		return fmt.Errorf("sqlstore: counting hours: %w", err)
	}

	_, err = tx.ExecContext(ctx, `UPDATE totals SET messages = messages + $1, senders = senders + $2,
		first_key = CASE WHEN first_key IS NULL OR ($3, $4) < (first_key, first_id) THEN $3 ELSE first_key END,
		first_ts  = CASE WHEN first_key IS NULL OR ($3, $4) < (first_key, first_id) THEN $5 ELSE first_ts END,
		first_id  = CASE WHEN first_key IS NULL OR ($3, $4) < (first_key, first_id) THEN $4 ELSE first_id END,
		last_key  = CASE WHEN last_key IS NULL OR ($6, $7) > (last_key, last_id) THEN $6 ELSE last_key END,
		last_ts   = CASE WHEN last_key IS NULL OR ($6, $7) > (last_key, last_id) THEN $8 ELSE last_ts END,
		last_id   = CASE WHEN last_key IS NULL OR ($6, $7) > (last_key, last_id) THEN $7 ELSE last_id END
		WHERE id = 1`,
		t.messages, newSenders, t.firstKey, t.first.MessageID, t.first.TS, t.lastKey, t.last.MessageID, t.last.TS)
	if err != nil {
		return fmt.Errorf("sqlstore: updating totals: %w", err)
	}
	return nil
}
