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

	// A trigram index of the folded text for q (see search.go). Messages
	// are never updated or deleted, so an insert trigger keeps it whole.
	`CREATE VIRTUAL TABLE messages_fts USING fts5 (
		text_fold, content = 'messages', content_rowid = 'id',
		tokenize = 'trigram case_sensitive 1'
	);
	CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
	WHEN new.text_fold IS NOT NULL BEGIN
		INSERT INTO messages_fts (rowid, text_fold) VALUES (new.id, new.text_fold);
	END;
	INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');`,

	// Messages per hour of their instant, kept by the insert transaction, so
	// the total of a since filter sums whole hours and counts rows in one
	// hour only.
	`CREATE TABLE ts_hours (
		hour TEXT PRIMARY KEY, -- the first 13 characters of ts_key: YYYY-MM-DDTHH
		n    INTEGER NOT NULL
	) WITHOUT ROWID;
	INSERT INTO ts_hours (hour, n) SELECT substr(ts_key, 1, 13), count(*) FROM messages GROUP BY 1;`,

	// The search index moves off the commit path (see indexer.go): the
	// writer indexes committed rows in bulk and records how far it got.
	`DROP TRIGGER messages_fts_insert;
	CREATE TABLE fts_state (
		id         INTEGER PRIMARY KEY CHECK (id = 1),
		indexed_to INTEGER NOT NULL -- every message with id <= indexed_to is in messages_fts
	);
	INSERT INTO fts_state (id, indexed_to) SELECT 1, coalesce(max(id), 0) FROM messages;`,

	// Exact counts of q searches (countcache.go), saved by Close and loaded
	// by Open, so that a restart does not count every common q anew: n of
	// the messages with id <= up_to match sender ("" for any), since (an
	// instant key, "" for none) and text (the folded q, as instr on
	// text_fold tests it). Messages are only appended, so a row stays true;
	// a migration that rewrote text_fold or ts_key of stored messages would
	// have to empty this table.
	`CREATE TABLE search_counts (
		sender TEXT NOT NULL,
		since  TEXT NOT NULL,
		text   TEXT NOT NULL,
		n      INTEGER NOT NULL,
		up_to  INTEGER NOT NULL,
		PRIMARY KEY (sender, since, text)
	) WITHOUT ROWID;`,

	// The ten senders with the most messages, kept by the insert
	// transaction in place of an index of senders by count, which every
	// insert had to update (a page of the index per sender touched). Counts
	// only grow, so the new ten are always among the old ten and the
	// senders of the batch: see writeTop.
	`DROP INDEX senders_top;
	CREATE TABLE top_senders (
		rank   INTEGER PRIMARY KEY, -- 1 for the sender with the most messages
		sender TEXT NOT NULL,
		n      INTEGER NOT NULL
	);
	INSERT INTO top_senders (rank, sender, n)
		SELECT row_number() OVER (ORDER BY n DESC, sender), sender, n FROM senders ORDER BY n DESC, sender LIMIT 10;`,

	// A word index for q without a space (words.go): the distinct tokens
	// of the folded texts, a trigram index of them, and each message's
	// token ids. The writer builds it for the rows already stored, in the
	// background, from words_indexed_to = 0.
	`CREATE TABLE words (
		id    INTEGER PRIMARY KEY,
		token TEXT NOT NULL UNIQUE -- a run of text_fold without U+0020: four characters or more, one a letter
	);
	CREATE VIRTUAL TABLE words_fts USING fts5 (
		token, content = 'words', content_rowid = 'id',
		tokenize = 'trigram case_sensitive 1', columnsize = 0
	);
	CREATE VIRTUAL TABLE message_words USING fts5 (
		terms, content = '', detail = 'none', columnsize = 0, tokenize = 'ascii'
	);
	ALTER TABLE fts_state ADD COLUMN words_indexed_to INTEGER NOT NULL DEFAULT 0;`,

	// The search indexes move to a file of their own (indexdb.go), which
	// the indexer writes beside the writer instead of holding it. The
	// index file names this database by store_id, so that it is never used
	// with another one; it is built anew from the messages.
	`DROP TABLE main.message_words;
	DROP TABLE main.words_fts;
	DROP TABLE main.words;
	DROP TABLE main.messages_fts;
	DROP TABLE main.fts_state;
	CREATE TABLE store_id (
		id    INTEGER PRIMARY KEY CHECK (id = 1),
		value TEXT NOT NULL
	);
	INSERT INTO store_id (id, value) VALUES (1, lower(hex(randomblob(16))));`,
}

// schemaVersion is the version a fully migrated database reports.
func (db *DB) schemaVersion() int {
	if db.postgres {
		return len(postgresMigrations)
	}
	return len(sqliteMigrations)
}

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
