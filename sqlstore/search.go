package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/tokens"
)

// Text search. messages.text_fold holds msgsvc.Fold(text); q matches when
// Fold(q) is a substring of it. Two ways answer that:
//
//   - instr(text_fold, ?): exact and literal, but it must read every row it
//     tests. It serves q shorter than three characters, and q together with
//     from, where the sender's rows are few.
//   - messages_fts, an FTS5 trigram index of text_fold: a phrase query for
//     Fold(q) matches exactly the rows that contain it (every three-character
//     window of q, at consecutive positions), with no wildcards, because the
//     phrase is a quoted FTS5 string. Trigrams need three characters.
//
// With the index, the page is read one of three ways, by how many rows
// match (n among N): the matches are fetched by rowid and sorted (about 8
// walk steps each: a random page read); or the list-order index is walked,
// each entry's rowid looked up among the matches' ids, which stops after
// one page (about (offset+limit)·N/n entries, five to a walk step); or,
// when the ids are not at hand and matches are many, the list order is
// walked testing each row with instr (about (offset+limit)·N/n rows).
//
// The index query costs about the same whatever it returns: it reads the
// lists of every trigram of q, long ones for common trigrams (a q of a few
// hundred matches costs 5–20 ms at 1M rows). So a plan runs it once where it
// can: it reads the ids of the first probeMax matches as one JSON array;
// when there are no more, those ids give the count and the page (no second
// index query), and when there are, the rest is only counted, from the last
// id read. Exact counts are remembered (countcache.go), so that the pages of
// one q, and a q asked again, do not count again: a common q then costs one
// short walk.
//
// The index query reads the whole list of a common trigram even when the
// others are rare: FTS5 steps every list, in every segment, to each row
// the rarer ones hold. So when a sample of the texts (trigrams.go) says
// that some of q's trigrams are in more than a fifth of the rows, and others
// are not, the ids are read another way: the rows of the AND of the phrases
// of q's runs of other trigrams, a superset of q's matches, each tested with
// instr(text_fold, Fold(q)), which is the truth, so the ids are exactly the
// phrase's. Testing a candidate (a fetch by rowid) costs as much as reading
// a few hundred entries of a list, so this is done only when those
// candidates are at most the rows left out over verifyPerDroppedRow (and
// at least minVerify); the candidates are read with that limit, and when
// there are more the phrase is read as before. The count past the ids read
// and a page read from the index without ids still use the phrase.
//
// Searches take turns (one per core), but only the expensive
// ones: a search plans in its read transaction first, and when the plan
// needs no index query and tests at most cheapSearchCost rows (a remembered
// count and a short walk, or a sender with few messages) it runs at once.
// An index query counts as cheap too when the sample holds one of q's
// trigrams in at most cheapTrigramRows rows: FTS5 then steps the other
// lists only to those few rows (a q like an id or a rare name).
//
// A q without a space is answered, when it can be, by the word index
// (words.go) in place of the trigram index: the ids of its matches come from
// the lists of the tokens that hold it, which cost little to read. Its plans
// are the same, with the cost of the page counted like a walk's, so that a
// q with few matches runs without a turn.

// searchMode says how a query tests q.
type searchMode int

const (
	searchScan        searchMode = iota // instr over text_fold
	searchIndexSorted                   // the matches' rows fetched by rowid, then sorted
	searchIndexWalk                     // list order, each row tested with instr
	searchIndexMember                   // list order, each index entry's rowid looked up among the matches'
)

// sortedRowCost is what fetching and sorting one match by rowid costs,
// against testing one row while walking the list order. Measured at 1M
// rows: a walk step costs 0.65–1 µs (the list order follows the table's,
// so one page read serves many rows), a match fetched by rowid 3–9 µs (a
// page read of its own, most of the time).
const sortedRowCost = 8

// indexStepsPerWalkStep is how many entries of messages_ts_key a walk
// reads, testing each rowid against the set of matches, in the time of one
// walk step that reads the row (measured: 0.13–0.2 µs an entry).
const indexStepsPerWalkStep = 5

// cheapSearchCost is the most rows a search may test, in walk steps,
// without taking its turn: a few milliseconds of work, as much as the
// quick pages that never take turns at their deepest offsets.
const cheapSearchCost = 5000

// probeMax bounds the ids of matches a plan reads (as a JSON array of
// about 8 bytes each) to use them for the page and the count.
const probeMax = 8192

// maxCachedID is where the count cache stops: past it SQLite may pick
// rowids below the largest one, and a count up to an id would change.
const maxCachedID = math.MaxInt64 / 2

// errNeedTurn stops a search planned without its turn whose plan is
// expensive: List takes a turn and plans it again.
var errNeedTurn = errors.New("sqlstore: the search needs its turn")

// textSearch is the plan for q in one List call.
type textSearch struct {
	mode      searchMode
	indexedTo int64 // rows above this id are not in the index yet
	// words, when the word index answers q, is the message_words query of
	// q's tokens; indexedTo is then the word index's watermark.
	words string
	// ids, with searchIndexSorted and searchIndexMember, are the ids of
	// every match of q as a JSON array, read by the plan; "" means the
	// query reads them from the index itself.
	ids string
	// total is the exact total of the List call, when known is set.
	total int64
	known bool
	// collect, when set, has List read the keys of every match in one
	// pass, for the page and the count (see collectPage).
	collect bool
	// remember, when set, has List remember the total it counts, up to
	// maxID, the largest id of the snapshot.
	remember bool
	maxID    int64
}

func (s textSearch) indexed() bool { return s.mode != searchScan }

// ftsPhrase quotes a folded q as an FTS5 string: inside double quotes every
// character is literal, and a double quote is written twice.
func ftsPhrase(folded string) string {
	return `"` + strings.ReplaceAll(folded, `"`, `""`) + `"`
}

// textMatches selects the ids of every match: those in the index, and those
// of the unindexed tail, tested one by one.
const textMatches = `SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?
	UNION ALL SELECT id FROM messages WHERE id > ? AND instr(text_fold, ?) > 0`

// cond returns the q filter as a condition on messages.
func (s textSearch) cond(text string) cond {
	folded := msgsvc.Fold(text)
	switch {
	case s.mode == searchScan || s.mode == searchIndexWalk:
		return cond{"instr(text_fold, ?) > 0", []any{folded}}
	case s.ids != "":
		return cond{"id IN (SELECT value FROM json_each(?))", []any{s.ids}}
	case s.words != "":
		return cond{"id IN (" + wordMatches + ")", []any{s.words, s.indexedTo, folded}}
	}
	return cond{"id IN (" + textMatches + ")", []any{ftsPhrase(folded), s.indexedTo, folded}}
}

// table is the FROM clause of the page query: searchIndexMember walks the
// list-order index, which the planner would not choose over fetching the
// matches by rowid.
func (s textSearch) table() string {
	if s.mode == searchIndexMember {
		return "messages INDEXED BY messages_ts_key"
	}
	return "messages"
}

// idList returns ids as a JSON array, for json_each.
func idList(ids []int64) string {
	b := make([]byte, 0, 2+8*len(ids))
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	return string(append(b, ']'))
}

// senderScanMax is the most messages of one sender that q with from tests
// one by one; a busier sender is searched through the index when that
// matches fewer rows.
const senderScanMax = 2000

// searchState is what a plan reads of the snapshot first.
type searchState struct {
	indexedTo int64 // every message with id <= indexedTo is in messages_fts
	wordsTo   int64 // every message with id <= wordsTo is in the word index
	maxID     int64 // the largest id
	rows      int64 // the number of messages
}

// The two queries of readSearchState, in this order.
const (
	searchIndexStateQuery = `SELECT indexed_to, words_indexed_to FROM fts_state WHERE id = 1`
	searchRowsStateQuery  = `SELECT (SELECT coalesce(max(id), 0) FROM messages), (SELECT messages FROM totals WHERE id = 1)`
)

// readSearchState reads the searchState of tx's snapshot. It must be the
// transaction's first read of the index file, and come before its first
// read of messages: SQLite takes each file's snapshot at the transaction's
// first read of it, so the index's is then no later than the messages',
// and every row the index holds is in the messages' snapshot. (The
// indexer indexes only committed rows, and messages are never deleted.)
func (db *DB) readSearchState(ctx context.Context, tx bun.IDB) (searchState, error) {
	var st searchState
	if err := db.queryRow(ctx, tx, searchIndexStateQuery).Scan(&st.indexedTo, &st.wordsTo); err != nil {
		return st, err
	}
	err := db.queryRow(ctx, tx, searchRowsStateQuery).Scan(&st.maxID, &st.rows)
	return st, err
}

// planSearch chooses how List tests q, and reads the total when it is
// remembered or falls out of the plan. Without a turn (turn unset) it
// returns errNeedTurn as soon as the plan proves expensive.
func (db *DB) planSearch(ctx context.Context, tx bun.IDB, q msgsvc.Query, turn bool) (textSearch, error) {
	if q.Text == "" {
		return textSearch{}, nil
	}
	st, err := db.readSearchState(ctx, tx)
	if err != nil {
		return textSearch{}, err
	}
	db.words.ready.Store(st.wordsTo >= st.indexedTo)
	p := searchPlanner{db: db, tx: tx, q: q, folded: msgsvc.Fold(q.Text), st: st, turn: turn}
	if utf8.RuneCountInString(q.Text) >= 3 {
		p.est = db.trigrams.refresh(ctx, tx, st)
	}
	s, err := p.plan(ctx)
	if p.words.ok {
		s.words, s.indexedTo = p.words.match, p.st.wordsTo
	}
	return s, err
}

// surelyExpensive reports whether the search for q will need its turn, so
// that List takes it before planning. Without from, the plan needs the count
// of q's matches: when it is not remembered, it is counted; when it is, the
// page is sorted or walked as below, with the largest id standing for the
// number of rows (a hint only: the plan decides). A q that the word index
// may answer is planned first: its plan reads the ids of at most probeMax
// matches before it knows whether it needs a turn.
func (db *DB) surelyExpensive(q msgsvc.Query) bool {
	if q.Text == "" || q.From != "" {
		return false
	}
	folded := msgsvc.Fold(q.Text)
	cheap := db.trigrams.peek().cheapIndex(folded)
	words := !cheap && !db.words.off && db.words.ready.Load() && tokens.Eligible(folded)
	n, rows, ok := db.counts.get(countKey{text: folded})
	switch {
	case !ok:
		return !words && !cheap
	case words:
		return wordPageCost(q, rows, n) > cheapSearchCost
	}
	walked := walkCost(q, rows, n)
	return walked > sortedRowCost*n || walked > cheapSearchCost
}

// walkCost returns the number of rows that a walk in list order tests
// before q's page is full, with n matches spread through rows in list order.
func walkCost(q msgsvc.Query, rows, n int64) int64 {
	// In floating point: a huge offset must not overflow.
	w := (float64(q.Offset) + float64(q.Limit) + 1) * float64(rows) / float64(max(n, 1))
	return int64(min(w, float64(rows)))
}

// searchPlanner holds what planSearch works with.
type searchPlanner struct {
	db     *DB
	tx     bun.IDB
	q      msgsvc.Query
	folded string
	st     searchState
	turn   bool
	cost   int64           // rows the plan tests, in walk steps, so far
	est    trigramEstimate // how common q's trigrams are
	words  wordPlan        // whether the word index answers q, once asked
}

func (p *searchPlanner) plan(ctx context.Context) (textSearch, error) {
	q := p.q
	s := textSearch{mode: searchScan, indexedTo: p.st.indexedTo, maxID: p.st.maxID}
	var err error
	if s.total, s.known, err = p.remembered(ctx, totalKey(q)); err != nil {
		return textSearch{}, err
	}
	textOnly := q.From == "" && q.Since == nil
	// n is the number of matches of q alone, when known: it decides the
	// plan.
	n, nKnown := s.total, s.known && textOnly
	if !nKnown && !textOnly {
		if n, nKnown, err = p.remembered(ctx, countKey{text: p.folded}); err != nil {
			return textSearch{}, err
		}
	}
	senderRows := int64(-1)
	if q.From != "" {
		err := p.db.queryRow(ctx, p.tx, senderCountQuery, q.From).Scan(&senderRows)
		if errors.Is(err, sql.ErrNoRows) {
			senderRows = 0
		} else if err != nil {
			return textSearch{}, err
		}
	}
	short := utf8.RuneCountInString(q.Text) < 3
	switch {
	case q.From != "" && (short || senderRows <= senderScanMax):
		return p.senderScan(s, senderRows)
	case short:
		// Walk the list order, testing each row; count them all.
		walk := p.st.rows
		if nKnown {
			walk = p.walked(n)
		}
		p.cost += walk
		if !s.known {
			p.cost += p.st.rows
			s.remember = true
		}
		return s, p.check()
	}

	var ids string
	if !nKnown {
		if err := p.needIndex(ctx); err != nil {
			return textSearch{}, err
		}
		limit := p.probeMax()
		if p.words.ok && !p.turn {
			// More ids would take a turn to count: find out cheaply.
			limit = min(limit, wordProbeNoTurn)
		}
		if q.From != "" {
			limit = min(senderRows, limit)
		}
		var last int64
		if ids, n, last, err = p.matches(ctx, limit); err != nil {
			return textSearch{}, err
		}
		if n >= limit && q.From != "" && limit == senderRows {
			// At least as many matches as the sender has rows: test those.
			return p.senderScan(s, senderRows)
		}
		if n >= limit {
			if p.words.ok {
				// The word index read the first ids without a turn;
				// counting the rest may cost milliseconds.
				if err := p.need(); err != nil {
					return textSearch{}, err
				}
			}
			if n, err = p.countMatches(ctx, last, n); err != nil {
				return textSearch{}, err
			}
			ids = ""
		}
		p.db.remember(countKey{text: p.folded}, n, p.st.maxID)
		if textOnly {
			s.total, s.known = n, true
		}
	}

	switch {
	case q.From != "" && n >= senderRows:
		return p.senderScan(s, senderRows)
	case q.From != "":
		// The sender's index, in list order, with each rowid looked up
		// among the matches': SQLite's own choice for sender = ? AND id IN.
		return p.indexed(ctx, s, searchIndexSorted, ids, n)
	}
	w := p.walked(n)
	if ids == "" && w <= sortedRowCost*n {
		s.mode = searchIndexWalk
		p.cost += w
		if !s.known {
			// With since, the matches are counted through the index:
			// through the word index, n rowids looked up.
			s.remember = true
			if words, err := p.useWords(ctx); err != nil {
				return textSearch{}, err
			} else if !words || p.words.tokens > cheapWordTokens {
				return s, p.need()
			}
			p.cost += sortedRowCost * n
		}
		return s, p.check()
	}
	mode := searchIndexSorted
	if w/indexStepsPerWalkStep+sortedRowCost*int64(q.Limit+1) < sortedRowCost*n {
		mode = searchIndexMember
	}
	return p.indexed(ctx, s, mode, ids, n)
}

// walked returns walkCost for n matches among the snapshot's rows.
func (p *searchPlanner) walked(n int64) int64 {
	return walkCost(p.q, p.st.rows, n)
}

// senderScan plans a test of each of the sender's rows, in one pass for the
// page and the count.
func (p *searchPlanner) senderScan(s textSearch, senderRows int64) (textSearch, error) {
	s.mode = searchScan
	s.collect = !s.known && senderRows <= probeMax
	s.remember = !s.known && senderRows*sortedRowCost > cheapSearchCost
	// The sender's rows are spread through the table: each costs a random
	// fetch, like a sorted match.
	p.cost += senderRows * sortedRowCost
	return s, p.check()
}

// indexed plans a page of the n matches read from the index: by rowid and
// sorted, or walking the list order and looking each row up among them
// (mode), from ids when the plan has read them. The index query costs as
// much as the rowid lookups of thousands of matches, so the page reads it
// in its own query, unless the count would read it too: then the ids are
// read once, for both.
func (p *searchPlanner) indexed(ctx context.Context, s textSearch, mode searchMode, ids string, n int64) (textSearch, error) {
	s.mode = mode
	s.remember = !s.known
	if ids == "" {
		if err := p.needIndex(ctx); err != nil {
			return textSearch{}, err
		}
	}
	if p.words.ok {
		// Cheap to read, the matches cost what the page does with them.
		p.cost += wordPageCost(p.q, p.st.rows, n)
		if err := p.check(); err != nil {
			return textSearch{}, err
		}
	}
	if ids == "" {
		if limit := p.probeMax(); !s.known && n < limit {
			read, got, _, err := p.matches(ctx, limit)
			if err != nil {
				return textSearch{}, err
			}
			if got < limit {
				ids = read
			}
		}
	}
	s.ids = ids
	s.collect = ids != "" && !s.known
	return s, nil
}

// probeMax returns the most ids of matches the plan reads: probeMax,
// unless a test lowered it for its database.
func (p *searchPlanner) probeMax() int64 {
	if p.db.probeMax > 0 {
		return p.db.probeMax
	}
	return probeMax
}

// need says that the plan needs the index, or work enough to take a turn.
func (p *searchPlanner) need() error {
	if !p.turn {
		return errNeedTurn
	}
	return nil
}

// needIndex says that the plan needs the index: a turn, unless the word
// index answers q through few tokens (the cost of the matches is counted
// where the plan knows them), or one of q's trigrams is in so few rows that
// the index query costs little.
func (p *searchPlanner) needIndex(ctx context.Context) error {
	words, err := p.useWords(ctx)
	switch {
	case err != nil:
		return err
	case words && p.words.tokens <= cheapWordTokens, !words && p.est.cheapIndex(p.folded):
		return nil
	}
	return p.need()
}

// check says whether the plan's cost needs a turn.
func (p *searchPlanner) check() error {
	if p.cost > cheapSearchCost {
		return p.need()
	}
	return nil
}

// matches reads the ids of q's matches, in the index and then in the tail,
// up to limit of them, as a JSON array: n of them, the largest last. There
// are more when n reaches limit. SQLite builds the array, so that a
// thousand ids cost no more than their index entries.
func (p *searchPlanner) matches(ctx context.Context, limit int64) (ids string, n, last int64, err error) {
	read := func(query string, args ...any) (string, int64, int64, error) {
		var ids string
		var n, last int64
		err := p.tx.QueryRowContext(ctx, `SELECT count(*), coalesce(max(id), 0), json_group_array(id) FROM (`+query+`)`,
			args...).Scan(&n, &last, &ids)
		return ids, n, last, err
	}
	// Both take the smallest ids, so the largest one read tells where
	// counting the rest starts.
	done := false
	indexedTo := p.st.indexedTo
	if p.words.ok {
		ids, n, last, err = read(`SELECT rowid AS id FROM message_words WHERE message_words MATCH ? ORDER BY rowid LIMIT ?`,
			p.words.match, limit)
		indexedTo, done = p.st.wordsTo, true
	}
	if match, verifyMax, ok := p.est.reducedMatch(p.folded); ok && !done {
		// The candidates of q's rarer trigrams, when there are few, each
		// tested with instr: the truth, so the ids are exactly the
		// phrase's.
		var candidates string
		var c int64
		err = p.tx.QueryRowContext(ctx, `SELECT count(*), json_group_array(id) FROM (
			SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid LIMIT ?)`,
			match, verifyMax+1).Scan(&c, &candidates)
		if err != nil {
			return "", 0, 0, err
		}
		if c <= verifyMax {
			ids, n, last, err = read(`SELECT id FROM messages WHERE id IN (SELECT value FROM json_each(?))
				AND instr(text_fold, ?) > 0 ORDER BY id LIMIT ?`, candidates, p.folded, limit)
			done = true
		}
	}
	if !done {
		ids, n, last, err = read(`SELECT rowid AS id FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid LIMIT ?`,
			ftsPhrase(p.folded), limit)
	}
	if err != nil || n >= limit || p.st.maxID <= indexedTo {
		return ids, n, last, err
	}
	tail, more, tailLast, err := read(`SELECT id FROM messages WHERE id > ? AND instr(text_fold, ?) > 0 ORDER BY id LIMIT ?`,
		indexedTo, p.folded, limit-n)
	switch {
	case err != nil:
		return "", 0, 0, err
	case more == 0:
		return ids, n, last, nil
	case n == 0:
		return tail, more, tailLast, nil
	}
	return ids[:len(ids)-1] + "," + tail[1:], n + more, tailLast, nil
}

// countMatches returns n plus the number of matches above id last.
func (p *searchPlanner) countMatches(ctx context.Context, last, n int64) (int64, error) {
	var rest int64
	if last >= p.st.maxID {
		return n, nil
	}
	index, match, indexedTo := "messages_fts", ftsPhrase(p.folded), p.st.indexedTo
	if p.words.ok {
		index, match, indexedTo = "message_words", p.words.match, p.st.wordsTo
	}
	err := p.tx.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM `+index+` WHERE `+index+` MATCH ? AND rowid > ?) +
		(SELECT count(*) FROM messages WHERE id > max(?, ?) AND instr(text_fold, ?) > 0)`,
		match, last, last, indexedTo, p.folded).Scan(&rest)
	return n + rest, err
}

// remembered returns the count of k in this snapshot from the count cache,
// bringing it up to date by testing the rows added since, when they are
// few.
func (p *searchPlanner) remembered(ctx context.Context, k countKey) (int64, bool, error) {
	n, upTo, ok := p.db.counts.get(k)
	if !ok || upTo > p.st.maxID || p.st.maxID-upTo > countDeltaMax {
		return 0, false, nil
	}
	if upTo == p.st.maxID {
		return n, true, nil
	}
	query := `SELECT count(*) FROM messages WHERE id > ? AND instr(text_fold, ?) > 0`
	args := []any{upTo, k.text}
	// The unary + keeps the planner on the rowid range: the sender's or
	// the time index would read far more rows.
	if k.from != "" {
		query += ` AND +sender = ?`
		args = append(args, k.from)
	}
	if k.since != "" {
		query += ` AND +ts_key >= ?`
		args = append(args, k.since)
	}
	var added int64
	if err := p.tx.QueryRowContext(ctx, query, args...).Scan(&added); err != nil {
		return 0, false, err
	}
	p.cost += p.st.maxID - upTo
	p.db.remember(k, n+added, p.st.maxID)
	return n + added, true, nil
}

// totalKey names the total of q in the count cache.
func totalKey(q msgsvc.Query) countKey {
	k := countKey{from: q.From, text: msgsvc.Fold(q.Text)}
	if q.Since != nil {
		k.since = msgsvc.InstantKey(*q.Since)
	}
	return k
}

// remember puts an exact count into the count cache.
func (db *DB) remember(k countKey, n, upTo int64) {
	if upTo <= maxCachedID {
		db.counts.put(k, n, upTo)
	}
}
