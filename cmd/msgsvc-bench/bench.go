package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/msgsvc/msgsvc"
)

func runBench(ctx context.Context, o options, out io.Writer) error {
	if o.daemon == "" {
		return fmt.Errorf("-daemon is required: go build -o /tmp/msgsvcd ./cmd/msgsvcd")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if o.dir == "" {
		o.dir, err = os.MkdirTemp("", "msgsvc-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(o.dir)
	}
	if o.rounds < 1 {
		return fmt.Errorf("-rounds %d: want 1 or more", o.rounds)
	}
	var rows []row
	report := func(r row) {
		rows = append(rows, r)
		logRow(r)
	}

	if o.hold > 0 {
		return holdDaemon(ctx, o)
	}
	if o.soak > 0 || o.floodOnly {
		return runSoak(ctx, o, out)
	}
	if o.queriesOnly {
		return runQueriesOnly(ctx, o, report)
	}
	// 1. The baselines and ingest on an empty store, in the table; then
	// the further rounds of the same three, which only log.
	logf("baselines: a minimal signed-webhook receiver, and the handler on a store that keeps nothing")
	first, err := runEmptyRound(ctx, o, self, report)
	if err != nil {
		return err
	}
	rounds := []emptyRound{first}
	for i := 2; i <= o.rounds; i++ {
		logf("round %d of %d: the baselines and ingest on an empty store again", i, o.rounds)
		rd, err := runEmptyRound(ctx, o, self, logRow)
		if err != nil {
			return err
		}
		rounds = append(rounds, rd)
	}
	// The ingest at scale is compared with the median of each baseline
	// over the rounds: one round's baseline may fall on a slow minute.
	handlerMedian := median(rounds, func(rd emptyRound) float64 { return rd.handler.throughput() })
	minimalMedian := median(rounds, func(rd emptyRound) float64 { return rd.minimal.throughput() })
	ratios := func(res result) (float64, float64) {
		return res.throughput() / handlerMedian, res.throughput() / minimalMedian
	}
	cycles := []string{first.cycle} // what the writer did in each ingest workload of the table

	// 2. Seed, then everything at scale.
	bigURL, err := o.bigDatabase(ctx, o.reuseSeed)
	if err != nil {
		return err
	}
	var rate float64
	if o.reuseSeed {
		logf("reusing the seeded database")
	} else {
		logf("seeding %d messages", o.seed)
		if rate, err = seed(ctx, bigURL, o.seed); err != nil {
			return fmt.Errorf("seeding: %w", err)
		}
		logf("seeded %d messages at %.0f/s", o.seed, rate)
	}
	if err := o.analyze(ctx, bigURL); err != nil {
		return err
	}
	d, err := startDaemon(o, bigURL)
	if err != nil {
		return err
	}
	ing := newIngest(o, fmt.Sprintf("big%d", time.Now().Unix()), d.addr)
	before, err := statsTotal(d.addr)
	if err != nil {
		return err
	}
	res, cpu, cycle, shares, err := measureIngest(ctx, d, fmt.Sprintf("ingest, %d stored", o.seed), o.conns, o.duration, ing.next)
	if err != nil {
		return err
	}
	cycles = append(cycles, cycle)
	r := row{name: res.name, res: res, rss: d.peakRSS(), cpu: cpu, shares: shares}
	r.ratio, r.minRatio = ratios(res)
	report(r)
	if err := ing.check(d.addr, before, res); err != nil {
		return err
	}
	runQueries(ctx, o, d, report)
	peak := d.peakRSS()
	if err := d.stop(); err != nil {
		return fmt.Errorf("daemon exit: %w", err)
	}

	fmt.Fprintf(out, "\nmsgsvc-bench: %d CPUs (%s), %s store, %s per workload, %d webhook connections (%.0f%% duplicates), %d query connections, %d seeded messages, load generator on the same machine\n\n",
		runtime.NumCPU(), cpuModel(), o.backend(), o.duration, o.conns, 100*o.dupShare, o.queryConns, o.seed)
	fmt.Fprintln(out, "| workload | req/s | × baseline | × minimal | p50 ms | p99 ms | max ms | daemon CPU µs/req | errors |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		ratio, minRatio, cpu := "", "", ""
		if r.ratio > 0 {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		if r.minRatio > 0 {
			minRatio = fmt.Sprintf("%.2f", r.minRatio)
		}
		if r.cpu > 0 {
			cpu = us(r.cpu)
		}
		fmt.Fprintf(out, "| %s | %.0f | %s | %s | %s | %s | %s | %s | %d |\n", strings.TrimSpace(r.name), r.res.throughput(), ratio, minRatio,
			ms(r.res.quantile(0.5)), ms(r.res.quantile(0.99)), ms(r.res.max()), cpu, r.res.errors)
	}
	if len(rounds) > 1 {
		printRounds(out, rounds)
	}
	fmt.Fprintf(out, "\nseeding rate: %.0f messages/s; daemon peak RSS (VmHWM): %.0f MiB\n", rate, peak)
	fmt.Fprintf(out, "\nthe store's writer, from its metrics:\n\n")
	for _, c := range cycles {
		fmt.Fprintf(out, "- %s\n", c)
	}
	fmt.Fprintf(out, "\nthe machine's CPU during each ingest, as shares of all %d cores:\n\n", runtime.NumCPU())
	for _, r := range rows {
		if r.shares != "" {
			fmt.Fprintf(out, "- %s: %s\n", strings.TrimSpace(r.name), r.shares)
		}
	}
	return nil
}

// logRow prints one workload's figures to stderr as it ends.
func logRow(r row) {
	cpu := ""
	if r.cpu > 0 {
		cpu = fmt.Sprintf("  CPU %s µs/req", us(r.cpu))
	}
	logf("%-34s %9.0f req/s  p50 %7s  p99 %7s  max %7s  errors %d%s",
		r.name, r.res.throughput(), ms(r.res.quantile(0.5)), ms(r.res.quantile(0.99)), ms(r.res.max()), r.res.errors, cpu)
	if r.res.firstErr != nil {
		logf("  first error: %v", r.res.firstErr)
	}
}

// emptyRound is one round of the comparison the ingest target is set
// against: the minimal receiver, the handler baseline and ingest on a new,
// empty store, measured one after the other.
type emptyRound struct {
	minimal, handler, store result
	cycle                   string // what the store's writer did (writerCycle)
}

// runEmptyRound measures one emptyRound and reports its three rows. The
// store's row gets its ratios to this round's baselines, and its
// acknowledged ids are checked against /stats.
func runEmptyRound(ctx context.Context, o options, self string, report func(row)) (emptyRound, error) {
	var rd emptyRound
	var err error
	if rd.minimal, err = measureBaseline(ctx, o, self, baselineMinimal, "ingest, minimal receiver (HMAC + JSON only)", report, nil); err != nil {
		return rd, err
	}
	if rd.handler, err = measureBaseline(ctx, o, self, baselineHandler, "ingest, no storage (baseline)", report, &rd.minimal); err != nil {
		return rd, err
	}
	emptyURL, err := o.emptyDatabase(ctx)
	if err != nil {
		return rd, err
	}
	d, err := startDaemon(o, emptyURL)
	if err != nil {
		return rd, err
	}
	ing := newIngest(o, "empty", d.addr)
	res, cpu, cycle, shares, err := measureIngest(ctx, d, "ingest, empty store", o.conns, o.duration, ing.next)
	if err != nil {
		_ = d.stop()
		return rd, err
	}
	rd.store, rd.cycle = res, cycle
	report(row{name: res.name, res: res, rss: d.peakRSS(), cpu: cpu, shares: shares,
		ratio: res.throughput() / rd.handler.throughput(), minRatio: res.throughput() / rd.minimal.throughput()})
	if err := ing.check(d.addr, 0, res); err != nil {
		_ = d.stop()
		return rd, err
	}
	if err := d.stop(); err != nil {
		return rd, fmt.Errorf("daemon exit: %w", err)
	}
	return rd, nil
}

// printRounds prints every round of the empty-store comparison and the
// median of each column: one round's ratio moves with the machine's
// minute, the median of several much less.
func printRounds(out io.Writer, rounds []emptyRound) {
	fmt.Fprintf(out, "\nthe empty store against both baselines in %d rounds (each: the minimal receiver, the handler baseline, then ingest on a new empty store):\n\n", len(rounds))
	fmt.Fprintln(out, "| round | minimal receiver req/s | handler baseline req/s | empty store req/s | × baseline | × minimal | empty store p99 ms |")
	fmt.Fprintln(out, "|---|---:|---:|---:|---:|---:|---:|")
	overHandler := func(rd emptyRound) float64 { return rd.store.throughput() / rd.handler.throughput() }
	overMinimal := func(rd emptyRound) float64 { return rd.store.throughput() / rd.minimal.throughput() }
	for i, rd := range rounds {
		fmt.Fprintf(out, "| %d | %.0f | %.0f | %.0f | %.2f | %.2f | %s |\n", i+1, rd.minimal.throughput(), rd.handler.throughput(),
			rd.store.throughput(), overHandler(rd), overMinimal(rd), ms(rd.store.quantile(0.99)))
	}
	fmt.Fprintf(out, "| median | %.0f | %.0f | %.0f | %.2f | %.2f | %.2f |\n",
		median(rounds, func(rd emptyRound) float64 { return rd.minimal.throughput() }),
		median(rounds, func(rd emptyRound) float64 { return rd.handler.throughput() }),
		median(rounds, func(rd emptyRound) float64 { return rd.store.throughput() }),
		median(rounds, overHandler), median(rounds, overMinimal),
		median(rounds, func(rd emptyRound) float64 { return float64(rd.store.quantile(0.99).Microseconds()) / 1000 }))
}

// measureBaseline serves the baseline kind from this program (self) in a
// process of its own, measures webhook ingest against it and reports the
// row; with minimal, the row also gets its ratio to that minimal baseline.
func measureBaseline(ctx context.Context, o options, self, kind, name string, report func(row), minimal *result) (result, error) {
	p, err := startProc(self, []string{"-serve-baseline", kind, "-secret", o.secret}, nil)
	if err != nil {
		return result{}, err
	}
	ing := newIngest(o, "base-"+kind, p.addr)
	res, cpu, shares := measureShares(ctx, p, name, o.conns, o.duration, ing.next)
	r := row{name: res.name, res: res, rss: p.peakRSS(), cpu: cpu, shares: shares}
	if minimal != nil {
		r.minRatio = res.throughput() / minimal.throughput()
	}
	report(r)
	return res, p.stop()
}

// measureShares measures like measure, and also returns where the
// machine's CPU went meanwhile (cpuShares).
func measureShares(ctx context.Context, p *proc, name string, conns int, dur time.Duration, next func(worker, i int) (string, request)) (result, time.Duration, string) {
	m0 := readMachineCPU(p.cmd.Process.Pid)
	res, _, cpu := measure(ctx, p, name, conns, dur, next)
	return res, cpu, cpuShares(m0, readMachineCPU(p.cmd.Process.Pid))
}

// measureIngest measures webhook ingest like measure, and also returns what
// the daemon's store did meanwhile, from its metrics (writerCycle), and
// where the machine's CPU went (cpuShares).
func measureIngest(ctx context.Context, d *proc, name string, conns int, dur time.Duration, next func(worker, i int) (string, request)) (res result, cpu time.Duration, cycle, shares string, err error) {
	before, err := scrapeStore(d.addr)
	if err != nil {
		return result{}, 0, "", "", err
	}
	res, cpu, shares = measureShares(ctx, d, name, conns, dur, next)
	after, err := scrapeStore(d.addr)
	if err != nil {
		return result{}, 0, "", "", err
	}
	cycle = strings.TrimSpace(name) + ": " + writerCycle(before, after)
	logf("writer, %s", cycle)
	logf("machine, %s: %s", strings.TrimSpace(name), shares)
	return res, cpu, cycle, shares, nil
}

// runQueries runs the query workloads against the daemon d over the seeded
// store. The mixed load runs twice: first on the daemon as it started (every
// count of a q still to be made: the first exact count of a q that most
// rows match reads its whole index list), then again, measured as the
// steady state: the same mix, with other draws of q.
func runQueries(ctx context.Context, o options, d *proc, report func(row)) {
	q := newQueries(o, d.addr)
	cold, _, cpu := measure(ctx, d, "/messages mixed, first after start", o.queryConns, o.duration, q.nextMixed)
	report(row{name: cold.name, res: cold, rss: d.peakRSS(), cpu: cpu})
	q.round = 1
	mixed, kinds, cpu := measure(ctx, d, "/messages mixed", o.queryConns, o.duration, q.nextMixed)
	report(row{name: mixed.name, res: mixed, rss: d.peakRSS(), cpu: cpu})
	for _, k := range queryKinds {
		if r := kinds[k]; r != nil {
			report(row{name: "  " + k, res: *r})
		}
	}
	cur, _, cpu := measure(ctx, d, "/messages cursor page, anywhere", o.queryConns, o.duration, q.nextCursor)
	report(row{name: cur.name, res: cur, rss: d.peakRSS(), cpu: cpu})
	stats, _, cpu := measure(ctx, d, "/stats", o.queryConns, o.duration, q.nextStats)
	report(row{name: stats.name, res: stats, rss: d.peakRSS(), cpu: cpu})
	// The floor: a request that does no work, through the same client,
	// connections and server. Its p99 is what scheduling two busy
	// processes on the machine's cores costs any request.
	floor, _, cpu := measure(ctx, d, "/health/live (no work: the floor)", o.queryConns, o.duration, q.nextLive)
	report(row{name: floor.name, res: floor, rss: d.peakRSS(), cpu: cpu})
	// A cursor page, /stats and the floor at a fixed rate that leaves the
	// cores room: the latency of the work itself, without the queueing of a
	// saturated machine.
	if o.pacedRate > 0 {
		for _, w := range []struct {
			name string
			next func(int, int) (string, request)
		}{{"/messages cursor page, anywhere", q.nextCursor}, {"/stats", q.nextStats}, {"/health/live", q.nextLive}} {
			name := fmt.Sprintf("%s at %d req/s", w.name, o.pacedRate)
			res, _, cpu := measureAt(ctx, d, name, o.queryConns, o.pacedRate, o.duration, w.next)
			report(row{name: name, res: res, rss: d.peakRSS(), cpu: cpu})
		}
	}
}

// measure runs one closed-loop workload against the process d, as runLoad
// does, and returns too the CPU time (user and system) d used per request.
// The sharing of the machine disturbs it far less than throughput, so it is
// what compares two binaries.
func measure(ctx context.Context, d *proc, name string, conns int, dur time.Duration, next func(worker, i int) (string, request)) (result, map[string]*result, time.Duration) {
	return measureAt(ctx, d, name, conns, 0, dur, next)
}

// measureAt is measure at rate requests a second (0: a closed loop).
func measureAt(ctx context.Context, d *proc, name string, conns, rate int, dur time.Duration, next func(worker, i int) (string, request)) (result, map[string]*result, time.Duration) {
	cpu0 := d.cpuTime()
	res, kinds := runLoad(ctx, name, conns, rate, dur, next)
	cpu := d.cpuTime() - cpu0
	return res, kinds, cpu / time.Duration(max(res.requests, 1))
}

// runQueriesOnly runs only the query workloads, over the database already
// seeded: big.db in -dir, or with -postgres its big database (for profiling
// and for comparing query changes).
func runQueriesOnly(ctx context.Context, o options, report func(row)) error {
	url, err := o.bigDatabase(ctx, true)
	if err != nil {
		return err
	}
	d, err := startDaemon(o, url)
	if err != nil {
		return err
	}
	runQueries(ctx, o, d, report)
	logf("daemon peak RSS (VmHWM): %.0f MiB", d.peakRSS())
	return d.stop()
}

type row struct {
	name  string
	res   result
	rss   float64
	ratio float64 // throughput over the handler baseline's; 0 for none
	// minRatio is throughput over the minimal receiver's; 0 for none.
	minRatio float64
	cpu      time.Duration // the daemon's CPU time per request; 0 when not measured
	shares   string        // where the machine's CPU went (cpuShares); "" when not measured
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 2, 64)
}

func us(d time.Duration) string {
	return strconv.FormatInt(d.Microseconds(), 10)
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
		}
	}
	return "unknown CPU"
}

// startDaemon starts the daemon on dbURL; extraEnv adds or overrides
// environment variables.
func startDaemon(o options, dbURL string, extraEnv ...string) (*proc, error) {
	logf("starting msgsvcd on %s", dbURL)
	return startProc(o.daemon, nil, append([]string{
		"WEBHOOK_SECRET=" + o.secret, "ADDR=127.0.0.1:0", "DATABASE_URL=" + dbURL, "LOG_LEVEL=INFO",
	}, extraEnv...))
}

// ingest drives signed webhooks: new ids, and a share of resends of ids the
// same worker sent before.
type ingest struct {
	o      options
	prefix string
	url    string
	vocab  []string
	fresh  atomic.Int64 // requests with a new id answered 200
	sent   []int        // per worker: new ids so far; only that worker touches its entry
}

func newIngest(o options, prefix, addr string) *ingest {
	return &ingest{o: o, prefix: prefix, url: "http://" + addr + "/webhook", vocab: vocabulary(), sent: make([]int, o.conns)}
}

func (g *ingest) body(worker, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(worker), uint64(n)))
	word := wordPicker(r, g.vocab)
	words := make([]string, 4+r.IntN(12))
	for i := range words {
		words[i] = word()
	}
	text := strings.Join(words, " ")
	m := msgsvc.Message{
		MessageID: fmt.Sprintf("%s-w%d-%d", g.prefix, worker, n),
		From:      sender(r.IntN(senderPool)),
		To:        "+14155550100",
		TS:        time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n) * time.Second).Format(time.RFC3339),
		Text:      &text,
	}
	b, _ := json.Marshal(m)
	return b
}

func (g *ingest) next(worker, i int) (string, request) {
	// New ids count up per worker; a duplicate resends an earlier id of
	// the same worker.
	r := rand.New(rand.NewPCG(uint64(worker)<<32|uint64(i), 7))
	n := g.sent[worker]
	dup := n > 0 && r.Float64() < g.o.dupShare
	if dup {
		n = r.IntN(n)
	} else {
		g.sent[worker]++
	}
	body := g.body(worker, n)
	sig := msgsvc.Sign([]byte(g.o.secret), body)
	return "webhook", func(ctx context.Context, c *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("X-Signature", sig)
		req.Header.Set("Content-Type", "application/json")
		err = do(c, req, http.StatusOK)
		if err == nil && !dup {
			g.fresh.Add(1)
		}
		return err
	}
}

// check compares the daemon's exact total with the ids acknowledged: every
// new id answered 200 must be stored once, and nothing else.
func (g *ingest) check(addr string, before int64, res result) error {
	total, err := statsTotal(addr)
	if err != nil {
		return err
	}
	// A request cut off at the end of the run may still have committed.
	want := before + g.fresh.Load()
	logf("stored %d, acknowledged new ids %d (+%d before)", total-before, g.fresh.Load(), before)
	if res.errors == 0 && (total < want || total > want+int64(g.o.conns)) {
		return fmt.Errorf("stats total %d, want %d acknowledged (up to %d more cut off in flight)", total, want, g.o.conns)
	}
	return nil
}

// statsTotal reads total_messages from GET /stats.
func statsTotal(addr string) (int64, error) {
	resp, err := http.Get("http://" + addr + "/stats")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var st struct {
		Total int64 `json:"total_messages"`
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st.Total, err
}

// queryKinds are the parts of the mixed /messages load, in equal shares.
// "q word" searches a word drawn uniformly from the vocabulary (most are
// rare, as most words are); "q common" one of the 100 most used words;
// "q rare" a term a thousandth of the messages carry.
var queryKinds = []string{"offset page", "from", "since", "q word", "q common", "q rare", "from+q", "cursor page"}

// queries drives GET /messages and GET /stats over the seeded store.
type queries struct {
	o     options
	base  string
	vocab []string
	round uint64 // a new round draws other values
}

func newQueries(o options, addr string) *queries {
	return &queries{o: o, base: "http://" + addr, vocab: vocabulary()}
}

func (q *queries) get(path string, v url.Values) request { return getOK(q.base, path, v) }

// getOK is a GET of base+path with query v that must answer 200.
func getOK(base, path string, v url.Values) request {
	u := base + path
	if len(v) > 0 {
		u += "?" + v.Encode()
	}
	return func(ctx context.Context, c *http.Client) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		return do(c, req, http.StatusOK)
	}
}

func (q *queries) nextMixed(worker, i int) (string, request) {
	r := rand.New(rand.NewPCG(uint64(worker)<<32|uint64(i), 11+q.round))
	kind := queryKinds[(worker+i)%len(queryKinds)]
	v := url.Values{}
	word := q.vocab[r.IntN(len(q.vocab))]
	switch kind {
	case "offset page":
		v.Set("offset", strconv.Itoa(r.IntN(10_000)))
	case "from":
		v.Set("from", sender(int(float64(senderPool)*r.Float64()*r.Float64())))
	case "since":
		v.Set("since", seedStart.Add(time.Duration(r.IntN(q.o.seed))*seedStep).Format(time.RFC3339))
	case "q word":
		v.Set("q", strings.ToUpper(word))
	case "q common":
		v.Set("q", q.vocab[r.IntN(100)])
	case "q rare":
		v.Set("q", "RARE"+strconv.Itoa(1000*r.IntN(max(q.o.seed/1000, 1))+1))
	case "from+q":
		v.Set("from", sender(int(float64(senderPool)*r.Float64()*r.Float64())))
		v.Set("q", word)
	case "cursor page":
		return kind, q.cursorAt(r.IntN(max(q.o.seed, 1)))
	}
	return kind, q.get("/messages", v)
}

func (q *queries) cursorAt(i int) request {
	v := url.Values{}
	v.Set("cursor", msgsvc.EncodeCursor(seedPosition(i, q.vocab)))
	return q.get("/messages", v)
}

func (q *queries) nextCursor(worker, i int) (string, request) {
	r := rand.New(rand.NewPCG(uint64(worker)<<32|uint64(i), 13))
	return "cursor", q.cursorAt(r.IntN(max(q.o.seed, 1)))
}

func (q *queries) nextStats(int, int) (string, request) {
	return "stats", q.get("/stats", nil)
}

func (q *queries) nextLive(int, int) (string, request) {
	return "live", q.get("/health/live", nil)
}

// holdDaemon runs only webhook ingest against the seeded database for
// o.hold, for profiling the daemon from outside (perf, pprof): big.db in
// -dir, or with -postgres the benchmark's big database.
func holdDaemon(ctx context.Context, o options) error {
	url, err := o.bigDatabase(ctx, true)
	if err != nil {
		return err
	}
	d, err := startDaemon(o, url)
	if err != nil {
		return err
	}
	logf("daemon pid %d on %s", d.cmd.Process.Pid, d.addr)
	ing := newIngest(o, fmt.Sprintf("hold%d", time.Now().Unix()), d.addr)
	res, cpu, _, _, err := measureIngest(ctx, d, "ingest", o.conns, o.hold, ing.next)
	if err != nil {
		return err
	}
	logf("ingest: %.0f req/s p50 %s p99 %s p99.9 %s max %s errors %d, daemon CPU %s µs/req", res.throughput(), ms(res.quantile(0.5)), ms(res.quantile(0.99)), ms(res.quantile(0.999)), ms(res.max()), res.errors, us(cpu))
	return d.stop()
}
