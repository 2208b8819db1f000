package sqlstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/msgsvc/msgsvc"
)

// TestReadStatements checks the read path's prepared statements: each query
// of readSQL answers in a transaction as bun's formatted query does, and
// from the transaction's snapshot, not from rows committed after it began.
func TestReadStatements(t *testing.T) {
	ctx := context.Background()
	for _, memory := range []bool{false, true} {
		t.Run(fmt.Sprintf("memory=%v", memory), func(t *testing.T) {
			var db *DB
			if memory {
				db = openURL(t, "sqlite://:memory:")
			} else {
				db, _ = openFile(t)
			}
			if len(db.readStmts) != len(readSQL) {
				t.Fatalf("%d statements prepared, want %d", len(db.readStmts), len(readSQL))
			}
			insert := func(ids ...string) {
				t.Helper()
				msgs := make([]msgsvc.Message, len(ids))
				for i, id := range ids {
					msgs[i] = testMessage(id)
					msgs[i].TS = fmt.Sprintf("2025-01-15T10:%02d:00Z", i)
				}
				if _, err := db.Insert(ctx, msgs); err != nil {
					t.Fatal(err)
				}
			}
			insert("a", "b", "c")
			cases := []struct {
				name  string
				query string
				args  []any
			}{
				{"total", totalQuery, nil},
				{"sender", senderCountQuery, []any{"+919876543210"}},
				{"no such sender", senderCountQuery, []any{"+10000000000"}},
				{"hours after", hoursAfterQuery, []any{"2025-01-15T09"}},
				{"key range", keyRangeCountQuery, []any{"2025-01-15T10:01", "2025-01-15T10;"}},
				{"search state", searchIndexStateQuery, nil},
				{"rows state", searchRowsStateQuery, nil},
				{"words holding", wordsHoldingSQL, []any{ftsPhrase("hello"), maxWordTokens + 1}},
			}
			// answers runs every case in tx, prepared (queryRow) and
			// formatted by bun, and fails the test where they differ.
			answers := func(tx bun.Tx) []string {
				t.Helper()
				got := make([]string, len(cases))
				for i, c := range cases {
					if db.readStmts[c.query] == nil {
						t.Fatalf("%s: not prepared", c.name)
					}
					n := columns(c.query)
					prepared := scan(db.queryRow(ctx, tx, c.query, c.args...), n)
					formatted := scan(tx.QueryRowContext(ctx, c.query, c.args...), n)
					if prepared != formatted {
						t.Errorf("%s: prepared %s, formatted %s", c.name, prepared, formatted)
					}
					got[i] = prepared
				}
				return got
			}
			err := db.read.RunInTx(ctx, db.readTx, func(ctx context.Context, tx bun.Tx) error {
				before := answers(tx)
				if !memory { // :memory: has one connection: the insert would wait for this transaction
					insert("d", "e")
					if after := answers(tx); fmt.Sprint(after) != fmt.Sprint(before) {
						t.Errorf("rows committed after the snapshot are seen:\nbefore %v\nafter  %v", before, after)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if memory {
				return
			}
			err = db.read.RunInTx(ctx, db.readTx, func(ctx context.Context, tx bun.Tx) error {
				var n int64
				if err := db.queryRow(ctx, tx, totalQuery).Scan(&n); err != nil || n != 5 {
					t.Errorf("a new transaction counts %d messages (%v), want 5", n, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// scan reads the first n (one or two) columns of row, and its error, as
// text.
func scan(row *sql.Row, n int) string {
	var a, b any
	err := row.Scan([]any{&a, &b}[:n]...)
	return fmt.Sprint(a, " ", b, " ", err)
}

// columns returns how many columns query selects: two for the queries of
// readSQL that read two, else one.
func columns(query string) int {
	switch query {
	case searchIndexStateQuery, searchRowsStateQuery, wordsHoldingSQL:
		return 2
	}
	return 1
}

// TestPageShapes checks the page queries' statements: every request List
// can make builds one of pageShapes' texts (each combination of filters,
// position and way of searching q), and List prepares the statement of a
// shape after its first page and uses it for the next.
func TestPageShapes(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	early := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	late := early.Add(time.Hour)
	key := msgsvc.InstantKey(early.Add(time.Minute))
	var searches []textSearch
	for _, mode := range []searchMode{searchScan, searchIndexSorted, searchIndexWalk, searchIndexMember} {
		searches = append(searches, textSearch{mode: mode}, textSearch{mode: mode, ids: "[1]"},
			textSearch{mode: mode, words: "w1"}, textSearch{mode: mode, ids: "[1]", words: "w1"})
	}
	n := 0
	for _, from := range []string{"", "+919876543210"} {
		for _, since := range []*time.Time{nil, &early, &late} { // the position is after early, before late
			for _, after := range []*msgsvc.Position{nil, {Key: key, MessageID: "m"}} {
				for _, text := range []string{"", "ab", "école"} {
					for _, s := range searches {
						if text == "" { // planSearch plans nothing without q
							s = textSearch{}
						}
						q := msgsvc.Query{From: from, Since: since, After: after, Text: text, Limit: 7, Offset: 3}
						query, args := pageQuery(q, s)
						n++
						if !db.shapes[query] {
							t.Errorf("%+v with %+v: not one of pageShapes:\n%s", q, s, query)
						}
						if want := strings.Count(query, "?"); len(args) != want {
							t.Errorf("%d arguments for %d placeholders:\n%s", len(args), want, query)
						}
					}
				}
			}
		}
	}
	if n == 0 || len(db.shapes) != 64 {
		t.Fatalf("%d requests checked, %d shapes", n, len(db.shapes))
	}

	// List prepares a shape's statement after its first page, and the
	// next page of that shape runs it.
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("a"), testMessage("b")}); err != nil {
		t.Fatal(err)
	}
	q := msgsvc.Query{From: "+919876543210", Limit: 1}
	query, _ := pageQuery(q, textSearch{})
	for i, want := range []string{query, ""} {
		err := db.read.RunInTx(ctx, db.readTx, func(ctx context.Context, tx bun.Tx) error {
			rows, unprepared, err := db.pageRows(ctx, tx, q, textSearch{})
			if err == nil && (unprepared != want || len(rows) != 2) {
				t.Errorf("page %d: ran unprepared %q with %d rows, want %q and 2", i+1, unprepared, len(rows), want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.List(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	db.pageMu.Lock()
	prepared := len(db.pageStmts)
	db.pageMu.Unlock()
	if prepared != 1 {
		t.Errorf("%d page statements prepared after pages of one shape, want 1", prepared)
	}
}
