package sqlstore

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/msgsvc/msgsvc"
)

// queryPlan returns the lines of EXPLAIN QUERY PLAN for query, run on a
// reader connection as List and Stats run it.
func queryPlan(t *testing.T, db *DB, query string, args ...any) []string {
	t.Helper()
	// The driver binds args, as it does for List's prepared statements:
	// bun would format them into the text.
	rows, err := db.read.DB.QueryContext(context.Background(), "EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatalf("EXPLAIN QUERY PLAN %s: %v", query, err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notUsed int
		var detail string
		if err := rows.Scan(&id, &parent, &notUsed, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

var (
	// fullScan is a pass over the messages table without an index.
	fullScan = regexp.MustCompile(`^SCAN messages$`)
	// anyListIndex is a pass over one of the indexes that give list order.
	anyListIndex = regexp.MustCompile(`^(SCAN|SEARCH) messages USING (COVERING )?INDEX (messages_ts_key|messages_sender_ts_key)\b`)
	senderIndex  = regexp.MustCompile(`^SEARCH messages USING (COVERING )?INDEX messages_sender_ts_key \(sender=\?`)
	tsIndex      = regexp.MustCompile(`^(SCAN|SEARCH) messages USING (COVERING )?INDEX messages_ts_key\b`)
	// The cursor cases must seek to the position, whatever else is set:
	// a page deep in the list must not read every row before it.
	tsSeek     = regexp.MustCompile(`^SEARCH messages USING (COVERING )?INDEX messages_ts_key \(\(ts_key,message_id\)>\(\?,\?\)\)`)
	senderSeek = regexp.MustCompile(`^SEARCH messages USING (COVERING )?INDEX messages_sender_ts_key \(sender=\? AND \(ts_key,message_id\)>\(\?,\?\)\)`)
	// tempSort is a sort of the result: the page would read every match.
	tempSort = regexp.MustCompile(`TEMP B-TREE`)
)

// The plans of pages with q, kept apart so that a search index for q needs
// edits here only. Today q is a plain instr() filter: the page walks an
// index in list order and stops once it is full. With a search index, set
// these to what it should use, and textPlanInOrder to false if the matches
// are sorted after the search (a TEMP B-TREE in the plan).
var (
	textPagePlan     = tsIndex     // q, alone or with since and a cursor
	fromTextPagePlan = senderIndex // from and q
	textPlanInOrder  = true        // q pages read a list-order index, with no sort
)

// TestListPlans checks that every filter combination of GET /messages reads
// its page through an index in list order, never by a full scan or a sort.
func TestListPlans(t *testing.T) {
	db, _ := openFile(t)
	since := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	after := &msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:00Z"), MessageID: "m1"}
	lateSince := since.Add(time.Hour)
	for _, c := range []struct {
		name string
		q    msgsvc.Query
		want *regexp.Regexp
	}{
		{"none", msgsvc.Query{}, tsIndex},
		{"from", msgsvc.Query{From: "+919876543210"}, senderIndex},
		{"since", msgsvc.Query{Since: &since}, tsIndex},
		{"from+since", msgsvc.Query{From: "+919876543210", Since: &since}, senderIndex},
		{"cursor", msgsvc.Query{After: after}, tsSeek},
		{"from+cursor", msgsvc.Query{From: "+919876543210", After: after}, senderSeek},
		{"since+cursor", msgsvc.Query{Since: &since, After: after}, tsSeek},
		{"from+since+cursor", msgsvc.Query{From: "+919876543210", Since: &since, After: after}, senderSeek},
		{"since after cursor", msgsvc.Query{Since: &lateSince, After: after}, tsIndex},
		{"offset", msgsvc.Query{Offset: 500}, tsIndex},
		{"q", msgsvc.Query{Text: "école"}, textPagePlan},
		{"q+since", msgsvc.Query{Text: "école", Since: &since}, textPagePlan},
		{"q+cursor", msgsvc.Query{Text: "école", After: after}, textPagePlan},
		{"from+q", msgsvc.Query{From: "+919876543210", Text: "école"}, fromTextPagePlan},
		{"from+since+q+cursor", msgsvc.Query{From: "+919876543210", Since: &since, Text: "%", After: after}, fromTextPagePlan},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.q.Limit = 50
			query, args := pageSQL(c.q)
			plan := queryPlan(t, db, query, args...)
			t.Logf("%s\n%s", query, strings.Join(plan, "\n"))
			checkPagePlan(t, c.q, query, plan, c.want)
		})
	}
}

// checkPagePlan checks the plan of a page query for q.
func checkPagePlan(t *testing.T, q msgsvc.Query, query string, plan []string, want *regexp.Regexp) {
	t.Helper()
	if q.Text != "" && !textPlanInOrder {
		checkNoFullScan(t, query, plan)
		if !matchesAnyLine(want, plan) {
			t.Errorf("plan does not match %s:\n%s\nplan:\n%s", want, query, strings.Join(plan, "\n"))
		}
		return
	}
	checkPlan(t, query, plan, want)
}

func checkNoFullScan(t *testing.T, query string, plan []string) {
	t.Helper()
	for _, line := range plan {
		if fullScan.MatchString(line) {
			t.Errorf("full scan of messages:\n%s\nplan:\n%s", query, strings.Join(plan, "\n"))
		}
	}
}

// TestCountPlans checks the totals of filtered lists without q: an index
// range, never a full scan.
func TestCountPlans(t *testing.T) {
	db, _ := openFile(t)
	since := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name string
		q    msgsvc.Query
		want *regexp.Regexp
	}{
		{"since", msgsvc.Query{Since: &since}, tsIndex},
		{"from+since", msgsvc.Query{From: "+919876543210", Since: &since}, senderIndex},
		{"from+q", msgsvc.Query{From: "+919876543210", Text: "x"}, senderIndex},
	} {
		t.Run(c.name, func(t *testing.T) {
			sel := listFilter(c.q, textSearch{})(db.read.NewSelect().TableExpr("messages").ColumnExpr("count(*)"))
			query := sel.String()
			checkPlan(t, query, queryPlan(t, db, query), c.want)
		})
	}
}

func checkPlan(t *testing.T, query string, plan []string, want *regexp.Regexp) {
	t.Helper()
	text := strings.Join(plan, "\n")
	checkNoFullScan(t, query, plan)
	var used bool
	for _, line := range plan {
		if tempSort.MatchString(line) {
			t.Errorf("sorts its result instead of reading an index in order:\n%s\nplan:\n%s", query, text)
		}
		used = used || anyListIndex.MatchString(line)
	}
	if !used {
		t.Errorf("uses neither messages_ts_key nor messages_sender_ts_key:\n%s\nplan:\n%s", query, text)
	}
	if !matchesAnyLine(want, plan) {
		t.Errorf("plan does not match %s:\n%s\nplan:\n%s", want, query, text)
	}
}

func matchesAnyLine(re *regexp.Regexp, lines []string) bool {
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// TestStatsPlans checks that /stats and the counted totals never touch the
// messages table.
func TestStatsPlans(t *testing.T) {
	db, _ := openFile(t)
	for _, query := range []string{
		statsTotalsQuery,
		statsTopSendersQuery,
		`SELECT messages FROM totals WHERE id = 1`,
		`SELECT n FROM senders WHERE sender = '+919876543210'`,
	} {
		plan := queryPlan(t, db, query)
		text := strings.Join(plan, "\n")
		if strings.Contains(text, "messages ") || strings.HasSuffix(text, "messages") {
			// "messages" as a table name; the totals column of that name does not show in plans
			t.Errorf("reads the messages table:\n%s\nplan:\n%s", query, text)
		}
		for _, line := range plan {
			// top_senders holds ten rows at most: reading it whole is its use.
			if strings.HasPrefix(line, "SCAN ") && !strings.Contains(line, "INDEX") && line != "SCAN top_senders" {
				t.Errorf("scans without an index:\n%s\nplan:\n%s", query, text)
			}
			if tempSort.MatchString(line) {
				t.Errorf("sorts instead of reading an index in order:\n%s\nplan:\n%s", query, text)
			}
		}
	}
}

// TestPlansWithData repeats a few page plans after rows and ANALYZE exist,
// as the planner may then choose differently.
func TestPlansWithData(t *testing.T) {
	ctx := context.Background()
	db, _ := openFile(t)
	var msgs []msgsvc.Message
	for i := range 2000 {
		m := testMessage(fmt.Sprintf("p%05d", i))
		m.From = fmt.Sprintf("+9198765%05d", i%20)
		m.TS = fmt.Sprintf("2025-01-%02dT10:%02d:%02dZ", 1+i%28, i%60, (i/60)%60)
		msgs = append(msgs, m)
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if _, err := db.write.ExecContext(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	since := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	after := &msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:00Z"), MessageID: "p00001"}
	for _, c := range []struct {
		q    msgsvc.Query
		want *regexp.Regexp
	}{
		{msgsvc.Query{}, anyListIndex},
		{msgsvc.Query{From: "+919876500003"}, anyListIndex},
		{msgsvc.Query{Since: &since}, anyListIndex},
		{msgsvc.Query{From: "+919876500003", Since: &since}, anyListIndex},
		{msgsvc.Query{After: after}, anyListIndex},
		{msgsvc.Query{From: "+919876500003", After: after}, anyListIndex},
		{msgsvc.Query{Text: "hello"}, textPagePlan},
		{msgsvc.Query{From: "+919876500003", Text: "hello"}, fromTextPagePlan},
	} {
		c.q.Limit = 50
		query, args := pageSQL(c.q)
		checkPagePlan(t, c.q, query, queryPlan(t, db, query, args...), c.want)
	}
}

// pageSQL builds the page query for q as List does when q has many matches:
// the search index tested while walking the list order.
func pageSQL(q msgsvc.Query) (string, []any) {
	search := textSearch{mode: searchScan}
	if q.Text != "" && q.From == "" && utf8.RuneCountInString(q.Text) >= 3 {
		search.mode = searchIndexWalk
	}
	return pageQuery(q, search)
}

// TestSearchPlans checks the ways the trigram index serves q: few matches
// are fetched by rowid (no scan of messages), more are looked up or tested
// while walking the list-order index (no sort).
func TestSearchPlans(t *testing.T) {
	db, _ := openFile(t)
	since := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, q := range []msgsvc.Query{
		{Text: "école", Limit: 50},
		{Text: "école", Since: &since, Limit: 50},
	} {
		sorted, args := pageQuery(q, textSearch{mode: searchIndexSorted})
		plan := queryPlan(t, db, sorted, args...)
		checkNoFullScan(t, sorted, plan)
		if !matchesAnyLine(regexp.MustCompile(`VIRTUAL TABLE INDEX`), plan) ||
			!matchesAnyLine(regexp.MustCompile(`INTEGER PRIMARY KEY`), plan) {
			t.Errorf("sorted search is not driven by the index's rowids:\n%s\n%s", sorted, strings.Join(plan, "\n"))
		}
		for _, walking := range []textSearch{
			{mode: searchIndexWalk},
			{mode: searchIndexMember},
			{mode: searchIndexMember, ids: "[1,2,3]"},
		} {
			walk, args := pageQuery(q, walking)
			plan = queryPlan(t, db, walk, args...)
			if !matchesAnyLine(regexp.MustCompile(`messages_ts_key`), plan) || matchesAnyLine(regexp.MustCompile(`TEMP B-TREE`), plan) {
				t.Errorf("walking search does not follow the list order:\n%s\n%s", walk, strings.Join(plan, "\n"))
			}
		}
		sortedIDs, args := pageQuery(q, textSearch{mode: searchIndexSorted, ids: "[1,2,3]"})
		plan = queryPlan(t, db, sortedIDs, args...)
		checkNoFullScan(t, sortedIDs, plan)
		if !matchesAnyLine(regexp.MustCompile(`INTEGER PRIMARY KEY`), plan) {
			t.Errorf("sorted search is not driven by the ids:\n%s\n%s", sortedIDs, strings.Join(plan, "\n"))
		}
		count := listFilter(q, textSearch{mode: searchIndexSorted})(db.read.NewSelect().TableExpr("messages").ColumnExpr("count(*)")).String()
		plan = queryPlan(t, db, count)
		checkNoFullScan(t, count, plan)
	}
}
