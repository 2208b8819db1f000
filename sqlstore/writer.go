package sqlstore

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/msgsvc/msgsvc"
)

// insertRequest is one Insert call waiting for the writer.
type insertRequest struct {
	msgs    []msgsvc.Message
	probe   bool // write something trivial, to learn whether writes succeed
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
	req := &insertRequest{msgs: msgs}
	start := time.Now()
	err := db.write1(ctx, req)
	db.metrics.insert.Observe(since(start))
	if err != nil {
		return nil, err
	}
	return req.created, nil
}

// write1 queues req for the writer and waits until the transaction that
// holds it has committed or failed.
func (db *DB) write1(ctx context.Context, req *insertRequest) error {
	req.done = make(chan struct{})
	db.mu.RLock()
	if db.closed.Load() {
		db.mu.RUnlock()
		return msgsvc.ErrClosed
	}
	select {
	case db.queue <- req:
	case <-ctx.Done():
		db.mu.RUnlock()
		return ctx.Err()
	}
	db.mu.RUnlock()
	// Once queued, the request is committed or failed by the writer whatever
	// the caller does; waiting keeps the answer truthful.
	<-req.done
	return req.err
}

// runWriter is the single writer: it takes every request waiting in the queue
// (up to maxBatch messages), writes them in one transaction and commits.
// The syncer (walsync.go) answers each caller once the commit is on disk,
// while the writer goes on with the next batch. It returns when the queue is
// closed and drained and every caller has its answer.
func (db *DB) runWriter() {
	defer close(db.done)
	acks := make(chan committed)
	synced := make(chan struct{})
	go db.runSyncer(acks, synced)
	defer func() {
		close(acks)
		<-synced // every batch answered
	}()
	// While no insert comes, the writer still wakes to save the counts
	// (saveCountsDue); after a batch it checks whether a save is due.
	var idle <-chan time.Time
	if db.persistsCounts() {
		t := time.NewTicker(countSaveEvery)
		defer t.Stop()
		idle = t.C
	}
	var batch []*insertRequest
	for {
		var first *insertRequest
		var ok bool
		if db.countSaveBusy() {
			// A save of the counts goes on, a step at a time, while no
			// insert waits.
			select {
			case first, ok = <-db.queue:
			default:
				db.saveCountsDue()
				continue
			}
		} else {
			select {
			case first, ok = <-db.queue:
			case <-idle:
				db.saveCountsDue()
				continue
			}
		}
		if !ok {
			return
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
		// The syncer answers the batch once its WAL frames are on disk.
		// The hand-off waits while the syncer is busy with the batch
		// before, so inserts arriving during an fsync gather into the next
		// batch instead of many small ones: one commit and one fsync in
		// flight, each a batch.
		c := committed{batch: slices.Clone(batch)}
		db.gate.Lock()
		start := time.Now()
		c.maxID, c.err = db.commit(batch)
		db.metrics.commit.Observe(since(start))
		db.gate.Unlock()
		if n > 0 { // not a probe alone
			db.metrics.batch.Observe(float64(n))
		}
		if c.err != nil {
			db.metrics.failed.Inc()
		}
		clear(batch)
		start = time.Now()
		acks <- c
		if db.metrics.handoff != nil { // a SQLite file only
			db.metrics.handoff.Observe(since(start))
		}
		db.saveCountsDue()
	}
}

// commit writes one batch in one transaction and commits it. Any error
// fails every request of the batch and stores none of them: after an I/O
// error SQLite may already have rolled the transaction back, and going on
// would write outside it. After a failed WAL sync nothing is written at all
// (see walsync.go).
func (db *DB) commit(batch []*insertRequest) (maxID int64, err error) {
	if err := db.walBroken(); err != nil {
		return 0, err
	}
	if maxID, err = db.writeBatch(batch); err != nil {
		return 0, unavailable(err)
	}
	return maxID, nil
}

// wrote reports whether a committed batch changed the database.
func wrote(batch []*insertRequest) bool {
	for _, req := range batch {
		if req.probe || slices.Contains(req.created, true) {
			return true
		}
	}
	return false
}

func (db *DB) writeBatch(batch []*insertRequest) (maxID int64, err error) {
	if db.postgres {
		return 0, db.writeBatchPostgres(batch)
	}
	// Whatever the outcome, the next Stats reads the counters afresh.
	defer db.writes.Add(1)
	ctx := context.Background() // one caller's cancellation must not fail the others
	// Flatten the batch, so one INSERT can carry rows of several requests.
	var msgs []*msgsvc.Message
	var created []*bool
	for _, req := range batch {
		req.created = make([]bool, len(req.msgs))
		for j := range req.msgs {
			msgs = append(msgs, &req.msgs[j])
			created = append(created, &req.created[j])
		}
	}
	// Prepare the statements first: inside the transaction the writer's only
	// connection is taken.
	for _, n := range []int{min(len(msgs), rowsPerInsert), len(msgs) % rowsPerInsert} {
		if n > 0 {
			if _, err := db.insertStmt(ctx, n); err != nil {
				return 0, err
			}
		}
	}
	tx, err := db.write.DB.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit

	var t tally
	for lo := 0; lo < len(msgs); lo += rowsPerInsert {
		hi := min(lo+rowsPerInsert, len(msgs))
		isNew, last, err := db.insertRows(ctx, tx, msgs[lo:hi])
		if err != nil {
			return 0, err
		}
		maxID = max(maxID, last)
		for k, c := range isNew {
			if c {
				*created[lo+k] = true
				t.add(msgs[lo+k])
			}
		}
	}
	if err := t.write(ctx, db, tx); err != nil {
		return 0, err
	}
	if slices.ContainsFunc(batch, func(req *insertRequest) bool { return req.probe }) {
		if err := probe(ctx, tx); err != nil {
			return 0, err
		}
	}
	if t.messages > 0 {
		// Whether a failed COMMIT left top_senders as it was is not
		// known: read it again next time.
		db.topKnown = false
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlstore: commit: %w", err)
	}
	if t.messages > 0 {
		db.top, db.topKnown = t.top, true
	}
	db.afterCommit()
	return maxID, nil
}

// probeRoom is how much free space the probe wants beside the database
// file: room for a batch of the largest messages. A full disk keeps the tail
// that the failed commit's partial writes gave the WAL, and a one-page probe
// fits in it while no real batch does: without this check, readiness would
// report a full disk as writable.
const probeRoom = 1 << 20

// probe asks whether writes succeed again after a failed batch. It changes a
// page and changes it back, so that the commit appends a frame to the WAL
// and syncs it like any other: it fails when the file cannot be written.
// (Writing a value over itself would not do: SQLite leaves a page clean when
// a row is overwritten with identical content, and the commit then writes
// nothing at all.) It then checks that the database's file system has room
// for a batch.
func probe(ctx context.Context, tx *sql.Tx) error {
	for _, step := range []string{
		`UPDATE totals SET messages = messages + 1 WHERE id = 1`,
		`UPDATE totals SET messages = messages - 1 WHERE id = 1`,
	} {
		if _, err := tx.ExecContext(ctx, step); err != nil {
			return fmt.Errorf("sqlstore: probe: %w", err)
		}
	}
	var path string
	if err := tx.QueryRowContext(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
		return fmt.Errorf("sqlstore: probe: %w", err)
	}
	if path == "" { // :memory:
		return nil
	}
	if err := checkRoom(filepath.Dir(path), filepath.Base(path), probeRoom); err != nil {
		return fmt.Errorf("sqlstore: probe: no room for %d bytes beside the database: %w", probeRoom, err)
	}
	return nil
}

// checkRoom writes n bytes to a new file in dir, named after prefix, and
// removes it. Writing allocates the space, so a full file system or a file
// size limit fails it, as it fails SQLite. A folder this process may not
// create files in tells nothing about room: the probe's commit answers alone.
func checkRoom(dir, prefix string, n int) (err error) {
	f, err := os.CreateTemp(dir, prefix+".room-*")
	if errors.Is(err, fs.ErrPermission) {
		return nil
	}
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
	}()
	_, err = f.Write(make([]byte, n))
	return err
}

// rowsPerInsert is the most rows one INSERT statement carries. Fewer,
// larger statements cost far less per row than one statement a row.
const rowsPerInsert = 64

// insertRows inserts msgs with one multi-row INSERT ... ON CONFLICT DO
// NOTHING RETURNING message_id, id and reports which of them were new, and
// the largest id given to one (0 for none). Of two rows with the same id
// in one statement, SQLite inserts the first.
func (db *DB) insertRows(ctx context.Context, tx *sql.Tx, msgs []*msgsvc.Message) (created []bool, maxID int64, err error) {
	stmt, err := db.insertStmt(ctx, len(msgs))
	if err != nil {
		return nil, 0, err
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
		return nil, 0, fmt.Errorf("sqlstore: insert: %w", err)
	}
	defer rows.Close()
	created = make([]bool, len(msgs))
	for rows.Next() {
		var id string
		var rowid int64
		if err := rows.Scan(&id, &rowid); err != nil {
			return nil, 0, fmt.Errorf("sqlstore: insert: %w", err)
		}
		created[firstAt[id]] = true
		maxID = max(maxID, rowid)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("sqlstore: insert: %w", err)
	}
	return created, maxID, nil
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
	b.WriteString(` ON CONFLICT (message_id) DO NOTHING RETURNING message_id, id`)
	st, err := db.write.DB.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, fmt.Errorf("sqlstore: preparing insert: %w", err)
	}
	db.inserts[n] = st
	return st, nil
}

// tally is what one batch's new messages add to the counters.
type tally struct {
	senders     []senderDelta
	senderIndex map[string]int
	counted     []senderDelta    // the batch's senders with their new totals
	top         []senderDelta    // the ten senders with the most messages after the batch, once writeTop has run
	hours       map[string]int64 // by the first 13 characters of ts_key
	messages    int64
	first, last *msgsvc.Message
	firstKey    string
	lastKey     string
}

// senderDelta is what one batch adds to a sender's count.
type senderDelta struct {
	sender string
	n      int64
}

func (t *tally) add(m *msgsvc.Message) {
	if t.senderIndex == nil {
		t.senderIndex, t.hours = map[string]int{}, map[string]int64{}
	}
	j, ok := t.senderIndex[m.From]
	if !ok {
		j = len(t.senders)
		t.senderIndex[m.From] = j
		t.senders = append(t.senders, senderDelta{sender: m.From})
	}
	t.senders[j].n++
	key := msgsvc.TimestampKey(m.TS)
	t.hours[key[:len("YYYY-MM-DDTHH")]]++
	t.messages++
	if t.first == nil || key < t.firstKey || (key == t.firstKey && m.MessageID < t.first.MessageID) {
		t.first, t.firstKey = m, key
	}
	if t.last == nil || key > t.lastKey || (key == t.lastKey && m.MessageID > t.last.MessageID) {
		t.last, t.lastKey = m, key
	}
}

// The statements the writer runs in every batch besides the INSERT, each
// one constant text prepared once at open (prepareWriter): parsing and
// planning a statement costs about as much as running it. Per-sender and
// per-hour deltas travel as one JSON object each ({"key": n, ...}).
const (
	addSendersSQL = `INSERT INTO senders (sender, n) SELECT key, value FROM json_each(?) WHERE true
		ON CONFLICT (sender) DO UPDATE SET n = n + excluded.n RETURNING sender, n`
	addHoursSQL = `INSERT INTO ts_hours (hour, n) SELECT key, value FROM json_each(?) WHERE true
		ON CONFLICT (hour) DO UPDATE SET n = n + excluded.n`
	addTotalsSQL = `UPDATE totals SET messages = messages + ?, senders = senders + ?,
		first_key = CASE WHEN first_key IS NULL OR (?3, ?4) < (first_key, first_id) THEN ?3 ELSE first_key END,
		first_ts  = CASE WHEN first_key IS NULL OR (?3, ?4) < (first_key, first_id) THEN ?5 ELSE first_ts END,
		first_id  = CASE WHEN first_key IS NULL OR (?3, ?4) < (first_key, first_id) THEN ?4 ELSE first_id END,
		last_key  = CASE WHEN last_key IS NULL OR (?6, ?7) > (last_key, last_id) THEN ?6 ELSE last_key END,
		last_ts   = CASE WHEN last_key IS NULL OR (?6, ?7) > (last_key, last_id) THEN ?8 ELSE last_ts END,
		last_id   = CASE WHEN last_key IS NULL OR (?6, ?7) > (last_key, last_id) THEN ?7 ELSE last_id END
		WHERE id = 1`
	getTopSQL   = `SELECT sender, n FROM top_senders ORDER BY rank`
	clearTopSQL = `DELETE FROM top_senders`
	setTopSQL   = `INSERT INTO top_senders (rank, sender, n) SELECT key + 1, value ->> 0, value ->> 1 FROM json_each(?)`
)

// writerSQL lists every statement prepareWriter prepares.
var writerSQL = []string{addSendersSQL, addHoursSQL, addTotalsSQL, getTopSQL, clearTopSQL, setTopSQL}

// prepareWriter prepares the writer's constant statements on its
// connection, before the writer starts.
func (db *DB) prepareWriter(ctx context.Context) (err error) {
	if db.stmts, err = prepareEach(ctx, db.write.DB, writerSQL); err != nil {
		return fmt.Errorf("sqlstore: preparing the writer's statements: %w", err)
	}
	return nil
}

// prepared returns the writer's prepared statement for query, inside tx
// when tx is not nil.
func (db *DB) prepared(ctx context.Context, tx *sql.Tx, query string) *sql.Stmt {
	st := db.stmts[query]
	if tx != nil {
		return tx.StmtContext(ctx, st)
	}
	return st
}

// write adds the tally to senders, ts_hours and totals, inside the batch's
// transaction.
func (t *tally) write(ctx context.Context, db *DB, tx *sql.Tx) error {
	if t.messages == 0 {
		return nil
	}
	newSenders, err := t.writeSenders(ctx, db, tx)
	if err != nil {
		return err
	}
	if err := t.writeTop(ctx, db, tx); err != nil {
		return err
	}
	if err := t.writeHours(ctx, db, tx); err != nil {
		return err
	}
	_, err = db.prepared(ctx, tx, addTotalsSQL).ExecContext(ctx,
		t.messages, newSenders, t.firstKey, t.first.MessageID, t.first.TS, t.lastKey, t.last.MessageID, t.last.TS)
	if err != nil {
		return fmt.Errorf("sqlstore: updating totals: %w", err)
	}
	return nil
}

// writeSenders adds the per-sender counts and returns how many senders are
// new: those whose count is now exactly what this batch added.
func (t *tally) writeSenders(ctx context.Context, db *DB, tx *sql.Tx) (newSenders int64, err error) {
	deltas := make(map[string]int64, len(t.senders))
	for _, d := range t.senders {
		deltas[d.sender] = d.n
	}
	js, err := json.Marshal(deltas)
	if err != nil {
		return 0, fmt.Errorf("sqlstore: counting senders: %w", err)
	}
	rows, err := db.prepared(ctx, tx, addSendersSQL).QueryContext(ctx, string(js))
	if err != nil {
		return 0, fmt.Errorf("sqlstore: counting senders: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var sender string
		var n int64
		if err := rows.Scan(&sender, &n); err != nil {
			return 0, fmt.Errorf("sqlstore: counting senders: %w", err)
		}
		if n == t.senders[t.senderIndex[sender]].n {
			newSenders++
		}
		t.counted = append(t.counted, senderDelta{sender: sender, n: n})
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sqlstore: counting senders: %w", err)
	}
	return newSenders, nil
}

// writeTop keeps top_senders: the ten senders with the most messages, by
// count descending, ties by sender. A sender's count only grows, so one
// that was not among the ten before the batch and did not send in it is
// still outranked by all ten, whose counts grew or stayed: the ten after
// the batch are the first ten of the old ten and the batch's senders with
// their new counts. The table is rewritten only when they change.
func (t *tally) writeTop(ctx context.Context, db *DB, tx *sql.Tx) error {
	old, err := db.loadTop(ctx, tx)
	if err != nil {
		return fmt.Errorf("sqlstore: reading the top senders: %w", err)
	}
	top := make([]senderDelta, 0, len(old)+len(t.counted))
	for _, s := range old {
		if _, ok := t.senderIndex[s.sender]; !ok {
			top = append(top, s)
		}
	}
	top = append(top, t.counted...)
	slices.SortFunc(top, func(a, b senderDelta) int {
		if a.n != b.n {
			return cmp.Compare(b.n, a.n)
		}
		return strings.Compare(a.sender, b.sender)
	})
	t.top = top[:min(len(top), topSenders)]
	if slices.Equal(t.top, old) {
		return nil
	}
	rows := make([][2]any, len(t.top))
	for i, s := range t.top {
		rows[i] = [2]any{s.sender, s.n}
	}
	js, err := json.Marshal(rows)
	if err == nil {
		_, err = db.prepared(ctx, tx, clearTopSQL).ExecContext(ctx)
	}
	if err == nil {
		_, err = db.prepared(ctx, tx, setTopSQL).ExecContext(ctx, string(js))
	}
	if err != nil {
		return fmt.Errorf("sqlstore: writing the top senders: %w", err)
	}
	return nil
}

// topSenders is how many senders GET /stats lists.
const topSenders = 10

// loadTop returns top_senders as the last committed batch left it: from
// memory, or read in tx when the writer has not read it yet or a batch
// failed since.
func (db *DB) loadTop(ctx context.Context, tx *sql.Tx) ([]senderDelta, error) {
	if db.topKnown {
		return db.top, nil
	}
	rows, err := db.prepared(ctx, tx, getTopSQL).QueryContext(ctx)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var top []senderDelta
	for rows.Next() {
		var s senderDelta
		if err := rows.Scan(&s.sender, &s.n); err != nil {
			return nil, err
		}
		top = append(top, s)
	}
	return top, rows.Err()
}

// writeHours adds the per-hour counts.
func (t *tally) writeHours(ctx context.Context, db *DB, tx *sql.Tx) error {
	deltas, err := json.Marshal(t.hours)
	if err == nil {
		_, err = db.prepared(ctx, tx, addHoursSQL).ExecContext(ctx, string(deltas))
	}
	if err != nil {
		return fmt.Errorf("sqlstore: counting hours: %w", err)
	}
	return nil
}
