// Command embed shows msgsvc inside a program of its own: the msgsvc handler
// is mounted under /hooks/ in the program's http.ServeMux, next to the
// program's own routes, behind the program's own middleware.
//
//	WEBHOOK_SECRET=dev go run ./examples/embed
//	curl -s localhost:8080/hello
//	curl -s localhost:8080/hooks/health/ready
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context) error {
	dbURL := os.Getenv("DATABASE_URL")
	if dbURL == "" {
		dbURL = "sqlite:///data/embed.db"
	}
	store, err := sqlstore.Open(ctx, dbURL)
	if err != nil {
		return err
	}
	defer store.Close() // after the server has stopped: see below

	handler, err := newServer(store, os.Getenv("WEBHOOK_SECRET"), os.Stdout)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              ":8080",
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Println("serving on :8080; msgsvc under /hooks/")
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// newServer builds the program's whole HTTP face. It is separate from run so
// that a test can serve it with httptest.
func newServer(store msgsvc.Store, secret string, logs io.Writer) (http.Handler, error) {
	hooks, err := msgsvc.New(msgsvc.Config{
		Store:  store,
		Secret: secret,
		Logger: msgsvc.NewLogger(logs, slog.LevelInfo),
	})
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello from the host program")
	})
	// msgsvc routes exact paths ("/webhook", "/messages", ...), so strip the
	// prefix: /hooks/webhook reaches it as /webhook. Its metrics and log
	// lines name the stripped path.
	mux.Handle("/hooks/", http.StripPrefix("/hooks", hooks))
	return withServerHeader(mux), nil
}

// withServerHeader is the host program's own middleware: it wraps every
// route, msgsvc's included.
func withServerHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "embed-example")
		next.ServeHTTP(w, r)
	})
}
