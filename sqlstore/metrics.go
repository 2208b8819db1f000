package sqlstore

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// storeMetrics are the store's own collectors, one set per DB: the group
// commit's batches and their commits, the WAL fsyncs and checkpoints, the
// search index's lag. msgsvc.New registers them on the handler's registry
// (the DB is a prometheus.Collector), so GET /metrics shows what the writer
// is doing under load without an instrumented build.
type storeMetrics struct {
	batch      prometheus.Histogram
	commit     prometheus.Histogram
	insert     prometheus.Histogram
	failed     prometheus.Counter
	walSync    prometheus.Histogram   // nil where commits need no WAL fsync of ours
	walSyncs   *prometheus.CounterVec // by how the fsync was made; nil where commits need no WAL fsync of ours
	handoff    prometheus.Histogram   // nil where commits need no WAL fsync of ours
	checkpoint prometheus.Histogram   // nil without a checkpointer
	hold       prometheus.Histogram   // nil without a checkpointer
	all        []prometheus.Collector
}

// secondsBuckets are the bucket bounds of the store's duration histograms:
// 50 µs to about 1.6 s, doubling.
func secondsBuckets() []float64 { return prometheus.ExponentialBuckets(50e-6, 2, 16) }

// newStoreMetrics returns the collectors of a store: on SQLite (sqlite set)
// the index lag too, and with a database file (file set) the WAL fsyncs and
// checkpoints.
func newStoreMetrics(db *DB, sqlite, file bool) *storeMetrics {
	m := &storeMetrics{
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_batch_messages",
			Help:    "Messages per write transaction: the store's single writer commits every insert waiting in its queue together (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_commit_seconds",
			Help:    "Time the writer spends on one batch's transaction, from BEGIN to COMMIT; on SQLite the WAL fsync that follows is store_wal_sync_seconds.",
			Buckets: secondsBuckets(),
		}),
		insert: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_insert_seconds",
			Help:    "Time one Insert call takes, to its answer: the wait in the writer's queue, the commit and the WAL fsync.",
			Buckets: secondsBuckets(),
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "store_failed_batches_total",
			Help: "Write transactions that failed; every Insert in such a batch failed and none of its messages was stored.",
		}),
	}
	m.all = []prometheus.Collector{m.batch, m.commit, m.insert, m.failed}
	if sqlite {
		m.all = append(m.all, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "store_index_lag_messages",
			Help: "Stored messages not yet in the search index; q searches test them one by one, so a growing lag slows searches, never falsifies them.",
		}, func() float64 { return float64(max(0, db.durable.Load()-db.indexedTo.Load())) }))
	}
	if file {
		m.walSync = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_wal_sync_seconds",
			Help:    "Duration of each fsync of the SQLite WAL; a batch's callers are answered after the one that follows its commit.",
			Buckets: secondsBuckets(),
		})
		m.walSyncs = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "store_wal_syncs_total",
			Help: "WAL fsyncs by how they were made: via=\"aio\" submitted through Linux AIO, so the syncer parks while the kernel syncs; via=\"fsync\" a plain fsync, where the kernel refuses AIO.",
		}, []string{"via"})
		for _, via := range []string{"aio", "fsync"} {
			m.walSyncs.WithLabelValues(via)
		}
		m.handoff = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_sync_handoff_seconds",
			Help:    "Time the writer waits, after each commit, to hand the batch to the WAL syncer while the syncer finishes the batch before: the writer's throttle, which lets the next batch gather.",
			Buckets: secondsBuckets(),
		})
		m.checkpoint = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_checkpoint_seconds",
			Help:    "Duration of each checkpoint that copies the SQLite WAL back into the database file, off the writer's path.",
			Buckets: secondsBuckets(),
		})
		m.hold = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "store_checkpoint_hold_seconds",
			Help:    "How long the writer is held, about once a WAL cycle, for the checkpoint that lets the SQLite WAL start over (the database file is synced just before it, with the writer going on).",
			Buckets: secondsBuckets(),
		})
		m.all = append(m.all, m.walSync, m.walSyncs, m.handoff, m.checkpoint, m.hold)
	}
	return m
}

// Describe sends the descriptors of the store's metrics. With Collect it
// makes the DB a prometheus.Collector, which msgsvc.New registers on the
// handler's registry.
func (db *DB) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range db.metrics.all {
		c.Describe(ch)
	}
}

// Collect sends the store's metrics: store_batch_messages,
// store_commit_seconds, store_insert_seconds and store_failed_batches_total;
// on SQLite store_index_lag_messages; with a database file
// store_wal_sync_seconds, store_wal_syncs_total, store_sync_handoff_seconds,
// store_checkpoint_seconds and store_checkpoint_hold_seconds.
func (db *DB) Collect(ch chan<- prometheus.Metric) {
	for _, c := range db.metrics.all {
		c.Collect(ch)
	}
}

var _ prometheus.Collector = (*DB)(nil)

// since returns the seconds elapsed since t, for a histogram.
func since(t time.Time) float64 { return time.Since(t).Seconds() }
