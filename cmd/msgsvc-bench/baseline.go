package main

import (
	"context"
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

// serveBaseline serves the handler on nullStore with the daemon's logger and
// server settings, until ctx ends.
func serveBaseline(ctx context.Context, addr, secret string, stdout io.Writer) error {
	log := msgsvc.NewLogger(stdout, slog.LevelInfo)
	h, err := msgsvc.New(msgsvc.Config{Store: nullStore{}, Secret: secret, Logger: log})
	if err != nil {
		return err
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
