// Package storetest is the conformance suite for implementations of
// [msgsvc.Store].
//
// An implementation's own tests call [Run] with a function that opens a fresh,
// empty store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) msgsvc.Store {
//			s, err := mystore.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// The suite checks what the HTTP contract promises about stored messages:
// idempotent inserts where the first write wins, the list order (instant of
// the timestamp, then message id in byte order), every filter and their
// combinations, paging by offset and by keyset position, exact totals and
// statistics, and the behaviour under concurrent writers.
package storetest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
)

// Run runs the conformance suite as subtests of t. open must return a fresh,
// empty store on each call; Run calls it once per subtest, never from two
// goroutines at once. When the store implements io.Closer, Run closes it when
// the subtest that opened it ends, so open need not register a cleanup of its
// own for that.
func Run(t *testing.T, open func(t *testing.T) msgsvc.Store) {
	s := suite{open: open}
	t.Run("Ping", s.testPing)
	t.Run("Insert", func(t *testing.T) {
		t.Run("Created", s.testInsertCreated)
		t.Run("FirstWriteWins", s.testInsertFirstWriteWins)
		t.Run("DuplicateWithinCall", s.testInsertDuplicateWithinCall)
		t.Run("OneResultPerMessage", s.testInsertOneResultPerMessage)
		t.Run("EchoesFieldsAsReceived", s.testInsertEchoesFields)
		t.Run("IDsCompareExactly", s.testInsertIDsCompareExactly)
		t.Run("ConcurrentOverlappingIDs", s.testConcurrentOverlappingIDs)
	})
	t.Run("List", func(t *testing.T) {
		t.Run("Order", s.testListOrder)
		t.Run("Empty", s.testListEmpty)
		t.Run("From", s.testListFrom)
		t.Run("Since", s.testListSince)
		t.Run("Text", s.testListText)
		t.Run("Paging", s.testListPaging)
		t.Run("MatchesModel", s.testListMatchesModel)
		t.Run("KeysetEqualsOffset", s.testKeysetEqualsOffset)
		t.Run("WalkWhileInserting", s.testWalkWhileInserting)
	})
	t.Run("Stats", func(t *testing.T) {
		t.Run("Empty", s.testStatsEmpty)
		t.Run("Exact", s.testStatsExact)
		t.Run("FirstAndLast", s.testStatsFirstAndLast)
		t.Run("ConcurrentInserts", s.testStatsConcurrentInserts)
	})
}

type suite struct {
	open func(t *testing.T) msgsvc.Store
}

// store opens a fresh store for one subtest and closes it when the subtest
// ends.
func (s suite) store(t *testing.T) msgsvc.Store {
	t.Helper()
	st := s.open(t)
	if st == nil {
		t.Fatal("open returned a nil Store")
	}
	if c, ok := st.(io.Closer); ok {
		t.Cleanup(func() {
			if err := c.Close(); err != nil {
				t.Errorf("closing the store: %v", err)
			}
		})
	}
	return st
}

// Senders and a recipient used throughout. Their byte order differs from
// their numeric order ("+100..." sorts before "+99...").
const (
	senderA = "+919876543210"
	senderB = "+14155550123"
	senderC = "+447700900123"
	senderD = "+10000000001"
	unknown = "+19999999999"
	to      = "+14155550100"
)

func ptr(s string) *string { return &s }

func message(id, from, ts string, text *string) msgsvc.Message {
	return msgsvc.Message{MessageID: id, From: from, To: to, TS: ts, Text: text}
}

func insert(t *testing.T, st msgsvc.Store, msgs ...msgsvc.Message) []bool {
	t.Helper()
	created, err := st.Insert(context.Background(), msgs)
	if err != nil {
		t.Fatalf("Insert(%d messages): %v", len(msgs), err)
	}
	if len(created) != len(msgs) {
		t.Fatalf("Insert(%d messages) returned %d results", len(msgs), len(created))
	}
	return created
}

func list(t *testing.T, st msgsvc.Store, q msgsvc.Query) msgsvc.Page {
	t.Helper()
	p, err := st.List(context.Background(), q)
	if err != nil {
		t.Fatalf("List(%s): %v", describe(q), err)
	}
	if len(p.Messages) > q.Limit {
		t.Fatalf("List(%s) returned %d messages, more than the limit", describe(q), len(p.Messages))
	}
	return p
}

func stats(t *testing.T, st msgsvc.Store) msgsvc.Stats {
	t.Helper()
	s, err := st.Stats(context.Background())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	return s
}

// all walks every match of q's filters by keyset, 100 at a time.
func all(t *testing.T, st msgsvc.Store, q msgsvc.Query) []msgsvc.Message {
	t.Helper()
	q.Limit, q.Offset, q.After = 100, 0, nil
	var out []msgsvc.Message
	for {
		p := list(t, st, q)
		out = append(out, p.Messages...)
		if p.Next == nil {
			return out
		}
		q.After = p.Next
	}
}

func ids(msgs []msgsvc.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.MessageID
	}
	return out
}

func describe(q msgsvc.Query) string {
	var b strings.Builder
	fmt.Fprintf(&b, "from=%q", q.From)
	if q.Since != nil {
		fmt.Fprintf(&b, " since=%s", q.Since.Format(time.RFC3339Nano))
	}
	fmt.Fprintf(&b, " text=%q", q.Text)
	if q.After != nil {
		fmt.Fprintf(&b, " after=(%s, %q)", q.After.Key, q.After.MessageID)
	}
	fmt.Fprintf(&b, " limit=%d offset=%d", q.Limit, q.Offset)
	return b.String()
}

func describeMessage(m msgsvc.Message) string {
	text := "<nil>"
	if m.Text != nil {
		text = fmt.Sprintf("%q", *m.Text)
	}
	return fmt.Sprintf("{%q from=%s to=%s ts=%s text=%s}", m.MessageID, m.From, m.To, m.TS, text)
}

func sameMessage(a, b msgsvc.Message) bool {
	if a.MessageID != b.MessageID || a.From != b.From || a.To != b.To || a.TS != b.TS {
		return false
	}
	if a.Text == nil || b.Text == nil {
		return a.Text == nil && b.Text == nil
	}
	return *a.Text == *b.Text
}

// checkMessages fails t unless got and want hold the same messages, field by
// field, in the same order.
func checkMessages(t *testing.T, what string, got, want []msgsvc.Message) {
	t.Helper()
	if len(got) == len(want) {
		same := true
		for i := range got {
			same = same && sameMessage(got[i], want[i])
		}
		if same {
			return
		}
	}
	t.Errorf("%s:\n got ids %q\nwant ids %q", what, ids(got), ids(want))
	for i := range min(len(got), len(want)) {
		if !sameMessage(got[i], want[i]) {
			t.Errorf("%s: first difference at %d:\n got %s\nwant %s", what, i, describeMessage(got[i]), describeMessage(want[i]))
			break
		}
	}
}

func checkIDs(t *testing.T, what string, got []msgsvc.Message, want ...string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) && !(len(g) == 0 && len(want) == 0) {
		t.Errorf("%s:\n got %q\nwant %q", what, g, want)
	}
}

// checkPage fails t unless got equals the model's answer want.
func checkPage(t *testing.T, q msgsvc.Query, got, want msgsvc.Page) {
	t.Helper()
	what := "List(" + describe(q) + ")"
	checkMessages(t, what, got.Messages, want.Messages)
	if got.Total != want.Total {
		t.Errorf("%s: Total = %d, want %d", what, got.Total, want.Total)
	}
	switch {
	case got.Next == nil && want.Next != nil:
		t.Errorf("%s: Next = nil, want (%s, %q): a following row exists", what, want.Next.Key, want.Next.MessageID)
	case got.Next != nil && want.Next == nil:
		t.Errorf("%s: Next = (%s, %q), want nil: no following row", what, got.Next.Key, got.Next.MessageID)
	case got.Next != nil && *got.Next != *want.Next:
		t.Errorf("%s: Next = (%s, %q), want (%s, %q)", what, got.Next.Key, got.Next.MessageID, want.Next.Key, want.Next.MessageID)
	}
}

// The model: what a store must answer, computed in memory from the stored
// messages with the plainest code.

// instant parses a message timestamp; the suite only uses valid ones.
func instant(ts string) time.Time {
	t, err := msgsvc.ParseTimestamp(ts)
	if err != nil {
		panic(fmt.Sprintf("storetest: bad fixture timestamp %q: %v", ts, err))
	}
	return t
}

// compareMessages orders by instant, then by message id in byte order.
func compareMessages(a, b msgsvc.Message) int {
	if c := instant(a.TS).Compare(instant(b.TS)); c != 0 {
		return c
	}
	return strings.Compare(a.MessageID, b.MessageID)
}

func position(m msgsvc.Message) msgsvc.Position {
	return msgsvc.Position{Key: msgsvc.TimestampKey(m.TS), MessageID: m.MessageID}
}

func comparePositions(a, b msgsvc.Position) int {
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return strings.Compare(a.MessageID, b.MessageID)
}

func matches(q msgsvc.Query, m msgsvc.Message) bool {
	if q.From != "" && m.From != q.From {
		return false
	}
	if q.Since != nil && instant(m.TS).Before(*q.Since) {
		return false
	}
	if q.Text != "" && (m.Text == nil || !strings.Contains(msgsvc.Fold(*m.Text), msgsvc.Fold(q.Text))) {
		return false
	}
	return true
}

// model holds the stored version of every message, by id.
type model map[string]msgsvc.Message

// add records msgs as Insert must: the first write of an id wins.
func (m model) add(msgs ...msgsvc.Message) {
	for _, msg := range msgs {
		if _, ok := m[msg.MessageID]; !ok {
			m[msg.MessageID] = msg
		}
	}
}

func (m model) sorted() []msgsvc.Message {
	type keyed struct {
		msg msgsvc.Message
		at  time.Time
	}
	rows := make([]keyed, 0, len(m))
	for _, msg := range m {
		rows = append(rows, keyed{msg, instant(msg.TS)})
	}
	slices.SortFunc(rows, func(a, b keyed) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return strings.Compare(a.msg.MessageID, b.msg.MessageID)
	})
	out := make([]msgsvc.Message, len(rows))
	for i, r := range rows {
		out[i] = r.msg
	}
	return out
}

func (m model) page(q msgsvc.Query) msgsvc.Page {
	return pageOf(m.sorted(), q)
}

// pageOf answers q from sorted, the stored messages in list order.
func pageOf(sorted []msgsvc.Message, q msgsvc.Query) msgsvc.Page {
	var rows []msgsvc.Message
	for _, msg := range sorted {
		if matches(q, msg) {
			rows = append(rows, msg)
		}
	}
	p := msgsvc.Page{Total: int64(len(rows))}
	if q.After != nil {
		rows = slices.DeleteFunc(rows, func(msg msgsvc.Message) bool {
			return comparePositions(position(msg), *q.After) <= 0
		})
	}
	rows = rows[min(q.Offset, len(rows)):]
	if len(rows) > q.Limit {
		next := position(rows[q.Limit-1])
		p.Next = &next
		rows = rows[:q.Limit]
	}
	p.Messages = rows
	return p
}

func (m model) stats() msgsvc.Stats {
	counts := map[string]int64{}
	for _, msg := range m {
		counts[msg.From]++
	}
	st := msgsvc.Stats{TotalMessages: int64(len(m)), SendersCount: int64(len(counts))}
	for from, n := range counts {
		st.TopSenders = append(st.TopSenders, msgsvc.SenderCount{From: from, Count: n})
	}
	slices.SortFunc(st.TopSenders, func(a, b msgsvc.SenderCount) int {
		if a.Count != b.Count {
			return int(b.Count - a.Count)
		}
		return strings.Compare(a.From, b.From)
	})
	st.TopSenders = st.TopSenders[:min(10, len(st.TopSenders))]
	if sorted := m.sorted(); len(sorted) > 0 {
		st.FirstTS, st.LastTS = ptr(sorted[0].TS), ptr(sorted[len(sorted)-1].TS)
	}
	return st
}

func checkStats(t *testing.T, got, want msgsvc.Stats) {
	t.Helper()
	if got.TotalMessages != want.TotalMessages {
		t.Errorf("Stats: TotalMessages = %d, want %d", got.TotalMessages, want.TotalMessages)
	}
	if got.SendersCount != want.SendersCount {
		t.Errorf("Stats: SendersCount = %d, want %d", got.SendersCount, want.SendersCount)
	}
	if !slices.Equal(got.TopSenders, want.TopSenders) && !(len(got.TopSenders) == 0 && len(want.TopSenders) == 0) {
		t.Errorf("Stats: TopSenders =\n  %v\nwant\n  %v", got.TopSenders, want.TopSenders)
	}
	show := func(s *string) string {
		if s == nil {
			return "nil"
		}
		return fmt.Sprintf("%q", *s)
	}
	if show(got.FirstTS) != show(want.FirstTS) {
		t.Errorf("Stats: FirstTS = %s, want %s", show(got.FirstTS), show(want.FirstTS))
	}
	if show(got.LastTS) != show(want.LastTS) {
		t.Errorf("Stats: LastTS = %s, want %s", show(got.LastTS), show(want.LastTS))
	}
}

// Fixtures.

// fixtureTimestamps name a few instants, several of them more than once in
// different spellings, so that ordering must use the instant and then the id.
var fixtureTimestamps = []string{
	"2025-01-15T10:00:00Z",
	"2025-01-15T10:00:00.5Z",
	"2025-01-15T10:00:00.000Z", // the same instant as the first
	"2025-01-15T10:00:00.49Z",
	"2025-01-15T10:00:00.500000001Z",
	"2025-01-15T09:59:59.999999999Z",
	"2025-01-15T10:00:00.50Z", // the same instant as .5
	"2024-02-29T23:59:59Z",
	"0001-01-01T00:00:00Z",
	"9999-12-31T23:59:59.999999999Z",
	"2025-01-15T10:00:01Z",
	"2025-01-14T10:00:00.123456Z",
}

// fixtureTexts exercise folding and literal characters; nil is a message
// without text.
var fixtureTexts = []*string{
	nil,
	ptr(""),
	ptr("École"),
	ptr("ÉCOLE du soir"),
	ptr("une école"),
	ptr("100% sure"),
	ptr("a_b"),
	ptr(`back\slash`),
	ptr("ΣΑΣ"),
	ptr("straße"),
	ptr("5 \u212a"), // KELVIN SIGN folds with k and K
	ptr("Hello world"),
	ptr("hello_world%"),
	ptr("plain"),
}

// fixtureIDPrefixes make ids whose byte order is not their ASCII-only or
// case-insensitive order.
var fixtureIDPrefixes = []string{"a", "E", "e", "Z", "~", "é", "ß", "日本", "🙂", "m-"}

// fixture returns n messages with a deterministic mix of senders,
// timestamps, texts and ids.
func fixture(n int) []msgsvc.Message {
	r := rand.New(rand.NewPCG(1, 2))
	senders := []string{senderA, senderB, senderC, senderD}
	out := make([]msgsvc.Message, n)
	for i := range out {
		out[i] = message(
			fmt.Sprintf("%s%d", fixtureIDPrefixes[r.IntN(len(fixtureIDPrefixes))], i),
			senders[r.IntN(len(senders))],
			fixtureTimestamps[r.IntN(len(fixtureTimestamps))],
			fixtureTexts[r.IntN(len(fixtureTexts))],
		)
	}
	return out
}

// seed stores msgs in a shuffled order over a few Insert calls and returns
// the model of the store.
func seed(t *testing.T, st msgsvc.Store, msgs []msgsvc.Message) model {
	t.Helper()
	shuffled := slices.Clone(msgs)
	r := rand.New(rand.NewPCG(3, 4))
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for len(shuffled) > 0 {
		n := min(len(shuffled), 1+r.IntN(40))
		insert(t, st, shuffled[:n]...)
		shuffled = shuffled[n:]
	}
	m := model{}
	m.add(msgs...)
	return m
}

func utc(s string) *time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return &t
}

// Ping.

func (s suite) testPing(t *testing.T) {
	st := s.store(t)
	if err := st.Ping(context.Background()); err != nil {
		t.Fatalf("Ping on a fresh store: %v", err)
	}
	insert(t, st, message("m1", senderA, "2025-01-15T10:00:00Z", ptr("Hello")))
	if err := st.Ping(context.Background()); err != nil {
		t.Fatalf("Ping after an insert: %v", err)
	}
}

// Insert.

func (s suite) testInsertCreated(t *testing.T) {
	st := s.store(t)
	m := message("m1", senderA, "2025-01-15T10:00:00Z", ptr("Hello"))
	if created := insert(t, st, m); !created[0] {
		t.Fatal("first Insert of m1: created = false, want true")
	}
	if created := insert(t, st, m); created[0] {
		t.Fatal("second Insert of m1: created = true, want false (a duplicate)")
	}
	checkMessages(t, "stored messages", all(t, st, msgsvc.Query{}), []msgsvc.Message{m})
}

func (s suite) testInsertFirstWriteWins(t *testing.T) {
	st := s.store(t)
	first := message("m1", senderA, "2025-01-15T10:00:00Z", ptr("first"))
	insert(t, st, first)
	for _, later := range []msgsvc.Message{
		message("m1", senderA, "2025-01-15T10:00:00Z", ptr("second")),
		message("m1", senderB, "2020-01-01T00:00:00Z", nil),
		{MessageID: "m1", From: senderC, To: senderD, TS: "2030-01-01T00:00:00.5Z", Text: ptr("")},
	} {
		if created := insert(t, st, later); created[0] {
			t.Errorf("Insert of a later m1 %s: created = true, want false", describeMessage(later))
		}
	}
	checkMessages(t, "stored messages", all(t, st, msgsvc.Query{}), []msgsvc.Message{first})
	checkStats(t, stats(t, st), msgsvc.Stats{
		TotalMessages: 1, SendersCount: 1,
		TopSenders: []msgsvc.SenderCount{{From: senderA, Count: 1}},
		FirstTS:    ptr(first.TS), LastTS: ptr(first.TS),
	})
}

func (s suite) testInsertDuplicateWithinCall(t *testing.T) {
	st := s.store(t)
	a := message("m1", senderA, "2025-01-15T10:00:00Z", ptr("first"))
	b := message("m1", senderB, "2025-01-16T10:00:00Z", ptr("second"))
	c := message("m2", senderA, "2025-01-15T10:00:01Z", nil)
	created := insert(t, st, a, c, b, c)
	if want := []bool{true, true, false, false}; !slices.Equal(created, want) {
		t.Fatalf("Insert(m1, m2, m1 again, m2 again) = %v, want %v", created, want)
	}
	checkMessages(t, "stored messages", all(t, st, msgsvc.Query{}), []msgsvc.Message{a, c})
}

func (s suite) testInsertOneResultPerMessage(t *testing.T) {
	st := s.store(t)
	insert(t, st, message("old1", senderA, "2025-01-15T10:00:00Z", nil), message("old2", senderA, "2025-01-15T10:00:00Z", nil))
	batch := []msgsvc.Message{
		message("new1", senderA, "2025-01-15T10:00:00Z", nil),
		message("old1", senderB, "2025-01-15T10:00:00Z", nil),
		message("new2", senderB, "2025-01-15T10:00:00Z", nil),
		message("old2", senderB, "2025-01-15T10:00:00Z", nil),
		message("new3", senderC, "2025-01-15T10:00:00Z", nil),
	}
	if created, want := insert(t, st, batch...), []bool{true, false, true, false, true}; !slices.Equal(created, want) {
		t.Fatalf("Insert(new1, old1, new2, old2, new3) = %v, want %v", created, want)
	}
	checkIDs(t, "stored ids", all(t, st, msgsvc.Query{}), "new1", "new2", "new3", "old1", "old2")
	if got := all(t, st, msgsvc.Query{From: senderA}); len(got) != 3 {
		t.Errorf("messages from %s: %q, want new1, old1 and old2", senderA, ids(got))
	}
}

func (s suite) testInsertEchoesFields(t *testing.T) {
	st := s.store(t)
	long := strings.Repeat("é", msgsvc.MaxTextLen)
	want := []msgsvc.Message{
		message("0001", senderA, "0001-01-01T00:00:00Z", nil),
		message("empty-text", senderA, "2025-01-15T10:00:00.000000000Z", ptr("")),
		message("spaces", senderB, "2025-01-15T10:00:00.1Z", ptr("  padded  ")),
		message("long", senderC, "2025-01-15T10:00:00.123456789Z", ptr(long)),
		message(strings.Repeat("🙂", msgsvc.MaxMessageIDLen), senderD, "2025-01-15T10:00:01Z", ptr("emoji id")),
		message("quote'\"; --", senderA, "9999-12-31T23:59:59Z", ptr("'); DROP TABLE messages; --")),
	}
	insert(t, st, want...)
	checkMessages(t, "stored messages", all(t, st, msgsvc.Query{}), want)
}

// testInsertIDsCompareExactly checks that ids differing only in case, in
// Unicode normalisation or in trailing space are different ids.
func (s suite) testInsertIDsCompareExactly(t *testing.T) {
	st := s.store(t)
	var msgs []msgsvc.Message
	for _, id := range []string{"a", "A", "a ", " a", "\u00e9", "e\u0301", "\u212a", "K", "k"} {
		msgs = append(msgs, message(id, senderA, "2025-01-15T10:00:00Z", nil))
	}
	if created := insert(t, st, msgs...); slices.Contains(created, false) {
		t.Fatalf("Insert of distinct ids = %v, want all created", created)
	}
	checkIDs(t, "stored ids", all(t, st, msgsvc.Query{}), " a", "A", "K", "a", "a ", "e\u0301", "k", "\u00e9", "\u212a")
}

// testConcurrentOverlappingIDs has many goroutines insert overlapping ids,
// each id twice with different bodies: every id must be created exactly once
// over all callers, its stored version must be the creator's, and the
// statistics must count each id once.
func (s suite) testConcurrentOverlappingIDs(t *testing.T) {
	st := s.store(t)
	const workers, distinct = 64, 2000
	type call struct {
		worker int
		msgs   []msgsvc.Message
	}
	senders := []string{senderA, senderB, senderC, senderD, "+12", "+99"}
	// Each id is sent twice (half of all sends are repeats), with a
	// different sender, time and text each time.
	var sends []msgsvc.Message
	for round := range 2 {
		for i := range distinct {
			sends = append(sends, message(
				fmt.Sprintf("c%04d", i),
				senders[(i+round)%len(senders)],
				fmt.Sprintf("2025-01-15T10:%02d:%02d.%dZ", i%60, (i/60)%60, round+1),
				ptr(fmt.Sprintf("round %d", round)),
			))
		}
	}
	r := rand.New(rand.NewPCG(5, 6))
	r.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })
	queues := make([][]call, workers)
	for w := 0; len(sends) > 0; w = (w + 1) % workers {
		n := min(len(sends), 1+r.IntN(3)) // mostly single messages, some small batches
		queues[w] = append(queues[w], call{worker: w, msgs: sends[:n]})
		sends = sends[n:]
	}

	var mu sync.Mutex
	creators := map[string][]msgsvc.Message{}
	duplicates := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range queues[w] {
				created, err := st.Insert(context.Background(), c.msgs)
				if err == nil && len(created) != len(c.msgs) {
					err = fmt.Errorf("insert of %d messages returned %d results", len(c.msgs), len(created))
				}
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				for i, m := range c.msgs {
					if created[i] {
						creators[m.MessageID] = append(creators[m.MessageID], m)
					} else {
						duplicates[m.MessageID]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Insert: %v", err)
	}

	want := model{}
	for i := range distinct {
		id := fmt.Sprintf("c%04d", i)
		if n := len(creators[id]); n != 1 {
			t.Errorf("id %s was created %d times, want exactly once", id, n)
			continue
		}
		if duplicates[id] != 1 {
			t.Errorf("id %s was reported duplicate %d times, want once", id, duplicates[id])
		}
		want.add(creators[id][0])
	}
	if t.Failed() {
		return
	}
	checkMessages(t, "stored messages (each the creator's version)", all(t, st, msgsvc.Query{}), want.sorted())
	checkStats(t, stats(t, st), want.stats())
}

// List.

func (s suite) testListEmpty(t *testing.T) {
	st := s.store(t)
	checkPage(t, msgsvc.Query{Limit: 50}, list(t, st, msgsvc.Query{Limit: 50}), msgsvc.Page{})
	q := msgsvc.Query{From: senderA, Since: utc("2025-01-01T00:00:00Z"), Text: "x", Limit: 1, Offset: 3}
	checkPage(t, q, list(t, st, q), msgsvc.Page{})
}

func (s suite) testListOrder(t *testing.T) {
	st := s.store(t)
	// Inserted out of order; string order of ts differs from instant order.
	insert(t, st,
		message("later", senderA, "2025-01-15T10:00:00.5Z", nil),
		message("b", senderA, "2025-01-15T10:00:00Z", nil),
		message("a", senderA, "2025-01-15T10:00:00.000Z", nil),
		message("frac9", senderA, "2025-01-15T10:00:00.499999999Z", nil),
		message("frac1", senderA, "2025-01-15T10:00:00.4Z", nil),
		message("before", senderA, "2025-01-15T09:59:59.999999999Z", nil),
		message("é", senderA, "2025-01-15T10:00:01Z", nil),
		message("z", senderA, "2025-01-15T10:00:01Z", nil),
		message("Z", senderA, "2025-01-15T10:00:01Z", nil),
		message("日本", senderA, "2025-01-15T10:00:01Z", nil),
		message("🙂", senderA, "2025-01-15T10:00:01Z", nil),
		message("ß", senderA, "2025-01-15T10:00:01Z", nil),
		message("a10", senderA, "2025-01-15T10:00:01Z", nil),
		message("a9", senderA, "2025-01-15T10:00:01Z", nil),
		message("ancient", senderA, "0001-01-01T00:00:00Z", nil),
		message("future", senderA, "9999-12-31T23:59:59.999999999Z", nil),
	)
	want := []string{
		"ancient", "before", "a", "b", "frac1", "frac9", "later",
		"Z", "a10", "a9", "z", "ß", "é", "日本", "🙂", // byte order of UTF-8
		"future",
	}
	checkIDs(t, "list order", list(t, st, msgsvc.Query{Limit: 100}).Messages, want...)
	checkIDs(t, "list order, by keyset", all(t, st, msgsvc.Query{}), want...)
}

func (s suite) testListFrom(t *testing.T) {
	st := s.store(t)
	insert(t, st,
		message("a1", senderA, "2025-01-15T10:00:02Z", nil),
		message("b1", senderB, "2025-01-15T10:00:01Z", nil),
		message("a2", senderA, "2025-01-15T10:00:00Z", nil),
		message("x", "+9198765432101", "2025-01-15T10:00:00Z", nil), // senderA is a prefix of it
		message("y", "+91987654321", "2025-01-15T10:00:00Z", nil),   // a prefix of senderA
	)
	for _, c := range []struct {
		from string
		want []string
	}{
		{senderA, []string{"a2", "a1"}},
		{senderB, []string{"b1"}},
		{unknown, nil},
		{"+91987654321", []string{"y"}},
	} {
		q := msgsvc.Query{From: c.from, Limit: 10}
		p := list(t, st, q)
		checkIDs(t, "List("+describe(q)+")", p.Messages, c.want...)
		if p.Total != int64(len(c.want)) {
			t.Errorf("List(%s): Total = %d, want %d", describe(q), p.Total, len(c.want))
		}
	}
}

func (s suite) testListSince(t *testing.T) {
	st := s.store(t)
	insert(t, st,
		message("t0", senderA, "2025-01-15T09:59:59.999999999Z", nil),
		message("t1", senderA, "2025-01-15T10:00:00Z", nil),
		message("t2", senderA, "2025-01-15T10:00:00.5Z", nil),
		message("t3", senderA, "2025-01-15T10:00:00.500000000Z", nil),
		message("t4", senderA, "2025-01-15T10:00:00.500000001Z", nil),
		message("t5", senderA, "9999-12-31T23:59:59Z", nil),
		message("t6", senderA, "0001-01-01T00:00:00Z", nil),
	)
	ist := time.FixedZone("IST", 5*3600+1800)
	pst := time.FixedZone("PST", -8*3600)
	for _, c := range []struct {
		since time.Time
		want  []string
	}{
		{*utc("2025-01-15T10:00:00Z"), []string{"t1", "t2", "t3", "t4", "t5"}}, // inclusive
		{*utc("2025-01-15T10:00:00.5Z"), []string{"t2", "t3", "t4", "t5"}},
		{*utc("2025-01-15T10:00:00.000000001Z"), []string{"t2", "t3", "t4", "t5"}},
		{time.Date(2025, 1, 15, 15, 30, 0, 500000000, ist), []string{"t2", "t3", "t4", "t5"}}, // an instant, whatever the zone
		{time.Date(2025, 1, 15, 2, 0, 0, 0, pst), []string{"t1", "t2", "t3", "t4", "t5"}},
		{time.Date(2025, 1, 15, 15, 29, 59, 999999999, ist), []string{"t0", "t1", "t2", "t3", "t4", "t5"}},
		{*utc("0001-01-01T00:00:00Z"), []string{"t6", "t0", "t1", "t2", "t3", "t4", "t5"}},
		{time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC), []string{"t6", "t0", "t1", "t2", "t3", "t4", "t5"}},
		{time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC), []string{"t6", "t0", "t1", "t2", "t3", "t4", "t5"}},
		{time.Date(1, 1, 1, 4, 0, 0, 0, ist), []string{"t6", "t0", "t1", "t2", "t3", "t4", "t5"}}, // year 0 in UTC
		{*utc("9999-12-31T23:59:59Z"), []string{"t5"}},
		{*utc("9999-12-31T23:59:59.000000001Z"), nil},
		{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), nil},
		{time.Date(9999, 12, 31, 23, 0, 0, 0, pst), nil}, // year 10000 in UTC
	} {
		q := msgsvc.Query{Since: &c.since, Limit: 10}
		p := list(t, st, q)
		checkIDs(t, "List("+describe(q)+")", p.Messages, c.want...)
		if p.Total != int64(len(c.want)) {
			t.Errorf("List(%s): Total = %d, want %d", describe(q), p.Total, len(c.want))
		}
	}
}

func (s suite) testListText(t *testing.T) {
	st := s.store(t)
	texts := map[string]*string{
		"lower":   ptr("une école"),
		"upper":   ptr("ÉCOLE"),
		"title":   ptr("École du soir"),
		"ascii":   ptr("ecole"),
		"nil":     nil,
		"empty":   ptr(""),
		"percent": ptr("100% sure"),
		"under":   ptr("a_b"),
		"slash":   ptr(`back\slash`),
		"sigma":   ptr("ΣΑΣ"),
		"final":   ptr("λόγος"),
		"esszett": ptr("straße"),
		"kelvin":  ptr("5 \u212a"),
		"longs":   ptr("\u017ftar"), // LATIN SMALL LETTER LONG S folds with s and S
		"plain":   ptr("abc"),
		"spaces":  ptr(" a b "),
	}
	var msgs []msgsvc.Message
	for id, text := range texts {
		msgs = append(msgs, message(id, senderA, "2025-01-15T10:00:00Z", text))
	}
	insert(t, st, msgs...)
	for _, c := range []struct {
		q    string
		want []string
	}{
		{"ÉCOLE", []string{"lower", "title", "upper"}},
		{"école", []string{"lower", "title", "upper"}},
		{"éCoLe", []string{"lower", "title", "upper"}},
		{"ecole", []string{"ascii"}}, // no normalisation: é is not e
		{"%", []string{"percent"}},
		{"0%", []string{"percent"}},
		{"_", []string{"under"}},
		{"a_b", []string{"under"}},
		{"a%b", nil},
		{`\`, []string{"slash"}},
		{`k\s`, []string{"slash"}},
		{"σας", []string{"sigma"}},
		{"ς", []string{"final", "sigma"}},
		{"Σ", []string{"final", "sigma"}},
		{"STRASSE", nil}, // simple folding: ß does not become ss
		{"STRAßE", []string{"esszett"}},
		{"k", []string{"kelvin", "slash"}},
		{"5 K", []string{"kelvin"}},
		{"STAR", []string{"longs"}},
		{"ſ", []string{"esszett", "longs", "percent", "slash", "title"}},
		{"B", []string{"plain", "slash", "spaces", "under"}},
		{" a", []string{"spaces"}},
		{" a b ", []string{"spaces"}},
		{"zzz", nil},
	} {
		q := msgsvc.Query{Text: c.q, Limit: 100}
		p := list(t, st, q)
		got := ids(p.Messages)
		slices.Sort(got)
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("List(%s): ids %q, want %q", describe(q), got, c.want)
		}
		if p.Total != int64(len(c.want)) {
			t.Errorf("List(%s): Total = %d, want %d", describe(q), p.Total, len(c.want))
		}
	}
}

func (s suite) testListPaging(t *testing.T) {
	st := s.store(t)
	var msgs []msgsvc.Message
	for i := range 7 {
		msgs = append(msgs, message(fmt.Sprintf("m%d", i), senderA, fmt.Sprintf("2025-01-15T10:00:0%dZ", i), nil))
	}
	insert(t, st, msgs...)
	for _, c := range []struct {
		limit, offset int
		want          []string
		next          bool
	}{
		{7, 0, []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6"}, false},
		{6, 0, []string{"m0", "m1", "m2", "m3", "m4", "m5"}, true},
		{100, 0, []string{"m0", "m1", "m2", "m3", "m4", "m5", "m6"}, false},
		{3, 0, []string{"m0", "m1", "m2"}, true},
		{3, 3, []string{"m3", "m4", "m5"}, true},
		{3, 4, []string{"m4", "m5", "m6"}, false},
		{3, 6, []string{"m6"}, false},
		{3, 7, nil, false},
		{1, 100, nil, false},
		{1, 5, []string{"m5"}, true},
	} {
		q := msgsvc.Query{Limit: c.limit, Offset: c.offset}
		p := list(t, st, q)
		checkIDs(t, "List("+describe(q)+")", p.Messages, c.want...)
		if p.Total != 7 {
			t.Errorf("List(%s): Total = %d, want 7 whatever the paging", describe(q), p.Total)
		}
		if (p.Next != nil) != c.next {
			t.Errorf("List(%s): Next = %v, want set: %v", describe(q), p.Next, c.next)
		}
		if p.Next != nil && *p.Next != position(p.Messages[len(p.Messages)-1]) {
			t.Errorf("List(%s): Next = %v, want the position of the page's last message", describe(q), *p.Next)
		}
	}
	// A position need not be a stored row's.
	for _, c := range []struct {
		after msgsvc.Position
		want  []string
	}{
		{msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:02Z"), MessageID: "m2"}, []string{"m3", "m4"}},
		{msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:02Z"), MessageID: ""}, []string{"m2", "m3"}},
		{msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:02Z"), MessageID: "m3"}, []string{"m3", "m4"}},
		{msgsvc.Position{Key: msgsvc.InstantKey(*utc("2025-01-15T10:00:02.5Z")), MessageID: "a"}, []string{"m3", "m4"}},
		{msgsvc.Position{Key: msgsvc.InstantKey(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC))}, []string{"m0", "m1"}},
		{msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:06Z"), MessageID: "m6"}, nil},
	} {
		q := msgsvc.Query{After: &c.after, Limit: 2}
		checkIDs(t, "List("+describe(q)+")", list(t, st, q).Messages, c.want...)
	}
}

// listQueries are the filter combinations the model comparisons run.
func listQueries(froms []string, sinces []*time.Time, texts []string) []msgsvc.Query {
	var out []msgsvc.Query
	for _, from := range froms {
		for _, since := range sinces {
			for _, text := range texts {
				out = append(out, msgsvc.Query{From: from, Since: since, Text: text})
			}
		}
	}
	return out
}

func (s suite) testListMatchesModel(t *testing.T) {
	st := s.store(t)
	msgs := fixture(60)
	m := seed(t, st, msgs)
	sorted := m.sorted()
	afters := []*msgsvc.Position{
		nil,
		ptrPosition(position(sorted[len(sorted)/3])),
		{Key: msgsvc.TimestampKey("2025-01-15T10:00:00Z"), MessageID: "e"}, // not a stored row
	}
	paging := []struct{ limit, offset int }{{100, 0}, {3, 0}, {2, 3}}
	queries := listQueries(
		[]string{"", senderA, unknown},
		[]*time.Time{nil, utc("2025-01-15T10:00:00Z"), utc("2025-01-15T15:30:00.5+05:30"), ptrTime(time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)), ptrTime(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))},
		[]string{"", "ÉCOLE", "%", "k", "zzz"},
	)
	for _, q := range queries {
		for _, after := range afters {
			for _, pg := range paging {
				q := q
				q.After, q.Limit, q.Offset = after, pg.limit, pg.offset
				checkPage(t, q, list(t, st, q), pageOf(sorted, q))
			}
		}
		if t.Failed() {
			return // one broken query is usually enough to read
		}
	}
}

func ptrPosition(p msgsvc.Position) *msgsvc.Position { return &p }
func ptrTime(t time.Time) *time.Time                 { return &t }

// testKeysetEqualsOffset walks every filter combination both ways, page by
// page, and wants the same rows from each, in the model's order.
func (s suite) testKeysetEqualsOffset(t *testing.T) {
	st := s.store(t)
	m := seed(t, st, fixture(30))
	queries := listQueries(
		[]string{"", senderB, unknown},
		[]*time.Time{nil, utc("2025-01-15T10:00:00.5Z"), utc("2025-01-15T11:00:00+01:00")},
		[]string{"", "école", "L"},
	)
	for _, q := range queries {
		want := m.page(msgsvc.Query{From: q.From, Since: q.Since, Text: q.Text, Limit: len(m) + 1}).Messages
		for _, limit := range []int{1, 4} {
			q := q
			q.Limit = limit
			var byOffset, byKeyset []msgsvc.Message
			for q.Offset = 0; ; q.Offset += limit {
				p := list(t, st, q)
				if p.Total != int64(len(want)) {
					t.Fatalf("List(%s): Total = %d, want %d", describe(q), p.Total, len(want))
				}
				byOffset = append(byOffset, p.Messages...)
				if p.Next == nil {
					break
				}
				if len(byOffset) > len(want) {
					t.Fatalf("List(%s): the offset walk goes past the %d matches", describe(q), len(want))
				}
			}
			q.Offset = 0
			for q.After = nil; ; {
				p := list(t, st, q)
				if p.Total != int64(len(want)) {
					t.Fatalf("List(%s): Total = %d, want %d", describe(q), p.Total, len(want))
				}
				byKeyset = append(byKeyset, p.Messages...)
				if p.Next == nil {
					break
				}
				if len(byKeyset) > len(want) {
					t.Fatalf("List(%s): the keyset walk goes past the %d matches", describe(q), len(want))
				}
				q.After = p.Next
			}
			q.After = nil
			checkMessages(t, "offset walk of "+describe(q), byOffset, want)
			checkMessages(t, "keyset walk of "+describe(q), byKeyset, want)
		}
	}
}

// testWalkWhileInserting adds rows before, at and after the walk's position
// between its pages, and from another goroutine throughout: the walk must
// return every row that existed when it began exactly once, and no row twice.
func (s suite) testWalkWhileInserting(t *testing.T) {
	st := s.store(t)
	m := seed(t, st, fixture(40))
	before := m.sorted()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	background := make(chan error, 1)
	go func() {
		defer wg.Done()
		for i := 0; i < 100 && ctx.Err() == nil; i++ {
			msg := message(fmt.Sprintf("bg%d", i), senderB, fixtureTimestamps[i%len(fixtureTimestamps)], nil)
			if _, err := st.Insert(ctx, []msgsvc.Message{msg}); err != nil && ctx.Err() == nil {
				background <- err
				return
			}
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	q := msgsvc.Query{Limit: 3}
	seen := map[string]bool{}
	var walked []msgsvc.Message
	for page := 0; ; page++ {
		p := list(t, st, q)
		for _, msg := range p.Messages {
			if seen[msg.MessageID] {
				t.Fatalf("page %d repeats %q", page, msg.MessageID)
			}
			seen[msg.MessageID] = true
		}
		walked = append(walked, p.Messages...)
		if p.Next == nil {
			break
		}
		q.After = p.Next
		if page >= 12 {
			continue // stop adding rows ahead, so the walk ends
		}
		// Rows just before, at and just after the position, and far on both sides.
		at := p.Messages[len(p.Messages)-1]
		insert(t, st,
			message(at.MessageID+"-", senderC, at.TS, nil),
			message(fmt.Sprintf("p%d", page), senderC, at.TS, nil),
			message(fmt.Sprintf("early%d", page), senderC, "0001-01-01T00:00:00Z", nil),
			message(fmt.Sprintf("late%d", page), senderC, "9999-12-31T23:59:59.999999999Z", nil),
		)
	}
	for _, msg := range before {
		if !seen[msg.MessageID] {
			t.Errorf("the walk skipped %q, stored before it began", msg.MessageID)
		}
	}
	if !slices.IsSortedFunc(walked, compareMessages) {
		t.Errorf("the walk is not in list order: %q", ids(walked))
	}
	select {
	case err := <-background:
		t.Fatalf("background Insert: %v", err)
	default:
	}
}

// Stats.

func (s suite) testStatsEmpty(t *testing.T) {
	st := s.store(t)
	checkStats(t, stats(t, st), msgsvc.Stats{})
}

func (s suite) testStatsExact(t *testing.T) {
	st := s.store(t)
	m := model{}
	// 13 senders: more than the top 10, with a tie at the cut and ties whose
	// byte order is not their numeric order.
	counts := []struct {
		from string
		n    int
	}{
		{"+99", 5}, {"+100", 5}, {"+12", 7}, {senderA, 1}, {senderB, 2}, {senderC, 3},
		{senderD, 3}, {"+44", 4}, {"+45", 2}, {"+46", 2}, {"+47", 2}, {"+48", 2}, {"+10", 1},
	}
	var msgs []msgsvc.Message
	for _, c := range counts {
		for i := range c.n {
			msgs = append(msgs, message(fmt.Sprintf("%s-%d", c.from, i), c.from, fmt.Sprintf("2025-01-%02dT10:00:00Z", 1+i), nil))
		}
	}
	// Insert in several calls, with duplicates from other senders that
	// must not count.
	for i := 0; i < len(msgs); i += 5 {
		batch := msgs[i:min(i+5, len(msgs))]
		insert(t, st, batch...)
		m.add(batch...)
		dup := batch[0]
		dup.From = "+777"
		insert(t, st, dup)
		checkStats(t, stats(t, st), m.stats())
	}
	want := m.stats()
	if len(want.TopSenders) != 10 || want.TopSenders[0] != (msgsvc.SenderCount{From: "+12", Count: 7}) ||
		want.TopSenders[1] != (msgsvc.SenderCount{From: "+100", Count: 5}) {
		t.Fatalf("the model's own top senders are wrong: %v", want.TopSenders)
	}
	checkStats(t, stats(t, st), want)
}

func (s suite) testStatsFirstAndLast(t *testing.T) {
	st := s.store(t)
	m := model{}
	steps := []msgsvc.Message{
		message("m", senderA, "2025-01-15T10:00:00.5Z", nil),
		message("n", senderA, "2025-01-15T10:00:00Z", nil),           // a new first: .5 is later
		message("o", senderA, "2025-01-15T10:00:00.50Z", nil),        // a new last: same instant as m, larger id
		message("a", senderA, "2025-01-15T10:00:00.000Z", nil),       // a new first: same instant as n, smaller id
		message("b", senderB, "2025-01-15T10:00:00.0Z", nil),         // not first: b > a
		message("l", senderB, "2025-01-15T10:00:00.500000000Z", nil), // not last: l < o
		message("Z", senderB, "2025-01-15T10:00:00Z", nil),           // a new first: "Z" < "a" in byte order
		message("é", senderB, "2025-01-15T10:00:00.5Z", nil),         // a new last: é > o in byte order
	}
	for _, msg := range steps {
		insert(t, st, msg)
		m.add(msg)
		checkStats(t, stats(t, st), m.stats())
	}
	got := stats(t, st)
	if got.FirstTS == nil || *got.FirstTS != "2025-01-15T10:00:00Z" || got.LastTS == nil || *got.LastTS != "2025-01-15T10:00:00.5Z" {
		t.Errorf("FirstTS, LastTS = %v, %v; want the ts of Z and é as received", got.FirstTS, got.LastTS)
	}
	// Duplicates with earlier and later times change nothing.
	insert(t, st,
		message("é", senderC, "0001-01-01T00:00:00Z", nil),
		message("Z", senderC, "9999-12-31T23:59:59Z", nil),
	)
	checkStats(t, stats(t, st), m.stats())
	// A batch holding both a new first and a new last.
	batch := []msgsvc.Message{
		message("mid", senderC, "2025-01-15T10:00:00.2Z", nil),
		message("last", senderC, "2026-01-01T00:00:00.000Z", nil),
		message("first", senderC, "2024-01-01T00:00:00.10Z", nil),
	}
	insert(t, st, batch...)
	m.add(batch...)
	checkStats(t, stats(t, st), m.stats())
	// Ties within one batch: of two messages at one instant, the larger id
	// is the later and the smaller the earlier, whatever their order in
	// the batch; each keeps its ts as received.
	ties := []msgsvc.Message{
		message("tie-r", senderA, "2027-01-01T00:00:00.000Z", nil),
		message("tie-q", senderA, "2027-01-01T00:00:00Z", nil),
		message("tie-d", senderB, "2020-01-01T00:00:00Z", nil),
		message("tie-c", senderB, "2020-01-01T00:00:00.0Z", nil),
	}
	insert(t, st, ties...)
	m.add(ties...)
	checkStats(t, stats(t, st), m.stats())
	if got := stats(t, st); got.FirstTS == nil || *got.FirstTS != "2020-01-01T00:00:00.0Z" || got.LastTS == nil || *got.LastTS != "2027-01-01T00:00:00.000Z" {
		t.Errorf("FirstTS, LastTS = %v, %v; want the ts of tie-c and tie-r as received", got.FirstTS, got.LastTS)
	}
}

func (s suite) testStatsConcurrentInserts(t *testing.T) {
	st := s.store(t)
	msgs := fixture(600)
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(msgs); i += workers {
				if _, err := st.Insert(context.Background(), msgs[i:i+1]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Insert: %v", err)
	}
	m := model{}
	m.add(msgs...)
	checkStats(t, stats(t, st), m.stats())
	checkMessages(t, "stored messages", all(t, st, msgsvc.Query{}), m.sorted())
}
