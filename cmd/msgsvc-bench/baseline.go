package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/msgsvc/msgsvc"
)

// nullStore keeps nothing: every message is new, every list is empty. Behind
// the real handler it leaves exactly the cost of HTTP, HMAC, JSON,
// validation, logging and metrics.
type nullStore struct{}

func (nullStore) Insert(_ context.Context, msgs []msgsvc.Message) ([]bool, error) {
	created := make([]bool, len(msgs))
	for i := range created {
		created[i] = true
	}
	return created, nil
}

func (nullStore) List(context.Context, msgsvc.Query) (msgsvc.Page, error) { return msgsvc.Page{}, nil }
func (nullStore) Stats(context.Context) (msgsvc.Stats, error)             { return msgsvc.Stats{}, nil }
func (nullStore) Ping(context.Context) error                              { return nil }

// The two baselines -serve-baseline serves.
const (
	// baselineHandler is the msgsvc handler on nullStore: the daemon's
	// work without the store.
	baselineHandler = "handler"
	// baselineMinimal is minimalWebhook: the least any signed-webhook
	// receiver does, the baseline the targets are a share of.
	baselineMinimal = "minimal"
)

// minimalWebhook answers POST /webhook as the handler answers a new
// message, doing only what no receiver can skip: it reads the body, checks
// its HMAC and decodes its JSON. It validates no field, logs nothing, counts
// nothing and stores nothing.
func minimalWebhook(secret string) http.Handler {
	key := []byte(secret)
	ok := []byte(`{"status":"ok"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/webhook" {
			http.Error(w, `{"detail":"Not Found"}`, http.StatusNotFound)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, `{"detail":"body too large"}`, http.StatusRequestEntityTooLarge)
			return
		}
		if msgsvc.Verify(r.Header, body, key) != nil {
			http.Error(w, `{"detail":"invalid signature"}`, http.StatusUnauthorized)
			return
		}
		var m msgsvc.Message
		if json.Unmarshal(body, &m) != nil {
			http.Error(w, `{"detail":"invalid JSON"}`, http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "15")
		_, _ = w.Write(ok)
	})
}

// serveBaseline serves the baseline kind (baselineHandler or
// baselineMinimal) with the daemon's server settings until ctx ends. Only
// the handler baseline logs its requests, with the daemon's logger.
func serveBaseline(ctx context.Context, kind, addr, secret string, stdout io.Writer) error {
	log := msgsvc.NewLogger(stdout, slog.LevelInfo)
	var h http.Handler
	switch kind {
	case baselineHandler:
		var err error
		if h, err = msgsvc.New(msgsvc.Config{Store: nullStore{}, Secret: secret, Logger: log}); err != nil {
			return err
		}
	case baselineMinimal:
		h = minimalWebhook(secret)
	default:
		return fmt.Errorf("-serve-baseline %q: want %q or %q", kind, baselineHandler, baselineMinimal)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 120 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("listening", slog.String("addr", ln.Addr().String()))
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("baseline: %w", err)
	}
	return nil
}
