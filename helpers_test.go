package msgsvc_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// testSecret signs every request of the tests unless a test says otherwise.
const testSecret = "test-secret-Zq9"

// syncBuffer is a bytes.Buffer safe for the handler's goroutines to write to
// while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeStore wraps a real Store and fails chosen calls on demand.
type fakeStore struct {
	msgsvc.Store
	pingErr, insertErr, readErr atomic.Pointer[error]
	hangPing                    atomic.Bool  // Ping waits for its context to end
	calls                       atomic.Int64 // every call that reached the store
}

func (s *fakeStore) failPing(err error)   { s.pingErr.Store(&err) }
func (s *fakeStore) failInsert(err error) { s.insertErr.Store(&err) }
func (s *fakeStore) failRead(err error)   { s.readErr.Store(&err) }

func loadErr(p *atomic.Pointer[error]) error {
	if e := p.Load(); e != nil {
		return *e
	}
	return nil
}

func (s *fakeStore) Ping(ctx context.Context) error {
	s.calls.Add(1)
	if err := loadErr(&s.pingErr); err != nil {
		return err
	}
	if s.hangPing.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return s.Store.Ping(ctx)
}

func (s *fakeStore) Insert(ctx context.Context, msgs []msgsvc.Message) ([]bool, error) {
	s.calls.Add(1)
	if err := loadErr(&s.insertErr); err != nil {
		return nil, err
	}
	return s.Store.Insert(ctx, msgs)
}

func (s *fakeStore) List(ctx context.Context, q msgsvc.Query) (msgsvc.Page, error) {
	s.calls.Add(1)
	if err := loadErr(&s.readErr); err != nil {
		return msgsvc.Page{}, err
	}
	return s.Store.List(ctx, q)
}

func (s *fakeStore) Stats(ctx context.Context) (msgsvc.Stats, error) {
	s.calls.Add(1)
	if err := loadErr(&s.readErr); err != nil {
		return msgsvc.Stats{}, err
	}
	return s.Store.Stats(ctx)
}

// env is one handler over a fresh store from openTestStore: in-memory
// SQLite, a Postgres schema of its own in the Postgres run (see
// TestHTTPPostgres), or with the tag nosqlstore a map in memory.
type env struct {
	h      *msgsvc.Handler
	store  *fakeStore
	logs   *syncBuffer
	secret string
}

// newEnv builds a handler with testSecret, a JSON logger at DEBUG into a
// buffer, and a fresh store; configure may change the config.
func newEnv(tb testing.TB, configure ...func(*msgsvc.Config)) *env {
	tb.Helper()
	st := openTestStore(tb)
	e := &env{store: &fakeStore{Store: st}, logs: &syncBuffer{}}
	cfg := msgsvc.Config{
		Store:  e.store,
		Secret: testSecret,
		Logger: msgsvc.NewLogger(e.logs, slog.LevelDebug),
	}
	for _, f := range configure {
		f(&cfg)
	}
	e.secret = cfg.Secret
	h, err := msgsvc.New(cfg)
	if err != nil {
		tb.Fatalf("msgsvc.New: %v", err)
	}
	e.h = h
	return e
}

// serve runs r through the handler and returns the recorded answer.
func (e *env) serve(tb testing.TB, r *http.Request) *httptest.ResponseRecorder {
	tb.Helper()
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, r)
	return rec
}

// get serves GET target.
func (e *env) get(tb testing.TB, target string) *httptest.ResponseRecorder {
	tb.Helper()
	return e.serve(tb, httptest.NewRequest(http.MethodGet, target, nil))
}

// webhookRequest builds POST /webhook with body and headers given as
// name, value pairs.
func webhookRequest(tb testing.TB, body []byte, headers ...string) *http.Request {
	tb.Helper()
	if len(headers)%2 != 0 {
		tb.Fatalf("webhookRequest: odd number of header arguments")
	}
	r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	for i := 0; i < len(headers); i += 2 {
		r.Header.Add(headers[i], headers[i+1])
	}
	return r
}

// post serves POST /webhook with body signed by the env's secret in
// X-Signature, plus any extra headers.
func (e *env) post(tb testing.TB, body []byte, headers ...string) *httptest.ResponseRecorder {
	tb.Helper()
	h := append([]string{msgsvc.SignatureHeader, msgsvc.Sign([]byte(testSecret), body)}, headers...)
	return e.serve(tb, webhookRequest(tb, body, h...))
}

// seed stores msgs through signed webhooks, failing the test on any non-200.
func (e *env) seed(tb testing.TB, msgs ...msgsvc.Message) {
	tb.Helper()
	for _, m := range msgs {
		body, err := json.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		if rec := e.post(tb, body); rec.Code != http.StatusOK {
			tb.Fatalf("seeding %s: %d %s", m.MessageID, rec.Code, rec.Body)
		}
	}
}

// total returns how many messages the store holds.
func (e *env) total(tb testing.TB) int64 {
	tb.Helper()
	p, err := e.store.Store.List(context.Background(), msgsvc.Query{Limit: 1})
	if err != nil {
		tb.Fatalf("List: %v", err)
	}
	return p.Total
}

// listPage is the body of GET /messages.
type listPage struct {
	Data       []msgsvc.Message `json:"data"`
	Total      int64            `json:"total"`
	Limit      int              `json:"limit"`
	Offset     int              `json:"offset"`
	NextCursor *string          `json:"next_cursor"`
}

// list serves GET /messages?rawQuery and decodes a 200 answer.
func (e *env) list(tb testing.TB, rawQuery string) listPage {
	tb.Helper()
	rec := e.get(tb, "/messages?"+rawQuery)
	if rec.Code != http.StatusOK {
		tb.Fatalf("GET /messages?%s: %d %s", rawQuery, rec.Code, rec.Body)
	}
	var p listPage
	decodeJSON(tb, rec, &p)
	return p
}

// ids returns the message ids of msgs in order.
func ids(msgs []msgsvc.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.MessageID
	}
	return out
}

// decodeJSON checks the JSON content type and decodes the body strictly.
func decodeJSON(tb testing.TB, rec *httptest.ResponseRecorder, v any) {
	tb.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		tb.Fatalf("decoding %s: %v", rec.Body, err)
	}
}

// wantDetail checks a {"detail": "..."} answer.
func wantDetail(tb testing.TB, rec *httptest.ResponseRecorder, status int, detail string) {
	tb.Helper()
	if rec.Code != status {
		tb.Fatalf("status = %d, want %d (body %s)", rec.Code, status, rec.Body)
	}
	var got struct {
		Detail string `json:"detail"`
	}
	decodeJSON(tb, rec, &got)
	if got.Detail != detail {
		tb.Errorf("detail = %q, want %q", got.Detail, detail)
	}
}

// wantOK checks a 200 {"status":"ok"} answer.
func wantOK(tb testing.TB, rec *httptest.ResponseRecorder) {
	tb.Helper()
	if rec.Code != http.StatusOK {
		tb.Fatalf("status = %d, want 200 (body %s)", rec.Code, rec.Body)
	}
	var got struct {
		Status string `json:"status"`
	}
	decodeJSON(tb, rec, &got)
	if got.Status != "ok" {
		tb.Errorf("status field = %q, want ok", got.Status)
	}
}

// fieldError is one item of a 422 body.
type fieldError struct {
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
	Type string `json:"type"`
}

// want422 checks a 422 answer and returns its items, each with a non-empty
// msg and type.
func want422(tb testing.TB, rec *httptest.ResponseRecorder) []fieldError {
	tb.Helper()
	if rec.Code != http.StatusUnprocessableEntity {
		tb.Fatalf("status = %d, want 422 (body %s)", rec.Code, rec.Body)
	}
	var got struct {
		Detail []fieldError `json:"detail"`
	}
	decodeJSON(tb, rec, &got)
	if len(got.Detail) == 0 {
		tb.Fatalf("422 without detail items: %s", rec.Body)
	}
	for _, d := range got.Detail {
		if d.Msg == "" || d.Type == "" || len(d.Loc) == 0 {
			tb.Errorf("incomplete detail item %+v", d)
		}
	}
	return got.Detail
}

// locString renders a loc as "body.from" for comparisons.
func locString(loc []any) string {
	parts := make([]string, len(loc))
	for i, p := range loc {
		switch v := p.(type) {
		case string:
			parts[i] = v
		case float64:
			parts[i] = strconv.FormatFloat(v, 'f', -1, 64)
		default:
			parts[i] = "?"
		}
	}
	return strings.Join(parts, ".")
}

// locs renders every loc of items.
func locs(items []fieldError) []string {
	out := make([]string, len(items))
	for i, d := range items {
		out[i] = locString(d.Loc)
	}
	return out
}

// logLines parses every JSON line written to the env's logger.
func (e *env) logLines(tb testing.TB) []map[string]any {
	tb.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.logs.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			tb.Fatalf("log line is not JSON: %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// lastLog returns the last log line, failing when there is none.
func (e *env) lastLog(tb testing.TB) map[string]any {
	tb.Helper()
	lines := e.logLines(tb)
	if len(lines) == 0 {
		tb.Fatal("no log line written")
	}
	return lines[len(lines)-1]
}

// metricsText returns the body of GET /metrics.
func (e *env) metricsText(tb testing.TB) string {
	tb.Helper()
	rec := e.get(tb, "/metrics")
	if rec.Code != http.StatusOK {
		tb.Fatalf("GET /metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

// metricValue returns the value of the sample series (name and labels, as
// exposed, for example `webhook_requests_total{result="created"}`) in
// exposition text, and whether it is present.
func metricValue(tb testing.TB, text, series string) (float64, bool) {
	tb.Helper()
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				tb.Fatalf("metric %s: %v", series, err)
			}
			return v, true
		}
	}
	return 0, false
}

// wantMetric checks that series is present with value want.
func wantMetric(tb testing.TB, text, series string, want float64) {
	tb.Helper()
	got, ok := metricValue(tb, text, series)
	if !ok {
		tb.Errorf("metric %s missing", series)
		return
	}
	if got != want {
		tb.Errorf("metric %s = %v, want %v", series, got, want)
	}
}

// msg builds a valid message; text nil means none.
func msg(id, from, ts string, text *string) msgsvc.Message {
	return msgsvc.Message{MessageID: id, From: from, To: "+14155550100", TS: ts, Text: text}
}

func ptr[T any](v T) *T { return &v }

// body builds a JSON object from the valid base message with fields
// replaced; a value of absent removes the field.
func body(tb testing.TB, fields map[string]any) []byte {
	tb.Helper()
	m := map[string]any{
		"message_id": "m1",
		"from":       "+919876543210",
		"to":         "+14155550100",
		"ts":         "2025-01-15T10:00:00Z",
		"text":       "Hello",
	}
	for k, v := range fields {
		if v == absent {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		tb.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

type absentType struct{}

// absent removes a field in body.
var absent = absentType{}

// errStoreDown is what a failing fake store returns.
var errStoreDown = errors.New("fake store: disk on fire")

// readAll reads and closes a response body.
func readAll(tb testing.TB, r io.ReadCloser) []byte {
	tb.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
