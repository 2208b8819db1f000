package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// result sums up one workload.
type result struct {
	name     string
	requests int
	errors   int
	elapsed  time.Duration
	lat      []time.Duration // sorted
	firstErr error
}

func (r result) throughput() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r result) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q * float64(len(r.lat)-1))
	return r.lat[i]
}

func (r result) max() time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[len(r.lat)-1]
}

// request is what one worker sends next. It returns an error for any answer
// but the one expected.
type request func(ctx context.Context, c *http.Client) error

// newClient returns a keep-alive client with one connection per worker.
func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			MaxConnsPerHost:     conns,
			IdleConnTimeout:     time.Minute,
		},
	}
}

// runLoad runs conns workers for d, each calling next(worker, i) for its
// next request, and times every request. It returns the whole and, when next
// names kinds, one result per kind.
//
// With rate 0 each worker sends its next request as soon as the last one is
// answered (a closed loop: the most the daemon does). With rate > 0 the
// workers together start rate requests a second on a schedule fixed in
// advance (see pace): a slow answer counts against every request it held
// up, as it would against senders that do not wait for each other.
func runLoad(ctx context.Context, name string, conns, rate int, d time.Duration, next func(worker, i int) (kind string, r request)) (result, map[string]*result) {
	client := newClient(conns)
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	res := result{name: name}
	byKind := map[string]*result{}
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := map[string]*result{}
			for i := 0; ctx.Err() == nil; i++ {
				kind, req := next(w, i)
				t0 := time.Now()
				if rate > 0 {
					slot := start.Add(time.Duration(i*conns+w) * time.Second / time.Duration(rate))
					t0 = pace(ctx, slot)
				}
				err := req(ctx, client)
				if ctx.Err() != nil {
					break // cut off by the end of the run: not a sample
				}
				r := mine[kind]
				if r == nil {
					r = &result{name: kind}
					mine[kind] = r
				}
				r.lat = append(r.lat, time.Since(t0))
				if err != nil {
					r.errors++
					if r.firstErr == nil {
						r.firstErr = err
					}
				}
			}
			mu.Lock()
			for kind, r := range mine {
				res.merge(r)
				k := byKind[kind]
				if k == nil {
					k = &result{name: kind}
					byKind[kind] = k
				}
				k.merge(r)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, r := range append([]*result{&res}, mapValues(byKind)...) {
		r.elapsed = elapsed
		r.requests = len(r.lat)
		slices.Sort(r.lat)
	}
	return res, byKind
}

// pace waits for slot, a request's scheduled start, and returns the instant
// its latency counts from. A request that is early waits, and counts from
// when it goes: the timer wakes up late by itself (a few hundred µs here),
// which is the generator's delay, not the daemon's. A request that is late
// was held up by the answer before it, so it counts from its slot.
func pace(ctx context.Context, slot time.Time) time.Time {
	ahead := time.Until(slot)
	if ahead <= 0 {
		return slot
	}
	select {
	case <-time.After(ahead):
	case <-ctx.Done():
	}
	return time.Now()
}

func (r *result) merge(o *result) {
	r.lat = append(r.lat, o.lat...)
	r.errors += o.errors
	if r.firstErr == nil {
		r.firstErr = o.firstErr
	}
}

func mapValues(m map[string]*result) []*result {
	out := make([]*result, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// do sends req and checks the status; the body is read to the end so the
// connection is reused.
func do(c *http.Client, req *http.Request, want int) error {
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d", req.Method, req.URL.Path, resp.StatusCode, want)
	}
	return nil
}
