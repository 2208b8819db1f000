// Command msgsvc-bench measures msgsvcd end to end over real HTTP on this
// machine and prints a table of throughput and latency per workload.
//
// It builds nothing itself: give it the daemon binary with -daemon. In one run
// it measures
//   - two baselines that store nothing: a minimal receiver that only checks
//     the HMAC and decodes the JSON (what the targets are a share
//     of), and the msgsvc handler on a store that keeps nothing, so HMAC,
//     JSON, validation, logging and metrics cost the same as in the daemon;
//   - signed webhook ingest on an empty store, at -conns connections, with a
//     share of duplicates;
//   - the same after seeding -seed messages straight into the database;
//   - a mixed GET /messages load and GET /stats over the seeded store;
//
// and prints each ingest against both baselines, because only ratios from one run on
// a shared machine compare. The daemon's peak RSS (VmHWM) is read from /proc.
//
//	go build -o /tmp/msgsvcd ./cmd/msgsvcd
//	go run ./cmd/msgsvc-bench -daemon /tmp/msgsvcd -seed 1000000
//
// With -soak it runs the long checks instead: a mixed load (signed webhooks
// with duplicates and a few bad ones, every kind of GET /messages including
// cursor walks, /stats, the health probes and /metrics) on a fresh database
// for the given time, sampling the daemon's RSS, goroutines and open file
// descriptors every -sample, with a verdict on their flatness; then a flood
// of -flood idle connections against a daemon with MAX_CONNECTIONS=-flood-max
// (-flood 0 skips it; -flood-only runs only the flood).
//
//	go run ./cmd/msgsvc-bench -daemon /tmp/msgsvcd -soak 10m -conns 4 -query-conns 4 -rate 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

type options struct {
	daemon      string
	dir         string
	seed        int
	conns       int
	queryConns  int
	duration    time.Duration
	dupShare    float64
	secret      string
	reuseSeed   bool
	postgres    string
	hold        time.Duration
	soak        time.Duration
	sample      time.Duration
	rate        int
	pacedRate   int
	maxGrowth   float64
	flood       int
	floodMax    int
	floodHold   time.Duration
	floodOnly   bool
	queriesOnly bool
	rounds      int    // of the baselines and the empty store's ingest
	baseline    string // internal: serve this baseline (baselineHandler, baselineMinimal)
	addr        string
}

func main() {
	var o options
	flag.StringVar(&o.daemon, "daemon", "", "path to a built msgsvcd binary (required)")
	flag.StringVar(&o.dir, "dir", "", "folder for the benchmark databases (default: a new temporary folder, removed afterwards)")
	flag.IntVar(&o.seed, "seed", 1_000_000, "messages to seed before the at-scale workloads")
	flag.IntVar(&o.conns, "conns", 64, "connections for webhook ingest")
	flag.IntVar(&o.queryConns, "query-conns", 8, "connections for the query workloads")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long each workload runs")
	flag.Float64Var(&o.dupShare, "dup", 0.1, "share of webhooks that resend an id already sent")
	flag.StringVar(&o.secret, "secret", "bench-secret", "webhook secret")
	flag.StringVar(&o.postgres, "postgres", "", "a postgres:// URL of a role that may create databases: run the store workloads on new databases there ("+pgEmptyDatabase+", "+pgBigDatabase+") instead of SQLite files in -dir")
	flag.BoolVar(&o.reuseSeed, "reuse-seed", false, "reuse big.db already seeded in -dir instead of seeding again")
	flag.DurationVar(&o.hold, "ingest-only", 0, "only drive webhook ingest against big.db in -dir (with -postgres, its big database) for this long (for profiling)")
	flag.DurationVar(&o.soak, "soak", 0, "run the soak for this long instead of the benchmark, then the connection flood")
	flag.DurationVar(&o.sample, "sample", 10*time.Second, "soak: how often to sample the daemon")
	flag.IntVar(&o.rate, "rate", 0, "soak: at most this many requests a second from all connections together (0: no limit)")
	flag.IntVar(&o.pacedRate, "paced-rate", 1000, "also measure cursor pages, /stats and /health/live at this many requests a second, latency counted from each request's scheduled start (0: skip)")
	flag.Float64Var(&o.maxGrowth, "max-growth", 0.10, "soak: largest growth of the median RSS from the second quarter of the soak to the last that counts as flat (0.10 is 10%)")
	flag.IntVar(&o.flood, "flood", 2000, "soak: idle connections the connection flood opens (0: no flood)")
	flag.IntVar(&o.floodMax, "flood-max", 256, "soak: MAX_CONNECTIONS of the daemon under the flood")
	flag.DurationVar(&o.floodHold, "flood-hold", 20*time.Second, "soak: how long the flood holds its connections")
	flag.IntVar(&o.rounds, "rounds", 1, "measure the two baselines and ingest on an empty store this many times in turn, and print each round's ratios and their median (the table shows the first round)")
	flag.BoolVar(&o.queriesOnly, "queries-only", false, "only run the query workloads against the database already seeded: big.db in -dir, or with -postgres its big database")
	flag.BoolVar(&o.floodOnly, "flood-only", false, "run only the connection flood")
	flag.StringVar(&o.baseline, "serve-baseline", "", "internal: serve a no-storage baseline (handler or minimal) and exit on SIGTERM")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:0", "internal: listen address of -serve-baseline")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if o.baseline != "" {
		err = serveBaseline(ctx, o.baseline, o.addr, o.secret, os.Stdout)
	} else {
		err = runBench(ctx, o, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "msgsvc-bench:", err)
		os.Exit(1)
	}
}

// logf prints progress to stderr, so stdout keeps only the results.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}
