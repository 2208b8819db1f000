package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// flood opens o.flood connections that send nothing or half a header against
// a daemon with MAX_CONNECTIONS=o.floodMax, holds them for o.floodHold while
// sampling the daemon, closes them, and checks that the daemon's goroutines
// and file descriptors stayed bounded and that it answers a fresh connection
// afterwards. The daemon inherits this program's environment, so
// READ_HEADER_TIMEOUT (5s unless set) decides how long it keeps a silent
// connection.
func flood(ctx context.Context, o options, out io.Writer) (bool, error) {
	d, err := startDaemon(o, freshSQLite(o.dir, "flood.db"), fmt.Sprintf("MAX_CONNECTIONS=%d", o.floodMax))
	if err != nil {
		return false, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = d.stop()
		}
	}()
	pid := d.cmd.Process.Pid
	base := "http://" + d.addr

	// The sampler keeps one keep-alive connection, opened before the flood:
	// it holds one of the daemon's slots, so /metrics still answers while
	// every other slot is taken.
	sampler := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Hour}}
	defer sampler.CloseIdleConnections()
	before, err := scrapeMetrics(ctx, sampler, base)
	if err != nil {
		return false, fmt.Errorf("flood: metrics before the flood: %w", err)
	}
	baseG, baseFDs, baseProcFDs := before["go_goroutines"], before["process_open_fds"], procFDs(pid)
	fmt.Fprintf(out, "\nconnection flood: msgsvcd pid %d with MAX_CONNECTIONS=%d; %d connections (half send nothing, half send half a header), held %s\n",
		pid, o.floodMax, o.flood, o.floodHold)
	fmt.Fprintf(out, "before: %.0f goroutines, %.0f open fds (/proc: %d), RSS %.1f MiB\n\n", baseG, baseFDs, baseProcFDs, procRSS(pid))

	var (
		mu       sync.Mutex
		conns    []net.Conn
		dialErrs atomic.Int64
		closing  atomic.Bool
		cutOff   atomic.Int64 // connections the daemon closed while held
		readers  sync.WaitGroup
	)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	next := make(chan int)
	var dialers sync.WaitGroup
	dialStart := time.Now()
	for range 32 {
		dialers.Add(1)
		go func() {
			defer dialers.Done()
			for i := range next {
				c, err := dialer.DialContext(ctx, "tcp", d.addr)
				if err != nil {
					dialErrs.Add(1)
					continue
				}
				if i%2 == 1 {
					_, _ = io.WriteString(c, "GET /health/live HTTP/1.1\r\nHost: flood\r\n")
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				readers.Add(1)
				go func() {
					defer readers.Done()
					_, _ = io.Copy(io.Discard, c)
					if !closing.Load() {
						cutOff.Add(1)
					}
				}()
			}
		}()
	}
	for i := range o.flood {
		next <- i
	}
	close(next)
	dialers.Wait()
	dialTime := time.Since(dialStart)
	fmt.Fprintf(out, "dialled %d connections in %s, %d dial errors\n\n", len(conns), dialTime.Round(time.Millisecond), dialErrs.Load())

	fmt.Fprintln(out, "| elapsed | held open | closed by daemon | goroutines | open fds | fds (/proc) | RSS MiB |")
	fmt.Fprintln(out, "|---:|---:|---:|---:|---:|---:|---:|")
	maxG, maxFDs, maxProcFDs, missed := baseG, baseFDs, float64(baseProcFDs), 0
	start := time.Now()
	freshDuring := "not tried"
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for probed := false; time.Since(start) < o.floodHold; {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick.C:
		}
		g, fds := -1.0, -1.0
		if m, err := scrapeMetrics(ctx, sampler, base); err == nil {
			g, fds = m["go_goroutines"], m["process_open_fds"]
			maxG, maxFDs = max(maxG, g), max(maxFDs, fds)
		} else {
			missed++
		}
		pfds := float64(procFDs(pid))
		maxProcFDs = max(maxProcFDs, pfds)
		fmt.Fprintf(out, "| %s | %d | %d | %.0f | %.0f | %.0f | %.1f |\n", time.Since(start).Round(time.Second),
			int64(len(conns))-cutOff.Load(), cutOff.Load(), g, fds, pfds, procRSS(pid))
		if !probed && time.Since(start) >= o.floodHold/2 {
			probed = true
			freshDuring = describeProbe(freshProbe(ctx, base, 2*time.Second))
		}
	}

	closing.Store(true)
	for _, c := range conns {
		_ = c.Close()
	}
	readers.Wait()
	closed := time.Now()
	// A fresh connection after the flood: it may wait while the daemon
	// accepts and drops the closed connections still in its backlog.
	var freshAfter string
	var answered bool
	for time.Since(closed) < 30*time.Second && ctx.Err() == nil {
		status, took, err := freshProbe(ctx, base, 5*time.Second)
		freshAfter = describeProbe(status, took, err)
		if answered = status == http.StatusOK; answered {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	answerTime := time.Since(closed)
	time.Sleep(2 * time.Second) // let the daemon finish with the dropped connections
	sampler.CloseIdleConnections()
	after, err := scrapeMetrics(ctx, sampler, base)
	if err != nil {
		return false, fmt.Errorf("flood: metrics after the flood: %w", err)
	}
	afterG, afterFDs := after["go_goroutines"], after["process_open_fds"]

	fmt.Fprintf(out, "\nduring the flood, a fresh connection's GET /health/live: %s\n", freshDuring)
	fmt.Fprintf(out, "after closing the flood: GET /health/live on a fresh connection: %s, %s after the close; then %.0f goroutines, %.0f open fds (/proc: %d), RSS %.1f MiB\n\n",
		freshAfter, answerTime.Round(time.Millisecond), afterG, afterFDs, procFDs(pid), procRSS(pid))

	ok := true
	verdict := func(pass bool, format string, args ...any) {
		word := "PASS"
		if !pass {
			word, ok = "FAIL", false
		}
		fmt.Fprintf(out, "- %s: %s\n", word, fmt.Sprintf(format, args...))
	}
	// One goroutine and one descriptor per connection served, plus a few
	// for the sampler and the server's own.
	slack := 16.0
	limit := float64(o.floodMax)
	verdict(missed == 0, "/metrics answered on the held connection at every sample (%d missed)", missed)
	verdict(maxG <= baseG+limit+slack, "goroutines bounded: at most %.0f during the flood; bound %.0f = %.0f before + %d connections + %.0f",
		maxG, baseG+limit+slack, baseG, o.floodMax, slack)
	verdict(maxProcFDs <= float64(baseProcFDs)+limit+slack, "fds bounded: at most %.0f during the flood (/proc; /metrics said at most %.0f); bound %.0f = %d before + %d connections + %.0f",
		maxProcFDs, maxFDs, float64(baseProcFDs)+limit+slack, baseProcFDs, o.floodMax, slack)
	verdict(answered, "a fresh connection is answered after the flood (%s)", freshAfter)
	verdict(afterG <= baseG+5 && afterFDs <= baseFDs+5, "back to idle: %.0f goroutines and %.0f fds after, %.0f and %.0f before", afterG, afterFDs, baseG, baseFDs)
	// A daemon that served the run must still stop cleanly on SIGTERM.
	stopped = true
	err = d.stop()
	verdict(err == nil, "the daemon stopped cleanly on SIGTERM (exit: %v)", err)
	return ok, nil
}

// freshProbe sends GET /health/live on a new connection and returns the
// status and how long the answer took.
func freshProbe(ctx context.Context, base string, timeout time.Duration) (int, time.Duration, error) {
	c := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health/live", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, time.Since(t0), err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, time.Since(t0), nil
}

func describeProbe(status int, took time.Duration, err error) string {
	if err != nil {
		return fmt.Sprintf("no answer after %s (%v)", took.Round(time.Millisecond), err)
	}
	return fmt.Sprintf("status %d in %s", status, took.Round(time.Millisecond))
}
