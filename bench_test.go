package msgsvc_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

var benchBody = []byte(`{"message_id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00.123Z","text":"Hello, this is a message of ordinary length to benchmark the hot path."}`)

func BenchmarkVerify(b *testing.B) {
	secret := []byte("benchmark-secret")
	sig := msgsvc.Sign(secret, benchBody)
	for _, bc := range []struct {
		name    string
		header  http.Header
		secrets [][]byte
	}{
		{"X-Signature", header("X-Signature", sig), [][]byte{secret}},
		{"X-Hub-Signature-256", header("X-Hub-Signature-256", "sha256="+strings.ToUpper(sig)), [][]byte{secret}},
		{"previous-secret", header("X-Signature", sig), [][]byte{[]byte("current"), secret}},
		{"invalid", header("X-Signature", strings.Repeat("0", 64)), [][]byte{secret}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(benchBody)))
			for b.Loop() {
				_ = msgsvc.Verify(bc.header, benchBody, bc.secrets...)
			}
		})
	}
}

func BenchmarkParseMessage(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"valid", benchBody},
		{"text-4096", []byte(`{"message_id":"m1","from":"+919876543210","to":"+14155550100","ts":"2025-01-15T10:00:00Z","text":"` + strings.Repeat("ü", 4096) + `"}`)},
		{"invalid", []byte(`{"message_id":"","from":"+1","to":"0","ts":"2025-02-30T00:00:00Z","text":1}`)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				_, _ = msgsvc.ParseMessage(bc.body)
			}
		})
	}
}

// pageStore answers every List with the same page and stores nothing.
type pageStore struct{ page msgsvc.Page }

func (s *pageStore) Insert(_ context.Context, msgs []msgsvc.Message) ([]bool, error) {
	return make([]bool, len(msgs)), nil
}
func (s *pageStore) List(context.Context, msgsvc.Query) (msgsvc.Page, error) { return s.page, nil }
func (s *pageStore) Stats(context.Context) (msgsvc.Stats, error)             { return msgsvc.Stats{}, nil }
func (s *pageStore) Ping(context.Context) error                              { return nil }

// discardWriter is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler rather than a recorder's buffer.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}

func benchHandler(b *testing.B, st msgsvc.Store) *msgsvc.Handler {
	b.Helper()
	h, err := msgsvc.New(msgsvc.Config{Store: st, Secret: "benchmark-secret", Logger: msgsvc.NewLogger(io.Discard, nil)})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

// BenchmarkListEncode measures GET /messages answering a full page of 50
// through the whole handler (routing, query parsing, JSON encoding,
// metrics and the log line), with a store that costs nothing.
func BenchmarkListEncode(b *testing.B) {
	st := &pageStore{}
	for i := range 50 {
		text := fmt.Sprintf("Message number %d, with some ordinary text in it é ü 😀", i)
		st.page.Messages = append(st.page.Messages, msgsvc.Message{
			MessageID: fmt.Sprintf("wamid.%040d", i), From: "+919876543210", To: "+14155550100",
			TS: fmt.Sprintf("2025-01-15T10:00:%02d.123Z", i), Text: &text,
		})
	}
	st.page.Total = 1000
	st.page.Next = &msgsvc.Position{Key: msgsvc.TimestampKey("2025-01-15T10:00:49.123Z"), MessageID: "wamid.49"}
	h := benchHandler(b, st)
	r := httptest.NewRequest(http.MethodGet, "/messages?limit=50&from=%2B919876543210&q=message", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	if rec.Code != 200 {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	b.SetBytes(int64(rec.Body.Len()))
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(&discardWriter{h: http.Header{}}, r)
	}
}

// BenchmarkWebhook measures POST /webhook end to end (read, verify,
// validate, answer) with a store that costs nothing.
func BenchmarkWebhook(b *testing.B) {
	h := benchHandler(b, &pageStore{})
	sig := msgsvc.Sign([]byte("benchmark-secret"), benchBody)
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/webhook", bytes.NewReader(benchBody))
		r.Header.Set("X-Signature", sig)
		w := &discardWriter{h: http.Header{}}
		h.ServeHTTP(w, r)
	}
}

func BenchmarkFold(b *testing.B) {
	s := strings.Repeat("Bonjour l'ÉCOLE, ΣΊΣΥΦΟΣ. ", 20)
	b.SetBytes(int64(len(s)))
	b.ReportAllocs()
	for b.Loop() {
		_ = msgsvc.Fold(s)
	}
}
