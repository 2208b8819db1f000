package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// startRun runs run() in this process with vars as its environment and
// returns the base URL it serves, its log and a stop function that cancels
// its context and returns what run returned.
func startRun(tb testing.TB, vars map[string]string) (base string, logs *logLines, stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs = newLogLines()
	result := make(chan error, 1)
	go func() { result <- run(ctx, nil, env(vars), logs) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-result:
			return err
		case <-time.After(20 * time.Second):
			tb.Fatal("run did not return within 20s of cancellation")
			return nil
		}
	}
	tb.Cleanup(func() { _ = stop() })

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-result:
			stopped = true
			tb.Fatalf("run returned before listening: %v\n%s", err, logs.text())
		default:
		}
		for _, line := range logs.all() {
			if obj := decodeLine(line); obj["msg"] == "listening" {
				addr, _ := obj["addr"].(string)
				return "http://" + addr, logs, stop
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("run did not log a listening line:\n%s", logs.text())
	return "", nil, nil
}

func TestRunServesAndStops(t *testing.T) {
	t.Parallel()
	base, logs, stop := startRun(t, map[string]string{
		"ADDR":           "127.0.0.1:0",
		"DATABASE_URL":   "sqlite://:memory:",
		"WEBHOOK_SECRET": "in-process-secret",
	})
	d := &daemon{base: base, stdout: logs}

	body := messageBody(t, "run-1", "+15550001111", "+15550002222", "2025-01-15T10:00:00Z", ptr("hi"))
	if r := d.postSigned(t, "in-process-secret", body, ""); r.status != http.StatusOK {
		t.Fatalf("POST /webhook = %d %s", r.status, r.body)
	}
	if r := d.get(t, "/health/ready", ""); r.status != http.StatusOK {
		t.Fatalf("GET /health/ready = %d %s", r.status, r.body)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v after cancellation, want nil", err)
	}
	logs.wait(t, time.Second, `"stopped"`, func(o map[string]any) bool { return o["msg"] == "stopped" })
	if resp, err := http.Get(base + "/health/live"); err == nil {
		_ = resp.Body.Close()
		t.Error("the server still answers after run returned")
	}
}

func TestRunRejectsArguments(t *testing.T) {
	err := run(context.Background(), []string{"--port", "80"}, env(nil), io.Discard)
	var ce *configError
	if !errors.As(err, &ce) {
		t.Fatalf("run with arguments = %v, want a *configError", err)
	}
}

func TestRunRejectsBadConfigBeforeOpening(t *testing.T) {
	// A bad LOG_LEVEL must fail before the store is opened: no file appears.
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "sub", "never.db")
	err := run(context.Background(), nil, env(map[string]string{
		"DATABASE_URL": sqliteURL(dbPath),
		"LOG_LEVEL":    "loud",
	}), io.Discard)
	var ce *configError
	if !errors.As(err, &ce) || ce.variable != "LOG_LEVEL" {
		t.Fatalf("run = %v, want a configError for LOG_LEVEL", err)
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*")); len(matches) != 0 {
		t.Errorf("run created %v despite the bad configuration", matches)
	}
}

func TestRunListenFailureIsNotAConfigError(t *testing.T) {
	base, _, _ := startRun(t, map[string]string{"ADDR": "127.0.0.1:0", "DATABASE_URL": "sqlite://:memory:"})
	busy := base[len("http://"):]
	err := run(context.Background(), nil, env(map[string]string{"ADDR": busy, "DATABASE_URL": "sqlite://:memory:"}), io.Discard)
	var ce *configError
	if err == nil || errors.As(err, &ce) {
		t.Fatalf("run on a busy address = %v, want a non-configuration error", err)
	}
}

// brokenStore is a store whose Failed channel the test closes.
type brokenStore struct {
	*sqlstore.DB
	failed chan struct{}
}

func (s brokenStore) Failed() <-chan struct{} { return s.failed }

// TestServeExitsWhenStoreFails: once the store reports that it can no
// longer write until reopened, the daemon logs why, stops gracefully and
// returns an error, so the process exits 1 and its supervisor restarts it.
func TestServeExitsWhenStoreFails(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(env(map[string]string{"ADDR": "127.0.0.1:0", "WEBHOOK_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlstore.Open(context.Background(), "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := brokenStore{DB: db, failed: make(chan struct{})}
	logs := newLogLines()
	result := make(chan error, 1)
	go func() { result <- serve(context.Background(), cfg, store, msgsvc.NewLogger(logs, slog.LevelInfo)) }()
	line := logs.wait(t, 10*time.Second, `"listening"`, func(o map[string]any) bool { return o["msg"] == "listening" })
	d := &daemon{base: "http://" + line["addr"].(string), stdout: logs}
	if r := d.get(t, "/health/live", ""); r.status != http.StatusOK {
		t.Fatalf("GET /health/live = %d before the failure", r.status)
	}

	close(store.failed)
	select {
	case err := <-result:
		if !errors.Is(err, errStoreFailed) {
			t.Fatalf("serve returned %v, want errStoreFailed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return within 20s of the store failing")
	}
	logs.wait(t, time.Second, `an ERROR "store failed" line`, func(o map[string]any) bool {
		return o["msg"] == "store failed" && o["level"] == "ERROR"
	})
	logs.wait(t, time.Second, `"stopped"`, func(o map[string]any) bool { return o["msg"] == "stopped" })
}
