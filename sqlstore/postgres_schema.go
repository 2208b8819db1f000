package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
)

// postgresMigrations build the Postgres schema, one step per schema
// version. The tables are those of SQLite (see sqliteMigrations), with every
// key column in the "C" collation, so that ordering and comparisons are by
// bytes, as the list order requires, whatever the database's collation.
//
// q is served by a pg_trgm GIN index on text_fold; the LIKE it serves
// rechecks every candidate row, so the index narrows the search and never
// changes a result.
var postgresMigrations = []string{
	`CREATE EXTENSION IF NOT EXISTS pg_trgm;
	CREATE TABLE messages (
		id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		message_id text COLLATE "C" NOT NULL UNIQUE,
		sender     text COLLATE "C" NOT NULL,
		recipient  text NOT NULL,
		ts         text NOT NULL,
		ts_key     text COLLATE "C" NOT NULL,
		text       text,
		text_fold  text COLLATE "C"
	);
	CREATE INDEX messages_ts_key ON messages (ts_key, message_id);
	CREATE INDEX messages_sender_ts_key ON messages (sender, ts_key, message_id);
	CREATE INDEX messages_text_fold_trgm ON messages USING gin (text_fold gin_trgm_ops);
	CREATE TABLE senders (
		sender text COLLATE "C" PRIMARY KEY,
		n      bigint NOT NULL
	);
	CREATE INDEX senders_top ON senders (n DESC, sender);
	CREATE TABLE totals (
		id        integer PRIMARY KEY CHECK (id = 1),
		messages  bigint NOT NULL,
		senders   bigint NOT NULL,
		first_key text COLLATE "C", first_id text COLLATE "C", first_ts text,
		last_key  text COLLATE "C", last_id  text COLLATE "C", last_ts  text
	);
	INSERT INTO totals (id, messages, senders) VALUES (1, 0, 0);
	CREATE TABLE ts_hours (
		hour text COLLATE "C" PRIMARY KEY, -- the first 13 characters of ts_key: YYYY-MM-DDTHH
		n    bigint NOT NULL
	);`,

	// The transaction that inserted each row, for the count cache
	// (countMatchesPostgres). Rows stored before this step keep NULL: they
	// were committed before it, so every later snapshot sees them all. The
	// column's default applies to new rows only, and adding a column with
	// no default rewrites nothing, so the step is quick on a large table;
	// the index leaves those rows out. ANALYZE gives the planner the
	// column's statistics at once: without them it takes a range of xid
	// for a third of the table, and may scan in parallel for a handful of
	// rows.
	`ALTER TABLE messages ADD COLUMN xid xid8;
	ALTER TABLE messages ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
	CREATE INDEX messages_xid ON messages (xid) WHERE xid IS NOT NULL;
	ANALYZE messages;`,

	// The remembered search counts (postgres_counts.go), saved by each
	// replica and loaded by every one that starts: n matches among the
	// rows with xid below up_to, a transaction id of the cluster named by
	// server (its system identifier), counted on timeline.
	`CREATE TABLE search_counts (
		server   text COLLATE "C" NOT NULL,
		sender   text COLLATE "C" NOT NULL,
		since    text COLLATE "C" NOT NULL,
		text     text COLLATE "C" NOT NULL,
		n        bigint NOT NULL,
		up_to    bigint NOT NULL,
		timeline bigint NOT NULL,
		PRIMARY KEY (server, sender, since, text)
	);`,
}

// migrationLock is the key of the advisory lock that serializes migrations
// between replicas starting at once ("msgsvc" in ASCII).
const migrationLock = 0x6d7367737663

// migratePostgres brings the schema to the newest version. It holds a
// session advisory lock throughout, so of several replicas starting at once
// one migrates and the others wait, then find nothing left to do. Each step
// runs in a transaction of its own: Postgres DDL is transactional, so a
// crash leaves the database at a whole version.
func migratePostgres(ctx context.Context, db *sql.DB) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		// Closing the session would release the lock too; unlocking keeps
		// the pooled connection clean.
		if _, uerr := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(migrationLock)); uerr != nil && err == nil {
			err = fmt.Errorf("releasing the migration lock: %w", uerr)
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    integer PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for i, step := range postgresMigrations {
		version := i + 1
		if err := migrateStep(ctx, conn, version, step); err != nil {
			return fmt.Errorf("migrating to schema version %d: %w", version, err)
		}
	}
	return nil
}

// migrateStep applies one step unless schema_migrations records it.
func migrateStep(ctx context.Context, conn *sql.Conn, version int, step string) error {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = $1`, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	// No arguments: pgx sends the step with the simple protocol, which
	// takes several statements at once.
	if _, err := tx.ExecContext(ctx, step); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version); err != nil {
		return err
	}
	return tx.Commit()
}
