package sqlstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/msgsvc/msgsvc"
)

// TestSearchMatchesSubstring checks that every way of evaluating q, the
// trigram index in both modes and the instr scan, finds exactly the messages
// whose folded text contains the folded q: the contract's definition.
func TestSearchMatchesSubstring(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	alphabet := []string{"a", "b", "A", "é", "É", "k", "K", "\u212a", "%", "_", `\`, `"`, " ", "ß", "ẞ", "Σ", "σ", "ς", "😀", "*", "'"}
	r := rand.New(rand.NewPCG(1, 2))
	randText := func(n int) string {
		var b strings.Builder
		for range n {
			b.WriteString(alphabet[r.IntN(len(alphabet))])
		}
		return b.String()
	}
	texts := map[string]string{}
	var msgs []msgsvc.Message
	for i := range 400 {
		text := randText(1 + r.IntN(12))
		id := fmt.Sprintf("m%03d", i)
		texts[id] = text
		msgs = append(msgs, msgsvc.Message{MessageID: id, From: "+12345", To: "+12346",
			TS: fmt.Sprintf("2025-01-15T10:%02d:%02dZ", i/60, i%60), Text: &text})
	}
	// The first half goes into the search index; the second stays in the
	// unindexed tail, which search tests row by row.
	if _, err := db.Insert(ctx, msgs[:200]); err != nil {
		t.Fatal(err)
	}
	db.indexText(true)
	if _, err := db.Insert(ctx, msgs[200:]); err != nil {
		t.Fatal(err)
	}
	var indexedTo int64
	if err := db.read.QueryRowContext(ctx, `SELECT indexed_to FROM fts_state`).Scan(&indexedTo); err != nil {
		t.Fatal(err)
	}
	if indexedTo < 200 || indexedTo >= 400 {
		t.Fatalf("indexed_to = %d, want the first 200 rows indexed and the rest not", indexedTo)
	}
	for range 300 {
		q := randText(1 + r.IntN(4))
		var want []string
		for id, text := range texts {
			if strings.Contains(msgsvc.Fold(text), msgsvc.Fold(q)) {
				want = append(want, id)
			}
		}
		slices.Sort(want)
		for _, mode := range []searchMode{searchScan, searchIndexSorted, searchIndexWalk, searchIndexMember} {
			if mode != searchScan && len([]rune(q)) < 3 {
				continue
			}
			var rows []messageRow
			err := db.read.RunInTx(ctx, db.readTx, func(ctx context.Context, tx bun.Tx) (err error) {
				rows, _, err = db.pageRows(ctx, tx, msgsvc.Query{Text: q, Limit: 1000}, textSearch{mode: mode, indexedTo: indexedTo})
				return err
			})
			if err != nil {
				t.Fatalf("q %q mode %d: %v", q, mode, err)
			}
			got := make([]string, len(rows))
			for i, row := range rows {
				got[i] = row.MessageID
			}
			if !slices.Equal(got, want) {
				t.Fatalf("q %q mode %d: got %v, want %v", q, mode, got, want)
			}
		}
		page, err := db.List(ctx, msgsvc.Query{Text: q, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != int64(len(want)) {
			t.Fatalf("q %q: total %d, want %d", q, page.Total, len(want))
		}
	}
}

// TestIndexCatchesUp checks that the indexer indexes the tail by itself: in
// bulk once enough rows wait, and whatever is left once inserts stop.
func TestIndexCatchesUp(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	text := "hello"
	msgs := make([]msgsvc.Message, indexEvery+10)
	for i := range msgs {
		msgs[i] = msgsvc.Message{MessageID: fmt.Sprintf("m%05d", i), From: "+12345", To: "+12346", TS: "2025-01-15T10:00:00Z", Text: &text}
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	indexed := func() (to, max int64) {
		t.Helper()
		if err := db.read.QueryRowContext(ctx, `SELECT indexed_to, (SELECT max(id) FROM messages) FROM fts_state`).Scan(&to, &max); err != nil {
			t.Fatal(err)
		}
		return to, max
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		to, max := indexed()
		if to == max {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexed_to %d, max id %d: the idle writer did not catch up", to, max)
		}
		time.Sleep(20 * time.Millisecond)
	}
	page, err := db.List(ctx, msgsvc.Query{Text: "HELLO", Limit: 10})
	if err != nil || page.Total != int64(len(msgs)) {
		t.Fatalf("total %d, %v; want %d", page.Total, err, len(msgs))
	}
}

// Senders of searchData: one with more messages than senderScanMax, so
// that q with from goes through the index, one with a few hundred, and many
// with a handful.
const (
	bigSender   = "+10000000001"
	midSender   = "+10000000002"
	smallSender = "+10000000107"
)

// searchData returns n messages, the i-th with id prefix and index from+i,
// whose texts give q terms of every frequency: "alpha" in nine in ten,
// "Beta" in one in twenty, "gamma" in one in a hundred, and words with
// characters that must match literally. A tenth have no text. Their
// timestamps are not in insertion order.
func searchData(prefix string, from, n int) []msgsvc.Message {
	r := rand.New(rand.NewPCG(uint64(from), 7))
	words := []string{"ÉCOLE", "école", "100%", "snake_case", `back\slash`, "straße", "STRASSE", `"quoted"`}
	msgs := make([]msgsvc.Message, 0, n)
	for i := from; i < from+n; i++ {
		sender := fmt.Sprintf("+100000001%02d", r.IntN(40))
		switch x := r.IntN(100); {
		case x < 75:
			sender = bigSender
		case x < 85:
			sender = midSender
		}
		ts := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(30*24*60)) * time.Minute)
		tsText := ts.Format("2006-01-02T15:04:05Z")
		if i%5 == 0 {
			tsText = ts.Add(time.Duration(1+r.IntN(999)) * time.Millisecond).Format("2006-01-02T15:04:05.000Z")
		}
		m := msgsvc.Message{MessageID: fmt.Sprintf("%s%05d", prefix, i), From: sender, To: "+14155550100", TS: tsText}
		if i%10 != 3 {
			var b strings.Builder
			if r.IntN(10) < 9 {
				b.WriteString("alpha ")
			}
			if r.IntN(20) == 0 {
				b.WriteString("Beta ")
			}
			if r.IntN(100) == 0 {
				b.WriteString("gamma ")
			}
			if r.IntN(25) == 0 {
				b.WriteString(words[r.IntN(len(words))] + " ")
			}
			fmt.Fprintf(&b, "w%d", r.IntN(300))
			text := b.String()
			m.Text = &text
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// scanList answers q over msgs by a plain scan in memory, as the contract
// defines it: the ids of the page, whether a next page exists, and the
// total.
func scanList(msgs []msgsvc.Message, q msgsvc.Query) (ids []string, next bool, total int64) {
	ids, next, total, _ = scanMatches(msgs, foldTexts(msgs), q)
	return ids, next, total
}

// foldTexts returns msgsvc.Fold of each message's text ("" for none).
func foldTexts(msgs []msgsvc.Message) []string {
	folded := make([]string, len(msgs))
	for i, m := range msgs {
		if m.Text != nil {
			folded[i] = msgsvc.Fold(*m.Text)
		}
	}
	return folded
}

// scanMatches is scanList, with the folded texts of msgs, and also returns
// every match of q's filters in list order.
func scanMatches(msgs []msgsvc.Message, folded []string, q msgsvc.Query) (ids []string, next bool, total int64, match []msgsvc.Message) {
	for i, m := range msgs {
		switch {
		case q.From != "" && m.From != q.From,
			q.Since != nil && msgsvc.TimestampKey(m.TS) < msgsvc.InstantKey(*q.Since),
			q.Text != "" && (m.Text == nil || !strings.Contains(folded[i], msgsvc.Fold(q.Text))):
			continue
		}
		match = append(match, m)
	}
	slices.SortFunc(match, func(a, b msgsvc.Message) int {
		return cmp.Or(strings.Compare(msgsvc.TimestampKey(a.TS), msgsvc.TimestampKey(b.TS)), strings.Compare(a.MessageID, b.MessageID))
	})
	page := match
	if a := q.After; a != nil {
		page = slices.DeleteFunc(slices.Clone(page), func(m msgsvc.Message) bool {
			k := msgsvc.TimestampKey(m.TS)
			return k < a.Key || (k == a.Key && m.MessageID <= a.MessageID)
		})
	}
	page = page[min(q.Offset, len(page)):]
	next = len(page) > q.Limit
	for _, m := range page[:min(q.Limit, len(page))] {
		ids = append(ids, m.MessageID)
	}
	return ids, next, int64(len(match)), match
}

// searchQueries returns the List calls the exactness tests compare: q of
// every frequency and length, alone and with from and since, at the start,
// at an offset and after a cursor.
func searchQueries(msgs []msgsvc.Message) []msgsvc.Query {
	since := time.Date(2025, 3, 16, 12, 0, 0, 0, time.UTC)
	mid := msgs[len(msgs)/2]
	after := &msgsvc.Position{Key: msgsvc.TimestampKey(mid.TS), MessageID: mid.MessageID}
	var qs []msgsvc.Query
	for _, text := range []string{"ALPHA", "beta", "e", "école", "STRASSE", "%", "_c", `h\s`, "nothing like it"} {
		for _, f := range []msgsvc.Query{
			{}, {From: bigSender}, {From: midSender}, {From: smallSender},
			{Since: &since}, {From: bigSender, Since: &since},
		} {
			for _, pos := range []msgsvc.Query{{Limit: 10}, {Limit: 7, Offset: 13}, {Limit: 5, After: after}} {
				q := f
				q.Text, q.Limit, q.Offset, q.After = text, pos.Limit, pos.Offset, pos.After
				qs = append(qs, q)
			}
		}
	}
	return qs
}

// checkSearches runs every query of searchQueries through List and
// compares its page and total with scanList over msgs.
func checkSearches(t *testing.T, db *DB, msgs []msgsvc.Message) {
	t.Helper()
	folded := foldTexts(msgs)
	var qs []msgsvc.Query
	for _, q := range searchQueries(msgs) {
		qs = append(qs, q)
		// And a cursor on the third match, which the page must skip.
		if _, _, _, match := scanMatches(msgs, folded, q); q.After == nil && q.Offset == 0 && len(match) > 2 {
			q.After = &msgsvc.Position{Key: msgsvc.TimestampKey(match[2].TS), MessageID: match[2].MessageID}
			qs = append(qs, q)
		}
	}
	for _, q := range qs {
		checkScan(t, db, msgs, folded, q)
	}
}

// checkScan fails t unless List's page, total and next cursor for q are
// those of a plain scan of msgs (folded: their folded texts).
func checkScan(t *testing.T, db *DB, msgs []msgsvc.Message, folded []string, q msgsvc.Query) {
	t.Helper()
	page, err := db.List(context.Background(), q)
	if err != nil {
		t.Fatalf("List(%+v): %v", q, err)
	}
	wantIDs, wantNext, wantTotal, _ := scanMatches(msgs, folded, q)
	var got []string
	for _, m := range page.Messages {
		got = append(got, m.MessageID)
	}
	if !slices.Equal(got, wantIDs) || page.Total != wantTotal || (page.Next != nil) != wantNext {
		t.Errorf("q %q from %q since %v offset %d after %v:\ngot  %v total %d next %v\nwant %v total %d next %v",
			q.Text, q.From, q.Since, q.Offset, q.After, got, page.Total, page.Next != nil, wantIDs, wantTotal, wantNext)
	}
}

// checkTail fails t unless some messages wait for the search index.
func checkTail(t *testing.T, db *DB) {
	t.Helper()
	var to, maxID int64
	if err := db.read.QueryRow(`SELECT indexed_to, (SELECT max(id) FROM messages) FROM fts_state`).Scan(&to, &maxID); err != nil {
		t.Fatal(err)
	}
	if to >= maxID {
		t.Fatalf("indexed_to %d, max id %d: no unindexed tail", to, maxID)
	}
}

// waitIndexed waits until the writer has indexed every message, in the
// trigram index and the word index.
func waitIndexed(t *testing.T, db *DB) {
	t.Helper()
	waitFor(t, "the search index to catch up", func() bool {
		var to, wordsTo, maxID int64
		err := db.read.QueryRow(`SELECT indexed_to, words_indexed_to, (SELECT coalesce(max(id), 0) FROM messages) FROM fts_state`).
			Scan(&to, &wordsTo, &maxID)
		return err == nil && to == maxID && wordsTo == maxID
	})
}

// unindexAbove takes the messages above id out of the search index and the
// word index, as if the indexer had not indexed them yet (those they hold:
// an FTS5 'delete' of a row that it does not hold corrupts it). Call it once
// the indexer has indexed everything: it waits for the indexer's idle
// indexing to be done, after which the indexer indexes again only after the
// next batch's fsync.
func unindexAbove(t *testing.T, db *DB, id int64) {
	t.Helper()
	time.Sleep(2 * indexIdle)
	ctx := context.Background()
	tx, err := db.idx.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	for _, stmt := range []string{
		`INSERT INTO messages_fts (messages_fts, rowid, text_fold)
			SELECT 'delete', id, text_fold FROM messages
			WHERE id > ? AND id <= (SELECT indexed_to FROM fts_state) AND text_fold IS NOT NULL`,
		`UPDATE fts_state SET indexed_to = min(indexed_to, ?) WHERE id = 1`,
	} {
		if _, err := tx.ExecContext(ctx, stmt, id); err != nil {
			t.Fatal(err)
		}
	}
	unindexWordsAbove(t, tx, id)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestSearchExact checks that List answers every search with the page and
// total of a plain scan, whatever the plan, the count cache and the search
// index hold: counted afresh, remembered, with an unindexed tail, after
// inserts that the remembered counts catch up with, and after more inserts
// than they catch up with.
func TestSearchExact(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts thousands of messages")
	}
	for _, c := range []struct {
		probe    int64
		wordsOff bool
		race     bool // also run under the race detector
	}{
		{0, false, true}, // as the daemon runs
		{100, false, false},
		{0, true, false},
		{100, true, false},
	} {
		t.Run(fmt.Sprintf("probe %d words off %v", c.probe, c.wordsOff), func(t *testing.T) {
			slowUnderRace(t, c.race)
			db, _ := openFile(t)
			// A low probe leaves most q with more matches than the ids a
			// plan reads: they are counted past them and walked.
			db.probeMax = c.probe
			// Without the word index, q without a space use the
			// trigram index too.
			db.words.off = c.wordsOff
			checkSearchSteps(t, db)
		})
	}
}

// checkSearchSteps runs the steps of TestSearchExact on db.
func checkSearchSteps(t *testing.T, db *DB) {
	ctx := context.Background()
	msgs := searchData("a", 0, 3000)
	insert := func(t *testing.T, more []msgsvc.Message) {
		t.Helper()
		if _, err := db.Insert(ctx, more); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, more...)
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	for _, step := range []struct {
		name   string
		before func(t *testing.T)
	}{
		{"counted", func(*testing.T) {}},
		{"remembered", func(*testing.T) {}},
		{"unindexed tail", func(t *testing.T) {
			unindexAbove(t, db, int64(len(msgs)-400))
			checkTail(t, db)
		}},
		{"a few inserted", func(t *testing.T) { insert(t, searchData("b", 3000, 150)) }},
		{"a few inserted and indexed", func(t *testing.T) { waitIndexed(t, db) }},
		{"more inserted than a count catches up with", func(t *testing.T) {
			insert(t, searchData("c", 3150, countDeltaMax+500))
			waitIndexed(t, db)
			unindexAbove(t, db, int64(len(msgs)-100))
			checkTail(t, db)
		}},
	} {
		t.Run(step.name, func(t *testing.T) {
			step.before(t)
			checkSearches(t, db, msgs)
			if db.counts.len() == 0 {
				t.Error("no count was remembered")
			}
		})
	}
}

// TestSearchPlanChoices checks that the plans TestSearchExact relies on
// are the ones chosen: each way of answering q is exercised.
func TestSearchPlanChoices(t *testing.T) {
	db, _ := openFile(t)
	db.words.off = true // the trigram index's plans (see TestWordPlanChoices)
	ctx := context.Background()
	msgs := searchData("a", 0, 3000)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	since := time.Date(2025, 3, 16, 12, 0, 0, 0, time.UTC)
	type plan struct {
		mode           searchMode
		ids, collect   bool
		known, turnful bool
	}
	for _, c := range []struct {
		name string
		q    msgsvc.Query
		want plan
	}{
		{"common: the list-order index, each rowid looked up among the ids read", msgsvc.Query{Text: "alpha"}, plan{mode: searchIndexMember, ids: true, known: true, turnful: true}},
		{"common again: walk without a turn", msgsvc.Query{Text: "alpha"}, plan{mode: searchIndexWalk, known: true}},
		// gamma's and beta's trigrams are in fewer than cheapTrigramRows
		// rows: their index queries run without a turn.
		{"rare: sorted from the ids read, without a turn", msgsvc.Query{Text: "gamma"}, plan{mode: searchIndexSorted, ids: true, known: true}},
		{"rare again: sorted from the index, without a turn", msgsvc.Query{Text: "gamma"}, plan{mode: searchIndexSorted, known: true}},
		{"less rare: the list-order index, each rowid looked up among the ids read", msgsvc.Query{Text: "beta"}, plan{mode: searchIndexMember, ids: true, known: true}},
		{"less rare again: walk without a turn", msgsvc.Query{Text: "beta"}, plan{mode: searchIndexWalk, known: true}},
		{"rare with since: ids, one pass", msgsvc.Query{Text: "gamma", Since: &since}, plan{mode: searchIndexSorted, ids: true, collect: true}},
		{"short: scan", msgsvc.Query{Text: "%"}, plan{mode: searchScan, known: false, turnful: true}},
		{"few rows of a sender: scan, one pass, without a turn", msgsvc.Query{Text: "alpha", From: midSender}, plan{mode: searchScan, collect: true}},
		{"big sender, rare q: ids, one pass", msgsvc.Query{Text: "beta", From: bigSender}, plan{mode: searchIndexSorted, ids: true, collect: true}},
		{"big sender, common q: scan, one pass", msgsvc.Query{Text: "alpha", From: bigSender}, plan{mode: searchScan, collect: true, turnful: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.q.Limit = 10
			var got plan
			err := db.read.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
				s, err := db.planSearch(ctx, tx, c.q, false)
				got.turnful = errors.Is(err, errNeedTurn)
				if got.turnful {
					s, err = db.planSearch(ctx, tx, c.q, true)
				}
				if err != nil {
					return err
				}
				got.mode, got.ids, got.collect, got.known = s.mode, s.ids != "", s.collect, s.known
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("plan %+v, want %+v", got, c.want)
			}
			if _, err := db.List(ctx, c.q); err != nil { // remembers the total, as a page would
				t.Fatal(err)
			}
		})
	}
}

// TestSearchOlderSnapshot checks that a read transaction that began before
// rows it cannot see were counted and remembered counts its own total.
func TestSearchOlderSnapshot(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	msgs := searchData("a", 0, 500)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	q := msgsvc.Query{Text: "alpha", Limit: 10}
	_, _, want := scanList(msgs, q)
	tx, err := db.read.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback() //nolint:errcheck // read only
	var rows int64
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&rows); err != nil { // the snapshot starts here
		t.Fatal(err)
	}
	more := searchData("b", 500, 100)
	if _, err := db.Insert(ctx, more); err != nil {
		t.Fatal(err)
	}
	if page, err := db.List(ctx, q); err != nil || page.Total <= want {
		t.Fatalf("List after the insert: total %d, %v; want more than %d", page.Total, err, want)
	}
	s, err := db.planSearch(ctx, tx, q, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.count(ctx, tx, q, s)
	if err != nil || got != want {
		t.Fatalf("total in the older snapshot %d, %v; want %d", got, err, want)
	}
}

// TestSearchConcurrent runs searches in parallel with inserts, for the
// race detector, and checks the totals once the inserts are done.
func TestSearchConcurrent(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	msgs := searchData("a", 0, 1000)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	more := searchData("b", 1000, 400)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(more); i += 40 {
			if _, err := db.Insert(ctx, more[i:i+40]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	texts := []string{"alpha", "beta", "gamma", "e"}
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := map[string]int64{}
			for i := range 40 {
				q := msgsvc.Query{Text: texts[(g+i)%len(texts)], Limit: 10}
				page, err := db.List(ctx, q)
				if err != nil {
					t.Error(err)
					return
				}
				// Messages are only added: a total never goes down.
				if page.Total < last[q.Text] {
					t.Errorf("q %q: total %d after %d", q.Text, page.Total, last[q.Text])
				}
				last[q.Text] = page.Total
			}
		}()
	}
	wg.Wait()
	checkSearches(t, db, append(msgs, more...))
}

// TestSearchExactUnindexed checks searches counted afresh while most rows
// wait for the index, so that the ids a plan reads end in the tail.
func TestSearchExactUnindexed(t *testing.T) {
	if testing.Short() {
		t.Skip("inserts thousands of messages")
	}
	db, _ := openFile(t)
	msgs := searchData("a", 0, 2500)
	if _, err := db.Insert(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	db.probeMax = 100
	for _, above := range []int64{100, 0} {
		t.Run(fmt.Sprintf("indexed up to %d", above), func(t *testing.T) {
			slowUnderRace(t, above == 100)
			db.counts.clear()
			unindexAbove(t, db, above)
			checkTail(t, db)
			checkSearches(t, db, msgs)
		})
	}
}

// TestSearchHugeOffset checks that an offset far past the matches, up to
// the largest int, answers an empty page with the right total in every plan.
func TestSearchHugeOffset(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	msgs := searchData("a", 0, 500)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	for _, q := range []msgsvc.Query{
		{Text: "alpha"}, {Text: "gamma"}, {Text: "e"},
		{Text: "alpha", From: midSender}, {Text: "beta", From: bigSender}, {Text: "alpha", From: bigSender},
	} {
		_, _, _, match := scanMatches(msgs, foldTexts(msgs), q)
		second := &msgsvc.Position{Key: msgsvc.TimestampKey(match[1].TS), MessageID: match[1].MessageID}
		for _, pos := range []msgsvc.Query{{Offset: 1 << 20}, {Offset: math.MaxInt}, {Offset: math.MaxInt, After: second}} {
			q.Limit, q.Offset, q.After = 10, pos.Offset, pos.After
			page, err := db.List(ctx, q)
			_, _, want := scanList(msgs, q)
			if err != nil || len(page.Messages) != 0 || page.Next != nil || page.Total != want {
				t.Errorf("q %q from %q offset %d after %v: %d messages, total %d, next %v, %v; want none, total %d",
					q.Text, q.From, q.Offset, q.After, len(page.Messages), page.Total, page.Next, err, want)
			}
		}
	}
}

// reducedData returns n messages in which "chi" is in every text, so that
// its trigrams are common and a search for q leaves them out, testing the
// candidates of q's other trigrams with instr: "moruchi" in a few, and
// "moruchx", "moruc hi" and "moru" + "chi" elsewhere, which hold some or all
// of moruchi's rarer trigrams without holding it. "hotechi" is in more rows
// than a reduced search tests, and "tafamone" in a few.
func reducedData(prefix string, from, n int) []msgsvc.Message {
	r := rand.New(rand.NewPCG(uint64(from), 11))
	fillers := []string{"moruchi", "MoRuChI", "moruchx", "moruc hi", "moru chichi", "xmoruchix", "hotechi", "tafamone", "tafam mone"}
	msgs := make([]msgsvc.Message, 0, n)
	for i := from; i < from+n; i++ {
		sender := fmt.Sprintf("+100000002%02d", r.IntN(4))
		ts := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(10*24*60)) * time.Minute)
		m := msgsvc.Message{MessageID: fmt.Sprintf("%s%05d", prefix, i), From: sender, To: "+14155550100", TS: ts.Format(time.RFC3339)}
		if i%17 != 5 {
			text := fmt.Sprintf("chi w%d", r.IntN(200))
			switch x := r.IntN(100); {
			case x < 12:
				text += " hotechi"
			case x < 20:
				text += " " + fillers[r.IntN(len(fillers))]
			}
			m.Text = &text
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// reducedTaken reports whether a search for folded would read the
// candidates of its rarer trigrams and test them: the trigram sample finds
// a common trigram to leave out, and the candidates are few enough.
func reducedTaken(t *testing.T, db *DB, folded string) bool {
	t.Helper()
	ctx := context.Background()
	var taken bool
	err := db.read.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		st, err := db.readSearchState(ctx, tx)
		if err != nil {
			return err
		}
		match, verifyMax, ok := db.trigrams.refresh(ctx, tx, st).reducedMatch(folded)
		if !ok {
			return nil
		}
		var n int64
		err = tx.QueryRowContext(ctx, `SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?`, match).Scan(&n)
		taken = n <= verifyMax
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return taken
}

// TestSearchReducedExact checks that a search that leaves q's common
// trigrams out of the index query, and tests the candidates of the others
// with instr, answers exactly what a scan does: pages and totals, alone and
// with from and since, counted afresh and remembered, with an unindexed
// tail, and after the candidates outgrow what it tests.
func TestSearchReducedExact(t *testing.T) {
	db, _ := openFile(t)
	db.words.off = true // else the word index answers these q
	ctx := context.Background()
	msgs := reducedData("a", 0, 1500)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	for _, c := range []struct {
		folded string
		want   bool
	}{
		{"MORUCHI", true},   // MOR ORU RUC UCH kept, CHI left out
		{"XMORUCHI", true},  // XMO MOR ORU RUC UCH kept
		{"TAFAMONE", false}, // no common trigram
		{"HOTECHI", false},  // too many candidates: the phrase
		{"CHI W1", false},   // " W1" is kept, but in too many rows
	} {
		if got := reducedTaken(t, db, c.folded); got != c.want {
			t.Errorf("q %q: reduced search %v, want %v", c.folded, got, c.want)
		}
	}
	since := time.Date(2025, 4, 5, 0, 0, 0, 0, time.UTC)
	texts := []string{"moruchi", "MORUCHI", "xmoruchi", "oruchi", "moruch", "ruchi", "moruchix", "hotechi", "otech", "tafamone", "chi w1", "chi w19", "i w17"}
	check := func(t *testing.T, msgs []msgsvc.Message) {
		t.Helper()
		folded := foldTexts(msgs)
		for _, text := range texts {
			for _, f := range []msgsvc.Query{{}, {From: "+10000000201"}, {Since: &since}} {
				for _, pos := range []msgsvc.Query{{Limit: 10}, {Limit: 3, Offset: 4}} {
					q := f
					q.Text, q.Limit, q.Offset = text, pos.Limit, pos.Offset
					checkScan(t, db, msgs, folded, q)
				}
			}
		}
	}
	t.Run("counted", func(t *testing.T) { check(t, msgs) })
	t.Run("remembered", func(t *testing.T) { check(t, msgs) })
	t.Run("unindexed tail", func(t *testing.T) {
		db.counts.clear()
		unindexAbove(t, db, int64(len(msgs)-300))
		checkTail(t, db)
		check(t, msgs)
	})
	t.Run("more inserted", func(t *testing.T) {
		db.counts.clear()
		more := reducedData("b", 1500, 700)
		if _, err := db.Insert(ctx, more); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, more...)
		waitIndexed(t, db)
		check(t, msgs)
	})
}

// TestTrigramSample checks that the sample counts trigrams as the FTS5
// trigram tokenizer cuts them: on a table small enough to be sampled
// whole, each trigram's count is the number of rows the index lists for it.
func TestTrigramSample(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	var msgs []msgsvc.Message
	for i, text := range []string{"école Straße", "ÉCOLE", "😀😀😀😀 ab", "ab", "nnn nnn", "नमस्ते", "K\u212ak", `"q" 100%_`, "ΣσςΣ"} {
		msgs = append(msgs, msgsvc.Message{MessageID: fmt.Sprintf("m%d", i), From: "+12345", To: "+12346", TS: "2025-01-15T10:00:00Z", Text: &text})
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	db.indexText(true)
	// The indexer's connection: fts5vocab needs a temporary table.
	err := indexBun(db).RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		docs, n, err := sampleTrigrams(ctx, tx, int64(len(msgs)))
		if err != nil {
			return err
		}
		if n != int64(len(msgs)) {
			t.Errorf("sampled %d rows, want %d", n, len(msgs))
		}
		if _, err := tx.ExecContext(ctx, `CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(idx, messages_fts, row)`); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT term, doc FROM temp.vocab`)
		if err != nil {
			return err
		}
		defer rows.Close()
		want := map[string]int32{}
		for rows.Next() {
			var term string
			var doc int32
			if err := rows.Scan(&term, &doc); err != nil {
				return err
			}
			want[term] = doc
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !maps.Equal(docs, want) {
			t.Errorf("sampled trigram counts\n%v\nwant the index's\n%v", docs, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
