package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgsvc/msgsvc"
)

// runSoak runs the long checks of -soak and -flood-only: a mixed load on a
// fresh database for o.soak while the daemon's memory, goroutines and file
// descriptors are sampled, then a flood of idle connections against a daemon
// with MAX_CONNECTIONS=o.floodMax. It returns an error if a verdict fails.
func runSoak(ctx context.Context, o options, out io.Writer) error {
	var failed []string
	if o.soak > 0 {
		ok, err := soak(ctx, o, out)
		if err != nil {
			return err
		}
		if !ok {
			failed = append(failed, "soak")
		}
	}
	if o.flood > 0 {
		ok, err := flood(ctx, o, out)
		if err != nil {
			return err
		}
		if !ok {
			failed = append(failed, "connection flood")
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// freshSQLite returns the URL of a new database file in dir, removing what
// an earlier run left there.
func freshSQLite(dir, name string) string {
	path := filepath.Join(dir, name)
	for _, suffix := range []string{"", "-wal", "-shm", "-index", "-index-wal", "-index-shm"} {
		_ = os.Remove(path + suffix)
	}
	return "sqlite:///" + path
}

// sample is one look at the daemon from outside.
type sample struct {
	elapsed    time.Duration
	requests   int64
	errors     int64
	rows       int64
	rssMiB     float64
	heapMiB    float64
	goroutines float64
	fds        float64
	webhookP99 time.Duration // over the interval since the sample before
}

// tally counts the requests of a load, their latencies and their failures
// by kind.
type tally struct {
	requests atomic.Int64
	errors   atomic.Int64
	mu       sync.Mutex
	byKind   map[string]*kindCount
	webhooks []time.Duration // latencies of signed webhooks since the last window
}

type kindCount struct {
	errors   int
	lat      []time.Duration
	firstErr error
}

func (t *tally) add(kind string, lat time.Duration, err error) {
	t.requests.Add(1)
	if err != nil {
		t.errors.Add(1)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.byKind[kind]
	if k == nil {
		k = &kindCount{}
		t.byKind[kind] = k
	}
	k.lat = append(k.lat, lat)
	if kind == "webhook" {
		t.webhooks = append(t.webhooks, lat)
	}
	if err != nil {
		k.errors++
		if k.firstErr == nil {
			k.firstErr = err
		}
	}
}

// window returns the 99th percentile latency of the signed webhooks since
// the last call.
func (t *tally) window() time.Duration {
	t.mu.Lock()
	w := t.webhooks
	t.webhooks = nil
	t.mu.Unlock()
	slices.Sort(w)
	return result{lat: w}.quantile(0.99)
}

// soak drives a mixed load for o.soak and samples the daemon every o.sample.
func soak(ctx context.Context, o options, out io.Writer) (bool, error) {
	d, err := startDaemon(o, freshSQLite(o.dir, "soak.db"))
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
	probe := &http.Client{Timeout: 10 * time.Second}
	defer probe.CloseIdleConnections()

	rate := "unlimited"
	if o.rate > 0 {
		rate = fmt.Sprintf("at most %d/s", o.rate)
	}
	fmt.Fprintf(out, "\nsoak: msgsvcd pid %d, fresh SQLite, %s, %d webhook connections (%.0f%% duplicates, 2%% bad signature, 2%% invalid), %d query connections, requests %s, a sample every %s\n\n",
		pid, o.soak, o.conns, 100*o.dupShare, o.queryConns, rate, o.sample)
	fmt.Fprintln(out, "| elapsed | requests | req/s | webhook p99 ms | errors | rows | RSS MiB | heap MiB | goroutines | fds |")
	fmt.Fprintln(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var samples []sample
	take := func(elapsed time.Duration, t *tally) sample {
		s := sample{elapsed: elapsed, rssMiB: procRSS(pid), rows: -1, goroutines: -1, fds: -1, heapMiB: -1}
		if t != nil {
			s.requests, s.errors, s.webhookP99 = t.requests.Load(), t.errors.Load(), t.window()
		}
		if m, err := scrapeMetrics(ctx, probe, base); err == nil {
			s.goroutines, s.fds = m["go_goroutines"], m["process_open_fds"]
			if v, ok := m["go_memstats_heap_inuse_bytes"]; ok {
				s.heapMiB = v / (1 << 20)
			}
		} else {
			logf("sample: %v", err)
		}
		if total, err := statsTotal(d.addr); err == nil {
			s.rows = total
		}
		perSecond := 0.0
		if n := len(samples); n > 0 && elapsed > samples[n-1].elapsed {
			perSecond = float64(s.requests-samples[n-1].requests) / (elapsed - samples[n-1].elapsed).Seconds()
		}
		fmt.Fprintf(out, "| %s | %d | %.0f | %s | %d | %d | %.1f | %.1f | %.0f | %.0f |\n",
			elapsed.Round(time.Second), s.requests, perSecond, ms(s.webhookP99), s.errors, s.rows, s.rssMiB, s.heapMiB, s.goroutines, s.fds)
		samples = append(samples, s)
		return s
	}
	idleBefore := take(0, nil)

	t := &tally{byKind: map[string]*kindCount{}}
	ing := newIngest(o, "soak", d.addr)
	ld := &soakLoad{o: o, base: base, ing: ing, vocab: vocabulary(), tally: t}
	lctx, cancel := context.WithTimeout(ctx, o.soak)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() {
		ld.run(lctx)
		close(done)
	}()
	tick := time.NewTicker(o.sample)
	defer tick.Stop()
loop:
	for {
		select {
		case <-tick.C:
			if lctx.Err() == nil { // a tick as the load ends would sample it half idle
				take(time.Since(start), t)
			}
		case <-done:
			break loop
		}
	}
	elapsed := time.Since(start)
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	under := samples[1:] // the samples taken under load
	// Idle keep-alive connections of the load are closed; let the daemon's
	// goroutines for them end before the idle sample.
	time.Sleep(2 * time.Second)
	idleAfter := take(time.Since(start), t)

	// Every new id acknowledged must be stored once, and nothing else. A
	// request cut off by the end of the run may have committed unseen.
	fresh := ing.fresh.Load()
	rows := idleAfter.rows
	stored := rows >= fresh && rows <= fresh+int64(o.conns)

	fmt.Fprintf(out, "\nsoak load: %d requests in %s (%.0f/s), %d errors; new ids acknowledged %d, rows stored %d\n\n",
		t.requests.Load(), elapsed.Round(time.Second), float64(t.requests.Load())/elapsed.Seconds(), t.errors.Load(), fresh, rows)
	fmt.Fprintln(out, "| request kind | requests | p50 ms | p99 ms | max ms | errors | first error |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---|")
	kinds := make([]string, 0, len(t.byKind))
	for k := range t.byKind {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		c := t.byKind[k]
		first := ""
		if c.firstErr != nil {
			first = c.firstErr.Error()
		}
		slices.Sort(c.lat)
		r := result{lat: c.lat}
		fmt.Fprintf(out, "| %s | %d | %s | %s | %s | %d | %s |\n", k, len(c.lat), ms(r.quantile(0.5)), ms(r.quantile(0.99)), ms(r.max()), c.errors, first)
	}

	ok := true
	verdict := func(pass bool, format string, args ...any) {
		word := "PASS"
		if !pass {
			word, ok = "FAIL", false
		}
		fmt.Fprintf(out, "- %s: %s\n", word, fmt.Sprintf(format, args...))
	}
	fmt.Fprintln(out, "\n| under load | first | last | min | max |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|")
	field := func(name string, get func(sample) float64, format string) {
		first, last := get(under[0]), get(under[len(under)-1])
		lo, hi := first, first
		for _, s := range under {
			lo, hi = min(lo, get(s)), max(hi, get(s))
		}
		fmt.Fprintf(out, "| %s | "+format+" | "+format+" | "+format+" | "+format+" |\n", name, first, last, lo, hi)
	}
	if len(under) < 4 {
		verdict(false, "only %d samples under load: make -soak at least 4 × -sample", len(under))
		return ok, nil
	}
	field("RSS MiB", func(s sample) float64 { return s.rssMiB }, "%.1f")
	field("heap in use MiB", func(s sample) float64 { return s.heapMiB }, "%.1f")
	field("goroutines", func(s sample) float64 { return s.goroutines }, "%.0f")
	field("open fds", func(s sample) float64 { return s.fds }, "%.0f")
	fmt.Fprintf(out, "| rows | %d | %d | | |\n", under[0].rows, under[len(under)-1].rows)
	fmt.Fprintf(out, "\nidle before the load: RSS %.1f MiB, %.0f goroutines, %.0f fds; idle after: RSS %.1f MiB, %.0f goroutines, %.0f fds\n\n",
		idleBefore.rssMiB, idleBefore.goroutines, idleBefore.fds, idleAfter.rssMiB, idleAfter.goroutines, idleAfter.fds)

	half := len(under) / 2
	firstHalf, secondHalf := under[:half], under[half:]
	peak := func(ss []sample, get func(sample) float64) float64 {
		m := get(ss[0])
		for _, s := range ss {
			m = max(m, get(s))
		}
		return m
	}
	// A single sample swings by several MiB with the collector and SQLite's
	// caches, so the trend compares medians: the last quarter of the run
	// against the second, once the caches have filled.
	rss := func(s sample) float64 { return s.rssMiB }
	quarter := len(under) / 4
	early, late := median(under[quarter:2*quarter], rss), median(under[len(under)-quarter:], rss)
	growth := late/early - 1
	verdict(growth < o.maxGrowth, "RSS flat: median %.1f MiB in the last quarter against %.1f MiB in the second, %+.1f%% (limit %.0f%%); at most %.1f MiB in the second half",
		late, early, 100*growth, 100*o.maxGrowth, peak(secondHalf, rss))
	// A leak grows with time and requests; what the load holds is bounded by
	// its concurrency: for each connection with a request in flight (the
	// sampler's included) the server's goroutine and its background reader,
	// and database/sql's and the SQLite driver's context watchers.
	g := func(s sample) float64 { return s.goroutines }
	clients := float64(o.conns + o.queryConns + 1)
	bound := idleBefore.goroutines + 4*clients + 16
	verdict(peak(under, g) <= bound, "goroutines bounded: at most %.0f under load (first half %.0f, second half %.0f); bound %.0f = %.0f idle + 4 × %.0f connections + 16",
		peak(under, g), peak(firstHalf, g), peak(secondHalf, g), bound, idleBefore.goroutines, clients)
	// Flat compares the fewest goroutines of each half: a sample counts
	// the requests in flight at that instant, and as the table grows each
	// takes longer, so more are in flight at a median sample (29 → 34 over
	// 10 minutes on 1 Dec, leaking nothing); a leak raises the floor too.
	least := func(ss []sample) float64 {
		m := g(ss[0])
		for _, s := range ss {
			m = min(m, g(s))
		}
		return m
	}
	verdict(least(secondHalf) <= least(firstHalf)+5, "goroutines flat: at least %.0f in the first half, %.0f in the second (medians %.0f and %.0f)",
		least(firstHalf), least(secondHalf), median(firstHalf, g), median(secondHalf, g))
	verdict(idleAfter.goroutines <= idleBefore.goroutines+5, "goroutines back to idle: %.0f before the load, %.0f after", idleBefore.goroutines, idleAfter.goroutines)
	// Descriptors: the client connections, plus the database files that the
	// store's connection pools open on first use and keep.
	fd := func(s sample) float64 { return s.fds }
	verdict(peak(secondHalf, fd) <= peak(firstHalf, fd)+5, "open fds flat: at most %.0f in the first half, %.0f in the second", peak(firstHalf, fd), peak(secondHalf, fd))
	verdict(idleAfter.fds <= under[0].fds+5, "open fds after the load (%.0f) no more than at the first sample under load (%.0f); %.0f before the load, when no pooled database connection was open yet",
		idleAfter.fds, under[0].fds, idleBefore.fds)
	verdict(t.errors.Load() == 0, "%d errors in %d requests", t.errors.Load(), t.requests.Load())
	verdict(stored, "rows stored %d for %d new ids acknowledged (up to %d more may be cut off in flight)", rows, fresh, o.conns)
	// A daemon that served the run must still stop cleanly on SIGTERM.
	stopped = true
	err = d.stop()
	verdict(err == nil, "the daemon stopped cleanly on SIGTERM (exit: %v)", err)
	return ok, nil
}

// soakLoad is the mixed load of a soak.
type soakLoad struct {
	o     options
	base  string
	ing   *ingest
	vocab []string
	tally *tally
}

// run starts the webhook and query workers and waits for them to stop when
// ctx ends. With o.rate set, all workers together send at most that many
// requests a second.
func (l *soakLoad) run(ctx context.Context) {
	var tokens <-chan time.Time
	if l.o.rate > 0 {
		tk := time.NewTicker(time.Second / time.Duration(l.o.rate))
		defer tk.Stop()
		tokens = tk.C
	}
	client := newClient(l.o.conns + l.o.queryConns)
	defer client.CloseIdleConnections()
	var wg sync.WaitGroup
	worker := func(next func(i int) (string, request)) {
		defer wg.Done()
		for i := 0; ; i++ {
			if tokens != nil {
				select {
				case <-tokens:
				case <-ctx.Done():
				}
			}
			if ctx.Err() != nil {
				return
			}
			kind, req := next(i)
			t0 := time.Now()
			err := req(ctx, client)
			if ctx.Err() != nil {
				return // cut off by the end of the run: not counted
			}
			l.tally.add(kind, time.Since(t0), err)
		}
	}
	for w := range l.o.conns {
		wg.Add(1)
		go worker(func(i int) (string, request) { return l.nextWebhook(w, i) })
	}
	for w := range l.o.queryConns {
		q := &queryWorker{load: l, r: rand.New(rand.NewPCG(uint64(w), 17))}
		wg.Add(1)
		go worker(q.next)
	}
	wg.Wait()
}

// nextWebhook is a signed webhook as the bench sends it (new ids and a share
// of duplicates), or now and then one with a bad signature or an invalid
// body, so the error paths run too.
func (l *soakLoad) nextWebhook(worker, i int) (string, request) {
	switch i % 50 { // one in 50 of each
	case 17:
		body := l.ing.body(worker, i)
		return "webhook bad signature", l.post(body, msgsvc.Sign([]byte("not-the-secret"), body), http.StatusUnauthorized)
	case 42:
		body := []byte(`{"message_id":"","from":"0","to":"+1","ts":"yesterday"}`)
		return "webhook invalid", l.post(body, msgsvc.Sign([]byte(l.o.secret), body), http.StatusUnprocessableEntity)
	}
	_, req := l.ing.next(worker, i)
	return "webhook", req
}

func (l *soakLoad) post(body []byte, sig string, want int) request {
	return func(ctx context.Context, c *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.base+"/webhook", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("X-Signature", sig)
		req.Header.Set("Content-Type", "application/json")
		return do(c, req, want)
	}
}

// queryWorker sends the read side of the soak, one kind after the other. It
// follows next_cursor from page to page, with the filter the walk began
// with, until the last page.
type queryWorker struct {
	load   *soakLoad
	r      *rand.Rand
	kind   int
	walk   url.Values // filter and cursor of the page walk under way, nil between walks
	walked int
}

// soakQueryKinds are the requests of the query workers, in turn.
func soakQueryKinds() []string {
	return []string{
		"messages offset page", "messages from", "messages since", "messages q word", "messages q common",
		"messages q no match", "messages from+q", "messages cursor walk", "messages cursor walk",
		"stats", "health ready", "health live", "metrics",
	}
}

func (q *queryWorker) next(int) (string, request) {
	kinds := soakQueryKinds()
	kind := kinds[q.kind%len(kinds)]
	q.kind++
	l, r := q.load, q.r
	v := url.Values{}
	word := l.vocab[r.IntN(len(l.vocab))]
	from := sender(int(float64(senderPool) * r.Float64() * r.Float64()))
	// The webhooks' instants start at 2026-01-01 and advance a second per
	// new id of a worker.
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(r.IntN(100_000)) * time.Second)
	switch kind {
	case "messages offset page":
		v.Set("offset", strconv.Itoa(r.IntN(5_000)))
		v.Set("limit", strconv.Itoa(1+r.IntN(msgsvc.MaxLimit)))
	case "messages from":
		v.Set("from", from)
	case "messages since":
		v.Set("since", since.Format(time.RFC3339))
	case "messages q word":
		v.Set("q", strings.ToUpper(word))
	case "messages q common":
		v.Set("q", l.vocab[r.IntN(100)])
	case "messages q no match":
		v.Set("q", "zz-no-such-word-"+strconv.Itoa(r.IntN(1000)))
	case "messages from+q":
		v.Set("from", from)
		v.Set("q", word)
	case "messages cursor walk":
		if q.walk == nil {
			q.walk = url.Values{}
			switch r.IntN(4) {
			case 1:
				q.walk.Set("from", from)
			case 2:
				q.walk.Set("q", l.vocab[r.IntN(100)])
			case 3:
				q.walk.Set("since", since.Format(time.RFC3339))
			}
		}
		return kind, q.page()
	case "stats":
		return kind, l.get("/stats", nil)
	case "health ready":
		return kind, l.get("/health/ready", nil)
	case "health live":
		return kind, l.get("/health/live", nil)
	case "metrics":
		return kind, l.get("/metrics", nil)
	}
	return kind, l.get("/messages", v)
}

// page gets the next page of the walk and keeps its next_cursor.
func (q *queryWorker) page() request {
	u := q.load.base + "/messages?" + q.walk.Encode()
	return func(ctx context.Context, c *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			_, _ = io.Copy(io.Discard, resp.Body)
			return fmt.Errorf("GET %s: status %d, want 200", u, resp.StatusCode)
		}
		var page struct {
			NextCursor *string `json:"next_cursor"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&page); err != nil {
			return fmt.Errorf("GET %s: %w", u, err)
		}
		q.walked++
		if page.NextCursor == nil || q.walked >= 200 {
			q.walk, q.walked = nil, 0 // the walk is over: the next one starts afresh
			return nil
		}
		q.walk.Set("cursor", *page.NextCursor)
		return nil
	}
}

func (l *soakLoad) get(path string, v url.Values) request { return getOK(l.base, path, v) }

// scrapeMetrics reads GET /metrics and returns the value of every sample
// without labels, by name.
func scrapeMetrics(ctx context.Context, c *http.Client, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			m[name] = f
		}
	}
	return m, sc.Err()
}

// procRSS returns the resident set size (VmRSS) of process pid in MiB, or
// -1 if /proc cannot tell.
func procRSS(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return -1
			}
			return kb / 1024
		}
	}
	return -1
}

// procFDs returns the number of open file descriptors of process pid, or -1
// if /proc cannot tell.
func procFDs(pid int) int {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(entries)
}

// median returns the median of get over xs.
func median[T any](xs []T, get func(T) float64) float64 {
	v := make([]float64, len(xs))
	for i, x := range xs {
		v[i] = get(x)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}
