package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
)

// openPostgresURL opens a store on url and closes it when the test ends.
func openPostgresURL(t *testing.T, url string) *DB {
	t.Helper()
	db, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// savedPostgresCounts returns the number of rows in search_counts.
func savedPostgresCounts(t *testing.T, raw *sql.DB) int {
	t.Helper()
	var n int
	if err := raw.QueryRowContext(context.Background(), `SELECT count(*) FROM search_counts`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestPostgresCountsSaved: a replica saves its counts while it runs, and
// another replica that starts loads them and answers exact totals from
// them. Counts saved under another cluster, on another timeline, or with a
// watermark beyond the transaction counter are not loaded.
func TestPostgresCountsSaved(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	db := openPostgresURL(t, url)
	raw, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })

	var msgs []msgsvc.Message
	for i := range 40 {
		msgs = append(msgs, pgMessage(fmt.Sprintf("m%02d", i), fmt.Sprintf("+91%d", i%3), fmt.Sprintf("apple pie %d", i)))
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	queries := []msgsvc.Query{{Text: "apple", Limit: 5}, {Text: "PIE", From: "+911", Limit: 5}}
	for _, q := range queries {
		if _, err := db.List(ctx, q); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := db.counts.get(pgKey(t, raw, q)); !ok {
			t.Fatalf("the total of %+v was not remembered", q)
		}
	}
	if n := savedPostgresCounts(t, raw); n != 0 {
		t.Fatalf("%d counts saved before a save was due", n)
	}
	db.countSaveNanos.Store(1) // due at once: the next batch is followed by a save
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("late", "+910", "apple late")}); err != nil {
		t.Fatal(err)
	}
	waitSaved(t, len(queries), func() int { return savedPostgresCounts(t, raw) })

	// Planted counts that must not load, each under a text no search uses.
	var server string
	var timeline, next int64
	if err := raw.QueryRowContext(ctx, countsSnapshotQuery).Scan(&server, &timeline, &next); err != nil {
		t.Fatal(err)
	}
	planted := map[string][]any{
		"OTHER CLUSTER":  {"1", timeline, 1},
		"OTHER TIMELINE": {server, timeline + 1, 1},
		"BEYOND COUNTER": {server, timeline, next + 1000},
	}
	for text, p := range planted {
		if _, err := raw.ExecContext(ctx, `INSERT INTO search_counts (server, timeline, up_to, sender, since, text, n) VALUES ($1, $2, $3, '', '', $4, 7)`,
			p[0], p[1], p[2], text); err != nil {
			t.Fatal(err)
		}
	}

	other := openPostgresURL(t, url)
	if got, want := other.counts.len(), len(queries); got != want {
		t.Errorf("a new replica loaded %d counts, want %d", got, want)
	}
	for _, q := range queries {
		k := pgKey(t, raw, q)
		n, upTo, _ := db.counts.get(k)
		if gn, gupTo, ok := other.counts.get(k); !ok || gn > n || gupTo > upTo {
			t.Errorf("the loaded count of %+v is %d below %d (%v), want at most %d below %d", q, gn, gupTo, ok, n, upTo)
		}
		page, err := other.List(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		if want := pgCount(t, raw, q); page.Total != want {
			t.Errorf("%+v on the new replica: total %d, want %d", q, page.Total, want)
		}
	}
}

// TestPostgresCountsForgottenOnNewHistory: a replica that finds a timeline
// other than the one it last saw, or a watermark of its own beyond the
// transaction counter, forgets its counts and saves none.
func TestPostgresCountsForgottenOnNewHistory(t *testing.T) {
	ctx := context.Background()
	db, raw := openPostgresPair(t)
	if _, err := db.Insert(ctx, []msgsvc.Message{pgMessage("a", "+910", "apple")}); err != nil {
		t.Fatal(err)
	}
	q := msgsvc.Query{Text: "apple", Limit: 5}
	if _, err := db.List(ctx, q); err != nil {
		t.Fatal(err)
	}
	// The writer saves only once a minute: these saves run here alone.
	real := db.pgTimeline
	db.pgTimeline = real + 1
	if err := db.saveCountsPostgres(ctx); err != nil {
		t.Fatal(err)
	}
	if n := db.counts.len(); n != 0 {
		t.Errorf("%d counts kept on a new timeline", n)
	}
	if db.pgTimeline != real {
		t.Errorf("timeline %d after the save, want %d", db.pgTimeline, real)
	}
	if n := savedPostgresCounts(t, raw); n != 0 {
		t.Errorf("%d counts saved on a new timeline", n)
	}

	if _, err := db.List(ctx, q); err != nil {
		t.Fatal(err)
	}
	k := pgKey(t, raw, q)
	n, upTo, ok := db.counts.get(k)
	if !ok {
		t.Fatal("the total was not remembered")
	}
	db.counts.put(k, n, upTo+1<<40) // a watermark the counter has not reached
	if err := db.saveCountsPostgres(ctx); err != nil {
		t.Fatal(err)
	}
	if n := db.counts.len(); n != 0 {
		t.Errorf("%d counts kept with a watermark beyond the counter", n)
	}
	if n := savedPostgresCounts(t, raw); n != 0 {
		t.Errorf("%d counts saved with a watermark beyond the counter", n)
	}

	// The same history: saved.
	if _, err := db.List(ctx, q); err != nil {
		t.Fatal(err)
	}
	if err := db.saveCountsPostgres(ctx); err != nil {
		t.Fatal(err)
	}
	if n := savedPostgresCounts(t, raw); n != 1 {
		t.Errorf("%d counts saved, want 1", n)
	}
}
