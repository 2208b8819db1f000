package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/client"
	"github.com/msgsvc/msgsvc/storetest"
)

// TestStoreConformance holds memStore to everything the contract promises
// of a store.
func TestStoreConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) msgsvc.Store { return newMemStore() })
}

// TestHandlerOverMemStore drives msgsvc over memStore with the Go client.
func TestHandlerOverMemStore(t *testing.T) {
	store := newMemStore()
	h, err := msgsvc.New(msgsvc.Config{Store: store, Secret: "s3cret", Logger: msgsvc.NewLogger(io.Discard, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := &client.Client{BaseURL: srv.URL, Secret: "s3cret", Retry: client.RetryPolicy{MaxAttempts: 1}}
	ctx := context.Background()

	for _, m := range []msgsvc.Message{
		{MessageID: "m2", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00.5Z"},
		{MessageID: "m1", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z"},
		{MessageID: "m3", From: "+14155550123", To: "+14155550100", TS: "2025-01-15T10:00:00.000Z"},
		{MessageID: "m1", From: "+14155550123", To: "+14155550100", TS: "2025-01-15T09:00:00Z"}, // a duplicate: ignored
	} {
		if err := c.Send(ctx, m); err != nil {
			t.Fatalf("Send(%s): %v", m.MessageID, err)
		}
	}
	var got []string
	for m, err := range c.All(ctx, client.Query{From: "+919876543210", Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m.MessageID)
	}
	if len(got) != 2 || got[0] != "m1" || got[1] != "m2" {
		t.Errorf("All from +919876543210 = %q, want [m1 m2]", got)
	}
	s, err := c.Stats(ctx)
	if err != nil || s.TotalMessages != 3 || s.SendersCount != 2 || *s.FirstMessageTS != "2025-01-15T10:00:00Z" || *s.LastMessageTS != "2025-01-15T10:00:00.5Z" {
		t.Errorf("Stats = %+v, %v", s, err)
	}

	// A closed store answers 503, so senders retry later.
	_ = store.Close()
	err = c.Send(ctx, msgsvc.Message{MessageID: "m4", From: "+14155550123", To: "+14155550100", TS: "2025-01-15T11:00:00Z"})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("Send after Close: %v, want 503", err)
	}
}

// TestRun starts the program on a free port, sends it a message and stops it.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	env := map[string]string{"ADDR": "127.0.0.1:0", "WEBHOOK_SECRET": "s3cret"}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, func(k string) string { return env[k] }, pw)
		_ = pw.Close()
	}()
	lines := make(chan map[string]any, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) == nil {
				lines <- line
			}
		}
	}()

	var addr string
	select {
	case line := <-lines:
		if line["msg"] != "listening" {
			t.Fatalf("first log line %v, want listening", line)
		}
		addr, _ = line["addr"].(string)
	case err := <-done:
		t.Fatalf("run ended before listening: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no listening line after 10s")
	}

	c := &client.Client{BaseURL: "http://" + addr, Secret: "s3cret"}
	if err := c.Send(ctx, msgsvc.Message{MessageID: "m1", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z"}); err != nil {
		t.Fatalf("Send: %v", err)
	}
	if line := <-lines; line["path"] != "/webhook" || line["result"] != "created" {
		t.Errorf("request log line %v", line)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of cancel")
	}
}
