package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// storeSample is the daemon's store metrics at one moment, by series name
// (only series without labels: the store's are).
type storeSample map[string]float64

// scrapeStore reads the store_ series of the daemon's GET /metrics.
func scrapeStore(addr string) (storeSample, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseStoreSample(resp.Body)
}

// parseStoreSample picks the unlabelled store_ series out of Prometheus text.
func parseStoreSample(r io.Reader) (storeSample, error) {
	s := storeSample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "store_") || strings.Contains(name, "{") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		s[name] = v
	}
	return s, sc.Err()
}

// writerCycle describes what the store's writer did between samples a and
// b: its batches, and the mean of each step of the group commit. Steps the
// store does not have (the WAL fsync and checkpoints on Postgres) are left
// out.
func writerCycle(a, b storeSample) string {
	delta := func(name string) (float64, bool) {
		v, ok := b[name]
		return v - a[name], ok
	}
	batches, _ := delta("store_batch_messages_count")
	msgs, _ := delta("store_batch_messages_sum")
	if batches == 0 {
		return "no batches"
	}
	parts := []string{fmt.Sprintf("%.0f batches of %.1f messages", batches, msgs/batches)}
	for _, step := range []struct{ label, name string }{
		{"commit", "store_commit_seconds"},
		{"WAL fsync", "store_wal_sync_seconds"},
		{"wait for the syncer", "store_sync_handoff_seconds"},
		{"Insert call", "store_insert_seconds"},
		{"checkpoint", "store_checkpoint_seconds"},
		{"hold", "store_checkpoint_hold_seconds"},
	} {
		n, ok := delta(step.name + "_count")
		sum, _ := delta(step.name + "_sum")
		if !ok || n == 0 {
			continue
		}
		s := fmt.Sprintf("mean %s %.2f ms", step.label, 1000*sum/n)
		switch step.name {
		case "store_checkpoint_seconds":
			s = fmt.Sprintf("%.0f checkpoints of %.1f ms", n, 1000*sum/n)
		case "store_checkpoint_hold_seconds":
			s = fmt.Sprintf("the writer held %.0f times for the WAL to start over, %.1f ms each", n, 1000*sum/n)
		}
		parts = append(parts, s)
	}
	if n, _ := delta("store_failed_batches_total"); n > 0 {
		parts = append(parts, fmt.Sprintf("%.0f failed batches", n))
	}
	if lag, ok := b["store_index_lag_messages"]; ok {
		parts = append(parts, fmt.Sprintf("index lag at the end %.0f messages", lag))
	}
	return strings.Join(parts, "; ")
}
