package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunLoadPaced checks the fixed-rate schedule: it never sends more than
// the rate allows, and a slow answer counts against every request it held
// up, which a closed loop does not see.
func TestRunLoadPaced(t *testing.T) {
	const stall = 100 * time.Millisecond
	cases := []struct {
		name      string
		conns     int
		rate      int
		dur       time.Duration
		maxSent   int // the schedule's slots in dur, plus one in flight per connection
		minHeldUp int // latencies of at least stall/2
	}{
		// In a closed loop only the stalled request is slow.
		{name: "closed loop", conns: 1, rate: 0, dur: 400 * time.Millisecond, maxSent: 1 << 30, minHeldUp: 1},
		// At 100/s on one connection, the requests due at 10, 20, ...
		// 50 ms wait behind the stalled one: five more of at least 50 ms.
		{name: "paced", conns: 1, rate: 100, dur: 400 * time.Millisecond, maxSent: 40 + 1, minHeldUp: 6},
		{name: "paced, several connections", conns: 4, rate: 100, dur: 400 * time.Millisecond, maxSent: 40 + 4, minHeldUp: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if n.Add(1) == 1 {
					time.Sleep(stall)
				}
			}))
			defer srv.Close()
			next := func(int, int) (string, request) { return "get", getOK(srv.URL, "/", nil) }
			res, _ := runLoad(context.Background(), tc.name, tc.conns, tc.rate, tc.dur, next)
			if res.errors != 0 {
				t.Fatalf("%d errors, first: %v", res.errors, res.firstErr)
			}
			if res.requests > tc.maxSent {
				t.Errorf("%d requests in %v, want at most %d", res.requests, tc.dur, tc.maxSent)
			}
			held := 0
			for _, l := range res.lat {
				if l >= stall/2 {
					held++
				}
			}
			if held < tc.minHeldUp {
				t.Errorf("%d latencies of at least %v, want at least %d (all: %v)", held, stall/2, tc.minHeldUp, res.lat)
			}
		})
	}
}
