package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
)

// gather collects db's metrics through a pedantic registry, which also
// checks that Collect sends only what Describe announced, and returns them
// by name.
func gather(t *testing.T, db *DB) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(db); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	return byName
}

// histogram returns the sample count and sum of the histogram name.
func histogram(t *testing.T, fams map[string]*dto.MetricFamily, name string) (count uint64, sum float64) {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no %s", name)
	}
	h := f.GetMetric()[0].GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}

// value returns the value of the counter or gauge name.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no %s", name)
	}
	m := f.GetMetric()[0]
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestStoreMetricsNames: each backend exposes the metrics that mean
// something for it, and no others.
func TestStoreMetricsNames(t *testing.T) {
	common := []string{"store_batch_messages", "store_commit_seconds", "store_failed_batches_total", "store_insert_seconds"}
	for _, c := range []struct {
		name  string
		open  func(t *testing.T) *DB
		extra []string
	}{
		{"file", func(t *testing.T) *DB { db, _ := openFile(t); return db },
			[]string{"store_checkpoint_hold_seconds", "store_checkpoint_seconds", "store_index_lag_messages", "store_sync_handoff_seconds", "store_wal_sync_seconds", "store_wal_syncs_total"}},
		{"memory", func(t *testing.T) *DB { return openURL(t, "sqlite:///:memory:") },
			[]string{"store_index_lag_messages"}},
		{"postgres", func(t *testing.T) *DB { return openURL(t, pgtest.URL(t)) }, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := c.open(t)
			var names []string
			for name := range gather(t, db) {
				names = append(names, name)
			}
			slices.Sort(names)
			want := slices.Sorted(slices.Values(append(slices.Clone(common), c.extra...)))
			if !slices.Equal(names, want) {
				t.Errorf("metrics %v, want %v", names, want)
			}
		})
	}
}

// TestStoreMetricsCountWrites: after concurrent inserts with duplicates, the
// batches hold every message sent, each Insert is timed once, and each
// batch has one commit and one WAL fsync.
func TestStoreMetricsCountWrites(t *testing.T) {
	db, _ := openFile(t)
	const callers = 64
	inParallel(t, callers, func(c int) error {
		// Every other caller also resends its neighbour's id.
		msgs := []msgsvc.Message{testMessage(fmt.Sprintf("m%02d", c))}
		if c%2 == 1 {
			msgs = append(msgs, testMessage(fmt.Sprintf("m%02d", c-1)))
		}
		_, err := db.Insert(context.Background(), msgs)
		return err
	})
	fams := gather(t, db)
	batches, sent := histogram(t, fams, "store_batch_messages")
	if want := float64(callers + callers/2); sent != want {
		t.Errorf("batches held %v messages, want the %v sent", sent, want)
	}
	if batches < 1 || batches > callers {
		t.Errorf("%d batches for %d inserts", batches, callers)
	}
	if n, _ := histogram(t, fams, "store_insert_seconds"); n != callers {
		t.Errorf("%d inserts timed, want %d", n, callers)
	}
	if n, _ := histogram(t, fams, "store_commit_seconds"); n != batches {
		t.Errorf("%d commits timed, want one a batch (%d)", n, batches)
	}
	if n, _ := histogram(t, fams, "store_wal_sync_seconds"); n != batches {
		t.Errorf("%d WAL fsyncs timed, want one a batch (%d)", n, batches)
	}
	// The writer times a hand-off once the syncer has taken the batch, so
	// the last one may be recorded just after its callers have their answer.
	waitFor(t, "every hand-off to the syncer to be timed", func() bool {
		n, _ := histogram(t, gather(t, db), "store_sync_handoff_seconds")
		return n == batches
	})
	if v := value(t, fams, "store_failed_batches_total"); v != 0 {
		t.Errorf("store_failed_batches_total = %v", v)
	}
}

// TestStoreMetricsFailedBatch: a batch that fails counts once, and its
// insert is still timed.
func TestStoreMetricsFailedBatch(t *testing.T) {
	db := openBoom(t)
	ctx := context.Background()
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("ok")}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Insert(ctx, []msgsvc.Message{testMessage("boom")}); !errors.Is(err, msgsvc.ErrUnavailable) {
		t.Fatalf("Insert(boom) = %v, want ErrUnavailable", err)
	}
	fams := gather(t, db)
	if v := value(t, fams, "store_failed_batches_total"); v != 1 {
		t.Errorf("store_failed_batches_total = %v, want 1", v)
	}
	if n, _ := histogram(t, fams, "store_insert_seconds"); n != 2 {
		t.Errorf("%d inserts timed, want 2", n)
	}
	if n, _ := histogram(t, fams, "store_wal_sync_seconds"); n != 1 {
		t.Errorf("%d WAL fsyncs, want 1: a failed batch is not synced", n)
	}
}

// TestStoreMetricsIndexLag: rows the indexer has not reached count as lag
// until it indexes them; a reopened store starts from what its index file
// holds.
func TestStoreMetricsIndexLag(t *testing.T) {
	url := fileURL(t, filepath.Join(t.TempDir(), "app.db"))
	db, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	// Holding the indexer's only connection keeps it from indexing.
	conn, err := db.idx.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 10
	msgs := make([]msgsvc.Message, n)
	for i := range msgs {
		msgs[i] = testMessage(fmt.Sprintf("lag%d", i))
	}
	if _, err := db.Insert(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if lag := value(t, gather(t, db), "store_index_lag_messages"); lag != n {
		t.Errorf("lag with the indexer held = %v, want %d", lag, n)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the indexer to catch up", func() bool {
		return value(t, gather(t, db), "store_index_lag_messages") == 0
	})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = openURL(t, url)
	if lag := value(t, gather(t, db), "store_index_lag_messages"); lag != 0 {
		t.Errorf("lag after reopening = %v, want 0", lag)
	}
}
