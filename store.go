package msgsvc

import (
	"context"
	"errors"
	"time"
)

// Store keeps messages. Implementations must be safe for concurrent use.
//
// The sqlstore package implements it on SQLite and Postgres; the storetest
// package holds the conformance suite any implementation should pass.
//
// A Store that also implements prometheus.Collector (Describe and Collect)
// has its metrics registered with the handler's by [New], so GET /metrics
// shows them; sqlstore's does.
type Store interface {
	// Insert stores msgs in one transaction, idempotently keyed on
	// MessageID: the first write of an id wins and later ones change
	// nothing. created[i] reports whether msgs[i] was new; a repeat of an id
	// earlier in msgs is a duplicate. Insert returns only after the rows
	// are durably committed, or with an error and nothing stored.
	// Messages passed in are valid (see ValidateMessage).
	Insert(ctx context.Context, msgs []Message) (created []bool, err error)

	// List returns one page of messages matching q, ordered by the instant
	// of TS and then by MessageID in byte order.
	List(ctx context.Context, q Query) (Page, error)

	// Stats returns exact aggregate statistics.
	Stats(ctx context.Context) (Stats, error)

	// Ping reports whether the store answers and its schema is migrated.
	Ping(ctx context.Context) error
}

// Store errors. Implementations wrap them so that callers can use errors.Is.
var (
	// ErrUnavailable means the store cannot serve the call right now (the
	// database is down, read-only or full); the caller should retry later.
	ErrUnavailable = errors.New("msgsvc: store unavailable")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("msgsvc: store closed")
)

// Query selects messages for [Store.List]. Zero values mean "no filter".
type Query struct {
	// From matches the sender exactly.
	From string
	// Since, when set, keeps messages whose instant is at or after it.
	Since *time.Time
	// Text keeps messages whose text contains it as a substring after both
	// are folded with Unicode simple case folding (see Fold). Every
	// character is literal.
	Text string
	// After continues a keyset walk: only rows strictly after this position
	// are returned. Nil starts at the beginning.
	After *Position
	// Limit is the page size, 1 to 100.
	Limit int
	// Offset skips that many matching rows (after After, when both are set).
	Offset int
}

// Position is a place in the list order: the instant key of a message and
// its id. Positions are what keyset cursors encode.
type Position struct {
	// Key is InstantKey of the message's timestamp.
	Key string
	// MessageID breaks ties between messages of the same instant.
	MessageID string
}

// Page is one page of [Store.List].
type Page struct {
	// Messages holds at most Query.Limit messages in list order.
	Messages []Message
	// Total counts every match of the filters, ignoring Limit, Offset and After.
	Total int64
	// Next is the position of the last message of the page when a further
	// matching message exists, else nil.
	Next *Position
}

// SenderCount is one row of [Stats.TopSenders].
type SenderCount struct {
	// From is the sender's number.
	From string `json:"from"`
	// Count is how many messages it sent.
	Count int64 `json:"count"`
}

// Stats are the exact aggregates served at GET /stats.
type Stats struct {
	// TotalMessages counts every stored message.
	TotalMessages int64
	// SendersCount counts distinct senders.
	SendersCount int64
	// TopSenders holds at most 10 senders by count descending, ties by From
	// ascending.
	TopSenders []SenderCount
	// FirstTS and LastTS are the TS, as received, of the first and last
	// message in list order; nil when the store is empty.
	FirstTS, LastTS *string
}
