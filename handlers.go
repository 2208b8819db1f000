package msgsvc

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Handler serves the msgsvc HTTP contract. Make one with [New]; it is safe
// for concurrent use, and any number of them can live in one program.
type Handler struct {
	store        Store
	secrets      [][]byte
	maxBody      int64
	verifyToken  string
	readyTimeout time.Duration
	log          *slog.Logger
	metrics      *metrics
	routes       map[string]*route
	bodies       sync.Pool     // *bytes.Buffer for webhook bodies and list answers
	storeDown    atomic.Uint32 // which kinds of store call are failing (outageRead, outageWrite); see noteStore
	storeMu      sync.Mutex    // held to change storeDown
	storeNoted   time.Time     // when storeDown last changed; guarded by storeMu
}

// route is one exact path and the methods it answers.
type route struct {
	path    string
	methods map[string]routeFunc
	allow   string
}

// routeFunc serves one request; it fills rl with what the log line needs.
type routeFunc func(w http.ResponseWriter, r *http.Request, rl *requestLog)

// requestLog gathers the fields of one request's log line.
type requestLog struct {
	messageID string
	messages  int
	delivery  bool // a WhatsApp Cloud API delivery: messages is always logged
	result    string
	err       error
}

func (h *Handler) buildRoutes() map[string]*route {
	get := func(f routeFunc) map[string]routeFunc {
		return map[string]routeFunc{http.MethodGet: f, http.MethodHead: f}
	}
	webhook := map[string]routeFunc{http.MethodPost: h.serveWebhook}
	if h.verifyToken != "" {
		webhook[http.MethodGet] = h.serveVerify
	}
	routes := map[string]*route{
		"/webhook":      {methods: webhook},
		"/messages":     {methods: get(h.serveMessages)},
		"/stats":        {methods: get(h.serveStats)},
		"/health/live":  {methods: get(h.serveLive)},
		"/health/ready": {methods: get(h.serveReady)},
		"/metrics":      {methods: get(h.serveMetrics)},
		"/openapi.yaml": {methods: get(h.serveOpenAPI)},
	}
	for path, rt := range routes {
		rt.path = path
		rt.allow = allowHeader(rt.methods)
	}
	return routes
}

func allowHeader(methods map[string]routeFunc) string {
	s := ""
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
		if methods[m] != nil {
			if s != "" {
				s += ", "
			}
			s += m
		}
	}
	return s
}

// ServeHTTP routes r by exact path and method, and records its metrics and
// log line. It never redirects: webhook senders treat 3xx as failure.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := r.Header.Get("X-Request-ID")
	if !validRequestID(id) {
		id = newRequestID()
	}
	w.Header().Set("X-Request-ID", id)
	sw := &statusWriter{ResponseWriter: w}
	var rl requestLog

	path := unmatchedPath
	rt := h.routes[r.URL.Path]
	if rt == nil {
		writeDetail(sw, http.StatusNotFound, "Not Found")
	} else if serve := rt.methods[r.Method]; serve == nil {
		sw.Header().Set("Allow", rt.allow)
		writeDetail(sw, http.StatusMethodNotAllowed, "Method Not Allowed")
	} else {
		path = rt.path
		serve(sw, r, &rl)
	}

	latency := float64(time.Since(start).Microseconds()) / 1000
	h.metrics.observe(path, sw.status, latency)
	if rl.result != "" {
		h.metrics.webhook[rl.result].Inc()
	}
	logged := path
	if rt != nil {
		logged = rt.path // a 405 on one of our paths: safe to name
	}
	h.noteStore(r, start, path, sw.status, &rl) // an outage's one event comes before its first request line
	h.logRequest(r, id, sw.status, latency, logged, &rl)
}

// Kinds of store outage, as bits of Handler.storeDown. Reads can work while
// writes fail (a full disk), so each kind ends only on a success of its own.
const (
	outageRead uint32 = 1 << iota
	outageWrite
)

// noteStore logs the store's passages from working to failing and back,
// once each, beside the request lines: an outage shows as one event, not
// only as a 503 per request. A failed webhook is a write outage, a failed
// /messages or /stats a read outage, and a failed readiness check either.
// A write outage ends with a created webhook, a read outage with a page or
// the stats, and both with a ready store (its Ping probes the writer after a
// failed write); a duplicate proves nothing. "store recovered" is logged when
// no kind is failing any more. Only a request that started after the last
// change counts: one that began before it may have reached the store before
// the change, and concurrent requests end in any order (a webhook committed
// just before an outage would otherwise log "recovered" right after
// "unavailable", and the next failure "unavailable" again).
func (h *Handler) noteStore(r *http.Request, start time.Time, path string, status int, rl *requestLog) {
	var failed, ended uint32
	switch {
	case status >= 500 && rl.err != nil:
		switch path {
		case "/messages", "/stats":
			failed = outageRead
		case "/health/ready":
			failed = outageRead | outageWrite
		default:
			failed = outageWrite
		}
	case rl.result == ResultCreated:
		ended = outageWrite
	case status == http.StatusOK && (path == "/messages" || path == "/stats"):
		ended = outageRead
	case status == http.StatusOK && path == "/health/ready":
		ended = outageRead | outageWrite
	default:
		return
	}
	if was := h.storeDown.Load(); (was|failed)&^ended == was {
		return // no change: most requests stop here, without the lock
	}
	h.storeMu.Lock()
	defer h.storeMu.Unlock()
	was := h.storeDown.Load()
	now := (was | failed) &^ ended
	if now == was || start.Before(h.storeNoted) {
		return
	}
	h.storeDown.Store(now)
	h.storeNoted = time.Now()
	switch {
	case was == 0:
		h.log.LogAttrs(r.Context(), slog.LevelError, "store unavailable", slog.String("error", rl.err.Error()))
	case now == 0:
		h.log.LogAttrs(r.Context(), slog.LevelInfo, "store recovered")
	}
}

// logRequest writes the request's one log line, at the contract's level.
// path is the route's path, or "unmatched": a client can put anything in an
// unknown path, a phone number included, and logs must carry none.
func (h *Handler) logRequest(r *http.Request, id string, status int, latency float64, path string, rl *requestLog) {
	level := slog.LevelInfo
	switch {
	case status >= 500 || rl.result == ResultInvalidSignature:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !h.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs,
		slog.String("request_id", id),
		slog.String("method", r.Method),
		slog.String("path", path),
		slog.Int("status", status),
		slog.Float64("latency_ms", latency),
	)
	if path == "/webhook" && r.Method == http.MethodPost && rl.result != "" {
		if rl.messageID != "" {
			attrs = append(attrs, slog.String("message_id", rl.messageID))
		}
		if rl.messages > 1 || rl.delivery {
			attrs = append(attrs, slog.Int("messages", rl.messages))
		}
		attrs = append(attrs,
			slog.Bool("dup", rl.result == ResultDuplicate),
			slog.String("result", rl.result))
	}
	if rl.err != nil {
		attrs = append(attrs, slog.String("error", rl.err.Error()))
	}
	h.log.LogAttrs(ctx, level, "request", attrs...)
}

// validRequestID accepts 1 to 128 characters from '!' to '~'.
func validRequestID(id string) bool {
	if len(id) < 1 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '!' || id[i] > '~' {
			return false
		}
	}
	return true
}

func newRequestID() string {
	const hexDigits = "0123456789abcdef"
	var b [16]byte
	n := rand.Uint64()
	for i := range b {
		b[i] = hexDigits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writeJSON writes v as the whole JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only a bug in this package can get here: every value is plain data.
		status, body = http.StatusInternalServerError, []byte(`{"detail":"internal server error"}`)
	}
	writeRaw(w, status, body)
}

func writeRaw(w http.ResponseWriter, status int, body []byte) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeDetail writes {"detail": msg}.
func writeDetail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, struct {
		Detail string `json:"detail"`
	}{msg})
}

// writeStoreError answers a failed store call so that the client retries:
// 503 when the store is unavailable or closed, 500 otherwise.
func writeStoreError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrUnavailable) || errors.Is(err, ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
		w.Header().Set("Retry-After", "1")
		writeDetail(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	writeDetail(w, http.StatusInternalServerError, "internal server error")
}

var okBody = []byte(`{"status":"ok"}`)

// serveWebhook ingests one signed message, or the messages of a signed
// WhatsApp Cloud API delivery. The checks run in the contract's order, and the
// first failure answers: size, secret, signature, payload.
func (h *Handler) serveWebhook(w http.ResponseWriter, r *http.Request, rl *requestLog) {
	buf := h.getBuffer()
	defer h.putBuffer(buf)

	if err := h.readBody(w, r, buf); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			rl.result = ResultTooLarge
			writeDetail(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		rl.result, rl.err = ResultValidationError, err
		writeDetail(w, http.StatusBadRequest, "could not read request body")
		return
	}
	body := buf.Bytes()

	if len(h.secrets) == 0 {
		rl.result = ResultNotConfigured
		writeDetail(w, http.StatusServiceUnavailable, "webhook secret not configured")
		return
	}
	if err := Verify(r.Header, body, h.secrets...); err != nil {
		rl.result = ResultInvalidSignature
		writeDetail(w, http.StatusUnauthorized, "invalid signature")
		return
	}

	if fields, ok := deliveryFields(body); ok {
		h.serveDelivery(w, r, fields, rl)
		return
	}
	m, err := ParseMessage(body)
	if err != nil {
		rl.result = ResultValidationError
		writeValidation(w, err)
		return
	}
	rl.messageID, rl.messages = m.MessageID, 1
	h.insert(w, r, []Message{m}, rl)
}

// insert stores msgs in one Store.Insert call and answers 200 once they are
// committed: result created if any was new, else duplicate.
func (h *Handler) insert(w http.ResponseWriter, r *http.Request, msgs []Message, rl *requestLog) {
	created, err := h.store.Insert(r.Context(), msgs)
	if err != nil {
		rl.result, rl.err = ResultStoreError, err
		writeStoreError(w, err)
		return
	}
	rl.result = ResultDuplicate
	for _, c := range created {
		if c {
			rl.result = ResultCreated
		}
	}
	writeRaw(w, http.StatusOK, okBody)
}

func writeValidation(w http.ResponseWriter, err error) {
	var ve *ValidationError
	if !errors.As(err, &ve) {
		ve = &ValidationError{Detail: []FieldError{{Loc: []any{"body"}, Msg: err.Error(), Type: "value_error"}}}
	}
	writeJSON(w, http.StatusUnprocessableEntity, ve)
}

// readBody reads the whole body into buf, at most h.maxBody bytes. A declared
// length over the limit is refused before anything is read.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request, buf *bytes.Buffer) error {
	if r.ContentLength > h.maxBody {
		return &http.MaxBytesError{Limit: h.maxBody}
	}
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	// MaxBytesReader wants the server's own writer: over the limit it tells
	// the server to close the connection instead of reading the rest.
	if sw, ok := w.(*statusWriter); ok {
		w = sw.ResponseWriter
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, h.maxBody))
	return err
}

func (h *Handler) getBuffer() *bytes.Buffer {
	if b, ok := h.bodies.Get().(*bytes.Buffer); ok {
		return b
	}
	return new(bytes.Buffer)
}

func (h *Handler) putBuffer(b *bytes.Buffer) {
	if b.Cap() > 64<<10 {
		return // let an unusually large body go to the collector
	}
	b.Reset()
	h.bodies.Put(b)
}

// serveVerify answers the WhatsApp Cloud API subscription handshake.
func (h *Handler) serveVerify(w http.ResponseWriter, r *http.Request, _ *requestLog) {
	q := r.URL.Query()
	token := q.Get("hub.verify_token")
	if q.Get("hub.mode") != "subscribe" || subtle.ConstantTimeCompare([]byte(token), []byte(h.verifyToken)) != 1 {
		writeDetail(w, http.StatusForbidden, "Forbidden")
		return
	}
	// The challenge is echoed as Meta requires; as plain text that no
	// browser may sniff into HTML, it cannot script anything.
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, q.Get("hub.challenge")) //nolint:gosec // G705: text/plain with nosniff, see above
}

// listResponse is the body of GET /messages.
type listResponse struct {
	Data       []Message `json:"data"`
	Total      int64     `json:"total"`
	Limit      int       `json:"limit"`
	Offset     int       `json:"offset"`
	NextCursor *string   `json:"next_cursor"`
}

func (h *Handler) serveMessages(w http.ResponseWriter, r *http.Request, rl *requestLog) {
	q, err := ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeValidation(w, err)
		return
	}
	page, err := h.store.List(r.Context(), q)
	if err != nil {
		rl.err = err
		writeStoreError(w, err)
		return
	}
	resp := listResponse{Data: page.Messages, Total: page.Total, Limit: q.Limit, Offset: q.Offset}
	if resp.Data == nil {
		resp.Data = []Message{}
	}
	if page.Next != nil {
		c := EncodeCursor(*page.Next)
		resp.NextCursor = &c
	}
	buf := h.getBuffer()
	defer h.putBuffer(buf)
	b := appendListResponse(buf.AvailableBuffer(), &resp)
	writeRaw(w, http.StatusOK, b)
	buf.Write(b) // keeps a grown array with the buffer for the next answer
}

// Defaults and bounds of GET /messages.
const (
	DefaultLimit = 50
	MaxLimit     = 100
)

// ParseQuery parses the query string of GET /messages. It returns a
// *ValidationError listing every bad parameter, each with loc ["query", name].
// Of a repeated parameter the last value counts.
func ParseQuery(rawQuery string) (Query, error) {
	q := Query{Limit: DefaultLimit}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return q, &ValidationError{Detail: []FieldError{{
			Loc: []any{"query"}, Type: "query_malformed",
			Msg: "Query string is malformed: " + err.Error(),
		}}}
	}
	last := func(name string) (string, bool) {
		v := values[name]
		if len(v) == 0 {
			return "", false
		}
		return v[len(v)-1], true
	}
	ve := &ValidationError{}
	loc := func(name string) []any { return []any{"query", name} }
	for _, name := range []string{"limit", "offset", "from", "since", "q", "cursor"} {
		if v, ok := last(name); ok && !utf8.ValidString(v) {
			ve.add(loc(name), "string_unicode", "Input should be a valid string: it is not valid UTF-8")
			delete(values, name)
		}
	}
	intParam := func(name string, lo, hi int, dst *int) {
		v, ok := last(name)
		if !ok {
			return
		}
		n, err := strconv.Atoi(v)
		switch {
		case err != nil:
			ve.add(loc(name), "int_parsing", "Input should be a valid integer, unable to parse string as an integer")
		case n < lo:
			ve.add(loc(name), "greater_than_equal", "Input should be greater than or equal to "+strconv.Itoa(lo))
		case hi > 0 && n > hi:
			ve.add(loc(name), "less_than_equal", "Input should be less than or equal to "+strconv.Itoa(hi))
		default:
			*dst = n
		}
	}
	intParam("limit", 1, MaxLimit, &q.Limit)
	intParam("offset", 0, 0, &q.Offset)

	if v, _ := last("from"); v != "" {
		if v[0] == ' ' {
			v = "+" + v[1:] // an unencoded "+" arrives as a space
		}
		q.From = v
	}
	if v, _ := last("since"); v != "" {
		t, err := parseSince(v)
		if err != nil {
			ve.add(loc("since"), "datetime_parsing",
				"Input should be an RFC 3339 timestamp like 2025-01-15T10:00:00Z or 2025-01-15T15:30:00+05:30: "+err.Error())
		} else {
			q.Since = &t
		}
	}
	if v, _ := last("q"); v != "" {
		q.Text = v
	}
	if v, _ := last("cursor"); v != "" {
		p, err := DecodeCursor(v)
		switch {
		case err != nil:
			ve.add(loc("cursor"), "cursor_invalid", "Value error, cursor is malformed: pass next_cursor from a previous page unchanged")
		case q.Offset > 0:
			ve.add(loc("cursor"), "cursor_with_offset", "Value error, cursor cannot be combined with an offset greater than 0")
		default:
			q.After = &p
		}
	}
	return q, ve.orNil()
}

// statsResponse is the body of GET /stats.
type statsResponse struct {
	TotalMessages     int64         `json:"total_messages"`
	SendersCount      int64         `json:"senders_count"`
	MessagesPerSender []SenderCount `json:"messages_per_sender"`
	FirstMessageTS    *string       `json:"first_message_ts"`
	LastMessageTS     *string       `json:"last_message_ts"`
}

func (h *Handler) serveStats(w http.ResponseWriter, r *http.Request, rl *requestLog) {
	st, err := h.store.Stats(r.Context())
	if err != nil {
		rl.err = err
		writeStoreError(w, err)
		return
	}
	resp := statsResponse{
		TotalMessages:     st.TotalMessages,
		SendersCount:      st.SendersCount,
		MessagesPerSender: st.TopSenders,
		FirstMessageTS:    st.FirstTS,
		LastMessageTS:     st.LastTS,
	}
	if resp.MessagesPerSender == nil {
		resp.MessagesPerSender = []SenderCount{}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *Handler) serveLive(w http.ResponseWriter, _ *http.Request, _ *requestLog) {
	writeRaw(w, http.StatusOK, okBody)
}

func (h *Handler) serveReady(w http.ResponseWriter, r *http.Request, rl *requestLog) {
	if len(h.secrets) == 0 {
		writeDetail(w, http.StatusServiceUnavailable, "webhook secret not configured")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.readyTimeout)
	defer cancel()
	if err := h.store.Ping(ctx); err != nil {
		rl.err = err
		writeDetail(w, http.StatusServiceUnavailable, "store unavailable")
		return
	}
	writeRaw(w, http.StatusOK, okBody)
}

func (h *Handler) serveMetrics(w http.ResponseWriter, r *http.Request, _ *requestLog) {
	h.metrics.handler.ServeHTTP(w, r)
}
