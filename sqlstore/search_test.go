package sqlstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

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
		for _, mode := range []searchMode{searchScan, searchIndexSorted, searchIndexWalk} {
			if mode != searchScan && len([]rune(q)) < 3 {
				continue
			}
			var rows []messageRow
			sel := pageQuery(db.read, msgsvc.Query{Text: q, Limit: 1000}, textSearch{mode: mode, indexedTo: indexedTo})
			if err := sel.Scan(ctx, &rows); err != nil {
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

// TestIndexCatchesUp checks that the writer indexes the tail by itself: in
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
