package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/sqlstore"
)

func TestEmbeddedServer(t *testing.T) {
	store, err := sqlstore.Open(context.Background(), "sqlite://:memory:")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	var logs bytes.Buffer
	h, err := newServer(store, "example-secret", &logs)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := srv.Client()
	client.Timeout = 10 * time.Second

	get := func(path string) (int, string, http.Header) {
		t.Helper()
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}

	if code, body, hdr := get("/hello"); code != 200 || !strings.Contains(body, "hello") || hdr.Get("Server") != "embed-example" {
		t.Errorf("GET /hello = %d %q Server %q", code, body, hdr.Get("Server"))
	}

	body := []byte(`{"message_id":"e1","from":"+15550001111","to":"+15550002222","ts":"2025-01-15T10:00:00Z","text":"hi"}`)
	req, _ := http.NewRequest("POST", srv.URL+"/hooks/webhook", bytes.NewReader(body))
	req.Header.Set(msgsvc.SignatureHeader, msgsvc.Sign([]byte("example-secret"), body))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != `{"status":"ok"}` || resp.Header.Get("Server") != "embed-example" {
		t.Fatalf("POST /hooks/webhook = %d %s Server %q", resp.StatusCode, b, resp.Header.Get("Server"))
	}

	if code, body, _ := get("/hooks/messages"); code != 200 || !strings.Contains(body, `"message_id":"e1"`) {
		t.Errorf("GET /hooks/messages = %d %s", code, body)
	}
	if code, _, _ := get("/hooks/health/ready"); code != 200 {
		t.Errorf("GET /hooks/health/ready = %d", code)
	}
	if code, body, _ := get("/hooks/metrics"); code != 200 || !strings.Contains(body, "\nstore_batch_messages_count 1\n") {
		t.Errorf("GET /hooks/metrics = %d, without the store's one batch:\n%s", code, body)
	}
	if code, body, _ := get("/hooks/nope"); code != 404 || body != `{"detail":"Not Found"}` {
		t.Errorf("GET /hooks/nope = %d %s, want msgsvc's 404", code, body)
	}
	if !strings.Contains(logs.String(), `"path":"/webhook"`) {
		t.Errorf("msgsvc log lines do not name the stripped path:\n%s", logs.String())
	}
}
