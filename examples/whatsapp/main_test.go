package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// sample is a recorded delivery from the module's test data.
func sample(name string) string { return filepath.Join("..", "..", "testdata", "whatsapp", name) }

func TestReplay(t *testing.T) {
	ctx := context.Background()
	store, err := sqlstore.Open(ctx, "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h, err := msgsvc.New(msgsvc.Config{
		Store: store, Secret: "s3cret", VerifyToken: "tok",
		Logger: msgsvc.NewLogger(io.Discard, slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	target := srv.URL + "/webhook"

	for _, tc := range []struct {
		name   string
		args   []string
		stdin  string
		status int
		out    []string // substrings of standard output
	}{
		{"handshake and several deliveries",
			[]string{"-url", target, "-secret", "s3cret", "-verify-token", "tok", sample("several_messages.json"), sample("statuses_only.json")}, "", 0,
			[]string{"handshake: ok", "several_messages.json: 200 {\"status\":\"ok\"}", "statuses_only.json: 200"}},
		{"again: duplicates are fine", []string{"-url", target, "-secret", "s3cret", sample("several_messages.json")}, "", 0,
			[]string{"200"}},
		{"standard input", []string{"-url", target, "-secret", "s3cret", "-"}, `{"object":"whatsapp_business_account","entry":[]}`, 0,
			[]string{"-: 200"}},
		{"refused delivery", []string{"-url", target, "-secret", "s3cret", sample("invalid_second_from.json")}, "", 1,
			[]string{"422", "messages\",1,\"from\""}},
		{"wrong secret", []string{"-url", target, "-secret", "nope", sample("text.json")}, "", 1,
			[]string{"401 {\"detail\":\"invalid signature\"}"}},
		{"wrong verify token", []string{"-url", target, "-secret", "s3cret", "-verify-token", "bad", sample("text.json")}, "", 1, nil},
		{"missing file", []string{"-url", target, "-secret", "s3cret", "no-such-file.json"}, "", 1, nil},
		{"no files", []string{"-url", target, "-secret", "s3cret"}, "", 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(ctx, tc.args, strings.NewReader(tc.stdin), &stdout, &stderr); got != tc.status {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", got, tc.status, &stdout, &stderr)
			}
			for _, s := range tc.out {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, &stdout)
				}
			}
		})
	}
	page, err := store.List(ctx, msgsvc.Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 3 || page.Messages[0].MessageID != "wamid.several.1" || page.Messages[0].From != "+16505551234" {
		t.Errorf("stored %+v", page)
	}
}

func TestHandshakeError(t *testing.T) {
	srv := httptest.NewServer(msgsvcWithoutToken(t))
	defer srv.Close()
	err := handshake(context.Background(), srv.Client(), srv.URL+"/webhook", "tok")
	if !errors.Is(err, errNoEcho) || !strings.Contains(err.Error(), "405") {
		t.Errorf("handshake without a configured token: %v", err)
	}
}

func msgsvcWithoutToken(t *testing.T) *msgsvc.Handler {
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
	return h
}
