package sqlstore

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"
)

// sqliteMigrations build the SQLite schema, one step per schema version.
//
// messages keeps the timestamp as received (ts) beside a fixed-width UTC key
// (ts_key) that sorts as the instants do, and the text beside its Unicode
// simple case fold (text_fold), which q searches. senders and totals are
// kept exact by the insert transaction, so GET /stats reads a handful of rows.
var sqliteMigrations = []string{
	`CREATE TABLE messages (
		id         INTEGER PRIMARY KEY,
		message_id TEXT NOT NULL UNIQUE,
		sender     TEXT NOT NULL,
		recipient  TEXT NOT NULL,
		ts         TEXT NOT NULL,
		ts_key     TEXT NOT NULL,
		text       TEXT,
		text_fold  TEXT
	);
	CREATE INDEX messages_ts_key ON messages (ts_key, message_id);
	CREATE INDEX messages_sender_ts_key ON messages (sender, ts_key, message_id);
	CREATE TABLE senders (
		sender TEXT PRIMARY KEY,
		n      INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX senders_top ON senders (n DESC, sender);
	CREATE TABLE totals (
		id        INTEGER PRIMARY KEY CHECK (id = 1),
		messages  INTEGER NOT NULL,
		senders   INTEGER NOT NULL,
		first_key TEXT, first_id TEXT, first_ts TEXT,
		last_key  TEXT, last_id  TEXT, last_ts  TEXT
	);
	INSERT INTO totals (id, messages, senders) VALUES (1, 0, 0);`,
}

// schemaVersion is the version a fully migrated database reports.
func schemaVersion() int { return len(sqliteMigrations) }

// migrate brings the schema to schemaVersion, each step in a transaction of
// its own, so a crash leaves the database at a whole version.
func migrate(ctx context.Context, db *bun.DB) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
	)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for i, step := range sqliteMigrations {
		version := i + 1
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, step); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, version)
			return err
		})
		if err != nil {
			return fmt.Errorf("migrating to schema version %d: %w", version, err)
		}
	}
	return nil
}
