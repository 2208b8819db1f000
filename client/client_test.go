package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

const secret = "s3cret"

// newHandler returns the real msgsvc handler over a fresh in-memory store.
func newHandler(tb testing.TB) http.Handler {
	tb.Helper()
	st, err := sqlstore.Open(context.Background(), "sqlite://:memory:")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	h, err := msgsvc.New(msgsvc.Config{Store: st, Secret: secret, Logger: msgsvc.NewLogger(io.Discard, slog.LevelInfo)})
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

// recorder counts the requests that reach h and keeps their raw queries and
// bodies.
type recorder struct {
	h        http.Handler
	mu       sync.Mutex
	queries  []string
	bodies   [][]byte
	sigs     []string
	requests atomic.Int32
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.requests.Add(1)
	body, _ := io.ReadAll(r.Body)
	rec.mu.Lock()
	rec.queries = append(rec.queries, r.URL.RawQuery)
	rec.bodies = append(rec.bodies, body)
	rec.sigs = append(rec.sigs, r.Header.Get(msgsvc.SignatureHeader))
	rec.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec.h.ServeHTTP(w, r)
}

func (rec *recorder) lastQuery() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.queries[len(rec.queries)-1]
}

// newService serves the real handler behind a recorder.
func newService(tb testing.TB) (*recorder, *httptest.Server) {
	tb.Helper()
	rec := &recorder{h: newHandler(tb)}
	srv := httptest.NewServer(rec)
	tb.Cleanup(srv.Close)
	return rec, srv
}

// fastRetry keeps retry tests quick.
var fastRetry = RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}

func newClient(srv *httptest.Server) *Client {
	hc := srv.Client()
	hc.Timeout = 10 * time.Second
	return &Client{BaseURL: srv.URL, Secret: secret, HTTPClient: hc, Retry: fastRetry}
}

func ptr(s string) *string { return &s }

func msg(id, from, ts, text string) msgsvc.Message {
	m := msgsvc.Message{MessageID: id, From: from, To: "+14155550100", TS: ts}
	if text != "" {
		m.Text = ptr(text)
	}
	return m
}

func send(tb testing.TB, c *Client, msgs ...msgsvc.Message) {
	tb.Helper()
	for _, m := range msgs {
		if err := c.Send(context.Background(), m); err != nil {
			tb.Fatalf("Send(%s): %v", m.MessageID, err)
		}
	}
}

func ids(msgs []msgsvc.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.MessageID
	}
	return out
}

func asAPIError(t *testing.T, err error) *APIError {
	t.Helper()
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v (%T) is not an *APIError", err, err)
	}
	return apiErr
}

func TestSendDuplicateFirstWriteWins(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	ctx := context.Background()
	send(t, c, msg("m1", "+919876543210", "2025-01-15T10:00:00Z", "Hello"))
	if err := c.Send(ctx, msg("m1", "+919876543210", "2025-01-15T10:00:00Z", "Again")); err != nil {
		t.Fatalf("Send of a duplicate: %v, want nil (200)", err)
	}
	p, err := c.List(ctx, Query{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != 1 || len(p.Data) != 1 || p.Data[0].Text == nil || *p.Data[0].Text != "Hello" {
		t.Errorf("List = %+v, want m1 once with its first text", p)
	}
	if n := rec.requests.Load(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	// The body sent is the message's JSON, signed as received.
	if want := msgsvc.Sign([]byte(secret), rec.bodies[0]); rec.sigs[0] != want {
		t.Errorf("X-Signature %q, want %q", rec.sigs[0], want)
	}
}

func TestSendTextNull(t *testing.T) {
	_, srv := newService(t)
	c := newClient(srv)
	send(t, c, msg("m1", "+919876543210", "2025-01-15T10:00:00Z", ""))
	p, err := c.List(context.Background(), Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Data) != 1 || p.Data[0].Text != nil {
		t.Errorf("List = %+v, want one message with null text", p.Data)
	}
}

func TestSendWrongSecretNotRetried(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	c.Secret = "wrong"
	err := c.Send(context.Background(), msg("m1", "+919876543210", "2025-01-15T10:00:00Z", "Hello"))
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 401 || apiErr.Message != "invalid signature" || apiErr.Method != "POST" || apiErr.Path != "/webhook" {
		t.Errorf("APIError = %+v", apiErr)
	}
	if !errors.Is(err, msgsvc.ErrInvalidSignature) {
		t.Errorf("errors.Is(%v, msgsvc.ErrInvalidSignature) = false", err)
	}
	if n := rec.requests.Load(); n != 1 {
		t.Errorf("%d attempts, want 1: a 401 is not retried", n)
	}
	if want := "msgsvc/client: POST /webhook: 401 Unauthorized: invalid signature"; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
}

func TestSendNoSecret(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	c.Secret = ""
	if err := c.Send(context.Background(), msg("m1", "+919876543210", "2025-01-15T10:00:00Z", "")); !errors.Is(err, ErrNoSecret) {
		t.Errorf("Send without a secret: %v, want ErrNoSecret", err)
	}
	if n := rec.requests.Load(); n != 0 {
		t.Errorf("%d requests, want none", n)
	}
}

func TestSendValidationDetail(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	err := c.Send(context.Background(), msg("m1", "919876543210", "2025-02-30T00:00:00Z", ""))
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 422 || len(apiErr.Detail) != 2 {
		t.Fatalf("APIError = %+v, want 422 with two field errors", apiErr)
	}
	for i, field := range []string{"from", "ts"} {
		d := apiErr.Detail[i]
		if !slices.Equal(d.Loc, []any{"body", field}) || d.Msg == "" || d.Type == "" {
			t.Errorf("Detail[%d] = %+v, want loc [body %s]", i, d, field)
		}
	}
	if apiErr.Detail[0].Type != "string_pattern_mismatch" || apiErr.Detail[1].Type != "datetime_format" {
		t.Errorf("types %q, %q", apiErr.Detail[0].Type, apiErr.Detail[1].Type)
	}
	if !strings.Contains(apiErr.Message, "body.from: String should match pattern") || !strings.Contains(apiErr.Message, "; body.ts: ") {
		t.Errorf("Message = %q", apiErr.Message)
	}
	if !errors.Is(err, msgsvc.ErrValidation) || errors.Is(err, msgsvc.ErrInvalidSignature) {
		t.Errorf("errors.Is on a 422 matches the wrong sentinels: %v", err)
	}
	if n := rec.requests.Load(); n != 1 {
		t.Errorf("%d attempts, want 1: a 422 is not retried", n)
	}
}

func seedList(t *testing.T, c *Client) {
	t.Helper()
	send(t, c,
		msg("a1", "+919876543210", "2025-01-15T10:00:00Z", "Hello world"),
		msg("a2", "+919876543210", "2025-01-15T10:00:00.5Z", "une École"),
		msg("a3", "+919876543210", "2025-01-16T08:00:00Z", "100% sure"),
		msg("b1", "+14155550123", "2025-01-15T09:00:00Z", "hello there"),
		msg("b2", "+14155550123", "2025-01-15T10:00:00.000Z", ""),
		msg("b3", "+14155550123", "2025-01-17T00:00:00Z", "ÉCOLE du soir"),
	)
}

func TestListFilters(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	seedList(t, c)
	ctx := context.Background()
	ist := time.FixedZone("IST", 5*3600+1800)

	for _, tc := range []struct {
		name      string
		q         Query
		want      []string
		total     int64
		wantQuery string
	}{
		{"all", Query{}, []string{"b1", "a1", "b2", "a2", "a3", "b3"}, 6, ""},
		{"from with +", Query{From: "+919876543210"}, []string{"a1", "a2", "a3"}, 3, "from=%2B919876543210"},
		{"since with an offset", Query{Since: time.Date(2025, 1, 15, 15, 30, 0, 500_000_000, ist)}, []string{"a2", "a3", "b3"}, 3,
			"since=2025-01-15T15%3A30%3A00.5%2B05%3A30"},
		{"since in UTC", Query{Since: time.Date(2025, 1, 16, 0, 0, 0, 0, time.UTC)}, []string{"a3", "b3"}, 2, "since=2025-01-16T00%3A00%3A00Z"},
		{"q folds case", Query{Q: "école"}, []string{"a2", "b3"}, 2, "q=%C3%A9cole"},
		{"q is literal", Query{Q: "0% s"}, []string{"a3"}, 1, "q=0%25+s"},
		{"limit and offset", Query{Limit: 2, Offset: 1}, []string{"a1", "b2"}, 6, "limit=2&offset=1"},
		{"every filter", Query{From: "+14155550123", Since: time.Date(2025, 1, 15, 9, 0, 0, 0, time.UTC), Q: "E", Limit: 1, Offset: 1},
			[]string{"b3"}, 2, "from=%2B14155550123&limit=1&offset=1&q=E&since=2025-01-15T09%3A00%3A00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := c.List(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(p.Data); !slices.Equal(got, tc.want) || p.Total != tc.total {
				t.Errorf("List = %q total %d, want %q total %d", got, p.Total, tc.want, tc.total)
			}
			if got := rec.lastQuery(); got != tc.wantQuery {
				t.Errorf("query string %q, want %q", got, tc.wantQuery)
			}
			wantLimit := tc.q.Limit
			if wantLimit == 0 {
				wantLimit = msgsvc.DefaultLimit
			}
			if p.Limit != wantLimit || p.Offset != tc.q.Offset {
				t.Errorf("limit, offset = %d, %d; want %d, %d", p.Limit, p.Offset, wantLimit, tc.q.Offset)
			}
		})
	}

	t.Run("cursor", func(t *testing.T) {
		p1, err := c.List(ctx, Query{Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		if p1.NextCursor == "" {
			t.Fatal("first page of 4 of 6: NextCursor empty")
		}
		p2, err := c.List(ctx, Query{Limit: 4, Cursor: p1.NextCursor})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(p2.Data); !slices.Equal(got, []string{"a3", "b3"}) || p2.NextCursor != "" || p2.Total != 6 || p2.Offset != 0 {
			t.Errorf("second page = %q next %q total %d offset %d", got, p2.NextCursor, p2.Total, p2.Offset)
		}
		if !strings.Contains(rec.lastQuery(), "cursor="+url.QueryEscape(p1.NextCursor)) {
			t.Errorf("query string %q does not carry the cursor", rec.lastQuery())
		}
	})
}

func TestListValidation(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	before := rec.requests.Load()
	for _, tc := range []struct {
		q     Query
		field string
	}{
		{Query{Limit: 500}, "limit"},
		{Query{Limit: -1}, "limit"},
		{Query{Offset: -3}, "offset"},
		{Query{Cursor: "nope"}, "cursor"},
	} {
		_, err := c.List(context.Background(), tc.q)
		apiErr := asAPIError(t, err)
		if apiErr.StatusCode != 422 || len(apiErr.Detail) != 1 || !slices.Equal(apiErr.Detail[0].Loc, []any{"query", tc.field}) {
			t.Errorf("List(%+v) = %+v, want 422 at [query %s]", tc.q, apiErr, tc.field)
		}
	}
	if n := rec.requests.Load() - before; n != 4 {
		t.Errorf("%d requests for 4 refused lists, want 4: a 422 is not retried", n)
	}
}

func TestAllWalksEveryPage(t *testing.T) {
	rec, srv := newService(t)
	c := newClient(srv)
	for i := range 23 {
		from := "+919876543210"
		if i%3 == 0 {
			from = "+14155550123"
		}
		// Timestamps out of insertion order and repeated, so the list order
		// needs the instant and then the id.
		send(t, c, msg(fmt.Sprintf("m%02d", i), from, fmt.Sprintf("2025-01-15T10:00:%02dZ", (i*7)%11), fmt.Sprintf("text %d", i)))
	}
	ctx := context.Background()
	for _, q := range []Query{{}, {From: "+14155550123"}, {Q: "TEXT 1"}} {
		full, err := c.List(ctx, Query{From: q.From, Q: q.Q, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		before := rec.requests.Load()
		paged := Query{From: q.From, Q: q.Q, Limit: 5}
		var got []msgsvc.Message
		for m, err := range c.All(ctx, paged) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m)
		}
		if !slices.Equal(ids(got), ids(full.Data)) || int64(len(got)) != full.Total {
			t.Errorf("All(%+v) = %q\nwant %q", paged, ids(got), ids(full.Data))
		}
		if pages, want := rec.requests.Load()-before, int32(max(1, (len(full.Data)+4)/5)); pages != want {
			t.Errorf("All(%+v) made %d requests, want %d", paged, pages, want)
		}
	}

	t.Run("from an offset", func(t *testing.T) {
		full, _ := c.List(ctx, Query{Limit: 100})
		var got []string
		for m, err := range c.All(ctx, Query{Limit: 4, Offset: 10}) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m.MessageID)
		}
		if want := ids(full.Data)[10:]; !slices.Equal(got, want) {
			t.Errorf("All from offset 10 = %q, want %q", got, want)
		}
	})

	t.Run("break stops", func(t *testing.T) {
		before := rec.requests.Load()
		n := 0
		for _, err := range c.All(ctx, Query{Limit: 5}) {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 7 {
				break
			}
		}
		if pages := rec.requests.Load() - before; pages != 2 {
			t.Errorf("breaking after 7 messages of pages of 5 made %d requests, want 2", pages)
		}
	})

	t.Run("error ends the walk", func(t *testing.T) {
		var errs []error
		for m, err := range c.All(ctx, Query{Cursor: "bad"}) {
			if err == nil {
				t.Errorf("got %v before the error", m)
			}
			errs = append(errs, err)
		}
		if len(errs) != 1 || !errors.Is(errs[0], msgsvc.ErrValidation) {
			t.Errorf("errors %v, want one 422", errs)
		}
	})
}

func TestStats(t *testing.T) {
	_, srv := newService(t)
	c := newClient(srv)
	ctx := context.Background()
	s, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.TotalMessages != 0 || s.SendersCount != 0 || len(s.MessagesPerSender) != 0 || s.FirstMessageTS != nil || s.LastMessageTS != nil {
		t.Errorf("empty Stats = %+v", s)
	}
	seedList(t, c)
	s, err = c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []msgsvc.SenderCount{{From: "+14155550123", Count: 3}, {From: "+919876543210", Count: 3}}
	if s.TotalMessages != 6 || s.SendersCount != 2 || !slices.Equal(s.MessagesPerSender, want) ||
		s.FirstMessageTS == nil || *s.FirstMessageTS != "2025-01-15T09:00:00Z" ||
		s.LastMessageTS == nil || *s.LastMessageTS != "2025-01-17T00:00:00Z" {
		t.Errorf("Stats = %+v", s)
	}
}

func TestBaseURLWithPrefix(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("/hooks/", http.StripPrefix("/hooks", newHandler(t)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, base := range []string{srv.URL + "/hooks", srv.URL + "/hooks/"} {
		c := newClient(srv)
		c.BaseURL = base
		send(t, c, msg("m1", "+919876543210", "2025-01-15T10:00:00Z", "Hello"))
		if s, err := c.Stats(context.Background()); err != nil || s.TotalMessages != 1 {
			t.Errorf("BaseURL %q: Stats = %+v, %v", base, s, err)
		}
	}
	c := &Client{BaseURL: "localhost:8000"}
	if _, err := c.Stats(context.Background()); err == nil || !strings.Contains(err.Error(), "BaseURL") {
		t.Errorf("a BaseURL without a scheme: %v, want an error naming BaseURL", err)
	}
}

// faultServer answers the first len(faults) requests with the given faults,
// then hands every request to the real handler.
type faultServer struct {
	*httptest.Server
	attempts atomic.Int32
	mu       sync.Mutex
	bodies   [][]byte
}

type fault func(w http.ResponseWriter, r *http.Request)

func status(code int, header, body string) fault {
	return func(w http.ResponseWriter, r *http.Request) {
		if header != "" {
			k, v, _ := strings.Cut(header, ": ")
			w.Header().Set(k, v)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

// hangUp closes the connection without answering: a network error.
func hangUp(w http.ResponseWriter, r *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	_ = conn.Close()
}

func newFaultServer(t *testing.T, faults ...fault) *faultServer {
	t.Helper()
	real := newHandler(t)
	fs := &faultServer{}
	fs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(fs.attempts.Add(1))
		body, _ := io.ReadAll(r.Body)
		fs.mu.Lock()
		fs.bodies = append(fs.bodies, body)
		fs.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		if n <= len(faults) {
			faults[n-1](w, r)
			return
		}
		real.ServeHTTP(w, r)
	}))
	t.Cleanup(fs.Close)
	return fs
}

// retries records the calls of Client.OnRetry.
type retries struct {
	mu    sync.Mutex
	waits []time.Duration
	errs  []error
}

func (rs *retries) hook(attempt int, err error, wait time.Duration) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if attempt != len(rs.waits)+1 {
		panic(fmt.Sprintf("OnRetry attempt %d, want %d", attempt, len(rs.waits)+1))
	}
	rs.waits = append(rs.waits, wait)
	rs.errs = append(rs.errs, err)
}

func newRetryClient(fs *faultServer) (*Client, *retries) {
	c := newClient(fs.Server)
	rs := &retries{}
	c.OnRetry = rs.hook
	return c, rs
}

var hello = msg("r1", "+919876543210", "2025-01-15T10:00:00Z", "Hello")

func TestRetryOn503ThenSucceed(t *testing.T) {
	fs := newFaultServer(t,
		status(503, "", `{"detail":"store unavailable"}`),
		status(503, "", `{"detail":"store unavailable"}`))
	c, rs := newRetryClient(fs)
	if err := c.Send(context.Background(), hello); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n := fs.attempts.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if len(rs.errs) != 2 || asAPIError(t, rs.errs[0]).StatusCode != 503 {
		t.Errorf("OnRetry errors %v, want two 503s", rs.errs)
	}
	for _, w := range rs.waits {
		if w < 0 || w > fastRetry.MaxBackoff {
			t.Errorf("wait %v outside [0, %v]", w, fastRetry.MaxBackoff)
		}
	}
	for i, b := range fs.bodies {
		if !bytes.Equal(b, fs.bodies[0]) {
			t.Errorf("attempt %d sent %s, attempt 1 sent %s: a retry must resend the same bytes", i+1, b, fs.bodies[0])
		}
	}
	p, err := c.List(context.Background(), Query{})
	if err != nil || p.Total != 1 {
		t.Errorf("after the retries: List = %+v, %v; want the message stored", p, err)
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	fs := newFaultServer(t, status(429, "Retry-After: 1", `{"detail":"Too Many Requests"}`))
	c, rs := newRetryClient(fs)
	start := time.Now()
	if err := c.Send(context.Background(), hello); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if elapsed := time.Since(start); elapsed < time.Second {
		t.Errorf("Send returned after %v, before the server's Retry-After: 1", elapsed)
	}
	if len(rs.waits) != 1 || rs.waits[0] != time.Second {
		t.Errorf("waits %v, want [1s]", rs.waits)
	}
	if e := asAPIError(t, rs.errs[0]); e.StatusCode != 429 || e.RetryAfter != time.Second {
		t.Errorf("OnRetry error %+v", e)
	}
	if n := fs.attempts.Load(); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
}

func TestRetryOnNetworkError(t *testing.T) {
	fs := newFaultServer(t, hangUp, hangUp)
	c, rs := newRetryClient(fs)
	if err := c.Send(context.Background(), hello); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if n := fs.attempts.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	var urlErr *url.Error
	if len(rs.errs) != 2 || !errors.As(rs.errs[0], &urlErr) {
		t.Errorf("OnRetry errors %v, want two network errors", rs.errs)
	}
}

func TestRetryGivesUpOnClosedServer(t *testing.T) {
	fs := newFaultServer(t)
	fs.Close()
	c, rs := newRetryClient(fs)
	err := c.Send(context.Background(), hello)
	var urlErr *url.Error
	if !errors.As(err, &urlErr) || !strings.HasSuffix(err.Error(), "(gave up after 3 attempts)") {
		t.Errorf("Send to a closed server: %v, want a network error after 3 attempts", err)
	}
	if len(rs.waits) != 2 {
		t.Errorf("%d retries, want 2", len(rs.waits))
	}
}

func TestRetryExhaustedKeepsAPIError(t *testing.T) {
	fs := newFaultServer(t,
		status(500, "", "<html>oops</html>"),
		status(502, "", "Bad Gateway"),
		status(503, "Retry-After: 0", `{"detail":"store unavailable"}`))
	c, rs := newRetryClient(fs)
	err := c.Send(context.Background(), hello)
	apiErr := asAPIError(t, err)
	if apiErr.StatusCode != 503 || apiErr.Message != "store unavailable" || apiErr.RetryAfter != 0 {
		t.Errorf("last error %+v", apiErr)
	}
	if e := asAPIError(t, rs.errs[0]); e.StatusCode != 500 || e.Message != "Internal Server Error" || e.Detail != nil {
		t.Errorf("a non-JSON 500: %+v", e)
	}
	if n := fs.attempts.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

func TestListRetries(t *testing.T) {
	fs := newFaultServer(t, status(502, "", ""))
	c, rs := newRetryClient(fs)
	if _, err := c.Stats(context.Background()); err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if len(rs.waits) != 1 {
		t.Errorf("%d retries, want 1", len(rs.waits))
	}
}

func TestRetryBoundedByContext(t *testing.T) {
	t.Run("backoff", func(t *testing.T) {
		faults := make([]fault, 10_000)
		for i := range faults {
			faults[i] = status(503, "", `{"detail":"store unavailable"}`)
		}
		fs := newFaultServer(t, faults...)
		c, _ := newRetryClient(fs)
		c.Retry = RetryPolicy{MaxAttempts: 1_000_000, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := c.Send(ctx, hello)
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Errorf("Send took %v with a 200ms deadline", elapsed)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Send: %v, want context.DeadlineExceeded", err)
		}
		if e := asAPIError(t, err); e.StatusCode != 503 {
			t.Errorf("last attempt %+v, want the 503", e)
		}
		if n := fs.attempts.Load(); n < 3 {
			t.Errorf("%d attempts in 200ms of 10-20ms backoffs, want several", n)
		}
	})
	t.Run("Retry-After past the deadline", func(t *testing.T) {
		fs := newFaultServer(t, status(503, "Retry-After: 30", `{"detail":"store unavailable"}`))
		c, rs := newRetryClient(fs)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err := c.Send(ctx, hello)
		if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
			t.Errorf("Send waited %v for a retry it could not make before the deadline", elapsed)
		}
		if !errors.Is(err, context.DeadlineExceeded) || asAPIError(t, err).StatusCode != 503 {
			t.Errorf("Send: %v, want context.DeadlineExceeded and the 503", err)
		}
		if n := fs.attempts.Load(); n != 1 || len(rs.waits) != 0 {
			t.Errorf("%d attempts, %d retries; want 1 and 0", n, len(rs.waits))
		}
	})
	t.Run("deadline during a retry", func(t *testing.T) {
		hang := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
		fs := newFaultServer(t, status(503, "", `{"detail":"store unavailable"}`), hang)
		c, _ := newRetryClient(fs)
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := c.Send(ctx, hello)
		var urlErr *url.Error
		if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &urlErr) || asAPIError(t, err).StatusCode != 503 {
			t.Errorf("Send: %v, want the deadline during attempt 2 and the 503 of attempt 1", err)
		}
	})
	t.Run("context ends as an answer arrives", func(t *testing.T) {
		// The second 503 is read whole, then the context is cancelled
		// before the client looks at it: it cannot retry, and must say
		// both why it stopped and what the last answer was.
		fs := newFaultServer(t, status(503, "", `{"detail":"store unavailable"}`), status(503, "", `{"detail":"store unavailable"}`))
		c, _ := newRetryClient(fs)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var trips atomic.Int32
		c.HTTPClient.Transport = answerThen(c.HTTPClient.Transport, func() {
			if trips.Add(1) == 2 {
				cancel()
			}
		})
		err := c.Send(ctx, hello)
		if !errors.Is(err, context.Canceled) || asAPIError(t, err).StatusCode != 503 {
			t.Errorf("Send: %v, want context.Canceled and the 503", err)
		}
		if n := fs.attempts.Load(); n != 2 {
			t.Errorf("%d attempts, want 2", n)
		}
	})
	t.Run("canceled while waiting", func(t *testing.T) {
		fs := newFaultServer(t, status(503, "Retry-After: 30", `{"detail":"store unavailable"}`))
		c, _ := newRetryClient(fs)
		ctx, cancel := context.WithCancel(context.Background())
		c.OnRetry = func(int, error, time.Duration) { cancel() }
		err := c.Send(ctx, hello)
		if !errors.Is(err, context.Canceled) || asAPIError(t, err).StatusCode != 503 {
			t.Errorf("Send: %v, want context.Canceled and the 503", err)
		}
	})
}

func TestClientErrorsNotRetried(t *testing.T) {
	for _, tc := range []struct {
		code int
		body string
		msg  string
	}{
		{400, `{"detail":"could not read request body"}`, "could not read request body"},
		{401, `{"detail":"invalid signature"}`, "invalid signature"},
		{404, `{"detail":"Not Found"}`, "Not Found"},
		{413, `{"detail":"request body too large"}`, "request body too large"},
		{422, `{"detail":[{"loc":["body","from"],"msg":"bad","type":"string_pattern_mismatch"}]}`, "body.from: bad"},
	} {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			fs := newFaultServer(t, status(tc.code, "", tc.body))
			c, rs := newRetryClient(fs)
			err := c.Send(context.Background(), hello)
			apiErr := asAPIError(t, err)
			if apiErr.StatusCode != tc.code || apiErr.Message != tc.msg {
				t.Errorf("APIError = %+v, want %d %q", apiErr, tc.code, tc.msg)
			}
			if n := fs.attempts.Load(); n != 1 || len(rs.waits) != 0 {
				t.Errorf("%d attempts, want 1", n)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 15, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"3", 3 * time.Second},
		{" 7 ", 7 * time.Second},
		{"99999999999", 24 * time.Hour},
		{"soon", 0},
		{"Wed, 15 Jan 2025 10:00:42 GMT", 42 * time.Second},
		{"Wed, 15 Jan 2025 09:00:00 GMT", 0},
	} {
		if got := parseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestBackoffFullJitter(t *testing.T) {
	p := RetryPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}.withDefaults()
	if p.MaxAttempts != DefaultMaxAttempts {
		t.Errorf("MaxAttempts default %d", p.MaxAttempts)
	}
	for attempt, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 60: time.Second} {
		var top time.Duration
		for range 200 {
			d := p.backoff(attempt)
			if d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", attempt, d, ceiling)
			}
			top = max(top, d)
		}
		if top < ceiling/2 {
			t.Errorf("backoff(%d): largest of 200 draws %v, want spread up to %v", attempt, top, ceiling)
		}
	}
}

func TestNewAPIErrorBodies(t *testing.T) {
	resp := &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": {"2"}}}
	for _, tc := range []struct {
		body, msg string
		detail    int
	}{
		{`{"detail":"store unavailable"}`, "store unavailable", 0},
		{`{"detail":[{"loc":["query","limit"],"msg":"too big","type":"less_than_equal"},{"loc":["body","entry",0,"id"],"msg":"x","type":"y"}]}`,
			"query.limit: too big; body.entry.0.id: x", 2},
		{`{"detail":{"odd":true}}`, "Service Unavailable", 0},
		{`{"detail":[]}`, "Service Unavailable", 0},
		{`not json`, "Service Unavailable", 0},
		{``, "Service Unavailable", 0},
	} {
		e := newAPIError("GET", "/messages", resp, []byte(tc.body))
		if e.Message != tc.msg || len(e.Detail) != tc.detail || e.RetryAfter != 2*time.Second || !e.Temporary() {
			t.Errorf("body %s: %+v, want message %q with %d details", tc.body, e, tc.msg, tc.detail)
		}
	}
}

// answerThen wraps rt: it reads each answer whole, then calls after, so
// that the caller gets a complete answer whatever after does to its
// context.
func answerThen(rt http.RoundTripper, after func()) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		after()
		return resp, nil
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
