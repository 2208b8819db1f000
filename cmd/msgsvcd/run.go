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
	"github.com/msgsvc/msgsvc/sqlstore"
)

// Server limits besides the configurable ones (READ_HEADER_TIMEOUT bounds
// a slow header, READ_TIMEOUT a slow body, MAX_CONNECTIONS a flood).
const (
	writeTimeout   = 30 * time.Second
	idleTimeout    = 120 * time.Second
	maxHeaderBytes = 64 << 10
)

// run serves until ctx is cancelled, then shuts down gracefully: it stops
// accepting connections, lets requests in flight finish within the shutdown
// timeout, commits what is queued and closes the store.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) > 0 {
		return &configError{"arguments", fmt.Sprint(args), "msgsvcd takes no arguments; configure it with environment variables"}
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log := msgsvc.NewLogger(stdout, cfg.logLevel)

	store, err := sqlstore.Open(ctx, cfg.databaseURL)
	if err != nil {
		return fmt.Errorf("opening the store: %w", err)
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the store", slog.String("error", err.Error()))
		}
	}()
	return serve(ctx, cfg, store, log)
}

// failingStore is a store that can fail for good: sqlstore.DB after a
// failed WAL fsync.
type failingStore interface {
	msgsvc.Store
	Failed() <-chan struct{}
}

// errStoreFailed is what serve returns when the store failed for good.
var errStoreFailed = errors.New("the store refuses writes until msgsvcd is restarted (a WAL fsync failed); exiting so that a supervisor restarts it")

// serve serves the handler on store until ctx is cancelled or the store
// fails for good, then shuts down gracefully. A failed store makes it
// return errStoreFailed, so the process exits 1 and its supervisor starts
// it again, which recovers from what is on disk.
func serve(ctx context.Context, cfg config, store failingStore, log *slog.Logger) error {
	handler, err := msgsvc.New(msgsvc.Config{
		Store:          store,
		Secret:         cfg.secret,
		PreviousSecret: cfg.previousSecret,
		VerifyToken:    cfg.verifyToken,
		MaxBodyBytes:   cfg.maxBodyBytes,
		Logger:         log,
	})
	if err != nil {
		return err
	}
	if cfg.secret == "" {
		log.Warn("WEBHOOK_SECRET is not set: POST /webhook answers 503 and /health/ready fails until it is")
	}

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.addr, err)
	}
	srv := &http.Server{
		Handler:           handler, // the handler routes exact paths itself; a ServeMux would redirect unclean ones
		ReadHeaderTimeout: cfg.readHeaderTimeout,
		ReadTimeout:       cfg.readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(newLimitListener(ln, cfg.maxConnections)) }()
	log.Info("listening", slog.String("addr", ln.Addr().String()))

	var failed error
	select {
	case err := <-serveErr:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	case <-store.Failed():
		failed = errStoreFailed
		log.Error("store failed", slog.String("error", failed.Error()))
	}
	log.Info("shutting down", slog.String("timeout", cfg.shutdownTimeout.String()))
	sctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shutdown: requests still in flight after %s: %w", cfg.shutdownTimeout, err)
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving: %w", err)
	}
	log.Info("stopped")
	return failed
}
