package sqlstore

import (
	"context"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/uptrace/bun"
)

// How common each trigram of the folded texts is, estimated from a sample
// of the messages and kept in memory per database. The estimates only steer
// plans (which index query to run, and whether a search needs its turn);
// results never depend on them, so a stale or unlucky sample costs time,
// not correctness.
//
// FTS5 cannot tell cheaply how many rows hold a term: fts5vocab reads the
// term's whole list, and even a bounded query opens every segment. A sample
// of a few thousand rows read once (and again each time the table has
// doubled) tells the common trigrams from the rare ones well enough: a
// trigram in a fifth of the rows shows in hundreds of sampled rows; one
// absent from the sample is, almost surely, in a few hundred rows of a
// million at most.

// trigramSampleRows is the size of the sample: trigramSampleRanges runs of
// consecutive ids, spread evenly over the table, so that the sample reads
// few pages.
const (
	trigramSampleRows   = 4096
	trigramSampleRanges = 16
)

// commonTrigramShare: a trigram estimated in more than one row in this many
// is common; its list is long enough that a search would rather test the
// candidates of q's other trigrams one by one than read it (see
// reducedMatch).
const commonTrigramShare = 5

// verifyPerDroppedRow: reading the list of a dropped trigram costs about as
// much, per row it holds, as testing this fraction of a candidate row with
// instr (measured at 1M rows: 0.05 µs a list entry, 3 µs a candidate
// fetched by rowid and tested, with more for the segments skipped through).
const verifyPerDroppedRow = 256

// minVerify is the fewest candidates a reduced search may test: so few cost
// less than any index query.
const minVerify = 64

// cheapTrigramRows: a q with a trigram in at most this many rows has an
// index query that costs little whatever its other trigrams are (FTS5 steps
// the other lists to that trigram's rows), so it runs without a turn.
const cheapTrigramRows = 256

// trigramStats is the sample's trigram counts. Its zero value holds no
// sample; it is safe for concurrent use.
type trigramStats struct {
	mu       sync.Mutex
	docs     map[string]int32 // sampled rows holding each trigram
	sampled  int64            // rows in the sample
	rows     int64            // messages when sampled
	upTo     int64            // largest id when sampled
	sampling bool             // a search is taking a new sample
}

// trigramEstimate is a snapshot of the sample, to estimate with.
type trigramEstimate struct {
	docs    map[string]int32 // never written once published
	sampled int64
	rows    int64 // messages now, which the sample's shares scale to
}

// estimate returns the sample, scaled to rows messages, and whether a new
// one is due: none was taken, or the table has doubled since.
func (s *trigramStats) estimate(rows, maxID int64) (e trigramEstimate, stale bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e = trigramEstimate{docs: s.docs, sampled: s.sampled, rows: rows}
	stale = s.docs == nil || maxID >= 2*s.upTo+trigramSampleRows
	if stale && s.sampling {
		return e, false // another search is taking it
	}
	if stale {
		s.sampling = true
	}
	return e, stale
}

// peek returns the sample as it is, scaled to the messages when it was
// taken, to estimate with before a search reads a snapshot.
func (s *trigramStats) peek() trigramEstimate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return trigramEstimate{docs: s.docs, sampled: s.sampled, rows: s.rows}
}

// ok reports whether e holds a sample.
func (e trigramEstimate) ok() bool { return e.docs != nil && e.sampled > 0 }

// rowsWith returns the estimated number of rows holding trigram t.
func (e trigramEstimate) rowsWith(t string) int64 {
	return int64(e.docs[t]) * e.rows / e.sampled
}

// refresh takes a new sample of the rows of tx's snapshot, if estimate said
// it was due, and returns the estimate to use.
func (s *trigramStats) refresh(ctx context.Context, tx bun.IDB, st searchState) trigramEstimate {
	e, stale := s.estimate(st.rows, st.maxID)
	if !stale {
		return e
	}
	docs, sampled, err := sampleTrigrams(ctx, tx, st.maxID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sampling = false
	if err != nil {
		return e // try again next time
	}
	s.docs, s.sampled, s.rows, s.upTo = docs, sampled, st.rows, st.maxID
	return trigramEstimate{docs: docs, sampled: sampled, rows: st.rows}
}

// sampleTrigrams counts, for each trigram, the sampled rows that hold it.
func sampleTrigrams(ctx context.Context, tx bun.IDB, maxID int64) (map[string]int32, int64, error) {
	query := `SELECT text_fold FROM messages WHERE id <= ? AND text_fold IS NOT NULL`
	args := []any{maxID}
	if maxID > trigramSampleRows {
		run := int64(trigramSampleRows / trigramSampleRanges)
		var ranges []string
		args = args[:0]
		for i := range int64(trigramSampleRanges) {
			from := (maxID - run) * i / (trigramSampleRanges - 1)
			ranges = append(ranges, `SELECT text_fold FROM messages WHERE id > ? AND id <= ? AND text_fold IS NOT NULL`)
			args = append(args, from, from+run)
		}
		query = strings.Join(ranges, " UNION ALL ")
	}
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	type count struct {
		rows    int32
		lastRow int64 // the last sampled row that held the trigram
	}
	counts := map[string]*count{}
	var n int64
	var text []byte
	var at []int
	for rows.Next() {
		if err := rows.Scan(&text); err != nil {
			return nil, 0, err
		}
		n++
		at = at[:0]
		for i := 0; i < len(text); {
			at = append(at, i)
			_, size := utf8.DecodeRune(text[i:])
			i += size
		}
		at = append(at, len(text))
		for i := 0; i+3 < len(at); i++ {
			t := text[at[i]:at[i+3]]
			c := counts[string(t)] // no allocation to look up
			if c == nil {
				c = &count{}
				counts[string(t)] = c
			}
			if c.lastRow != n {
				c.lastRow = n
				c.rows++
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	docs := make(map[string]int32, len(counts))
	for t, c := range counts {
		docs[t] = c.rows
	}
	return docs, n, nil
}

// trigramsOf returns every window of three characters of s, in order, as
// the FTS5 trigram tokenizer cuts it.
func trigramsOf(s string) []string {
	var starts []int
	for i := range s {
		starts = append(starts, i)
	}
	if len(starts) < 3 {
		return nil
	}
	starts = append(starts, len(s))
	out := make([]string, 0, len(starts)-3)
	for i := 0; i+3 < len(starts); i++ {
		out = append(out, s[starts[i]:starts[i+3]])
	}
	return out
}

// cheapIndex reports whether the index query for folded costs little: one
// of its trigrams is in few rows.
func (e trigramEstimate) cheapIndex(folded string) bool {
	if !e.ok() || utf8.RuneCountInString(folded) < 3 {
		return false
	}
	for _, t := range trigramsOf(folded) {
		if e.rowsWith(t) <= cheapTrigramRows {
			return true
		}
	}
	return false
}

// reducedMatch returns an FTS5 query that leaves out folded's common
// trigrams: the AND of the phrases of its runs of other trigrams. Every
// match of folded matches it, but so may other rows, which instr must test.
// It also returns how many such candidates are worth testing rather than
// reading the lists left out. ok is unset when nothing would be left out,
// or nothing kept.
func (e trigramEstimate) reducedMatch(folded string) (match string, verifyMax int64, ok bool) {
	if !e.ok() {
		return "", 0, false
	}
	tri := trigramsOf(folded)
	if len(tri) < 2 {
		return "", 0, false
	}
	keep := make([]bool, len(tri))
	var dropped int64
	kept := false
	for i, t := range tri {
		n := e.rowsWith(t)
		keep[i] = n*commonTrigramShare <= e.rows
		if keep[i] {
			kept = true
		} else {
			dropped += n
		}
	}
	if !kept || dropped == 0 {
		return "", 0, false
	}
	// Byte offsets of the characters: trigram i spans characters i to i+2.
	var at []int
	for i := range folded {
		at = append(at, i)
	}
	at = append(at, len(folded))
	var phrases []string
	for i := 0; i < len(tri); {
		if !keep[i] {
			i++
			continue
		}
		j := i
		for j < len(tri) && keep[j] {
			j++
		}
		phrases = append(phrases, ftsPhrase(folded[at[i]:at[j+2]]))
		i = j
	}
	return strings.Join(phrases, " AND "), max(dropped/verifyPerDroppedRow, minVerify), true
}
