package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/client"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// startService runs msgsvc on an in-memory store, as the daemon would with
// WEBHOOK_SECRET=s3cret, and returns its URL and a function that stops it.
func startService() (url string, stop func()) {
	st, err := sqlstore.Open(context.Background(), "sqlite://:memory:")
	if err != nil {
		log.Fatal(err)
	}
	h, err := msgsvc.New(msgsvc.Config{Store: st, Secret: "s3cret", Logger: msgsvc.NewLogger(io.Discard, nil)})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	return srv.URL, func() {
		srv.Close()
		_ = st.Close()
	}
}

func text(s string) *string { return &s }

// Send signs the message with the shared secret and delivers it, retrying
// on 5xx, 429 and network errors. Delivering a message twice is safe: the
// first write wins.
func ExampleClient_Send() {
	url, stop := startService()
	defer stop()

	c := &client.Client{BaseURL: url, Secret: "s3cret"}
	m := msgsvc.Message{
		MessageID: "m1",
		From:      "+919876543210",
		To:        "+14155550100",
		TS:        "2025-01-15T10:00:00Z",
		Text:      text("Hello"),
	}
	ctx := context.Background()
	fmt.Println("first:", c.Send(ctx, m))
	fmt.Println("again:", c.Send(ctx, m))

	p, err := c.List(ctx, client.Query{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored:", p.Total, p.Data[0].MessageID, *p.Data[0].Text)
	// Output:
	// first: <nil>
	// again: <nil>
	// stored: 1 m1 Hello
}

// A refused message comes back as an *APIError; a 422 lists every failing
// field, as the service's FastAPI-style body does.
func ExampleAPIError() {
	url, stop := startService()
	defer stop()

	c := &client.Client{BaseURL: url, Secret: "s3cret"}
	err := c.Send(context.Background(), msgsvc.Message{MessageID: "m1", From: "919876543210", To: "+14155550100", TS: "2025-01-15 10:00"})

	var apiErr *client.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, errors.Is(err, msgsvc.ErrValidation))
		for _, d := range apiErr.Detail {
			fmt.Println(d.Loc, d.Type)
		}
	}

	c.Secret = "wrong"
	err = c.Send(context.Background(), msgsvc.Message{MessageID: "m1", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z"})
	fmt.Println(err)
	fmt.Println(errors.Is(err, msgsvc.ErrInvalidSignature))
	// Output:
	// 422 true
	// [body from] string_pattern_mismatch
	// [body ts] datetime_format
	// msgsvc/client: POST /webhook: 401 Unauthorized: invalid signature
	// true
}

// List reads one page; Query's zero fields are left to the service's
// defaults. A sender's "+" is encoded for you.
func ExampleClient_List() {
	url, stop := startService()
	defer stop()

	c := &client.Client{BaseURL: url, Secret: "s3cret"}
	ctx := context.Background()
	for i, from := range []string{"+919876543210", "+14155550123", "+919876543210"} {
		m := msgsvc.Message{MessageID: fmt.Sprintf("m%d", i+1), From: from, To: "+14155550100", TS: fmt.Sprintf("2025-01-15T10:0%d:00Z", i)}
		if err := c.Send(ctx, m); err != nil {
			log.Fatal(err)
		}
	}

	p, err := c.List(ctx, client.Query{
		From:  "+919876543210",
		Since: time.Date(2025, 1, 15, 15, 30, 0, 0, time.FixedZone("IST", 5*3600+1800)), // 10:00Z
		Limit: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Data[0].MessageID, p.Total, p.NextCursor != "")

	p, err = c.List(ctx, client.Query{From: "+919876543210", Limit: 1, Cursor: p.NextCursor})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Data[0].MessageID, p.Total, p.NextCursor != "")
	// Output:
	// m1 2 true
	// m3 2 false
}

// All walks every page with next_cursor, so a loop sees each matching
// message once, in list order.
func ExampleClient_All() {
	url, stop := startService()
	defer stop()

	c := &client.Client{BaseURL: url, Secret: "s3cret"}
	ctx := context.Background()
	for i := 5; i >= 1; i-- {
		m := msgsvc.Message{MessageID: fmt.Sprintf("m%d", i), From: "+919876543210", To: "+14155550100", TS: fmt.Sprintf("2025-01-15T10:00:0%dZ", i)}
		if err := c.Send(ctx, m); err != nil {
			log.Fatal(err)
		}
	}

	for m, err := range c.All(ctx, client.Query{Limit: 2}) { // three requests
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(m.MessageID, " ")
	}
	fmt.Println()
	// Output:
	// m1 m2 m3 m4 m5
}

// Stats mirrors GET /stats.
func ExampleClient_Stats() {
	url, stop := startService()
	defer stop()

	c := &client.Client{BaseURL: url, Secret: "s3cret"}
	ctx := context.Background()
	for i, from := range []string{"+919876543210", "+14155550123", "+919876543210"} {
		m := msgsvc.Message{MessageID: fmt.Sprintf("m%d", i+1), From: from, To: "+14155550100", TS: fmt.Sprintf("2025-01-15T10:0%d:00Z", i)}
		if err := c.Send(ctx, m); err != nil {
			log.Fatal(err)
		}
	}

	s, err := c.Stats(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.TotalMessages, s.SendersCount, *s.FirstMessageTS, *s.LastMessageTS)
	for _, sc := range s.MessagesPerSender {
		fmt.Println(sc.From, sc.Count)
	}
	// Output:
	// 3 2 2025-01-15T10:00:00Z 2025-01-15T10:02:00Z
	// +919876543210 2
	// +14155550123 1
}

// RetryPolicy and OnRetry tune and observe the retries. Here the service
// answers 503 to everything, so Send gives up after the third attempt.
func ExampleRetryPolicy() {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"detail":"store unavailable"}`)
	}))
	defer down.Close()

	c := &client.Client{
		BaseURL: down.URL,
		Secret:  "s3cret",
		Retry:   client.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		OnRetry: func(attempt int, err error, wait time.Duration) {
			fmt.Printf("attempt %d: %v; retrying\n", attempt, err)
		},
	}
	err := c.Send(context.Background(), msgsvc.Message{MessageID: "m1", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z"})
	fmt.Println(err)
	// Output:
	// attempt 1: msgsvc/client: POST /webhook: 503 Service Unavailable: store unavailable; retrying
	// attempt 2: msgsvc/client: POST /webhook: 503 Service Unavailable: store unavailable; retrying
	// msgsvc/client: POST /webhook: 503 Service Unavailable: store unavailable (gave up after 3 attempts)
}
