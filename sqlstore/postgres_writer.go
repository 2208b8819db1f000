package sqlstore

import (
	"cmp"
	"context"
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

// insertPostgresSQL writes one batch in one statement, so in one round
// trip and one implicit transaction, where a transaction of its own
// statements took six: the rows ($1..$7, sorted by message_id), then the
// per-sender counts of the new ones, the per-hour counts and the totals,
// each sorted by key and in that order (Postgres runs the data-modifying
// parts of a WITH in the order they are written, after the one the main
// query reads). The totals row, which every batch locks, comes last, so it
// is held for the shortest time. A sender whose count after the batch is
// what the batch added is a new sender. It returns the ids that were new.
const insertPostgresSQL = `WITH ins AS (
	INSERT INTO messages (message_id, sender, recipient, ts, ts_key, text, text_fold)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
	ON CONFLICT (message_id) DO NOTHING
	RETURNING message_id, sender, ts, ts_key
), added AS (
	SELECT sender, count(*) AS n FROM ins GROUP BY sender
), snd AS (
	INSERT INTO senders (sender, n) SELECT sender, n FROM added ORDER BY sender
	ON CONFLICT (sender) DO UPDATE SET n = senders.n + excluded.n
	RETURNING sender, n
), hrs AS (
	INSERT INTO ts_hours (hour, n) SELECT substr(ts_key, 1, 13), count(*) FROM ins GROUP BY 1 ORDER BY 1
	ON CONFLICT (hour) DO UPDATE SET n = ts_hours.n + excluded.n
), f AS (
	SELECT ts_key, message_id, ts FROM ins ORDER BY ts_key, message_id LIMIT 1
), l AS (
	SELECT ts_key, message_id, ts FROM ins ORDER BY ts_key DESC, message_id DESC LIMIT 1
), tot AS (
	UPDATE totals SET
		messages  = messages + (SELECT count(*) FROM ins),
		senders   = senders + (SELECT count(*) FROM snd JOIN added USING (sender) WHERE snd.n = added.n),
		first_key = CASE WHEN first_key IS NULL OR (f.ts_key, f.message_id) < (first_key, first_id) THEN f.ts_key ELSE first_key END,
		first_ts  = CASE WHEN first_key IS NULL OR (f.ts_key, f.message_id) < (first_key, first_id) THEN f.ts ELSE first_ts END,
		first_id  = CASE WHEN first_key IS NULL OR (f.ts_key, f.message_id) < (first_key, first_id) THEN f.message_id ELSE first_id END,
		last_key  = CASE WHEN last_key IS NULL OR (l.ts_key, l.message_id) > (last_key, last_id) THEN l.ts_key ELSE last_key END,
		last_ts   = CASE WHEN last_key IS NULL OR (l.ts_key, l.message_id) > (last_key, last_id) THEN l.ts ELSE last_ts END,
		last_id   = CASE WHEN last_key IS NULL OR (l.ts_key, l.message_id) > (last_key, last_id) THEN l.message_id ELSE last_id END
	FROM f, l WHERE totals.id = 1
)
SELECT message_id FROM ins`

// insertPostgres writes one batch: msgs sorted by id, each id once. It
// returns the ids that were new. A probe with no new row updates the
// totals row to itself, so that the commit writes and flushes WAL like any
// other.
func (db *DB) insertPostgres(ctx context.Context, msgs []*msgsvc.Message, probe bool) (map[string]bool, error) {
	isNew := make(map[string]bool, len(msgs))
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
		rows, err := db.write.DB.QueryContext(ctx, insertPostgresSQL, cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], cols[6])
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
	}
	if len(isNew) == 0 && probe {
		if _, err := db.write.DB.ExecContext(ctx, `UPDATE totals SET messages = messages WHERE id = 1`); err != nil {
			return nil, fmt.Errorf("sqlstore: probe: %w", err)
		}
	}
	return isNew, nil
}
