package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// newService runs the real handler on a fresh in-memory store. The first
// len(statuses) requests are answered with those statuses instead, as a
// failing service would; attempts counts every request.
func newService(t *testing.T, statuses ...int) (*httptest.Server, *sqlstore.DB, *atomic.Int32) {
	t.Helper()
	store, err := sqlstore.Open(context.Background(), "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h, err := msgsvc.New(msgsvc.Config{Store: store, Secret: "s3cret", Logger: msgsvc.NewLogger(io.Discard, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n := int(attempts.Add(1)); n <= len(statuses) {
			w.WriteHeader(statuses[n-1])
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, store, &attempts
}

func runSender(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestSend(t *testing.T) {
	srv, store, attempts := newService(t)
	env := map[string]string{"WEBHOOK_SECRET": "s3cret", "MSGSVC_URL": srv.URL}
	base := []string{"-id", "s1", "-ts", "2025-01-15T10:00:00Z"}

	if code, out, errOut := runSender(t, env, append(base, "-text", "hello")...); code != 0 || out != "sent s1\n" || errOut != "" {
		t.Fatalf("send: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// A duplicate is accepted and changes nothing; the old-style webhook URL still works.
	if code, _, errOut := runSender(t, env, append(base, "-text", "again", "-url", srv.URL+"/webhook")...); code != 0 {
		t.Fatalf("duplicate: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut := runSender(t, env, append(base, "-secret", "wrong")...)
	if code != 1 || !strings.Contains(errOut, "refused: 401 invalid signature") {
		t.Errorf("wrong secret: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = runSender(t, env, "-id", "s2", "-from", "919876543210")
	if code != 1 || !strings.Contains(errOut, "refused: 422") || !strings.Contains(errOut, "[body from]") {
		t.Errorf("bad from: exit %d, stderr %q", code, errOut)
	}
	if n := attempts.Load(); n != 4 {
		t.Errorf("%d requests, want 4: refusals are not retried", n)
	}

	page, err := store.List(context.Background(), msgsvc.Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 1 || page.Messages[0].MessageID != "s1" || *page.Messages[0].Text != "hello" {
		t.Errorf("stored %+v", page)
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"no secret", nil, nil},
		{"unknown flag", map[string]string{"WEBHOOK_SECRET": "x"}, []string{"-hub"}},
		{"no attempts", map[string]string{"WEBHOOK_SECRET": "x"}, []string{"-retries", "0"}},
	} {
		if code, _, errOut := runSender(t, tc.env, tc.args...); code != 2 || errOut == "" {
			t.Errorf("%s: exit %d, stderr %q; want 2 and a message", tc.name, code, errOut)
		}
	}
}

func TestRetries(t *testing.T) {
	srv, store, attempts := newService(t, http.StatusServiceUnavailable, http.StatusTooManyRequests)
	env := map[string]string{"WEBHOOK_SECRET": "s3cret"}
	code, out, errOut := runSender(t, env, "-url", srv.URL, "-id", "r1", "-backoff", "1ms", "-max-backoff", "5ms")
	if code != 0 || out != "sent r1\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "attempt 1 failed: msgsvc/client: POST /webhook: 503") ||
		!strings.Contains(lines[1], "attempt 2 failed: msgsvc/client: POST /webhook: 429") || !strings.Contains(lines[1], "retrying in") {
		t.Errorf("stderr %q, want one line per retry", errOut)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	if page, err := store.List(context.Background(), msgsvc.Query{Limit: 10}); err != nil || page.Total != 1 {
		t.Errorf("stored %+v, %v", page, err)
	}
}

func TestRetriesRunOut(t *testing.T) {
	srv, _, _ := newService(t)
	srv.Close() // nothing listens any more: every attempt is a network error
	code, _, errOut := runSender(t, map[string]string{"WEBHOOK_SECRET": "s3cret"},
		"-url", srv.URL, "-retries", "3", "-backoff", "1ms")
	if code != 1 || strings.Count(errOut, "retrying in") != 2 || !strings.Contains(errOut, "(gave up after 3 attempts)") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}
