package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/msgsvc/msgsvc"
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
// With the index, the page is read one of two ways, by how many rows match:
// few matches are fetched by rowid and sorted; many are found by walking the
// list order and testing each row with instr, which stops after one page
// (with n matches among N rows, about (offset+limit)·N/n rows are tested).
// The count of the index query decides, and doubles as the total.

// searchMode says how a query tests q.
type searchMode int

const (
	searchScan        searchMode = iota // instr over text_fold
	searchIndexSorted                   // rowids from the index, then sorted
	searchIndexWalk                     // list order, each row tested with instr; the index counts
)

// sortedRowCost is what fetching and sorting one match by rowid costs,
// against testing one row while walking the list order (measured: a rowid
// fetch and sort step is a few times a walk step).
const sortedRowCost = 4

// textSearch is the plan for q in one List call.
type textSearch struct {
	mode      searchMode
	matches   int64 // rows that match, when mode uses the index
	indexedTo int64 // rows above this id are not in the index yet
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

// where adds the q filter to s.
func (s textSearch) where(sel *bun.SelectQuery, text string) *bun.SelectQuery {
	folded := msgsvc.Fold(text)
	switch s.mode {
	case searchIndexSorted:
		return sel.Where("id IN ("+textMatches+")", ftsPhrase(folded), s.indexedTo, folded)
	}
	// searchScan, and searchIndexWalk, whose page walks the list order.
	return sel.Where("instr(text_fold, ?) > 0", folded)
}

// senderScanMax is the most messages of one sender that q with from tests
// one by one; a busier sender is searched through the index when that
// matches fewer rows.
const senderScanMax = 2000

// planSearch chooses how List tests q.
func planSearch(ctx context.Context, tx bun.IDB, q msgsvc.Query) (textSearch, error) {
	scan := textSearch{mode: searchScan}
	if q.Text == "" || utf8.RuneCountInString(q.Text) < 3 {
		return scan, nil
	}
	var senderRows int64
	if q.From != "" {
		err := tx.QueryRowContext(ctx, `SELECT n FROM senders WHERE sender = ?`, q.From).Scan(&senderRows)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && senderRows <= senderScanMax) {
			return scan, nil
		}
		if err != nil {
			return textSearch{}, err
		}
	}
	var indexedTo, n int64
	folded := msgsvc.Fold(q.Text)
	err := tx.QueryRowContext(ctx, `SELECT indexed_to,
		(SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?) +
		(SELECT count(*) FROM messages WHERE id > indexed_to AND instr(text_fold, ?) > 0)
		FROM fts_state WHERE id = 1`, ftsPhrase(folded), folded).Scan(&indexedTo, &n)
	switch {
	case err != nil:
		return textSearch{}, err
	case q.From != "" && n >= senderRows:
		return scan, nil // the sender's own rows are fewer than the matches
	case q.From != "":
		return textSearch{mode: searchIndexSorted, matches: n, indexedTo: indexedTo}, nil
	}
	var rows int64
	if err := tx.QueryRowContext(ctx, `SELECT messages FROM totals WHERE id = 1`).Scan(&rows); err != nil {
		return textSearch{}, err
	}
	// Matches are spread through the list order, so a walk from any start
	// tests about this many rows before the page is full.
	if walked := int64(q.Offset+q.Limit+1) * rows / max(n, 1); walked > sortedRowCost*n {
		return textSearch{mode: searchIndexSorted, matches: n, indexedTo: indexedTo}, nil
	}
	return textSearch{mode: searchIndexWalk, matches: n, indexedTo: indexedTo}, nil
}
