package msgsvc_test

import (
	"testing"
)

// TestStoreOutageLoggedOnce checks that a store outage shows in the logs as
// one "store unavailable" event and one "store recovered" event, beside the
// per-request lines, however many requests fail or succeed in between: reads
// that work during a write outage, or duplicates, do not end it.
func TestStoreOutageLoggedOnce(t *testing.T) {
	type step struct {
		method, path string // a webhook when method is POST
		id           string // the webhook's message_id
		want         int    // the status, or 0 for any 5xx
	}
	post := func(id string, want int) step { return step{method: "POST", id: id, want: want} }
	get := func(path string, want int) step { return step{method: "GET", path: path, want: want} }
	cases := []struct {
		name                 string
		failInsert, failRead bool
		failPing             bool
		during               []step
		after                []step
		wantUp               int    // "store recovered" lines
		recoveredBy          string // the path of the request whose line follows "store recovered"
		failedRequests       int
	}{
		{
			name: "reads and writes down; a created webhook and a page end it", failInsert: true, failRead: true, failPing: true,
			during: []step{post("d1", 0), get("/stats", 0), post("d2", 0), get("/messages", 0), get("/health/ready", 0)},
			after:  []step{get("/stats", 200), post("a1", 200)},
			wantUp: 1, failedRequests: 5, recoveredBy: "/webhook",
		},
		{
			name: "writes down, reads working: pages do not end it, readiness does", failInsert: true, failPing: true,
			during: []step{post("d1", 0), get("/messages", 200), get("/stats", 200), post("d2", 0), get("/messages", 200), get("/health/ready", 0)},
			after:  []step{get("/messages", 200), get("/health/ready", 200)},
			wantUp: 1, failedRequests: 3, recoveredBy: "/health/ready",
		},
		{
			name: "writes down: stats working and a duplicate do not end it, a created webhook does", failInsert: true,
			during: []step{post("d1", 0), get("/stats", 200), post("d2", 0)},
			after:  []step{post("before", 200), get("/stats", 200), post("a1", 200)},
			wantUp: 1, failedRequests: 2, recoveredBy: "/webhook",
		},
		{
			name: "still down: no recovery line", failInsert: true, failRead: true,
			during: []step{post("d1", 0), get("/stats", 0)},
			after:  []step{get("/stats", 200)}, // reads back, writes not shown to work
			wantUp: 0, failedRequests: 2,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			e.seed(t, msg("before", "+12345", "2025-01-15T10:00:00Z", nil))
			run := func(phase string, steps []step) {
				t.Helper()
				for _, s := range steps {
					var code int
					if s.method == "POST" {
						code = e.post(t, body(t, map[string]any{"message_id": s.id})).Code
					} else {
						code = e.get(t, s.path).Code
					}
					if (s.want == 0 && code < 500) || (s.want != 0 && code != s.want) {
						t.Fatalf("%s: %s %s%s = %d, want %d (0: any 5xx)", phase, s.method, s.path, s.id, code, s.want)
					}
				}
			}
			if c.failInsert {
				e.store.failInsert(errStoreDown)
			}
			if c.failRead {
				e.store.failRead(errStoreDown)
			}
			if c.failPing {
				e.store.failPing(errStoreDown)
			}
			run("during", c.during)
			e.store.failInsert(nil)
			e.store.failPing(nil)
			if c.wantUp > 0 || !c.failRead {
				e.store.failRead(nil)
			} else {
				e.store.failRead(nil)
				e.store.failInsert(errStoreDown) // reads come back, writes stay down
			}
			run("after", c.after)
			var down, up, failed int
			lines := e.logLines(t)
			for i, l := range lines {
				switch l["msg"] {
				case "store unavailable":
					down++
					if l["level"] != "ERROR" || l["error"] == nil {
						t.Errorf("outage line %v: want level ERROR and the error", l)
					}
				case "store recovered":
					up++
					if i+1 < len(lines) {
						next := lines[i+1]
						if next["path"] != c.recoveredBy || next["dup"] == true {
							t.Errorf("store recovered on %v (dup %v), want on a new %s", next["path"], next["dup"], c.recoveredBy)
						}
					}
				case "request":
					if s, _ := l["status"].(float64); s >= 500 {
						failed++
					}
				}
			}
			if down != 1 || up != c.wantUp || failed != c.failedRequests {
				t.Errorf("%d outage lines, %d recovery lines, %d failed requests; want 1, %d, %d", down, up, failed, c.wantUp, c.failedRequests)
			}
		})
	}
}
