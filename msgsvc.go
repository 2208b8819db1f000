// Package msgsvc ingests WhatsApp-like messages through an HMAC-signed
// webhook, stores each message exactly once, and serves filtered, paginated
// queries, statistics, health probes, Prometheus metrics and JSON request logs.
//
// The package holds the domain and the HTTP face only. Storage lives behind the
// [Store] interface; the sqlstore package implements it on SQLite and Postgres,
// and any program may bring its own.
//
// A minimal program:
//
//	st, err := sqlstore.Open(ctx, "sqlite:///data/app.db")
//	...
//	h, err := msgsvc.New(msgsvc.Config{Store: st, Secret: os.Getenv("WEBHOOK_SECRET")})
//	...
//	http.ListenAndServe(":8000", h)
package msgsvc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Message is one stored message, in the shape the webhook receives and
// GET /messages returns.
type Message struct {
	// MessageID is the sender's idempotency key: 1 to 256 code points.
	MessageID string `json:"message_id"`
	// From is the sender's E.164 number, for example "+919876543210".
	From string `json:"from"`
	// To is the recipient's E.164 number.
	To string `json:"to"`
	// TS is the timestamp exactly as received: RFC 3339 UTC ending in "Z".
	TS string `json:"ts"`
	// Text is the message body, or nil when the message had none.
	Text *string `json:"text"`
}

// DefaultMaxBodyBytes is the webhook body limit used when
// [Config.MaxBodyBytes] is zero.
const DefaultMaxBodyBytes = 1 << 20

// Config configures a [Handler]. Its zero value is not usable only because a
// Store is required; every other field has a working default.
type Config struct {
	// Store keeps the messages. Required.
	Store Store

	// Secret is the current HMAC secret. Without it the webhook answers 503
	// and readiness fails.
	Secret string
	// PreviousSecret is also accepted, so a secret can be rotated without
	// rejecting senders that still sign with the old one. Alone it does not
	// configure the service.
	PreviousSecret string

	// VerifyToken enables the WhatsApp Cloud API GET /webhook handshake.
	VerifyToken string

	// MaxBodyBytes bounds the webhook body. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64

	// Logger receives one line per request. Nil means JSON lines on stdout
	// at INFO, as NewLogger(os.Stdout, slog.LevelInfo) makes them.
	Logger *slog.Logger

	// Registry receives the handler's collectors, and the Store's when it
	// is a prometheus.Collector (sqlstore's is: its writer, WAL and index
	// metrics). Nil means a new registry of the handler's own; it is never
	// the global default registry.
	Registry *prometheus.Registry

	// ReadyTimeout bounds the store check of GET /health/ready. Zero means 2s.
	ReadyTimeout time.Duration
}

// Configuration errors returned by [Config.Validate] and [New].
var (
	// ErrNoStore means Config.Store is nil.
	ErrNoStore = errors.New("msgsvc: config: Store is required")
	// ErrBadMaxBodyBytes means Config.MaxBodyBytes is negative.
	ErrBadMaxBodyBytes = errors.New("msgsvc: config: MaxBodyBytes must not be negative")
	// ErrBadReadyTimeout means Config.ReadyTimeout is negative.
	ErrBadReadyTimeout = errors.New("msgsvc: config: ReadyTimeout must not be negative")
)

// Validate reports the first problem with c, as one of the Err... values of
// this package, or nil.
func (c Config) Validate() error {
	switch {
	case c.Store == nil:
		return ErrNoStore
	case c.MaxBodyBytes < 0:
		return ErrBadMaxBodyBytes
	case c.ReadyTimeout < 0:
		return ErrBadReadyTimeout
	}
	return nil
}

// NewLogger returns a logger that writes the contract's request lines: one
// JSON object per line with "ts" in RFC 3339 UTC instead of slog's "time".
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.String("ts", a.Value.Time().UTC().Format(time.RFC3339Nano))
			}
			return a
		},
	}))
}

// New returns the handler that serves every route of the msgsvc HTTP
// contract: POST /webhook (and the WhatsApp GET /webhook handshake when a
// verify token is set), GET /messages, GET /stats, GET /health/live,
// GET /health/ready and GET /metrics, plus its OpenAPI document at
// GET /openapi.yaml. Paths are exact; mount it under a prefix with
// [http.StripPrefix].
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{
		store:        cfg.Store,
		maxBody:      cfg.MaxBodyBytes,
		verifyToken:  cfg.VerifyToken,
		log:          cfg.Logger,
		readyTimeout: cfg.ReadyTimeout,
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.readyTimeout == 0 {
		h.readyTimeout = 2 * time.Second
	}
	if h.log == nil {
		h.log = NewLogger(os.Stdout, slog.LevelInfo)
	}
	if cfg.Secret != "" {
		h.secrets = append(h.secrets, []byte(cfg.Secret))
		if cfg.PreviousSecret != "" {
			h.secrets = append(h.secrets, []byte(cfg.PreviousSecret))
		}
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m, err := newMetrics(reg, cfg.Store)
	if err != nil {
		return nil, fmt.Errorf("msgsvc: registering metrics: %w", err)
	}
	h.metrics = m
	h.routes = h.buildRoutes()
	return h, nil
}
