package main

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/msgsvc/msgsvc"
)

// memStore is a msgsvc.Store that keeps every message in memory, in list
// order. It shows what the interface asks of an implementation; it forgets
// everything when the process ends, so it is no substitute for sqlstore.
type memStore struct {
	mu     sync.RWMutex
	closed bool
	rows   []row               // sorted by (key, message_id), the list order
	ids    map[string]struct{} // every stored message_id
	counts map[string]int64    // messages per sender
}

// row is a stored message with what the queries compare, computed once.
type row struct {
	pos  msgsvc.Position // the instant key of TS, then the id: the sort key
	fold string          // msgsvc.Fold of the text, for q
	msg  msgsvc.Message
}

func newMemStore() *memStore {
	return &memStore{ids: map[string]struct{}{}, counts: map[string]int64{}}
}

// comparePositions orders by instant key, then by message_id in byte order:
// Go compares strings byte by byte, which is the code point order of UTF-8.
func comparePositions(a, b msgsvc.Position) int {
	return cmp.Or(strings.Compare(a.Key, b.Key), strings.Compare(a.MessageID, b.MessageID))
}

// Insert stores each new message and skips the ids already stored: the first
// write wins. Memory needs no commit, so a message is "durable" as soon as
// the lock is released.
func (s *memStore) Insert(ctx context.Context, msgs []msgsvc.Message) ([]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, msgsvc.ErrClosed
	}
	created := make([]bool, len(msgs))
	for i, m := range msgs {
		if _, dup := s.ids[m.MessageID]; dup {
			continue
		}
		r := row{pos: msgsvc.Position{Key: msgsvc.TimestampKey(m.TS), MessageID: m.MessageID}, msg: m}
		if m.Text != nil {
			r.fold = msgsvc.Fold(*m.Text)
		}
		at, _ := slices.BinarySearchFunc(s.rows, r.pos, func(e row, p msgsvc.Position) int { return comparePositions(e.pos, p) })
		s.rows = slices.Insert(s.rows, at, r)
		s.ids[m.MessageID] = struct{}{}
		s.counts[m.From]++
		created[i] = true
	}
	return created, nil
}

// List scans the rows in order from the first one at or after Since.
func (s *memStore) List(ctx context.Context, q msgsvc.Query) (msgsvc.Page, error) {
	if err := ctx.Err(); err != nil {
		return msgsvc.Page{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return msgsvc.Page{}, msgsvc.ErrClosed
	}
	start := 0
	if q.Since != nil {
		// Keys sort as instants do, so the rows at or after Since follow
		// the first row whose key is not smaller.
		since := msgsvc.InstantKey(*q.Since)
		start, _ = slices.BinarySearchFunc(s.rows, since, func(e row, k string) int { return strings.Compare(e.pos.Key, k) })
	}
	text := msgsvc.Fold(q.Text)
	var page msgsvc.Page
	var last msgsvc.Position // of the page's last row
	skip := q.Offset
	for _, r := range s.rows[start:] {
		if (q.From != "" && r.msg.From != q.From) || (q.Text != "" && (r.msg.Text == nil || !strings.Contains(r.fold, text))) {
			continue
		}
		page.Total++ // Total ignores After, Offset and Limit
		if q.After != nil && comparePositions(r.pos, *q.After) <= 0 {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		if len(page.Messages) == q.Limit {
			page.Next = &last // a following row exists; keep counting Total
			continue
		}
		page.Messages = append(page.Messages, r.msg)
		last = r.pos
	}
	return page, nil
}

// Stats counts from the per-sender tallies kept by Insert; the first and
// last messages are the ends of the sorted rows.
func (s *memStore) Stats(ctx context.Context) (msgsvc.Stats, error) {
	if err := ctx.Err(); err != nil {
		return msgsvc.Stats{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return msgsvc.Stats{}, msgsvc.ErrClosed
	}
	st := msgsvc.Stats{TotalMessages: int64(len(s.rows)), SendersCount: int64(len(s.counts))}
	for from, n := range s.counts {
		st.TopSenders = append(st.TopSenders, msgsvc.SenderCount{From: from, Count: n})
	}
	slices.SortFunc(st.TopSenders, func(a, b msgsvc.SenderCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.From, b.From))
	})
	st.TopSenders = st.TopSenders[:min(10, len(st.TopSenders))]
	if n := len(s.rows); n > 0 {
		first, last := s.rows[0].msg.TS, s.rows[n-1].msg.TS
		st.FirstTS, st.LastTS = &first, &last
	}
	return st, nil
}

// Ping answers until the store is closed; there is no schema to migrate.
func (s *memStore) Ping(ctx context.Context) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return msgsvc.ErrClosed
	}
	return ctx.Err()
}

// Close makes every later call fail with msgsvc.ErrClosed, which the handler
// answers with 503.
func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
