package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/tokens"
)

// The word index answers q without a space. A row's tokens are the runs of
// its text_fold without U+0020, as package tokens (internal/tokens) cuts
// them. When Fold(q) holds no U+0020, a row holds Fold(q) exactly when one
// of its tokens does: an occurrence cannot cross a space. So q is answered
// in two small steps instead of the trigram lists of a million rows:
//
//   - words is the dictionary of distinct tokens, and words_fts a trigram
//     index of it: a phrase query finds the tokens that hold Fold(q), as
//     messages_fts finds rows.
//   - message_words, a contentless FTS5 table with detail=none, holds for
//     each message the ids of its distinct tokens as terms ("w12 w9034"):
//     the OR of the ids of q's tokens lists the matching rowids, in order
//     and once each, reading rowid lists only.
//
// Only q of four characters or more, one of them a letter, use it. A q of
// three is one trigram, whose single list the trigram index reads as fast as
// any, while an OR of the many tokens that hold three characters costs a
// lookup per token. A q without a letter is mostly a number, and numbers
// (amounts, codes, phone numbers, times) are mostly unique: each would be a
// word of its own, costing the indexer a row of words and of words_fts, and
// the trigram index finds digit strings well. So the indexes hold only the
// tokens of four characters or more with a letter (unicode.IsLetter, in the
// folded text): every token that holds such a q is one of them, since it
// holds q's letter. The short tokens left out are the commonest of real
// text, and would be most of the postings.
//
// The indexer (indexer.go) adds rows to both in the transactions that add
// them to messages_fts, and records in fts_state.words_indexed_to the last
// id it indexed for words. A database that had rows before the word index
// existed builds it from id 0 in the background, a chunk at a time, while
// no insert waits; until it catches up with indexed_to, searches use the
// trigram index alone. The indexer keeps a bounded map of token ids, so
// that most tokens of a chunk cost no statement at all.
//
// A search uses the word index when Fold(q) has no space and four characters
// or more, one a letter, the word index has caught up with the trigram index in the
// search's snapshot, none of q's trigrams is rare (the trigram index is then
// cheap: see cheapIndex), and at most maxWordTokens tokens hold q. FTS5 steps
// every list of an OR at each rowid it returns, in every segment, so each
// token costs tens of microseconds: a q held by more than cheapWordTokens
// takes its turn. The rows above words_indexed_to, the unindexed tail, are
// tested with instr as with the trigram index, and the ids feed the same
// plans (search.go). Anything else falls back to the trigram plans
// unchanged.

// maxWordTokens is the most tokens holding q that a search ORs together;
// a q held by more (a common syllable) uses the trigram index. At 1M rows
// an OR costs 20–100 µs a token, the phrase of two or more common trigrams
// 5–30 ms.
const maxWordTokens = 128

// cheapWordTokens is the most tokens holding q whose OR runs without a
// turn (when it reads at most probeMax ids).
const cheapWordTokens = 16

// wordProbeNoTurn bounds the ids of matches a plan without a turn reads
// from the word index (about half a microsecond each): reaching it, the
// search takes its turn to read more and count the rest.
const wordProbeNoTurn = 4096

// Bounds of the indexer's map of token ids: its entries, and the longest
// token it keeps (longer ones are mostly unique: ids, links).
const (
	wordCacheMax      = 1 << 16
	wordCacheTokenMax = 64
)

// wordIndex is a DB's state of the word index.
type wordIndex struct {
	mu  sync.Mutex       // held while a chunk is indexed or ids are learned
	ids map[string]int64 // token → words.id, at most wordCacheMax entries
	// ready is set when the word index was last seen caught up: a hint
	// for surelyExpensive, which plans before any snapshot.
	ready atomic.Bool
	// Tests: off keeps searches on the trigram index; always has the word
	// index answer q even when one of its trigrams is rare.
	off, always bool
}

// appendTerms appends the message_words terms of a row's token ids: each
// distinct id once, as "w<id>", separated by spaces. It sorts ids.
func appendTerms(b []byte, ids []int64) []byte {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	for i, id := range ids {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, 'w')
		b = strconv.AppendInt(b, id, 10)
	}
	return b
}

// The word indexer's statements. They run once a chunk, or less, so they
// are not prepared.
const (
	wordTextsSQL = `SELECT id, text_fold FROM messages WHERE id > ? AND id <= ? AND text_fold IS NOT NULL ORDER BY id`
	wordAddSQL   = `INSERT INTO words (token) SELECT value FROM json_each(?) WHERE true
		ON CONFLICT (token) DO NOTHING RETURNING id, token`
	wordLookupSQL = `SELECT id, token FROM words WHERE token IN (SELECT value FROM json_each(?))`
	wordFTSSQL    = `INSERT INTO words_fts (rowid, token) SELECT id, token FROM words WHERE id >= ?`
	wordPostSQL   = `INSERT INTO message_words (rowid, terms) SELECT value ->> 0, value ->> 1 FROM json_each(?)`
)

// indexWords adds the messages with from < id <= to to the word index, in
// tx, and returns the token ids it learned, for learn once tx commits.
func (db *DB) indexWords(ctx context.Context, tx *sql.Tx, from, to int64) (map[string]int64, error) {
	w := &db.words
	w.mu.Lock()
	defer w.mu.Unlock()
	rows, err := tx.QueryContext(ctx, wordTextsSQL, from, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	// Each row's token ids, rows back to back; a token not in the map
	// stands as -(1 + its index in missing) until looked up.
	type span struct {
		id         int64
		start, end int
	}
	var spans []span
	var ids []int64
	var missing []string
	missingAt := map[string]int{}
	var text sql.RawBytes
	var toks [][]byte
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id, &text); err != nil {
			return nil, err
		}
		toks = tokens.Append(toks[:0], []byte(text))
		if len(toks) == 0 {
			continue
		}
		start := len(ids)
		for _, tok := range toks {
			if tid, ok := w.ids[string(tok)]; ok {
				ids = append(ids, tid)
				continue
			}
			i, ok := missingAt[string(tok)]
			if !ok {
				i = len(missing)
				missing = append(missing, string(tok))
				missingAt[missing[i]] = i
			}
			ids = append(ids, -int64(1+i))
		}
		spans = append(spans, span{id, start, len(ids)})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	learned, err := addWords(ctx, tx, missing)
	if err != nil {
		return nil, err
	}
	if len(spans) == 0 {
		return learned, nil
	}
	// The postings of the chunk in one statement: [[rowid, "w1 w2"], ...].
	post := make([]byte, 0, 16*len(ids)+16*len(spans))
	post = append(post, '[')
	for i, s := range spans {
		row := ids[s.start:s.end]
		for j, tid := range row {
			if tid < 0 {
				row[j] = learned[missing[-tid-1]]
			}
		}
		if i > 0 {
			post = append(post, ',')
		}
		post = append(post, '[')
		post = strconv.AppendInt(post, s.id, 10)
		post = append(post, ',', '"')
		post = appendTerms(post, row)
		post = append(post, '"', ']')
	}
	post = append(post, ']')
	if _, err := tx.ExecContext(ctx, wordPostSQL, string(post)); err != nil {
		return nil, err
	}
	return learned, nil
}

// addWords returns the ids of tokens, adding to words (and words_fts)
// those it does not hold yet.
func addWords(ctx context.Context, tx *sql.Tx, tokens []string) (map[string]int64, error) {
	if len(tokens) == 0 {
		return nil, nil
	}
	ids := make(map[string]int64, len(tokens))
	scan := func(query string, tokens []string) (first int64, err error) {
		list, err := json.Marshal(tokens)
		if err != nil {
			return 0, err
		}
		rows, err := tx.QueryContext(ctx, query, string(list))
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var tok string
			if err := rows.Scan(&id, &tok); err != nil {
				return 0, err
			}
			ids[tok] = id
			if first == 0 || id < first {
				first = id
			}
		}
		return first, rows.Err()
	}
	// The new tokens first: most tokens missing from the indexer's map are
	// new ones. Tokens are never deleted, so the new ones take ids above
	// every other: the smallest of them starts the rows words_fts lacks.
	first, err := scan(wordAddSQL, tokens)
	if err != nil {
		return nil, err
	}
	if first > 0 {
		if _, err := tx.ExecContext(ctx, wordFTSSQL, first); err != nil {
			return nil, err
		}
	}
	if len(ids) == len(tokens) {
		return ids, nil
	}
	var known []string
	for _, tok := range tokens {
		if _, ok := ids[tok]; !ok {
			known = append(known, tok)
		}
	}
	if _, err := scan(wordLookupSQL, known); err != nil {
		return nil, err
	}
	for _, tok := range known {
		if ids[tok] == 0 {
			return nil, fmt.Errorf("sqlstore: no id for the token %q", tok)
		}
	}
	return ids, nil
}

// learn puts the ids of a committed chunk into the map, emptying it first
// when they would not fit.
func (w *wordIndex) learn(ids map[string]int64) {
	if len(ids) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ids == nil || len(w.ids)+len(ids) > wordCacheMax {
		w.ids = make(map[string]int64, min(wordCacheMax, 2*len(ids)))
	}
	for tok, id := range ids {
		if len(tok) <= wordCacheTokenMax && len(w.ids) < wordCacheMax {
			w.ids[tok] = id
		}
	}
}

// mayBuildWords reports whether the indexer may spend a chunk on the rows
// the word index lacks below the trigram index's watermark: no insert waits
// and the database is not closing (the build goes on at the next open).
func (db *DB) mayBuildWords() bool {
	db.mu.RLock()
	defer db.mu.RUnlock()
	return !db.closed.Load() && len(db.queue) == 0
}

// wordPlan is what a search plan knows of the word index for q.
type wordPlan struct {
	tried  bool
	ok     bool   // the word index answers q in this snapshot
	match  string // the message_words query: the OR of the ids of q's tokens
	tokens int64  // how many tokens hold q
}

// wordsHoldingSQL finds the tokens that hold q, at most maxWordTokens+1 of
// them, as a message_words query. "w0" names no token: it matches no row.
const wordsHoldingSQL = `SELECT count(*), coalesce(group_concat('w' || id, ' OR '), 'w0') FROM (
	SELECT rowid AS id FROM words_fts WHERE words_fts MATCH ? LIMIT ?)`

// useWords reports whether the word index answers q in the plan's
// snapshot: q fits it, it has caught up with the trigram index, the trigram
// index is not cheap for q, and few enough tokens hold q. It looks them up
// the first time.
func (p *searchPlanner) useWords(ctx context.Context) (bool, error) {
	if p.words.tried {
		return p.words.ok, nil
	}
	p.words.tried = true
	w := &p.db.words
	if w.off || !tokens.Eligible(p.folded) || p.st.wordsTo < p.st.indexedTo || (!w.always && p.est.cheapIndex(p.folded)) {
		return false, nil
	}
	var n int64
	var match string
	if err := p.db.queryRow(ctx, p.tx, wordsHoldingSQL, ftsPhrase(p.folded), maxWordTokens+1).Scan(&n, &match); err != nil {
		return false, err
	}
	if n > maxWordTokens {
		return false, nil
	}
	p.words.ok, p.words.match, p.words.tokens = true, match, n
	return true, nil
}

// wordMatches selects the ids of every match through the word index: the
// rows that hold one of q's tokens, and those of the unindexed tail, tested
// one by one.
const wordMatches = `SELECT rowid FROM message_words WHERE message_words MATCH ?
	UNION ALL SELECT id FROM messages WHERE id > ? AND instr(text_fold, ?) > 0`

// wordPageCost returns, in walk steps, what the page of a search through
// the word index costs beside reading the matches' ids (about half a
// microsecond each): the n matches fetched by rowid, or the list order
// walked and looked up among them, whichever the plan takes.
func wordPageCost(q msgsvc.Query, rows, n int64) int64 {
	w := walkCost(q, rows, n)
	member := w/indexStepsPerWalkStep + sortedRowCost*int64(q.Limit+1)
	return min(w, sortedRowCost*n, member)
}
