// Package client is a Go client for the msgsvc HTTP API.
//
// A [Client] sends signed messages to POST /webhook, reads GET /messages one
// page at a time or as an iterator over every page, and reads GET /stats:
//
//	c := &client.Client{BaseURL: "http://localhost:8000", Secret: os.Getenv("WEBHOOK_SECRET")}
//	err := c.Send(ctx, msgsvc.Message{MessageID: "m1", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z"})
//	for m, err := range c.All(ctx, client.Query{From: "+919876543210"}) {
//		...
//	}
//
// Every call retries what a retry can fix: a network error, 429 and any 5xx,
// with exponential backoff and full jitter, honouring Retry-After, until the
// [RetryPolicy] or the context says stop. Resending a message is safe because
// the service stores each message_id once (the first write wins). Any other
// answer outside 2xx is returned at once as an [*APIError].
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/msgsvc/msgsvc"
)

// DefaultBaseURL is used when [Client.BaseURL] is empty: the daemon's
// default address on this machine.
const DefaultBaseURL = "http://localhost:8000"

// Defaults of [RetryPolicy] for its zero fields.
const (
	// DefaultMaxAttempts is RetryPolicy.MaxAttempts when zero.
	DefaultMaxAttempts = 5
	// DefaultInitialBackoff is RetryPolicy.InitialBackoff when zero.
	DefaultInitialBackoff = 200 * time.Millisecond
	// DefaultMaxBackoff is RetryPolicy.MaxBackoff when zero.
	DefaultMaxBackoff = 10 * time.Second
)

// maxResponseBytes bounds how much of an answer is read. The largest
// /messages page (100 messages of 4096 escaped characters) is far below it.
const maxResponseBytes = 16 << 20

// userAgent names the client in the service's access logs.
const userAgent = "msgsvc-go-client/1"

// Client talks to one msgsvc service. Its zero value sends to
// [DefaultBaseURL] with the default retry policy, but cannot [Client.Send]
// until Secret is set. A Client is safe for concurrent use once its fields
// are no longer being changed.
type Client struct {
	// BaseURL is where the service is mounted, for example
	// "http://localhost:8000" or "https://example.com/hooks". The client
	// appends "/webhook", "/messages" and "/stats". Empty means
	// DefaultBaseURL.
	BaseURL string

	// Secret is the HMAC secret Send signs with (the daemon's
	// WEBHOOK_SECRET). List and Stats do not need it.
	Secret string

	// HTTPClient sends the requests. Nil means http.DefaultClient. Its
	// Timeout, if any, bounds each attempt; the context bounds the whole
	// call, retries included.
	HTTPClient *http.Client

	// Retry says how often and how patiently to retry.
	Retry RetryPolicy

	// OnRetry, when set, is called before each retry with the number of the
	// attempt that failed (from 1), its error and the wait before the next
	// attempt. Use it to log retries.
	OnRetry func(attempt int, err error, wait time.Duration)
}

// RetryPolicy bounds the retries of one call. Zero fields take the
// Default... values, so the zero RetryPolicy retries up to 5 attempts.
//
// Before attempt n+1 the client waits a random duration between 0 and
// min(MaxBackoff, InitialBackoff·2^(n-1)) ("full jitter", so that many
// clients failing together do not retry together), or the server's
// Retry-After when that is longer. When the wait would pass the context's
// deadline, the call ends at once instead.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt too: 1 disables retries.
	MaxAttempts int
	// InitialBackoff is the ceiling of the first wait.
	InitialBackoff time.Duration
	// MaxBackoff caps the ceiling as it doubles. It does not cap a longer
	// Retry-After asked for by the server.
	MaxBackoff time.Duration
}

// ErrNoSecret is returned by [Client.Send] when Client.Secret is empty: the
// service would refuse an unsigned message with 401.
var ErrNoSecret = errors.New("msgsvc/client: Secret is required to send")

// APIError is an answer outside 2xx, with the "detail" of its FastAPI-style
// body. Get one with errors.As. For a 422, errors.Is(err,
// msgsvc.ErrValidation) is true; for a 401, errors.Is(err,
// msgsvc.ErrInvalidSignature) is true.
type APIError struct {
	// Method and Path name the request, for example "POST" and "/webhook".
	Method, Path string
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Message is the detail when the body holds a string (as in
	// {"detail": "invalid signature"}), a summary of Detail when it holds a
	// list, or the status text when the body is not msgsvc's JSON.
	Message string
	// Detail lists the failing fields of a 422 answer.
	Detail []msgsvc.FieldError
	// RetryAfter is the wait the server asked for in a Retry-After header,
	// or 0.
	RetryAfter time.Duration
}

// Error names the request, the status and the service's detail.
func (e *APIError) Error() string {
	return fmt.Sprintf("msgsvc/client: %s %s: %d %s: %s",
		e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Is lets errors.Is match the msgsvc sentinel errors the status stands for:
// msgsvc.ErrValidation for 422 and msgsvc.ErrInvalidSignature for 401.
func (e *APIError) Is(target error) bool {
	switch e.StatusCode {
	case http.StatusUnprocessableEntity:
		return target == msgsvc.ErrValidation
	case http.StatusUnauthorized:
		return target == msgsvc.ErrInvalidSignature
	}
	return false
}

// Temporary reports whether a retry may succeed: 429 and every 5xx.
func (e *APIError) Temporary() bool {
	return e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// Send signs m with Secret and POSTs it to /webhook, retrying as the policy
// allows. Every attempt sends the same bytes, so the signature stays valid;
// a message delivered twice is stored once. Send returns nil when the service
// answered 200, for a new message and for a duplicate alike.
func (c *Client) Send(ctx context.Context, m msgsvc.Message) error {
	if c.Secret == "" {
		return ErrNoSecret
	}
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("msgsvc/client: encoding message: %w", err)
	}
	header := http.Header{}
	header.Set("Content-Type", "application/json")
	header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte(c.Secret), body))
	return c.do(ctx, http.MethodPost, "/webhook", nil, header, body, nil)
}

// Query selects messages for [Client.List] and [Client.All]. Zero fields are
// left out of the request, so the service's defaults apply.
type Query struct {
	// From matches the sender exactly, for example "+919876543210".
	From string
	// Since keeps messages at or after this instant. Zero means no bound.
	Since time.Time
	// Q keeps messages whose text contains it, ignoring case.
	Q string
	// Limit is the page size, 1 to 100. Zero means the service's default
	// (50) for List, and 100 for All.
	Limit int
	// Offset skips that many matching messages.
	Offset int
	// Cursor continues after the page whose NextCursor it is. It cannot be
	// combined with an Offset above 0.
	Cursor string
}

// values encodes q as the service's query parameters. url.Values escapes
// "+" as %2B, so a sender number arrives intact.
func (q Query) values() url.Values {
	v := url.Values{}
	if q.From != "" {
		v.Set("from", q.From)
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if q.Q != "" {
		v.Set("q", q.Q)
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Offset != 0 {
		v.Set("offset", strconv.Itoa(q.Offset))
	}
	if q.Cursor != "" {
		v.Set("cursor", q.Cursor)
	}
	return v
}

// Page is one answer of GET /messages.
type Page struct {
	// Data holds the page's messages in list order: by instant, then by
	// message_id.
	Data []msgsvc.Message `json:"data"`
	// Total counts every message matching the filters, on every page.
	Total int64 `json:"total"`
	// Limit and Offset echo the request (Offset is 0 on a cursor page).
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
	// NextCursor continues after this page; it is empty on the last page.
	NextCursor string `json:"next_cursor"`
}

// List returns one page of GET /messages.
func (c *Client) List(ctx context.Context, q Query) (*Page, error) {
	var p Page
	if err := c.do(ctx, http.MethodGet, "/messages", q.values(), nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// All returns an iterator over every message matching q, page after page,
// following NextCursor from the page q names. It stops after the first error,
// which it yields with a zero Message. A message stored behind the walk's
// position while it runs is not seen; none is seen twice.
func (c *Client) All(ctx context.Context, q Query) iter.Seq2[msgsvc.Message, error] {
	if q.Limit == 0 {
		q.Limit = msgsvc.MaxLimit
	}
	return func(yield func(msgsvc.Message, error) bool) {
		for {
			p, err := c.List(ctx, q)
			if err != nil {
				yield(msgsvc.Message{}, err)
				return
			}
			for _, m := range p.Data {
				if !yield(m, nil) {
					return
				}
			}
			if p.NextCursor == "" {
				return
			}
			q.Cursor, q.Offset = p.NextCursor, 0
		}
	}
}

// Stats is the answer of GET /stats.
type Stats struct {
	// TotalMessages counts every stored message.
	TotalMessages int64 `json:"total_messages"`
	// SendersCount counts distinct senders.
	SendersCount int64 `json:"senders_count"`
	// MessagesPerSender holds the 10 busiest senders, by count descending,
	// ties by number ascending.
	MessagesPerSender []msgsvc.SenderCount `json:"messages_per_sender"`
	// FirstMessageTS and LastMessageTS are the ts of the first and last
	// message in list order, as received; nil when nothing is stored.
	FirstMessageTS *string `json:"first_message_ts"`
	LastMessageTS  *string `json:"last_message_ts"`
}

// Stats returns GET /stats.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var s Stats
	if err := c.do(ctx, http.MethodGet, "/stats", nil, nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// do runs one call with retries and decodes a 2xx JSON answer into out,
// unless out is nil.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, header http.Header, body []byte, out any) error {
	target, err := c.url(path, query)
	if err != nil {
		return err
	}
	policy := c.Retry.withDefaults()
	var previous error // of the attempt before, for when ctx cuts one short
	for attempt := 1; ; attempt++ {
		retry, err := c.attempt(ctx, method, path, target, header, body, out)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil && errors.Is(err, ctx.Err()) && previous != nil:
			// The context ended during a retry: its error alone would hide
			// why the call was retrying.
			return fmt.Errorf("%w; attempt %d: %w", err, attempt-1, previous)
		case !retry || errors.Is(err, ctx.Err()):
			return err
		case ctx.Err() != nil:
			// An answer that asks for a retry came back, but the context
			// ended meanwhile: no attempt is left, and the error says both.
			return fmt.Errorf("msgsvc/client: %s %s: %w: no time left for attempt %d; attempt %d: %w",
				method, path, ctx.Err(), attempt+1, attempt, err)
		case attempt >= policy.MaxAttempts:
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		wait := policy.backoff(attempt)
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.RetryAfter > wait {
			wait = apiErr.RetryAfter
		}
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return fmt.Errorf("msgsvc/client: %s %s: %w: no time left for attempt %d after waiting %v; attempt %d: %w",
				method, path, context.DeadlineExceeded, attempt+1, wait, attempt, err)
		}
		if c.OnRetry != nil {
			c.OnRetry(attempt, err, wait)
		}
		previous = err
		if serr := sleep(ctx, wait); serr != nil {
			return fmt.Errorf("msgsvc/client: %s %s: %w while waiting to retry; attempt %d: %w",
				method, path, serr, attempt, err)
		}
	}
}

// attempt sends one request and reads its answer. retry reports whether a
// later attempt may succeed where this one failed.
func (c *Client) attempt(ctx context.Context, method, path, target string, header http.Header, body []byte, out any) (retry bool, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body) // the same bytes on every attempt
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return false, fmt.Errorf("msgsvc/client: %s %s: %w", method, path, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		// A *url.Error naming the method and URL. A certificate the client
		// refuses will not change on a retry; a network failure may.
		var certErr *tls.CertificateVerificationError
		return !errors.As(err, &certErr), err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return true, fmt.Errorf("msgsvc/client: %s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := newAPIError(method, path, resp, data)
		return e.Temporary(), e
	}
	if out == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return false, fmt.Errorf("msgsvc/client: %s %s: decoding the answer: %w", method, path, err)
	}
	return false, nil
}

// url joins the base URL, path and query.
func (c *Client) url(path string, query url.Values) (string, error) {
	base := c.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("msgsvc/client: BaseURL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("msgsvc/client: BaseURL %q: want an http or https URL", base)
	}
	u = u.JoinPath(path)
	u.RawQuery = query.Encode()
	return u.String(), nil
}

// newAPIError reads a FastAPI-style error body: {"detail": "..."} or
// {"detail": [{"loc": [...], "msg": "...", "type": "..."}, ...]}.
func newAPIError(method, path string, resp *http.Response, body []byte) *APIError {
	e := &APIError{
		Method:     method,
		Path:       path,
		StatusCode: resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	var parsed struct {
		Detail json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &parsed) == nil && len(parsed.Detail) > 0 {
		if json.Unmarshal(parsed.Detail, &e.Message) == nil {
			return e
		}
		if json.Unmarshal(parsed.Detail, &e.Detail) == nil && len(e.Detail) > 0 {
			e.Message = summarize(e.Detail)
			return e
		}
		e.Detail = nil
	}
	e.Message = http.StatusText(resp.StatusCode)
	if e.Message == "" {
		e.Message = "unexpected answer"
	}
	return e
}

// summarize writes field errors as "body.from: String should match ...; ...".
func summarize(detail []msgsvc.FieldError) string {
	parts := make([]string, len(detail))
	for i, d := range detail {
		loc := make([]string, len(d.Loc))
		for j, l := range d.Loc {
			loc[j] = fmt.Sprint(l)
		}
		parts[i] = strings.Join(loc, ".") + ": " + d.Msg
	}
	return strings.Join(parts, "; ")
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date.
// Anything else, or a time already past, is 0.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.InitialBackoff <= 0 {
		p.InitialBackoff = DefaultInitialBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	return p
}

// backoff returns the full-jitter wait after the given failed attempt.
func (p RetryPolicy) backoff(attempt int) time.Duration {
	ceiling := p.InitialBackoff
	for i := 1; i < attempt && ceiling < p.MaxBackoff; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, p.MaxBackoff)
	return rand.N(ceiling + 1)
}

// sleep waits d or until ctx is done, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
