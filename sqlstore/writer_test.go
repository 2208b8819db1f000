package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// storedIDs returns the set of every stored message id, read directly.
func storedIDs(tb testing.TB, db *DB) map[string]bool {
	tb.Helper()
	rows, err := db.read.QueryContext(context.Background(), `SELECT message_id FROM messages`)
	if err != nil {
		tb.Fatal(err)
	}
	defer rows.Close()
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			tb.Fatal(err)
		}
		ids[id] = true
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	return ids
}

// checkCounters fails tb unless the counters that Stats reads agree with the
// messages table.
func checkCounters(tb testing.TB, db *DB) {
	tb.Helper()
	ctx := context.Background()
	var messages, senders, counted, distinct int64
	if err := db.read.QueryRowContext(ctx, `SELECT messages, senders FROM totals`).Scan(&messages, &senders); err != nil {
		tb.Fatal(err)
	}
	if err := db.read.QueryRowContext(ctx, `SELECT count(*), count(DISTINCT sender) FROM messages`).Scan(&counted, &distinct); err != nil {
		tb.Fatal(err)
	}
	if messages != counted || senders != distinct {
		tb.Errorf("totals say %d messages from %d senders; the table holds %d from %d", messages, senders, counted, distinct)
	}
	var mismatched int
	if err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM senders s
		FULL JOIN (SELECT sender, count(*) AS n FROM messages GROUP BY sender) m USING (sender)
		WHERE s.n IS NOT m.n`).Scan(&mismatched); err != nil {
		tb.Fatal(err)
	}
	if mismatched != 0 {
		tb.Errorf("%d per-sender counts disagree with the messages table", mismatched)
	}
}

// TestGroupCommitCreatesOnce has many callers insert overlapping ids, alone
// and in small batches: each id is created by exactly one caller.
func TestGroupCommitCreatesOnce(t *testing.T) {
	db, _ := openFile(t)
	const callers, distinct, rounds = 256, 1000, 3
	var created [distinct]atomic.Int32
	inParallel(t, callers, func(c int) error {
		for r := range rounds {
			// Caller c sends ids c*7+r, and sometimes a neighbour's too.
			i := (c*7 + r*13) % distinct
			msgs := []msgsvc.Message{testMessage(fmt.Sprintf("g%04d", i))}
			if c%3 == 0 {
				msgs = append(msgs, testMessage(fmt.Sprintf("g%04d", (i+1)%distinct)), msgs[0])
			}
			res, err := db.Insert(context.Background(), msgs)
			if err != nil {
				return err
			}
			for k, ok := range res {
				if ok {
					var n int
					_, _ = fmt.Sscanf(msgs[k].MessageID, "g%d", &n)
					created[n].Add(1)
				}
			}
		}
		return nil
	})
	ids := storedIDs(t, db)
	for i := range distinct {
		id := fmt.Sprintf("g%04d", i)
		if n := created[i].Load(); n > 1 || (n == 1) != ids[id] {
			t.Errorf("%s: created %d times, stored: %v", id, n, ids[id])
		}
	}
	checkCounters(t, db)
}

// holdWriter takes the writer's only connection, so the writer blocks at its
// next BEGIN and requests pile up in the queue. The returned function gives
// the connection back.
func holdWriter(t *testing.T, db *DB) (release func()) {
	t.Helper()
	conn, err := db.write.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { conn.Close() }) }
	t.Cleanup(release)
	return release
}

// waitFor polls cond until it holds, or fails t after a few seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// inParallel runs f(0) to f(n-1), each in a goroutine of its own, waits for
// them all, and fails t with the first error any returned.
func inParallel(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := f(i); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// openBoom opens a fresh database file whose writer fails any insert of
// message_id 'boom', as a full disk or an I/O error would, inside its
// transaction.
func openBoom(t *testing.T) *DB {
	t.Helper()
	db, _ := openFile(t)
	const boomTrigger = `CREATE TEMP TRIGGER boom BEFORE INSERT ON messages
		WHEN NEW.message_id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END`
	if _, err := db.write.ExecContext(context.Background(), boomTrigger); err != nil {
		t.Fatal(err)
	}
	return db
}

type insertResult struct {
	id      string
	created []bool
	err     error
}

// TestFailedBatchAcknowledgesNobody puts a failing message in a batch with
// many others: every caller of that batch gets ErrUnavailable and none of
// its rows is stored, while the batch before it commits.
func TestFailedBatchAcknowledgesNobody(t *testing.T) {
	ctx := context.Background()
	db := openBoom(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("before")}); err != nil {
		t.Fatal(err)
	}

	// The writer takes "first" and blocks at BEGIN; then everything else
	// queues behind it and forms the next batch.
	release := holdWriter(t, db)
	waits := db.write.Stats().WaitCount
	results := make(chan insertResult, 200)
	var wg sync.WaitGroup
	send := func(ids ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]msgsvc.Message, len(ids))
			for i, id := range ids {
				msgs[i] = testMessage(id)
			}
			created, err := db.Insert(ctx, msgs)
			results <- insertResult{id: ids[0], created: created, err: err}
		}()
	}
	send("first")
	waitFor(t, "the writer to block on its connection", func() bool { return db.write.Stats().WaitCount > waits })
	const others = 100
	for i := range others {
		switch i {
		case others / 2:
			send("boom")
		case others / 3:
			send(fmt.Sprintf("x%03d", i), "before", "boom-neighbour") // a duplicate and a new id
		default:
			send(fmt.Sprintf("x%03d", i))
		}
	}
	waitFor(t, "the batch to queue", func() bool { return len(db.queue) == others })
	release()
	wg.Wait()
	close(results)

	for r := range results {
		switch {
		case r.id == "first":
			if r.err != nil || len(r.created) != 1 || !r.created[0] {
				t.Errorf("first: %v, %v; want created in a batch of its own", r.created, r.err)
			}
		case !errors.Is(r.err, msgsvc.ErrUnavailable):
			t.Errorf("%s: %v, %v; want an error wrapping msgsvc.ErrUnavailable, as its batch held boom", r.id, r.created, r.err)
		case r.created != nil:
			t.Errorf("%s: created = %v alongside the error", r.id, r.created)
		}
	}
	ids := storedIDs(t, db)
	if len(ids) != 2 || !ids["before"] || !ids["first"] {
		t.Errorf("stored ids %v, want only before and first", ids)
	}
	checkCounters(t, db)

	// The writer goes on after a failed batch.
	created, err := db.Insert(ctx, []msgsvc.Message{testMessage("after"), testMessage("x001")})
	if err != nil || len(created) != 2 || !created[0] || !created[1] {
		t.Fatalf("Insert after the failed batch: %v, %v", created, err)
	}
	checkCounters(t, db)
}

// TestFailedBatchUnderLoad runs the same failure without arranging the
// batches: whatever the batching, a caller answered nil is stored, and a
// caller answered with an error is not.
func TestFailedBatchUnderLoad(t *testing.T) {
	ctx := context.Background()
	db := openBoom(t)
	const callers, each = 32, 20
	results := make(chan insertResult, callers*each)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("c%02d-%02d", c, i)
				if i%5 == 4 {
					id = "boom"
				}
				created, err := db.Insert(ctx, []msgsvc.Message{testMessage(id)})
				results <- insertResult{id: id, created: created, err: err}
			}
		}()
	}
	wg.Wait()
	close(results)
	ids := storedIDs(t, db)
	var failed, ok int
	for r := range results {
		switch {
		case r.id == "boom" && r.err == nil:
			t.Errorf("boom: %v, want an error", r.created)
		case r.err == nil:
			ok++
			if !ids[r.id] || !r.created[0] {
				t.Errorf("%s: acknowledged (created %v) but stored: %v", r.id, r.created, ids[r.id])
			}
		case !errors.Is(r.err, msgsvc.ErrUnavailable):
			t.Errorf("%s: %v, want an error wrapping msgsvc.ErrUnavailable", r.id, r.err)
		default:
			failed++
			if ids[r.id] {
				t.Errorf("%s: answered %v but stored", r.id, r.err)
			}
		}
	}
	if ids["boom"] {
		t.Error("boom is stored")
	}
	t.Logf("%d inserts acknowledged, %d failed with their batch", ok, failed)
	checkCounters(t, db)
}

// TestCloseKeepsAcknowledged reopens the file after Close: every id
// acknowledged before is there.
func TestCloseKeepsAcknowledged(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]bool{}
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := fmt.Sprintf("k%02d-%02d", c, i)
				if _, err := db.Insert(ctx, []msgsvc.Message{testMessage(id)}); err != nil {
					t.Errorf("Insert %s: %v", id, err)
					return
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("late")}); !errors.Is(err, msgsvc.ErrClosed) {
		t.Fatalf("Insert after Close = %v, want msgsvc.ErrClosed", err)
	}

	checkAckedAfterReopen(t, url, acked)
}

// TestCloseWhileInserting closes the store under load: each insert either
// succeeded, and is then stored, or failed with ErrClosed.
func TestCloseWhileInserting(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]bool{}
	var failed atomic.Int64
	start := make(chan struct{})
	for c := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%02d-%05d", c, i)
				created, err := db.Insert(ctx, []msgsvc.Message{testMessage(id)})
				if err != nil {
					if !errors.Is(err, msgsvc.ErrClosed) {
						t.Errorf("Insert %s during Close: %v, want nil or msgsvc.ErrClosed", id, err)
					}
					failed.Add(1)
					return
				}
				if len(created) != 1 || !created[0] {
					t.Errorf("Insert %s: created = %v", id, created)
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		}()
	}
	close(start)
	waitFor(t, "some inserts", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 200
	})
	closed := make(chan error)
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
	wg.Wait()
	if failed.Load() != 32 {
		t.Errorf("%d inserters saw ErrClosed, want all 32", failed.Load())
	}

	checkAckedAfterReopen(t, url, acked)
}

// TestInsertLargerThanBatch sends one call bigger than the batch limit: it
// is still one transaction, and its neighbours still commit.
func TestInsertLargerThanBatch(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	db.maxBatch = 4
	var wg sync.WaitGroup
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs := make([]msgsvc.Message, 10)
			for i := range msgs {
				msgs[i] = testMessage(fmt.Sprintf("b%d-%d", c, i))
			}
			created, err := db.Insert(ctx, msgs)
			if err != nil || len(created) != len(msgs) {
				t.Errorf("Insert of %d: %v, %v", len(msgs), created, err)
			}
		}()
	}
	wg.Wait()
	if n := len(storedIDs(t, db)); n != 80 {
		t.Errorf("%d stored, want 80", n)
	}
	checkCounters(t, db)
}

func TestInsertEmpty(t *testing.T) {
	db, _ := openFile(t)
	created, err := db.Insert(context.Background(), nil)
	if err != nil || len(created) != 0 {
		t.Fatalf("Insert(nil) = %v, %v; want nothing and no error", created, err)
	}
}

// TestInsertCanceledBeforeQueueing checks that a caller whose context ends
// while the queue is full gets its context's error and stores nothing.
func TestInsertCanceledBeforeQueueing(t *testing.T) {
	db, _ := openFile(t)
	release := holdWriter(t, db)
	// Fill the queue while the writer is blocked.
	var wg sync.WaitGroup
	waits := db.write.Stats().WaitCount
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = db.Insert(context.Background(), []msgsvc.Message{testMessage("first")})
	}()
	waitFor(t, "the writer to block", func() bool { return db.write.Stats().WaitCount > waits })
	for i := range cap(db.queue) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = db.Insert(context.Background(), []msgsvc.Message{testMessage(fmt.Sprintf("q%04d", i))})
		}()
	}
	waitFor(t, "the queue to fill", func() bool { return len(db.queue) == cap(db.queue) })
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("canceled")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Insert with a full queue and an expiring context = %v, want context.DeadlineExceeded", err)
	}
	release()
	wg.Wait()
	ids := storedIDs(t, db)
	if ids["canceled"] {
		t.Error("the canceled insert is stored")
	}
	if len(ids) != cap(db.queue)+1 {
		t.Errorf("%d stored, want %d", len(ids), cap(db.queue)+1)
	}
}

// TestPingFollowsWriteFailures checks that readiness follows the writer: a
// failing write makes Ping fail, and Ping recovers by itself, without a
// restart, once writes succeed again.
func TestPingFollowsWriteFailures(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	text := "hello"
	m := func(id string) []msgsvc.Message {
		return []msgsvc.Message{{MessageID: id, From: "+12345", To: "+12346", TS: "2025-01-15T10:00:00Z", Text: &text}}
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("healthy Ping: %v", err)
	}
	// Every write transaction updates totals; failing that update stands in
	// for a full disk or a read-only file.
	if _, err := db.write.ExecContext(ctx, `CREATE TRIGGER totals_fail BEFORE UPDATE ON totals
		BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Insert(ctx, m("lost")); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Insert during the fault: %v, want ErrUnavailable", err)
	}
	if err := db.Ping(ctx); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Ping during the fault: %v, want ErrUnavailable", err)
	}
	if _, err := db.write.ExecContext(ctx, `DROP TRIGGER totals_fail`); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping after the fault cleared: %v", err)
	}
	if _, err := db.Insert(ctx, m("kept")); err != nil {
		t.Fatalf("Insert after the fault cleared: %v", err)
	}
	page, err := db.List(ctx, msgsvc.Query{Limit: 10})
	if err != nil || len(page.Messages) != 1 || page.Messages[0].MessageID != "kept" {
		t.Fatalf("after recovery: %+v, %v; want only the acknowledged message", page.Messages, err)
	}
}

// checkAckedAfterReopen reopens the database at url and checks that exactly
// the acknowledged ids are stored and that the counters agree with the rows.
func checkAckedAfterReopen(t *testing.T, url string, acked map[string]bool) {
	t.Helper()
	reopened := openURL(t, url)
	defer reopened.Close() // one store at a time: the caller may open it again
	ids := storedIDs(t, reopened)
	for id := range acked {
		if !ids[id] {
			t.Errorf("%s was acknowledged but is missing after reopening", id)
		}
	}
	if len(ids) != len(acked) {
		t.Errorf("%d stored after reopening, %d acknowledged", len(ids), len(acked))
	}
	checkCounters(t, reopened)
}
