package main

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

func TestSend(t *testing.T) {
	ctx := context.Background()
	store, err := sqlstore.Open(ctx, "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	h, err := msgsvc.New(msgsvc.Config{Store: store, Secret: "s3cret", Logger: msgsvc.NewLogger(io.Discard, slog.LevelInfo)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	client.Timeout = 10 * time.Second

	text := "hello"
	m := msgsvc.Message{MessageID: "s1", From: "+919876543210", To: "+14155550100", TS: "2025-01-15T10:00:00Z", Text: &text}
	for _, tc := range []struct {
		name   string
		secret string
		hub    bool
		status int
	}{
		{"X-Signature", "s3cret", false, 200},
		{"X-Hub-Signature-256", "s3cret", true, 200},
		{"wrong secret", "other", false, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, answer, err := send(ctx, client, srv.URL+"/webhook", []byte(tc.secret), m, tc.hub)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.status {
				t.Errorf("status %d %s, want %d", status, answer, tc.status)
			}
		})
	}
	page, err := store.List(ctx, msgsvc.Query{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if page.Total != 1 || page.Messages[0].MessageID != "s1" || *page.Messages[0].Text != "hello" {
		t.Errorf("stored %+v", page)
	}
}
