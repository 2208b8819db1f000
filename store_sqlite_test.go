//go:build !nosqlstore

package msgsvc_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/msgsvc/msgsvc"
	"github.com/msgsvc/msgsvc/internal/pgtest"
	"github.com/msgsvc/msgsvc/sqlstore"
)

// The package's tests run on sqlstore, SQLite in memory or Postgres. Built
// with the tag nosqlstore they run on internal/memstore instead
// (store_mem_test.go): the fuzz targets build so, because a fuzz build
// instruments every package in the test binary, and SQLite is most of it.

// openTestStore opens a fresh store, SQLite in memory or, in the Postgres
// run, a Postgres schema, and closes it when the test ends.
func openTestStore(tb testing.TB) *sqlstore.DB {
	tb.Helper()
	url := "sqlite://:memory:"
	if pgtest.Postgres() {
		url = pgtest.URL(tb)
	}
	st, err := sqlstore.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("sqlstore.Open: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// TestStoreMetrics: a Store that is a prometheus.Collector, as sqlstore's
// is, has its metrics on the handler's registry; two handlers over one
// store each show them; a registry that already holds the store is fine,
// and one holding a different collector of the same name is refused.
func TestStoreMetrics(t *testing.T) {
	st := openTestStore(t)
	handler := func(t *testing.T, reg *prometheus.Registry) *env {
		t.Helper()
		h, err := msgsvc.New(msgsvc.Config{Store: st, Secret: testSecret, Logger: msgsvc.NewLogger(io.Discard, slog.LevelInfo), Registry: reg})
		if err != nil {
			t.Fatalf("msgsvc.New: %v", err)
		}
		return &env{h: h, secret: testSecret}
	}
	a, b := handler(t, nil), handler(t, nil)
	if rec := a.post(t, body(t, map[string]any{"message_id": "sm-1", "from": "+12", "to": "+13", "ts": "2025-01-15T10:00:00Z"})); rec.Code != http.StatusOK {
		t.Fatalf("webhook: %d %s", rec.Code, rec.Body)
	}
	for name, e := range map[string]*env{"a": a, "b": b} {
		m := e.metricsText(t)
		wantMetric(t, m, "store_batch_messages_sum", 1)
		wantMetric(t, m, "store_insert_seconds_count", 1)
		wantMetric(t, m, "store_failed_batches_total", 0)
		if t.Failed() {
			t.Fatalf("handler %s:\n%s", name, m)
		}
	}

	t.Run("store registered already", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(st)
		m := handler(t, reg).metricsText(t)
		if n := strings.Count(m, "# TYPE store_batch_messages "); n != 1 {
			t.Errorf("store_batch_messages described %d times", n)
		}
	})
	t.Run("a clashing collector is refused", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "store_failed_batches_total", Help: "not the store's"}))
		_, err := msgsvc.New(msgsvc.Config{Store: st, Registry: reg})
		if err == nil || !strings.Contains(err.Error(), "store") {
			t.Errorf("New = %v, want an error about the store's collectors", err)
		}
	})
}
