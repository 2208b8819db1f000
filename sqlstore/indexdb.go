package sqlstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"

	"modernc.org/sqlite"
)

// The search indexes live in a SQLite file of their own beside the
// messages: PATH-index for the database file PATH. SQLite lets one
// connection at a time write a file, so indexes kept in the messages file
// held the writer for every chunk indexed (about 50 ms per 1,024 rows, five
// times a second under full ingest). In a file of their own the indexer
// (indexer.go) writes them on its own connection while the writer goes on.
//
// The file is attached as "idx" to the indexer's connection and to every
// reader's, so the search queries name its tables as they name the
// messages' (SQLite looks an unqualified name up in main first, then in the
// attached files). The writer's connection does not attach it: a write
// transaction there must not take the index file's write lock.
//
// The index is derived data: every row of it can be built again from
// messages. So the file is written with synchronous=NORMAL (a power loss
// may undo its last chunks, never corrupt it), it indexes only rows whose
// WAL frames are synced (DB.durable), so that it never holds a row the
// messages file lost, and on open it is checked against the messages
// (checkIndex) and built anew when it does not belong to them.

// indexSuffix names the index file after the database file.
const indexSuffix = "-index"

// indexSchemaVersion is the user_version of an index file with the schema
// below. A file with another version is built anew.
const indexSchemaVersion = 1

// indexSchema creates the index file's tables, every name qualified.
//
// fts_state records how far each index has got. store is the store_id of
// the messages database indexed, and mark the message_id of the message
// indexed_to: together they tell on open whether the file indexes these
// messages. messages_fts and message_words are contentless: the text is in
// messages, and a search reads only their rowids.
var indexSchema = []string{
	`CREATE TABLE idx.fts_state (
		id               INTEGER PRIMARY KEY CHECK (id = 1),
		store            TEXT NOT NULL,
		indexed_to       INTEGER NOT NULL, -- every message with id <= indexed_to is in messages_fts
		words_indexed_to INTEGER NOT NULL, -- every message with id <= words_indexed_to is in the word index
		mark             TEXT NOT NULL     -- message_id of the message indexed_to; '' for none
	)`,
	// A trigram index of text_fold (see search.go).
	`CREATE VIRTUAL TABLE idx.messages_fts USING fts5 (
		text_fold, content = '', columnsize = 0, tokenize = 'trigram case_sensitive 1'
	)`,
	// The word index (words.go): the distinct tokens of the folded texts,
	// a trigram index of them, and each message's token ids.
	`CREATE TABLE idx.words (
		id    INTEGER PRIMARY KEY,
		token TEXT NOT NULL UNIQUE -- a run of text_fold without U+0020: four characters or more, one a letter
	)`,
	`CREATE VIRTUAL TABLE idx.words_fts USING fts5 (
		token, content = 'words', content_rowid = 'id',
		tokenize = 'trigram case_sensitive 1', columnsize = 0
	)`,
	`CREATE VIRTUAL TABLE idx.message_words USING fts5 (
		terms, content = '', detail = 'none', columnsize = 0, tokenize = 'ascii'
	)`,
}

// indexTables are the index file's tables, in an order they can be dropped in.
var indexTables = []string{"message_words", "words_fts", "words", "messages_fts", "fts_state"}

// indexURI returns the URI of the index file of the database file whose
// URI is uri.
func indexURI(uri string) string { return uri + indexSuffix }

// attacher opens connections with the index file attached as idx, and runs
// setup on each after attaching it.
type attacher struct {
	driver.Connector
	index string // the index file's URI, or ":memory:"
	setup []string
}

// openAttached returns a pool of connections to dsn with the index file
// attached.
func openAttached(dsn, index string, setup ...string) (*sql.DB, error) {
	base, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(attacher{Connector: base, index: index, setup: setup}), nil
}

// Connect opens a connection and attaches the index file to it.
func (a attacher) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := a.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("sqlstore: the SQLite connection cannot run statements")
	}
	args := []driver.NamedValue{{Ordinal: 1, Value: a.index}}
	if _, err := ex.ExecContext(ctx, `ATTACH DATABASE ? AS idx`, args); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("sqlstore: attaching the search index: %w", err)
	}
	for _, stmt := range a.setup {
		if _, err := ex.ExecContext(ctx, stmt, nil); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("sqlstore: setting up the search index: %w", err)
		}
	}
	return conn, nil
}

// openIndex opens the indexer's connection to the database file whose URI
// is uri, with its index file attached and checked (checkIndex). An index
// file that SQLite finds corrupt, or not a database at all, is removed and
// made anew: it holds nothing that the messages do not.
func openIndex(ctx context.Context, uri string) (*sql.DB, error) {
	for attempt := 0; ; attempt++ {
		dsn := uri + "?_pragma=busy_timeout(5000)&_pragma=cache_size(-" + strconv.Itoa(indexerCacheKiB) + ")"
		// The index file's WAL writes are gathered too (walbuf.go).
		if vfs, err := walVFSReady(); err != nil {
			return nil, err
		} else if vfs != "" {
			dsn += "&vfs=" + vfs
		}
		conn, err := openAttached(dsn, indexURI(uri), indexWriterSetup...)
		if err != nil {
			return nil, fmt.Errorf("opening the search index: %w", err)
		}
		conn.SetMaxOpenConns(1)
		conn.SetMaxIdleConns(1)
		conn.SetConnMaxLifetime(0)
		conn.SetConnMaxIdleTime(0)
		_, err = checkIndex(ctx, conn)
		if err == nil {
			return conn, nil
		}
		_ = conn.Close()
		if attempt > 0 || !unusableFile(err) {
			return nil, err
		}
		path, perr := url.PathUnescape(strings.TrimPrefix(indexURI(uri), "file:"))
		if perr != nil {
			return nil, errors.Join(err, perr)
		}
		for _, suffix := range []string{"", "-wal", "-shm"} {
			if rerr := os.Remove(path + suffix); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				return nil, errors.Join(err, rerr)
			}
		}
	}
}

// unusableFile reports whether err is SQLite's for a corrupt file or one
// that is not a database.
func unusableFile(err error) bool {
	const sqliteCorrupt, sqliteNotADB = 11, 26
	var e *sqlite.Error
	if !errors.As(err, &e) {
		return false
	}
	code := e.Code() & 0xff // the primary code of an extended one
	return code == sqliteCorrupt || code == sqliteNotADB
}

// The pragmas of the indexer's connection for the index file. It is the
// file's only writer. Its WAL is checkpointed by that connection every
// 4,096 pages (each checkpoint costs two fsyncs, which share the disk with
// the messages' commits), and cut back to 64 MiB when it starts over.
var indexWriterSetup = []string{
	`PRAGMA idx.journal_mode = WAL`,
	`PRAGMA idx.synchronous = NORMAL`,
	"PRAGMA idx.cache_size = -" + strconv.Itoa(indexerIndexCacheKiB),
	`PRAGMA idx.journal_size_limit = 67108864`,
	`PRAGMA wal_autocheckpoint = 4096`,
}

// checkIndex makes the index file fit the messages on conn (which has it
// attached): when its schema version differs, or it was built for another
// database (store_id), or it holds rows the messages lack (a watermark
// past the last message, or a mark that names another message, as when
// the messages file was replaced by an older copy), every table is dropped
// and made again, empty, and the indexer builds it from the first message.
// It runs at open, before the indexer and the readers start.
func checkIndex(ctx context.Context, conn *sql.DB) (rebuilt bool, err error) {
	var store string
	if err := conn.QueryRowContext(ctx, `SELECT value FROM main.store_id WHERE id = 1`).Scan(&store); err != nil {
		return false, fmt.Errorf("reading store_id: %w", err)
	}
	var version int
	if err := conn.QueryRowContext(ctx, `PRAGMA idx.user_version`).Scan(&version); err != nil {
		return false, fmt.Errorf("reading the search index's version: %w", err)
	}
	if version == indexSchemaVersion {
		var st struct {
			store, mark, found string
			to, wordsTo, maxID int64
		}
		err := conn.QueryRowContext(ctx, `SELECT store, indexed_to, words_indexed_to, mark,
			(SELECT coalesce(max(id), 0) FROM main.messages),
			coalesce((SELECT message_id FROM main.messages WHERE id = indexed_to), '')
			FROM idx.fts_state WHERE id = 1`).Scan(&st.store, &st.to, &st.wordsTo, &st.mark, &st.maxID, &st.found)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("reading the search index's state: %w", err)
		}
		if err == nil && st.store == store && st.to <= st.maxID && st.wordsTo <= st.to && st.found == st.mark {
			return false, nil
		}
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	stmts := make([]string, 0, len(indexTables)+len(indexSchema)+1)
	for _, t := range indexTables {
		stmts = append(stmts, `DROP TABLE IF EXISTS idx.`+t)
	}
	stmts = append(stmts, indexSchema...)
	stmts = append(stmts, fmt.Sprintf(`PRAGMA idx.user_version = %d`, indexSchemaVersion))
	for _, stmt := range stmts {
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return false, fmt.Errorf("building the search index's schema: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO idx.fts_state (id, store, indexed_to, words_indexed_to, mark)
		VALUES (1, ?, 0, 0, '')`, store); err != nil {
		return false, fmt.Errorf("building the search index's schema: %w", err)
	}
	return true, tx.Commit()
}
