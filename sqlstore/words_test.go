package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/tokens"
)

// unindexWordsAbove takes the messages above id out of the word index, in
// tx: a contentless FTS5 'delete' needs the very terms the indexer wrote.
func unindexWordsAbove(t *testing.T, tx *sql.Tx, id int64) {
	t.Helper()
	ctx := context.Background()
	rows, err := tx.QueryContext(ctx, `SELECT id, text_fold FROM messages
		WHERE id > ? AND id <= (SELECT words_indexed_to FROM fts_state) AND text_fold IS NOT NULL`, id)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id    int64
		terms string
	}
	var out []row
	for rows.Next() {
		var r row
		var text string
		if err := rows.Scan(&r.id, &text); err != nil {
			t.Fatal(err)
		}
		var ids []int64
		for _, tok := range tokens.Append(nil, []byte(text)) {
			var tid int64
			if err := tx.QueryRowContext(ctx, `SELECT id FROM words WHERE token = ?`, string(tok)).Scan(&tid); err != nil {
				t.Fatalf("token %q of message %d: %v", tok, r.id, err)
			}
			ids = append(ids, tid)
		}
		if len(ids) > 0 {
			r.terms = string(appendTerms(nil, ids))
			out = append(out, r)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	for _, r := range out {
		if _, err := tx.ExecContext(ctx, `INSERT INTO message_words (message_words, rowid, terms) VALUES ('delete', ?, ?)`, r.id, r.terms); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE fts_state SET words_indexed_to = min(words_indexed_to, ?) WHERE id = 1`, id); err != nil {
		t.Fatal(err)
	}
}

// dropWordIndex empties the word index, as a database migrated with its
// messages already indexed by trigrams has it: the indexer builds it again.
// Call it once the indexer is idle, as unindexAbove.
func dropWordIndex(t *testing.T, db *DB) {
	t.Helper()
	time.Sleep(2 * indexIdle)
	ctx := context.Background()
	err := indexBun(db).RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		for _, stmt := range []string{
			`INSERT INTO message_words (message_words) VALUES ('delete-all')`,
			`UPDATE fts_state SET words_indexed_to = 0 WHERE id = 1`,
		} {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wordsUsed reports whether the word index answers q in a new snapshot,
// should the plan need an index.
func wordsUsed(t *testing.T, db *DB, q msgsvc.Query) bool {
	t.Helper()
	ctx := context.Background()
	var used bool
	err := db.read.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		st, err := db.readSearchState(ctx, tx)
		if err != nil {
			return err
		}
		p := searchPlanner{db: db, tx: tx, q: q, folded: msgsvc.Fold(q.Text), st: st, turn: true}
		used, err = p.useWords(ctx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return used
}

// wordTexts are texts whose tokens are cut by U+0020 alone: tabs, newlines,
// no-break spaces and punctuation belong to tokens, spaces come in runs and
// at either end, and words hold other words.
var wordTexts = []string{
	"alpha beta gamma",
	"  alphabet\tsoup  ",
	"alpha\nbeta",
	"betamax, alpha; gamma.",
	"ÉCOLE école Ecole",
	"straße STRASSE Strasse",
	"ΣΊΣΥΦΟΣ σίσυφος σίσυφοσ",
	"😀😀😀 party 😀 party😀😀",
	"नमस्ते दुनिया नमस्ते",
	"100% done_right 50%_off %_%",
	`back\slash "quoted" it's`,
	"K\u212aK kelvin\u00a0sign",
	"abcabcabc abc ab a",
	"mississippi miss issi ppi",
	"x",
	"",
	"     ",
	"tab\ttab\ttab",
	"gammaray gamma-ray gamma_ray",
}

// wordData returns n messages with texts made of wordTexts and a few
// random tokens, spread over senders and times.
func wordData(prefix string, from, n int) []msgsvc.Message {
	r := rand.New(rand.NewPCG(uint64(from), 13))
	msgs := make([]msgsvc.Message, 0, n)
	for i := from; i < from+n; i++ {
		ts := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(20*24*60)) * time.Minute)
		m := msgsvc.Message{MessageID: fmt.Sprintf("%s%05d", prefix, i), From: fmt.Sprintf("+100000003%02d", r.IntN(3)),
			To: "+14155550100", TS: ts.Format(time.RFC3339)}
		if i%13 != 4 {
			parts := []string{wordTexts[r.IntN(len(wordTexts))]}
			if r.IntN(3) == 0 {
				parts = append(parts, fmt.Sprintf("tok%d", r.IntN(50)))
			}
			if r.IntN(4) == 0 {
				parts = append(parts, wordTexts[r.IntN(len(wordTexts))])
			}
			text := strings.Join(parts, []string{" ", "  ", "\t", ""}[r.IntN(4)])
			m.Text = &text
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// wordQueries returns q to compare: windows of three, four and six
// characters of wordTexts (spaces included, so some fall back to the trigram index), in
// other cases, and a few that match nothing.
func wordQueries() []string {
	seen := map[string]bool{}
	var qs []string
	add := func(q string) {
		if !seen[q] {
			seen[q] = true
			qs = append(qs, q)
		}
	}
	for _, text := range wordTexts {
		runes := []rune(text)
		for _, n := range []int{3, 4, 6} {
			for i := n % 4; i+n <= len(runes); i += 2 * n {
				add(string(runes[i : i+n]))
			}
		}
	}
	for _, q := range []string{"ALPHA", "Alphabet", "tok1", "TOK12", "ok4", "σίσυφος", "ΣΊΣΥΦΟΣ", "kelvin\u00a0", "\u00a0si",
		"a\tb", "p\tb", "ab\tt", "%_%", "_of", "0%", "ss", "ßß", "nothing", "zzzz", "ab ab", "ma, a"} {
		add(q)
	}
	return qs
}

// checkWordSearches compares List with a scan for each q, alone and with
// from and since, at the start, at an offset and after a cursor, and
// reports how many went through the word index.
func checkWordSearches(t *testing.T, db *DB, msgs []msgsvc.Message, qs []string) (viaWords int) {
	t.Helper()
	folded := foldTexts(msgs)
	since := time.Date(2025, 5, 10, 0, 0, 0, 0, time.UTC)
	for i, text := range qs {
		if wordsUsed(t, db, msgsvc.Query{Text: text, Limit: 10}) {
			viaWords++
		}
		positions := []msgsvc.Query{{Limit: 10}}
		if i%4 == 0 {
			positions = append(positions, msgsvc.Query{Limit: 3, Offset: 5}, msgsvc.Query{Limit: 4})
		}
		for _, f := range []msgsvc.Query{{}, {From: "+10000000301"}, {Since: &since}} {
			for _, pos := range positions {
				q := f
				q.Text, q.Limit, q.Offset = text, pos.Limit, pos.Offset
				if pos.Limit == 4 {
					// After the cursor of the second match.
					_, _, _, match := scanMatches(msgs, folded, q)
					if len(match) < 2 {
						continue
					}
					q.After = &msgsvc.Position{Key: msgsvc.TimestampKey(match[1].TS), MessageID: match[1].MessageID}
				}
				checkScan(t, db, msgs, folded, q)
			}
		}
	}
	return viaWords
}

// TestWordSearchExact checks that searches through the word index answer
// what a scan does, counted afresh and remembered, with an unindexed tail,
// while the word index lags (the trigram index answers), and once it has
// caught up again.
func TestWordSearchExact(t *testing.T) {
	db, _ := openFile(t)
	db.words.always = true // rare trigrams, in so few rows, would take q to the trigram index
	ctx := context.Background()
	msgs := wordData("a", 0, 1200)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	qs := wordQueries()
	eligible := 0
	for _, q := range qs {
		if tokens.Eligible(msgsvc.Fold(q)) {
			eligible++
		}
	}
	check := func(t *testing.T, wantWords bool) {
		t.Helper()
		via := checkWordSearches(t, db, msgs, qs)
		switch {
		case wantWords && via != eligible:
			t.Errorf("%d of %d q without a space went through the word index, want all", via, eligible)
		case !wantWords && via != 0:
			t.Errorf("%d q went through the word index, want none", via)
		}
	}
	t.Run("counted", func(t *testing.T) { check(t, true) })
	t.Run("remembered", func(t *testing.T) {
		slowUnderRace(t, false)
		check(t, true)
	})
	t.Run("unindexed tail", func(t *testing.T) {
		db.counts.clear()
		unindexAbove(t, db, int64(len(msgs)-250))
		checkTail(t, db)
		var wordsTo int64
		if err := db.read.QueryRow(`SELECT words_indexed_to FROM fts_state`).Scan(&wordsTo); err != nil || wordsTo != int64(len(msgs)-250) {
			t.Fatalf("words_indexed_to %d, %v; want %d", wordsTo, err, len(msgs)-250)
		}
		check(t, true)
	})
	t.Run("more inserted", func(t *testing.T) {
		db.counts.clear()
		more := wordData("b", 1200, 300)
		if _, err := db.Insert(ctx, more); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, more...)
		check(t, true)
	})
	t.Run("word index lagging", func(t *testing.T) {
		slowUnderRace(t, false)
		waitIndexed(t, db)
		db.counts.clear()
		dropWordIndex(t, db)
		check(t, false)
	})
	t.Run("word index rebuilt", func(t *testing.T) {
		slowUnderRace(t, false)
		db.counts.clear()
		db.indexText(true)
		waitIndexed(t, db)
		check(t, true)
	})
}

// TestWordIndexBuild checks that a database whose messages predate the word
// index builds it in the background once the writer has had an insert, and
// that it then holds the words and postings of an index built along.
func TestWordIndexBuild(t *testing.T) {
	db, url := openFile(t)
	ctx := context.Background()
	msgs := wordData("a", 0, 3*indexChunk+100)
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	postings := func() (n int64) {
		t.Helper()
		// The number of (token, message) pairs, through fts5vocab on the
		// indexer's connection (it needs a temporary table).
		err := indexBun(db).RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := tx.ExecContext(ctx, `CREATE VIRTUAL TABLE IF NOT EXISTS temp.mw_vocab USING fts5vocab(idx, message_words, row)`); err != nil {
				return err
			}
			return tx.QueryRowContext(ctx, `SELECT coalesce(sum(doc), 0) FROM temp.mw_vocab`).Scan(&n)
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	wantPostings := func(msgs []msgsvc.Message) (n int64) {
		for _, m := range msgs {
			if m.Text != nil {
				distinct := map[string]bool{}
				for _, tok := range tokens.Append(nil, []byte(msgsvc.Fold(*m.Text))) {
					distinct[string(tok)] = true
				}
				n += int64(len(distinct))
			}
		}
		return n
	}
	if got, want := postings(), wantPostings(msgs); got != want {
		t.Fatalf("%d postings, want %d", got, want)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// The word index as a migration leaves it: empty, at 0.
	raw, err := openRaw(strings.TrimPrefix(url, "sqlite:///"))
	if err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`INSERT INTO message_words (message_words) VALUES ('delete-all')`,
		`DELETE FROM words`,
		`INSERT INTO words_fts (words_fts) VALUES ('delete-all')`,
		`UPDATE fts_state SET words_indexed_to = 0 WHERE id = 1`,
	} {
		if _, err := raw.ExecContext(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	db = openURL(t, url)
	db.words.always = true
	q := msgsvc.Query{Text: "alphabet", Limit: 10}
	// An insert is answered while the build goes on, and the build
	// finishes by itself once the writer is idle.
	if _, err := db.Insert(ctx, wordData("b", len(msgs), 1)); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	if !wordsUsed(t, db, q) {
		t.Error("the rebuilt word index is not used")
	}
	msgs = append(msgs, wordData("b", len(msgs), 1)...)
	if got, want := postings(), wantPostings(msgs); got != want {
		t.Fatalf("%d postings after the build, want %d", got, want)
	}
	var words, wordsFTS int64
	if err := db.read.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM words), (SELECT count(*) FROM words_fts)`).Scan(&words, &wordsFTS); err != nil {
		t.Fatal(err)
	}
	distinct := map[string]bool{}
	for _, m := range msgs {
		if m.Text != nil {
			for _, tok := range tokens.Append(nil, []byte(msgsvc.Fold(*m.Text))) {
				distinct[string(tok)] = true
			}
		}
	}
	if words != int64(len(distinct)) || wordsFTS != words {
		t.Errorf("%d words, %d in words_fts; want %d", words, wordsFTS, len(distinct))
	}
	checkWordSearches(t, db, msgs, []string{"alpha", "ALPHABET", "σίσυφ", "tok3", "😀😀😀"})
}

// TestWordIndexClosing checks that Close leaves the build of the word index
// for the next start.
func TestWordIndexClosing(t *testing.T) {
	db, url := openFile(t)
	ctx := context.Background()
	if _, err := db.Insert(ctx, wordData("a", 0, 2*indexChunk)); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	dropWordIndex(t, db) // and the writer is idle: no batch, no idle indexing to come
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := openRaw(strings.TrimPrefix(url, "sqlite:///"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var to, wordsTo, maxID int64
	if err := raw.QueryRowContext(ctx, `SELECT indexed_to, words_indexed_to, (SELECT max(id) FROM messages) FROM fts_state`).Scan(&to, &wordsTo, &maxID); err != nil {
		t.Fatal(err)
	}
	if to != maxID || wordsTo != 0 {
		t.Errorf("after Close: indexed_to %d, words_indexed_to %d, max id %d; want %d, 0", to, wordsTo, maxID, maxID)
	}
}

// TestIndexStateNext checks how far one chunk takes each index: the word
// index moves with the trigram index once caught up, and by chunks of its
// own only while it may build.
func TestIndexStateNext(t *testing.T) {
	const c = indexChunk
	for _, tc := range []struct {
		st             indexState
		force, build   bool
		textTo, wordTo int64
	}{
		{indexState{0, 0, 10}, false, true, 0, 0},                       // too few rows wait
		{indexState{0, 0, 10}, true, false, 10, 10},                     // forced: both, in step
		{indexState{0, 0, 3 * c}, false, false, c, c},                   // a chunk of both
		{indexState{5 * c, 0, 5*c + 10}, true, false, 5*c + 10, 0},      // closing: no build
		{indexState{5 * c, 0, 5*c + 10}, true, true, 5*c + 10, c},       // a chunk of the build
		{indexState{5 * c, 5*c - 10, 5 * c}, false, true, 5 * c, 5 * c}, // the build's last chunk
		{indexState{5 * c, 5 * c, 5 * c}, true, true, 5 * c, 5 * c},     // nothing to do
		{indexState{c, 2 * c, 3 * c}, true, false, 2 * c, 2 * c},        // words ahead (tests): wait for the trigrams
		{indexState{2 * c, 2*c + 10, 3 * c}, true, false, 3 * c, 3 * c}, // and then go along
	} {
		textTo, wordsTo := tc.st.next(tc.force, tc.build)
		if textTo != tc.textTo || wordsTo != tc.wordTo {
			t.Errorf("%+v.next(force %v, build %v) = %d, %d; want %d, %d", tc.st, tc.force, tc.build, textTo, wordsTo, tc.textTo, tc.wordTo)
		}
	}
}

// TestWordPlanChoices checks which q the word index answers, and which
// need a turn: a q held by one token runs at once; one held by more than
// cheapWordTokens takes a turn; one held by more than maxWordTokens, or with
// a rare trigram, or a space, or shorter than four characters, goes to the
// trigram index or a scan.
func TestWordPlanChoices(t *testing.T) {
	db, _ := openFile(t)
	ctx := context.Background()
	msgs := searchData("a", 0, 3000)
	for i := range msgs {
		if msgs[i].Text != nil {
			// 600 tokens, each in five rows: ZQX and QXY are in every
			// row, XY1 in a fifth.
			text := fmt.Sprintf("%s zqxy%d", *msgs[i].Text, i%600)
			msgs[i].Text = &text
		}
	}
	if _, err := db.Insert(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	waitIndexed(t, db)
	for _, c := range []struct {
		q              string
		words, turnful bool
	}{
		{"alpha", true, false},  // one token, 2,700 ids read, then the list order walked
		{"zqxy1", true, true},   // zqxy1, zqxy10..19, zqxy100..199: 111 tokens
		{"zqxy", false, true},   // 600 tokens: the trigram index
		{"gamma", false, false}, // in 30 rows: the trigram index, cheap
		{"alp", false, true},    // three characters: the trigram index
		{"zq", false, true},     // two: a scan of every row
		{"alpha w1", false, true},
	} {
		q := msgsvc.Query{Text: c.q, Limit: 10}
		var words, turnful bool
		err := db.read.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			s, err := db.planSearch(ctx, tx, q, false)
			if turnful = errors.Is(err, errNeedTurn); turnful {
				s, err = db.planSearch(ctx, tx, q, true)
			}
			words = s.words != ""
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if words != c.words || turnful != c.turnful {
			t.Errorf("q %q: word index %v, turn %v; want %v, %v", c.q, words, turnful, c.words, c.turnful)
		}
		if got := db.surelyExpensive(q); c.words && !c.turnful && got {
			t.Errorf("q %q: surely expensive, want planned first", c.q)
		}
		if _, err := db.List(ctx, q); err != nil { // remembers the total
			t.Fatal(err)
		}
	}
}

// TestWordSearchPlans checks the queries of the word index: the tokens and
// the matches come from the FTS5 indexes (the matches in rowid order, with
// no sort), a page is driven by their rowids or walks the list order, and
// the indexer looks tokens up by the words index.
func TestWordSearchPlans(t *testing.T) {
	db, _ := openFile(t)
	since := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	virtual := regexp.MustCompile(`VIRTUAL TABLE INDEX`)
	byRowid := regexp.MustCompile(`INTEGER PRIMARY KEY`)
	listOrder := regexp.MustCompile(`messages_ts_key`)
	check := func(query string, args []any, want ...*regexp.Regexp) {
		t.Helper()
		plan := queryPlan(t, db, query, args...)
		t.Logf("%s\n%s", query, strings.Join(plan, "\n"))
		checkNoFullScan(t, query, plan)
		for _, re := range want {
			if !matchesAnyLine(re, plan) {
				t.Errorf("plan does not match %s:\n%s\nplan:\n%s", re, query, strings.Join(plan, "\n"))
			}
		}
		if matchesAnyLine(tempSort, plan) && !matchesAnyLine(byRowid, plan) {
			t.Errorf("sorts the matches:\n%s\nplan:\n%s", query, strings.Join(plan, "\n"))
		}
	}
	check(wordsHoldingSQL, []any{`"ABC"`, maxWordTokens + 1}, virtual)
	check(`SELECT rowid AS id FROM message_words WHERE message_words MATCH 'w1 OR w2' ORDER BY rowid LIMIT 10`, nil, virtual)
	if plan := queryPlan(t, db, `SELECT rowid AS id FROM message_words WHERE message_words MATCH 'w1 OR w2' ORDER BY rowid LIMIT 10`); matchesAnyLine(tempSort, plan) {
		t.Errorf("the matches are sorted, not read in rowid order:\n%s", strings.Join(plan, "\n"))
	}
	for _, q := range []msgsvc.Query{
		{Text: "école", Limit: 50},
		{Text: "école", Since: &since, Limit: 50},
	} {
		words := textSearch{words: "w1 OR w2", indexedTo: 10}
		words.mode = searchIndexSorted
		sorted, args := pageQuery(q, words)
		check(sorted, args, virtual, byRowid)
		words.mode = searchIndexMember
		walk, args := pageQuery(q, words)
		check(walk, args, virtual, listOrder)
		if plan := queryPlan(t, db, walk, args...); matchesAnyLine(tempSort, plan) {
			t.Errorf("walking search does not follow the list order:\n%s\n%s", walk, strings.Join(plan, "\n"))
		}
		words.mode = searchIndexSorted
		check(listFilter(q, words)(db.read.NewSelect().TableExpr("messages").ColumnExpr("count(*)")).String(), nil, virtual)
	}
	check(wordLookupSQL, []any{`["ABC"]`}, regexp.MustCompile(`SEARCH words USING (COVERING )?INDEX sqlite_autoindex_words_1 \(token=\?\)`))
}
