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
// cycle from the daemon's metrics. It asks for two rounds of the empty
// store's comparison, so the table of rounds has both and their median.
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
		rounds:     2,
	}
	var out bytes.Buffer
	if err := runBench(context.Background(), o, &out); err != nil {
		t.Fatalf("runBench: %v\n%s", err, out.String())
	}
	text := out.String()
	rows := map[string]bool{}
	cellsOf := map[string][]string{}
	// Every store's ingest has both ratios; the handler baseline has its
	// ratio to the minimal receiver.
	ratios := map[string][]int{
		"ingest, no storage (baseline)": {4},
		"ingest, empty store":           {3, 4},
		"ingest, 3000 stored":           {3, 4},
	}
	table, roundsText, ok := strings.Cut(text, "the empty store against both baselines in 2 rounds")
	if !ok {
		t.Fatalf("no table of rounds:\n%s", text)
	}
	for line := range strings.Lines(table) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 11 || strings.TrimSpace(cells[1]) == "workload" || strings.HasPrefix(cells[1], "---") {
			continue
		}
		name := strings.TrimSpace(cells[1])
		rows[name] = true
		cellsOf[name] = cells
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
	// The ingest at scale is compared with the median baselines of the
	// rounds.
	if minimal, handler := checkRounds(t, roundsText, 2); minimal > 0 && handler > 0 {
		cells := cellsOf["ingest, 3000 stored"]
		perSec, _ := strconv.ParseFloat(strings.TrimSpace(cells[2]), 64)
		for _, c := range []struct {
			col  int
			base float64
		}{{3, handler}, {4, minimal}} {
			got, _ := strconv.ParseFloat(strings.TrimSpace(cells[c.col]), 64)
			if want := perSec / c.base; got < want-0.006 || got > want+0.006 {
				t.Errorf("ingest, 3000 stored: ratio column %d is %.2f, want %.2f (%.0f req/s over the median %.0f)", c.col, got, want, perSec, c.base)
			}
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

// checkRounds checks the table of rounds: one row for each round, with
// every throughput and ratio positive and each ratio that of its row's
// throughputs, then the median row. It returns the median row's minimal
// receiver and handler baseline throughputs.
func checkRounds(t *testing.T, text string, n int) (minimal, handler float64) {
	t.Helper()
	var got []string
	for line := range strings.Lines(text) {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) != 9 || strings.HasPrefix(cells[1], "---") || strings.TrimSpace(cells[1]) == "round" {
			continue
		}
		label := strings.TrimSpace(cells[1])
		got = append(got, label)
		v := make([]float64, 6)
		for i := range v {
			f, err := strconv.ParseFloat(strings.TrimSpace(cells[i+2]), 64)
			if err != nil || f <= 0 {
				t.Errorf("round %s: column %d is %q", label, i+2, cells[i+2])
			}
			v[i] = f
		}
		if label == "median" {
			minimal, handler = v[0], v[1]
			continue
		}
		minimal, handler, store := v[0], v[1], v[2]
		if d := store/handler - v[3]; d < -0.006 || d > 0.006 {
			t.Errorf("round %s: × baseline %.2f, want %.2f", label, v[3], store/handler)
		}
		if d := store/minimal - v[4]; d < -0.006 || d > 0.006 {
			t.Errorf("round %s: × minimal %.2f, want %.2f", label, v[4], store/minimal)
		}
	}
	want := []string{}
	for i := range n {
		want = append(want, strconv.Itoa(i+1))
	}
	want = append(want, "median")
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rows of the table of rounds: %q, want %q", got, want)
	}
	return minimal, handler
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{0.31, 0.38, 0.37, 0.37}, 0.37},
	} {
		if got := median(tc.in, func(f float64) float64 { return f }); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
