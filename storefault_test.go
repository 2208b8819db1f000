package msgsvc_test

import (
	"fmt"
	"net/http"
	"testing"
)

// TestStoreOutageLoggedOnce checks that a store outage shows in the logs as
// one "store unavailable" event and one "store recovered" event, beside the
// per-request lines, however many requests fail in between.
func TestStoreOutageLoggedOnce(t *testing.T) {
	e := newEnv(t)
	e.seed(t, msg("before", "+12345", "2025-01-15T10:00:00Z", nil))
	e.store.failInsert(errStoreDown)
	e.store.failRead(errStoreDown)
	for i := range 5 {
		if rec := e.post(t, body(t, map[string]any{"message_id": fmt.Sprintf("during-%d", i)})); rec.Code < 500 {
			t.Fatalf("webhook during the outage: %d, want 5xx", rec.Code)
		}
		if rec := e.get(t, "/stats"); rec.Code < 500 {
			t.Fatalf("stats during the outage: %d, want 5xx", rec.Code)
		}
	}
	e.store.failInsert(nil)
	e.store.failRead(nil)
	e.seed(t, msg("after", "+12345", "2025-01-15T10:00:01Z", nil))
	if rec := e.get(t, "/stats"); rec.Code != http.StatusOK {
		t.Fatalf("stats after the outage: %d", rec.Code)
	}
	var down, up, failed int
	for _, l := range e.logLines(t) {
		switch l["msg"] {
		case "store unavailable":
			down++
			if l["level"] != "ERROR" || l["error"] == nil {
				t.Errorf("outage line %v: want level ERROR and the error", l)
			}
		case "store recovered":
			up++
		case "request":
			if s, _ := l["status"].(float64); s >= 500 {
				failed++
			}
		}
	}
	if down != 1 || up != 1 || failed != 10 {
		t.Errorf("%d outage lines, %d recovery lines, %d failed requests; want 1, 1, 10", down, up, failed)
	}
}
