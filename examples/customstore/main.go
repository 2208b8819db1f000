// Command customstore serves the msgsvc HTTP contract over a Store of its
// own: memStore, an in-memory implementation of the msgsvc.Store interface
// in store.go. It compiles no database driver; its test runs the storetest
// conformance suite against memStore.
//
//	WEBHOOK_SECRET=dev ADDR=:8000 go run ./examples/customstore
//
// Messages live only as long as the process: a real Store must commit each
// one durably before Insert returns.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/msgsvc/msgsvc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "customstore:", err)
		os.Exit(1)
	}
}

// run serves msgsvc over a fresh memStore on $ADDR (default :8000) until ctx
// ends, then stops accepting connections, finishes the requests in flight
// and closes the store.
func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	addr := getenv("ADDR")
	if addr == "" {
		addr = ":8000"
	}
	logger := msgsvc.NewLogger(stdout, slog.LevelInfo)
	store := newMemStore()
	defer store.Close()
	h, err := msgsvc.New(msgsvc.Config{Store: store, Secret: getenv("WEBHOOK_SECRET"), Logger: logger})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("listening", "addr", ln.Addr().String(), "store", "memory")

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
