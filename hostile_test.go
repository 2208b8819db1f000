package msgsvc_test

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/msgsvc/msgsvc"
)

// seriesCount counts the sample lines of /metrics, excluding the Go runtime
// and process collectors, whose values (not series) change on their own.
func seriesCount(tb testing.TB, e *env) int {
	tb.Helper()
	n := 0
	for _, line := range strings.Split(e.metricsText(tb), "\n") {
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "go_") || strings.HasPrefix(line, "process_") {
			continue
		}
		n++
	}
	return n
}

// TestRandomURLsAddNoSeries sends 10,000 requests to random paths and
// methods: every one lands in the "unmatched" series, so the number of
// series a client can create is bounded.
func TestRandomURLsAddNoSeries(t *testing.T) {
	e := newEnv(t)
	// One of each answer the flood will produce, so their series exist.
	e.get(t, "/no-such-path")
	e.serve(t, httptest.NewRequest(http.MethodDelete, "/stats", nil))
	e.metricsText(t) // and reading /metrics has its own series
	before := seriesCount(t, e)
	r := rand.New(rand.NewPCG(1, 2))
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"}
	for i := range 10_000 {
		path := fmt.Sprintf("/%x/%d", r.Uint64(), i)
		if i%3 == 0 {
			path = []string{"/webhook", "/stats", "/messages", "/metrics"}[i%4] // known paths, wrong methods
		}
		method := methods[r.IntN(len(methods))]
		if (method == "GET" && path != "/webhook") || (method == "POST" && path == "/webhook") {
			method = "PUT"
		}
		rec := e.serve(t, httptest.NewRequest(method, path, nil))
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("%s %s: %d", method, path, rec.Code)
		}
	}
	if after := seriesCount(t, e); after != before {
		t.Errorf("series: %d before the flood, %d after", before, after)
	}
}

// TestInvalidSignaturesCostNoStoreWork floods the webhook with bodies
// signed wrongly, or not at all: none of them reaches the store.
func TestInvalidSignaturesCostNoStoreWork(t *testing.T) {
	e := newEnv(t)
	before := e.store.calls.Load()
	for i := range 2000 {
		b := body(t, map[string]any{"message_id": fmt.Sprintf("flood-%d", i)})
		var rec *httptest.ResponseRecorder
		switch i % 3 {
		case 0:
			rec = e.serve(t, webhookRequest(t, b))
		case 1:
			rec = e.serve(t, webhookRequest(t, b, msgsvc.SignatureHeader, msgsvc.Sign([]byte("wrong"), b)))
		default:
			rec = e.serve(t, webhookRequest(t, b, msgsvc.HubSignatureHeader, "sha256=zz"))
		}
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("request %d: %d, want 401", i, rec.Code)
		}
	}
	if calls := e.store.calls.Load() - before; calls != 0 {
		t.Errorf("%d store calls for 2,000 badly signed requests, want 0", calls)
	}
}
