package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// trueTop reads the ten senders with the most messages from the senders
// table itself, which every insert keeps exact.
func trueTop(t *testing.T, db *DB) []msgsvc.SenderCount {
	t.Helper()
	rows, err := db.read.QueryContext(context.Background(), `SELECT sender, n FROM senders ORDER BY n DESC, sender LIMIT 10`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var top []msgsvc.SenderCount
	for rows.Next() {
		var s msgsvc.SenderCount
		if err := rows.Scan(&s.From, &s.Count); err != nil {
			t.Fatal(err)
		}
		top = append(top, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return top
}

func checkTop(t *testing.T, db *DB, when string) {
	t.Helper()
	st, err := db.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := trueTop(t, db); !slices.Equal(st.TopSenders, want) {
		t.Fatalf("%s: top senders\n got %v\nwant %v", when, st.TopSenders, want)
	}
}

// TestTopSendersExact: the ten senders that Stats lists, kept by the insert
// transaction in top_senders, are always the first ten of the senders table
// (by count, ties by sender): under concurrent batches whose senders
// overtake one another and tie, after a batch that fails while rewriting
// the ten, and after reopening.
func TestTopSendersExact(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	r := rand.New(rand.NewPCG(1, 2))
	next := 0
	batch := func(senders int, n int) []msgsvc.Message {
		msgs := make([]msgsvc.Message, n)
		for i := range msgs {
			msgs[i] = testMessage(fmt.Sprintf("m%d", next))
			// Few senders, most with small counts: ranks change and tie often.
			msgs[i].From = fmt.Sprintf("+1%03d", int(float64(senders)*r.Float64()*r.Float64()))
			next++
		}
		return msgs
	}
	for round := range 20 {
		var wg sync.WaitGroup
		batches := make([][]msgsvc.Message, 8)
		for i := range batches {
			batches[i] = batch(40+round*10, 1+r.IntN(30))
		}
		for _, msgs := range batches {
			wg.Go(func() {
				if _, err := db.Insert(ctx, msgs); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		checkTop(t, db, fmt.Sprintf("round %d", round))
	}
	checkTop(t, db, "after the rounds")

	// A batch that fails while it rewrites top_senders stores nothing, and
	// the writer's copy of the ten must not take its senders either.
	if _, err := db.write.ExecContext(ctx, `CREATE TEMP TRIGGER fail_top BEFORE INSERT ON top_senders
		WHEN new.sender = '+19999' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
		t.Fatal(err)
	}
	boom := batch(1, 500)
	for i := range boom {
		boom[i].From = "+19999"
	}
	if _, err := db.Insert(ctx, boom); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("the batch that the trigger refuses: got %v, want ErrUnavailable", err)
	}
	if _, err := db.write.ExecContext(ctx, `DROP TRIGGER temp.fail_top`); err != nil {
		t.Fatal(err)
	}
	checkTop(t, db, "after the failed batch")
	// One more message of a sender in the ten: had the writer kept the
	// failed batch's ten, "+19999" would now be listed.
	st, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	one := batch(1, 1)
	one[0].From = st.TopSenders[len(st.TopSenders)-1].From
	if _, err := db.Insert(ctx, one); err != nil {
		t.Fatal(err)
	}
	checkTop(t, db, "after a batch that follows the failed one")

	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openURL(t, url)
	checkTop(t, db, "after reopening")
	if _, err := db.Insert(ctx, batch(20, 50)); err != nil {
		t.Fatal(err)
	}
	checkTop(t, db, "after inserting into the reopened store")
}

// TestTopSendersMigration: a database made before top_senders existed gets
// its ten from the senders table when it is migrated.
func TestTopSendersMigration(t *testing.T) {
	ctx := context.Background()
	db, url := openFile(t)
	var msgs []msgsvc.Message
	for i := range 60 {
		m := testMessage(fmt.Sprintf("m%d", i))
		m.From = fmt.Sprintf("+1%03d", i%13+i%3)
		msgs = append(msgs, m)
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	want := trueTop(t, db)
	// Undo the migration that made top_senders, as if the database came
	// from the version before it.
	version := 1 + slices.IndexFunc(sqliteMigrations, func(step string) bool {
		return strings.Contains(step, "CREATE TABLE top_senders")
	})
	for _, step := range []string{
		`DROP TABLE top_senders`,
		`CREATE INDEX senders_top ON senders (n DESC, sender)`,
		fmt.Sprintf(`DELETE FROM schema_migrations WHERE version = %d`, version),
	} {
		if _, err := db.write.ExecContext(ctx, step); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openURL(t, url)
	st, err := db.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.TopSenders, want) || len(want) != 10 {
		t.Fatalf("after the migration: top senders\n got %v\nwant %v", st.TopSenders, want)
	}
}
