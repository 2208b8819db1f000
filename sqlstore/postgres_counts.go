package sqlstore

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// Saved search counts on Postgres. Each replica keeps its counts in memory
// (countMatchesPostgres) and saves them in search_counts, at Close and,
// like SQLite, at most every countSaveEvery while they change; a replica
// that starts loads them, so a restart or a new replica does not count
// every common q anew. A count's watermark is a transaction id, which
// holds for every replica of the cluster that counted.
//
// Why a loaded count is true. The table lives in the database it counts,
// so a restore of the database (a dump, a base backup, a point in time)
// brings back the counts saved before that moment with the rows they
// counted: every row a count covers committed before the count, so before
// the save's commit. On the restored cluster the transaction counter is at
// least where it was at that moment, so new rows take ids at or above
// every saved watermark, and a count plus the rows at or above its
// watermark stays exact. Two things can still break it, and both are
// refused:
//   - The rows reach another cluster (a dump and restore, a logical
//     replica), whose counter may be behind: a count is loaded only on the
//     cluster whose system identifier it was saved under.
//   - A replica that kept running across a point-in-time recovery still
//     holds counts of the history the recovery undid. Recovery starts a new
//     timeline, so a replica saves only while the timeline is the one it
//     saw at its last save or at its start; on a new one it forgets its
//     counts instead, and a count is loaded only on the timeline it was
//     saved on. A restore that keeps the timeline (a copy of the data
//     directory started anew) is caught when the counter is still below a
//     watermark, at a save or a load; past it, nothing tells, and the
//     replicas must be restarted after such a restore (see the README).

// countsSnapshotQuery reads, in one round trip, the cluster's system
// identifier, its timeline and the next transaction id.
const countsSnapshotQuery = `SELECT (SELECT system_identifier FROM pg_control_system())::text,
	(SELECT timeline_id FROM pg_control_checkpoint())::bigint,
	pg_snapshot_xmax(pg_current_snapshot())::text::bigint`

// loadCountsPostgres fills the count cache from search_counts: the counts
// saved on this cluster and timeline, at most countCacheEntries of them,
// those with the furthest watermarks.
func (db *DB) loadCountsPostgres(ctx context.Context) error {
	err := db.write.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var server string
		var timeline, next int64
		if err := tx.Tx.QueryRowContext(ctx, countsSnapshotQuery).Scan(&server, &timeline, &next); err != nil {
			return err
		}
		db.pgTimeline = timeline
		rows, err := tx.Tx.QueryContext(ctx, `SELECT sender, since, text, n, up_to FROM (
			SELECT * FROM search_counts WHERE server = $1 AND timeline = $2 AND up_to <= $3
			ORDER BY up_to DESC LIMIT $4
		) c ORDER BY up_to`, server, timeline, next, countCacheEntries)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k := countKey{server: server}
			var n, upTo int64
			if err := rows.Scan(&k.from, &k.since, &k.text, &n, &upTo); err != nil {
				return err
			}
			db.counts.put(k, n, upTo)
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("loading the search counts: %w", err)
	}
	return nil
}

// saveCountsPostgres saves the counts of this cluster in search_counts, a
// count replacing a saved one only when it reaches further, and keeps the
// table to twice the cache's size, dropping the counts whose watermarks
// are the oldest. On a timeline other than the one last seen, or with a
// watermark beyond the transaction counter, the history has changed
// under the replica: it forgets every count and saves none.
func (db *DB) saveCountsPostgres(ctx context.Context) error {
	entries := db.counts.all()
	return db.write.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var server string
		var timeline, next int64
		if err := tx.Tx.QueryRowContext(ctx, countsSnapshotQuery).Scan(&server, &timeline, &next); err != nil {
			return err
		}
		if timeline != db.pgTimeline {
			db.pgTimeline = timeline
			db.counts.clear()
			return nil
		}
		var senders, sinces, texts []string
		var ns, upTos []int64
		for _, e := range entries {
			if e.key.server != server {
				continue
			}
			if e.upTo > next {
				db.counts.clear()
				return nil
			}
			senders, sinces, texts = append(senders, e.key.from), append(sinces, e.key.since), append(texts, e.key.text)
			ns, upTos = append(ns, e.n), append(upTos, e.upTo)
		}
		if len(ns) > 0 {
			if _, err := tx.Tx.ExecContext(ctx, `INSERT INTO search_counts AS c (server, timeline, sender, since, text, n, up_to)
				SELECT $1, $2, s, si, t, n, u FROM unnest($3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) AS x (s, si, t, n, u)
				ON CONFLICT (server, sender, since, text) DO UPDATE SET n = excluded.n, up_to = excluded.up_to, timeline = excluded.timeline
				WHERE excluded.up_to > c.up_to OR excluded.timeline <> c.timeline`,
				server, timeline, senders, sinces, texts, ns, upTos); err != nil {
				return err
			}
		}
		_, err := tx.Tx.ExecContext(ctx, `DELETE FROM search_counts WHERE (server, sender, since, text) IN (
			SELECT server, sender, since, text FROM search_counts ORDER BY up_to DESC OFFSET $1)`, 2*countCacheEntries)
		return err
	})
}
