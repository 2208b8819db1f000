package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"

	"github.com/msgsvc/msgsvc"
)

// Postgres. The store keeps the design it has on SQLite: one writer
// connection per process does group commit, and a pool of readers serves
// List and Stats, each call in one REPEATABLE READ READ ONLY transaction, so
// a page and its total come from one snapshot. Several processes (replicas)
// may share one database: inserts are idempotent through ON CONFLICT DO
// NOTHING on the unique message_id, and the counters are updated in the
// insert transaction by row-locking upserts, so no update is lost. Each
// transaction takes its locks in one global order (message ids, senders,
// hours, then the totals row, each sorted), so replicas never deadlock.
//
// The driver is pgx, through its database/sql adapter: it reports
// Postgres's SQLSTATE codes (pgconn.PgError), which tell a deadlock or a
// server shutdown from a bad query, it caches prepared statements per
// connection, and it encodes Go slices as Postgres arrays, which lets one
// INSERT carry a whole batch.

// defaultPostgresReadConns is the read pool's size when the URL does not set
// pool_max_conns.
const defaultPostgresReadConns = 8

// postgresConfig parses a postgres:// URL. pool_max_conns, the read pool's
// size, is taken out of the URL: pgx would send an unknown parameter to the
// server as a setting.
func postgresConfig(databaseURL string) (*pgx.ConnConfig, int, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		// The parse error quotes the URL, password included.
		return nil, 0, fmt.Errorf("%w: the postgres URL does not parse", ErrBadURL)
	}
	readConns := defaultPostgresReadConns
	query := u.Query()
	if v := query.Get("pool_max_conns"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, 0, fmt.Errorf("%w: pool_max_conns=%q: want a whole number from 1 to 1000", ErrBadURL, v)
		}
		readConns = n
		query.Del("pool_max_conns")
		u.RawQuery = query.Encode()
	}
	cfg, err := pgx.ParseConfig(u.String())
	if err != nil {
		// pgx's message may quote the URL, password included.
		return nil, 0, fmt.Errorf("%w: the postgres URL does not parse", ErrBadURL)
	}
	// List's queries differ by their values far more than by their shape
	// (how many rows a q matches): plan each execution for its values.
	if _, set := cfg.RuntimeParams["plan_cache_mode"]; !set {
		cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	if _, set := cfg.RuntimeParams["application_name"]; !set {
		cfg.RuntimeParams["application_name"] = "msgsvc"
	}
	return cfg, readConns, nil
}

func openPostgres(ctx context.Context, databaseURL string) (*DB, error) {
	cfg, readConns, err := postgresConfig(databaseURL)
	if err != nil {
		return nil, err
	}
	wsql := stdlib.OpenDB(*cfg)
	wsql.SetMaxOpenConns(1)
	wsql.SetMaxIdleConns(1)
	rsql := stdlib.OpenDB(*cfg)
	rsql.SetMaxOpenConns(readConns)
	rsql.SetMaxIdleConns(readConns)
	db := &DB{
		postgres:       true,
		write:          bun.NewDB(wsql, pgdialect.New()),
		read:           bun.NewDB(rsql, pgdialect.New()),
		readTx:         &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		queue:          make(chan *insertRequest, 4096),
		searches:       make(chan struct{}, max(1, readConns/2)),
		checkpoints:    make(chan struct{}, 1),
		checkpointDone: make(chan struct{}),
		done:           make(chan struct{}),
		failed:         make(chan struct{}),
		maxBatch:       2048,
	}
	db.metrics = newStoreMetrics(db, false, false)
	// The schema, then the counts the replicas saved: either failing
	// closes the pools.
	for _, step := range []func(context.Context) error{
		func(ctx context.Context) error { return migratePostgres(ctx, wsql) },
		db.loadCounts,
	} {
		if err := step(ctx); err != nil {
			_ = wsql.Close()
			_ = rsql.Close()
			return nil, fmt.Errorf("sqlstore: postgres %s: %w", cfg.Database, unavailable(err))
		}
	}
	db.startCountSaves()
	close(db.checkpointDone) // Postgres checkpoints itself: no checkpointer
	go db.runWriter()
	return db, nil
}

// likeContains returns the LIKE pattern that matches strings containing s,
// every character of s literal ('\' is LIKE's default escape character).
func likeContains(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('%')
	for _, r := range s {
		if r == '%' || r == '_' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('%')
	return b.String()
}

// pgArgs collects the arguments of a query and names their placeholders.
type pgArgs []any

func (a *pgArgs) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// postgresWhere returns q's filters as a WHERE clause ("" for none), with
// the position when withAfter is set. With testEach, q's LIKE is on an
// expression the trigram index does not hold, so the planner tests each row
// the other filters select (see pgSenderScanMax).
func postgresWhere(q msgsvc.Query, withAfter, testEach bool, args *pgArgs) string {
	var conds []string
	if q.From != "" {
		conds = append(conds, "sender = "+args.add(q.From))
	}
	// Every row after the position is at or after since when the position
	// is: the redundant bound would only make the index read more.
	if q.Since != nil && !(withAfter && q.After != nil && q.After.Key >= msgsvc.InstantKey(*q.Since)) {
		conds = append(conds, "ts_key >= "+args.add(msgsvc.InstantKey(*q.Since)))
	}
	if q.Text != "" {
		text := "text_fold"
		if testEach {
			text = "(text_fold || '')"
		}
		conds = append(conds, text+" LIKE "+args.add(likeContains(msgsvc.Fold(q.Text))))
	}
	if withAfter && q.After != nil {
		conds = append(conds, "(ts_key, message_id) > ("+args.add(q.After.Key)+", "+args.add(q.After.MessageID)+")")
	}
	if len(conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(conds, " AND ")
}

// pgSenderScanMax is the most messages a sender may have for q within its
// messages to test each of them, read through (sender, ts_key, message_id),
// instead of asking the trigram index (SQLite's planner makes the same
// choice, see senderScanMax). Postgres's planner cannot make it well:
// pg_trgm estimates a LIKE's matches poorly (95 rows for a word that 12,165
// of 1M rows hold), and it then intersects the sender's few thousand rows
// with every candidate of the word, 15–60 ms for a common one. Testing a
// sender's row costs a few µs, and the sender's count is exact in senders.
const pgSenderScanMax = 5000

// pagePostgres returns the query of q's page and its arguments.
func pagePostgres(q msgsvc.Query, testEach bool) (string, pgArgs) {
	var args pgArgs
	// Only fixed text and $n placeholders are concatenated; values go as arguments.
	query := `SELECT message_id, sender, recipient, ts, ts_key, text FROM messages` + //nolint:gosec // G202: see above
		postgresWhere(q, true, testEach, &args) +
		` ORDER BY ts_key, message_id LIMIT ` + args.add(q.Limit+1) + ` OFFSET ` + args.add(q.Offset)
	return query, args
}

// listPostgres reads one page and its total in tx, with counts a scan
// must make remembered in counts.
func listPostgres(ctx context.Context, tx *sql.Tx, q msgsvc.Query, counts *countCache) (msgsvc.Page, error) {
	var page msgsvc.Page
	testEach, none, err := withinSender(ctx, tx, q)
	if err != nil {
		return page, err
	}
	if none {
		return msgsvc.Page{Messages: []msgsvc.Message{}}, nil
	}
	query, args := pagePostgres(q, testEach)
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return page, err
	}
	defer rows.Close()
	var keys []string
	for rows.Next() {
		var m msgsvc.Message
		var key string
		if err := rows.Scan(&m.MessageID, &m.From, &m.To, &m.TS, &key, &m.Text); err != nil {
			return page, err
		}
		page.Messages = append(page.Messages, m)
		keys = append(keys, key)
	}
	if err := rows.Err(); err != nil {
		return page, err
	}
	if len(page.Messages) > q.Limit {
		page.Next = &msgsvc.Position{Key: keys[q.Limit-1], MessageID: page.Messages[q.Limit-1].MessageID}
		page.Messages = page.Messages[:q.Limit]
	}
	if page.Messages == nil {
		page.Messages = []msgsvc.Message{}
	}
	page.Total, err = countPostgres(ctx, tx, q, testEach, counts)
	return page, err
}

// withinSender decides how a search with both from and q runs in tx's
// snapshot: it tests each of the sender's messages when the sender has at
// most pgSenderScanMax, and reads nothing when it has none.
func withinSender(ctx context.Context, tx *sql.Tx, q msgsvc.Query) (testEach, none bool, err error) {
	if q.From == "" || q.Text == "" {
		return false, false, nil
	}
	n, err := senderMessages(ctx, tx, q.From)
	if err != nil {
		return false, false, err
	}
	return n <= pgSenderScanMax, n == 0, nil
}

// senderMessages returns how many messages from has, from the counters.
func senderMessages(ctx context.Context, tx *sql.Tx, from string) (int64, error) {
	var n int64
	err := tx.QueryRowContext(ctx, `SELECT n FROM senders WHERE sender = $1`, from).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, err
}

// countPostgres returns the exact number of matches of q's filters, from the
// counters when they answer it alone, and otherwise from counts and the
// rows inserted since (countMatchesPostgres). testEach is as for
// postgresWhere.
func countPostgres(ctx context.Context, tx *sql.Tx, q msgsvc.Query, testEach bool, counts *countCache) (int64, error) {
	var n int64
	switch {
	case q.From == "" && q.Since == nil && q.Text == "":
		err := tx.QueryRowContext(ctx, `SELECT messages FROM totals WHERE id = 1`).Scan(&n)
		return n, err
	case q.From != "" && q.Since == nil && q.Text == "":
		return senderMessages(ctx, tx, q.From)
	case q.From == "" && q.Text == "":
		return countSincePostgres(ctx, tx, msgsvc.InstantKey(*q.Since))
	}
	return countMatchesPostgres(ctx, tx, q, testEach, counts)
}

// Exact counts of searches on Postgres. A count is a scan of every match,
// which for a common q is hundreds of thousands of rows, so counts
// remembers it, as on SQLite (countcache.go), keyed by a watermark that
// a later snapshot can build on. SQLite's watermark, the largest id, does
// not work here: ids are taken when a row is inserted, so a transaction
// that commits later, of this or another replica, can still add a row below
// it. Transaction ids can: every row records its inserting transaction in
// xid, and a snapshot's xmin is a bound below which every transaction has
// ended, committed or not. So the rows with xid < xmin (or NULL: stored
// before the column existed) are the same set in every snapshot whose
// xmin is at least as large, since messages are never updated or deleted,
// and their count never changes. A snapshot with xmin X' >= X then counts
// the matches with xid >= X, through messages_xid, and adds the count
// remembered for X. It also moves the entry to X': the matches with
// X <= xid < X' come in the same scan. A snapshot older than the entry
// (X' < X) may not see every row below X and counts in full. An entry also
// names the cluster (its system identifier) whose transaction ids it
// holds: another cluster's counter may be behind, and its new rows would
// take ids below the watermark.

// snapshotPostgresQuery returns the xmin of the transaction's snapshot and
// the cluster's system identifier.
const snapshotPostgresQuery = `SELECT pg_snapshot_xmin(pg_current_snapshot())::text, (SELECT system_identifier FROM pg_control_system())::text`

// countMatchesPostgres counts the matches of q's filters in tx's snapshot,
// from counts when it can, and remembers the count for the next search.
func countMatchesPostgres(ctx context.Context, tx *sql.Tx, q msgsvc.Query, testEach bool, counts *countCache) (int64, error) {
	var text, server string
	if err := tx.QueryRowContext(ctx, snapshotPostgresQuery).Scan(&text, &server); err != nil {
		return 0, err
	}
	xmin, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: the snapshot's xmin %q: %w", text, err)
	}
	key := totalKey(q)
	key.server = server
	known, from, ok := counts.get(key)
	ok = ok && from <= xmin
	var args pgArgs
	where := postgresWhere(q, false, testEach, &args)
	x := args.add(text) + "::xid8"
	below := "xid IS NULL OR xid < " + x
	if ok {
		// The matches below from are counted already: read the others only.
		below = "xid < " + x
		tail := "xid >= " + args.add(strconv.FormatInt(from, 10)) + "::xid8"
		if where == "" {
			where = " WHERE " + tail
		} else {
			where += " AND " + tail
		}
	}
	var n, under int64
	// Only fixed text and $n placeholders are concatenated; values go as arguments.
	query := `SELECT count(*), count(*) FILTER (WHERE ` + below + `) FROM messages` + where //nolint:gosec // G202: see above
	if err := tx.QueryRowContext(ctx, query, args...).Scan(&n, &under); err != nil {
		return 0, err
	}
	if ok {
		n, under = known+n, known+under
	}
	counts.put(key, under, xmin)
	return n, nil
}

// countSincePostgres counts messages at or after key: whole hours from
// ts_hours, and the rows of key's own hour from the index.
func countSincePostgres(ctx context.Context, tx *sql.Tx, key string) (int64, error) {
	const hourLen = len("YYYY-MM-DDTHH")
	var n int64
	if len(key) < hourLen { // a bound before year 1 or after 9999
		if key > "9999" {
			return 0, nil
		}
		err := tx.QueryRowContext(ctx, `SELECT messages FROM totals WHERE id = 1`).Scan(&n)
		return n, err
	}
	hour := key[:hourLen]
	// Every key of that hour is below hour+";": the key goes on with ':'.
	err := tx.QueryRowContext(ctx, `SELECT
		(SELECT coalesce(sum(n), 0) FROM ts_hours WHERE hour > $1)::bigint +
		(SELECT count(*) FROM messages WHERE ts_key >= $2 AND ts_key < $3)`,
		hour, key, hour+";").Scan(&n)
	return n, err
}

// retryable reports whether a failed transaction may succeed when run again
// at once: Postgres chose it as a deadlock's or a serialization conflict's
// victim.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// statsPostgresQuery reads the totals and the top senders in one statement:
// one snapshot and one round trip, where a transaction would take four.
const statsPostgresQuery = `SELECT t.messages, t.senders, t.first_ts, t.last_ts, s.sender, s.n
	FROM totals t LEFT JOIN LATERAL (SELECT sender, n FROM senders ORDER BY n DESC, sender LIMIT 10) s ON true
	WHERE t.id = 1 ORDER BY s.n DESC, s.sender`

// statsPostgres returns the exact statistics from the counters.
func statsPostgres(ctx context.Context, db *sql.DB) (msgsvc.Stats, error) {
	var st msgsvc.Stats
	rows, err := db.QueryContext(ctx, statsPostgresQuery)
	if err != nil {
		return st, unavailable(err)
	}
	defer rows.Close()
	for rows.Next() {
		var sender sql.NullString
		var n sql.NullInt64
		if err := rows.Scan(&st.TotalMessages, &st.SendersCount, &st.FirstTS, &st.LastTS, &sender, &n); err != nil {
			return msgsvc.Stats{}, unavailable(err)
		}
		if sender.Valid {
			st.TopSenders = append(st.TopSenders, msgsvc.SenderCount{From: sender.String, Count: n.Int64})
		}
	}
	if err := rows.Err(); err != nil {
		return msgsvc.Stats{}, unavailable(err)
	}
	return st, nil
}
