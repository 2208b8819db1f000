// Package memstore is a msgsvc.Store kept in memory, for tests: the
// conformance suite runs on it to show that the suite asks for the contract
// and not for SQL behaviour, and the root package's fuzz build uses it to
// leave SQLite out of the instrumented binary.
package memstore

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"

	"github.com/msgsvc/msgsvc"
)

// New returns an empty Store.
func New() *Store {
	return &Store{msgs: map[string]msgsvc.Message{}}
}

// Store is the plainest msgsvc.Store: a map behind a mutex. Every List
// and Stats sorts all of it, so it is for tests only.
type Store struct {
	mu     sync.Mutex
	msgs   map[string]msgsvc.Message
	closed bool
}

// Insert stores each message whose id is new. See msgsvc.Store.
func (s *Store) Insert(_ context.Context, msgs []msgsvc.Message) ([]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, msgsvc.ErrClosed
	}
	created := make([]bool, len(msgs))
	for i, m := range msgs {
		if _, ok := s.msgs[m.MessageID]; !ok {
			s.msgs[m.MessageID] = m
			created[i] = true
		}
	}
	return created, nil
}

func position(m msgsvc.Message) msgsvc.Position {
	return msgsvc.Position{Key: msgsvc.TimestampKey(m.TS), MessageID: m.MessageID}
}

func compare(a, b msgsvc.Position) int {
	if c := strings.Compare(a.Key, b.Key); c != 0 {
		return c
	}
	return strings.Compare(a.MessageID, b.MessageID)
}

// sorted returns every message in list order. The caller holds s.mu.
func (s *Store) sorted() []msgsvc.Message {
	out := make([]msgsvc.Message, 0, len(s.msgs))
	for _, m := range s.msgs {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b msgsvc.Message) int { return compare(position(a), position(b)) })
	return out
}

// List filters and sorts every message, then pages. See msgsvc.Store.
func (s *Store) List(_ context.Context, q msgsvc.Query) (msgsvc.Page, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rows []msgsvc.Message
	for _, m := range s.sorted() {
		switch {
		case q.From != "" && m.From != q.From:
		case q.Since != nil && msgsvc.TimestampKey(m.TS) < msgsvc.InstantKey(*q.Since):
		case q.Text != "" && (m.Text == nil || !strings.Contains(msgsvc.Fold(*m.Text), msgsvc.Fold(q.Text))):
		default:
			rows = append(rows, m)
		}
	}
	page := msgsvc.Page{Total: int64(len(rows))}
	if q.After != nil {
		rows = slices.DeleteFunc(rows, func(m msgsvc.Message) bool { return compare(position(m), *q.After) <= 0 })
	}
	rows = rows[min(q.Offset, len(rows)):]
	if len(rows) > q.Limit {
		next := position(rows[q.Limit-1])
		page.Next = &next
		rows = rows[:q.Limit]
	}
	page.Messages = rows
	return page, nil
}

// Stats counts every message. See msgsvc.Store.
func (s *Store) Stats(context.Context) (msgsvc.Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	counts := map[string]int64{}
	for _, m := range s.msgs {
		counts[m.From]++
	}
	st := msgsvc.Stats{TotalMessages: int64(len(s.msgs)), SendersCount: int64(len(counts))}
	for from, n := range counts {
		st.TopSenders = append(st.TopSenders, msgsvc.SenderCount{From: from, Count: n})
	}
	slices.SortFunc(st.TopSenders, func(a, b msgsvc.SenderCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.From, b.From))
	})
	st.TopSenders = st.TopSenders[:min(10, len(st.TopSenders))]
	if all := s.sorted(); len(all) > 0 {
		first, last := all[0].TS, all[len(all)-1].TS
		st.FirstTS, st.LastTS = &first, &last
	}
	return st, nil
}

// Ping always succeeds.
func (s *Store) Ping(context.Context) error { return nil }

// Close makes later Inserts fail with msgsvc.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Closed reports whether Close was called.
func (s *Store) Closed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
