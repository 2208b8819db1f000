package main

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msgsvc/msgsvc/internal/buildtest"
)

// TestMain lets the test binary stand in for msgsvc-bench when runBench
// starts "itself" with -serve-baseline for the no-storage baseline.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve-baseline" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestBenchEndToEnd runs the whole benchmark, small and brief, against the
// real daemon, as the README's command does: every workload answers without
// an error, the ingest checks against /stats hold (runBench fails
// otherwise), and the output has every row of the table and the writer's
// cycle from the daemon's metrics.
func TestBenchEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the daemon")
	}
	daemon, err := buildtest.Build(t.TempDir(), "../msgsvcd", "msgsvcd")
	if err != nil {
		t.Fatal(err)
	}
	o := options{
		daemon:     daemon,
		dir:        t.TempDir(),
		seed:       3000,
		conns:      8,
		queryConns: 2,
		duration:   300 * time.Millisecond,
		dupShare:   0.1,
		secret:     "bench-test-secret",
		pacedRate:  50,
	}
	var out bytes.Buffer
	if err := runBench(context.Background(), o, &out); err != nil {
		t.Fatalf("runBench: %v\n%s", err, out.String())
	}
	text := out.String()
	rows := map[string]bool{}
	// Every store's ingest has both ratios; the handler baseline has its
	// ratio to the minimal receiver.
	ratios := map[string][]int{
		"ingest, no storage (baseline)": {4},
		"ingest, empty store":           {3, 4},
		"ingest, 3000 stored":           {3, 4},
	}
	for line := range strings.Lines(text) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 11 || strings.TrimSpace(cells[1]) == "workload" || strings.HasPrefix(cells[1], "---") {
			continue
		}
		name := strings.TrimSpace(cells[1])
		rows[name] = true
		for _, c := range ratios[name] {
			if v, err := strconv.ParseFloat(strings.TrimSpace(cells[c]), 64); err != nil || v <= 0 {
				t.Errorf("%s: ratio column %d is %q", name, c, cells[c])
			}
		}
		if errs := strings.TrimSpace(cells[9]); errs != "0" {
			t.Errorf("%s: %s errors", name, errs)
		}
	}
	for _, name := range []string{
		"ingest, minimal receiver (HMAC + JSON only)", "ingest, no storage (baseline)", "ingest, empty store", "ingest, 3000 stored",
		"/messages mixed, first after start", "/messages mixed", "offset page", "from", "since",
		"q word", "q common", "q rare", "from+q", "cursor page", "/messages cursor page, anywhere",
		"/stats", "/health/live (no work: the floor)", "/messages cursor page, anywhere at 50 req/s",
		"/stats at 50 req/s", "/health/live at 50 req/s",
	} {
		if !rows[name] {
			t.Errorf("no row %q", name)
		}
	}
	for _, workload := range []string{"ingest, empty store", "ingest, 3000 stored"} {
		if !strings.Contains(text, "- "+workload+": ") {
			t.Errorf("no writer's cycle for %s", workload)
		}
	}
	if !strings.Contains(text, "mean WAL fsync") || !strings.Contains(text, "batches of") {
		t.Errorf("the writer's cycle lacks its batches or fsyncs")
	}
	_, machine, _ := strings.Cut(text, "the machine's CPU during each ingest")
	for _, workload := range []string{"ingest, minimal receiver (HMAC + JSON only)", "ingest, no storage (baseline)", "ingest, empty store", "ingest, 3000 stored"} {
		if !strings.Contains(machine, "- "+workload+": server ") {
			t.Errorf("no CPU shares for %s", workload)
		}
	}
	if t.Failed() {
		t.Logf("output:\n%s", text)
	}
}
