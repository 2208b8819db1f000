package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
)

// pgMessage returns a message of sender from with text.
func pgMessage(id, from, text string) msgsvc.Message {
	return msgsvc.Message{MessageID: id, From: from, To: "+14155550100", TS: "2025-01-15T10:00:00Z", Text: &text}
}

// pgCount is the count of q's matches straight from the table, in a
// snapshot of its own.
func pgCount(t *testing.T, conn *sql.DB, q msgsvc.Query) int64 {
	t.Helper()
	var args pgArgs
	var n int64
	if err := conn.QueryRowContext(context.Background(), `SELECT count(*) FROM messages`+postgresWhere(q, false, false, &args), args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// openPostgresPair opens a store on a schema of its own, and a plain
// connection pool to the same schema that writes and counts behind the
// store's back.
func openPostgresPair(t *testing.T) (*DB, *sql.DB) {
	t.Helper()
	url := pgtest.URL(t)
	db, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	raw, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	return db, raw
}

// pgKey returns the count cache's key for q on the server behind conn.
func pgKey(t *testing.T, conn *sql.DB, q msgsvc.Query) countKey {
	t.Helper()
	k := totalKey(q)
	if err := conn.QueryRowContext(context.Background(), `SELECT system_identifier::text FROM pg_control_system()`).Scan(&k.server); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestPostgresSearchCounts checks the count cache on Postgres against a
// count of the table, for every filter it serves: the first search counts
// in full, later ones add the rows inserted since, and the entry's
// watermark moves forward.
func TestPostgresSearchCounts(t *testing.T) {
	db, raw := openPostgresPair(t)
	ctx := context.Background()
	since := time.Date(2025, 1, 15, 9, 0, 0, 0, time.UTC)
	queries := []msgsvc.Query{
		{Text: "apple"},
		{Text: "APPLE", From: "+911"},
		{Text: "apple", Since: &since},
		{From: "+912", Since: &since},
	}
	seq := 0
	insert := func(n int) {
		t.Helper()
		msgs := make([]msgsvc.Message, n)
		for i := range msgs {
			seq++
			text := "pear"
			if seq%3 != 0 {
				text = fmt.Sprintf("an apple a day %d", seq)
			}
			msgs[i] = pgMessage(fmt.Sprintf("c-%d", seq), fmt.Sprintf("+91%d", 1+seq%2), text)
		}
		if _, err := db.Insert(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	insert(30)
	for round := range 3 {
		for _, q := range queries {
			name := fmt.Sprintf("round %d, %+v", round, q)
			page, err := db.List(ctx, q)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if want := pgCount(t, raw, q); page.Total != want {
				t.Errorf("%s: total %d, the table counts %d", name, page.Total, want)
			}
			n, upTo, ok := db.counts.get(pgKey(t, raw, q))
			if !ok {
				t.Fatalf("%s: no count remembered", name)
			}
			if n > page.Total || upTo <= 0 {
				t.Errorf("%s: remembered %d below xid %d, for a total of %d", name, n, upTo, page.Total)
			}
		}
		insert(7) // a tail for the next round to add
	}
}

// TestPostgresSearchCountLateCommit is the case an id watermark gets
// wrong: a transaction that took a smaller id commits after a count was
// remembered. Its row must be in every count after its commit, and in none
// before it.
func TestPostgresSearchCountLateCommit(t *testing.T) {
	db, raw := openPostgresPair(t)
	ctx := context.Background()
	q := msgsvc.Query{Text: "kiwi"}
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("k-1", "+911", "kiwi one")}); err != nil {
		t.Fatal(err)
	}

	// Another writer (a replica, say) inserts a match and has not committed.
	late, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Rollback() //nolint:errcheck // a no-op after Commit
	if _, err := late.ExecContext(ctx, `INSERT INTO messages (message_id, sender, recipient, ts, ts_key, text, text_fold)
		VALUES ('k-late', '+912', '+14155550100', '2025-01-15T10:00:00Z', $1, 'kiwi late', $2)`,
		msgsvc.TimestampKey("2025-01-15T10:00:00Z"), msgsvc.Fold("kiwi late")); err != nil {
		t.Fatal(err)
	}
	// Rows with larger ids commit first, and a count is remembered.
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("k-2", "+911", "kiwi two")}); err != nil {
		t.Fatal(err)
	}
	total := func(step string, want int64) {
		t.Helper()
		page, err := db.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != want {
			t.Fatalf("%s: total %d, want %d", step, page.Total, want)
		}
	}
	total("before the late commit", 2)
	total("again before it, from the remembered count", 2)
	if err := late.Commit(); err != nil {
		t.Fatal(err)
	}
	total("after the late commit", 3)
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("k-3", "+911", "kiwi three")}); err != nil {
		t.Fatal(err)
	}
	total("after one more", 4)
}

// TestPostgresSearchCountOlderSnapshot checks that a snapshot older than a
// remembered count does not use it: the count may hold rows committed
// after the snapshot began.
func TestPostgresSearchCountOlderSnapshot(t *testing.T) {
	db, err := Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	q := msgsvc.Query{Text: "plum"}
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("p-1", "+911", "plum one")}); err != nil {
		t.Fatal(err)
	}
	old, err := db.read.DB.BeginTx(ctx, db.readTx)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Rollback() //nolint:errcheck // read only
	if n, err := countPostgres(ctx, old, q, false, &db.counts); err != nil || n != 1 {
		t.Fatalf("count in the old snapshot = %d, %v; want 1", n, err)
	}
	for i := 2; i <= 4; i++ {
		if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage(fmt.Sprintf("p-%d", i), "+911", "plum more")}); err != nil {
			t.Fatal(err)
		}
		if page, err := db.List(ctx, q); err != nil || page.Total != int64(i) {
			t.Fatalf("List after %d inserts: total %d, %v", i, page.Total, err)
		}
	}
	if _, upTo, _ := db.counts.get(pgKey(t, db.read.DB, q)); upTo <= 0 {
		t.Fatalf("no count remembered")
	}
	if n, err := countPostgres(ctx, old, q, false, &db.counts); err != nil || n != 1 {
		t.Fatalf("count in the old snapshot after newer counts = %d, %v; want 1", n, err)
	}
}

// TestPostgresSearchCountMigrated checks a table from before the xid
// column: its rows have none, and every count holds them.
func TestPostgresSearchCountMigrated(t *testing.T) {
	url := pgtest.URL(t)
	raw, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	ctx := context.Background()
	for _, stmt := range []string{
		`CREATE TABLE schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`,
		postgresMigrations[0],
		`INSERT INTO schema_migrations (version) VALUES (1)`,
		`INSERT INTO messages (message_id, sender, recipient, ts, ts_key, text, text_fold)
			SELECT 'old-' || i, '+911', '+14155550100', '2025-01-15T10:00:00Z', '` + msgsvc.TimestampKey("2025-01-15T10:00:00Z") + `', 'fig ' || i, 'FIG ' || i
			FROM generate_series(1, 50) i`,
	} {
		if _, err := raw.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%.60s: %v", stmt, err)
		}
	}
	db, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var nulls int
	if err := raw.QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE xid IS NULL`).Scan(&nulls); err != nil || nulls != 50 {
		t.Fatalf("rows without xid after the migration: %d, %v; want 50", nulls, err)
	}
	q := msgsvc.Query{Text: "fig"}
	for i, want := range []int64{50, 50, 51} {
		if i == 2 {
			if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("new-1", "+911", "fig new")}); err != nil {
				t.Fatal(err)
			}
		}
		page, err := db.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != want {
			t.Errorf("search %d: total %d, want %d", i+1, page.Total, want)
		}
	}
}

// TestPostgresSearchWithinSender checks how from+q is searched: a sender
// with few messages has each of them tested, a busy one goes through the
// trigram index, one with none reads nothing. Every way gives the exact
// page and total.
func TestPostgresSearchWithinSender(t *testing.T) {
	db, raw := openPostgresPair(t)
	ctx := context.Background()
	var msgs []msgsvc.Message
	for i := range 6 {
		text := "a banana split"
		if i%2 == 0 {
			text = "an apple pie"
		}
		msgs = append(msgs, pgMessage(fmt.Sprintf("w-%d", i), "+911", text))
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	check := func(name string, q msgsvc.Query, wantEach, wantNone bool, want int64) {
		t.Helper()
		tx, err := db.read.DB.BeginTx(ctx, db.readTx)
		if err != nil {
			t.Fatal(err)
		}
		each, none, err := withinSender(ctx, tx, q)
		_ = tx.Rollback()
		if err != nil || each != wantEach || none != wantNone {
			t.Errorf("%s: withinSender = %v, %v, %v; want %v, %v", name, each, none, err, wantEach, wantNone)
		}
		db.counts.clear()
		page, err := db.List(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if page.Total != want || int64(len(page.Messages)) != want {
			t.Errorf("%s: %d messages, total %d; want %d", name, len(page.Messages), page.Total, want)
		}
		for _, m := range page.Messages {
			if (q.From != "" && m.From != q.From) || !strings.Contains(*m.Text, "apple") {
				t.Errorf("%s: listed %+v", name, m)
			}
		}
	}
	q := msgsvc.Query{From: "+911", Text: "APPLE"}
	check("a sender of 6", q, true, false, 3)
	check("a sender of none", msgsvc.Query{From: "+919", Text: "apple"}, true, true, 0)
	if _, err := raw.ExecContext(ctx, `UPDATE senders SET n = $1 WHERE sender = '+911'`, pgSenderScanMax+1); err != nil {
		t.Fatal(err)
	}
	check("a sender counted as busy", q, false, false, 3)
	check("q alone", msgsvc.Query{Text: "apple"}, false, false, 3)
}

// TestPostgresSearchCountServer checks that a count serves only snapshots
// of the cluster it was taken on.
func TestPostgresSearchCountServer(t *testing.T) {
	db, raw := openPostgresPair(t)
	ctx := context.Background()
	q := msgsvc.Query{Text: "lime"}
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("l-1", "+911", "lime one"), pgMessage("l-2", "+911", "lime two")}); err != nil {
		t.Fatal(err)
	}
	var xmin int64
	if err := raw.QueryRowContext(ctx, `SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint`).Scan(&xmin); err != nil {
		t.Fatal(err)
	}
	total := func() int64 {
		t.Helper()
		page, err := db.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return page.Total
	}
	// A count as another cluster would have left it: not used.
	other := totalKey(q)
	other.server = "another cluster"
	db.counts.put(other, 1000, xmin)
	if n := total(); n != 2 {
		t.Fatalf("total with another cluster's count remembered = %d, want 2", n)
	}
	// The same under this cluster's identifier is used, which shows the
	// identifier is what kept the other out.
	db.counts.clear()
	db.counts.put(pgKey(t, raw, q), 1000, xmin)
	if n := total(); n != 1000 {
		t.Fatalf("total with a count of 1000 planted for this cluster = %d, want 1000", n)
	}
}
