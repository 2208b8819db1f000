package msgsvc

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Webhook results: the values of the result label of
// webhook_requests_total and of the result field of webhook log lines.
const (
	ResultCreated          = "created"
	ResultDuplicate        = "duplicate"
	ResultInvalidSignature = "invalid_signature"
	ResultValidationError  = "validation_error"
	ResultTooLarge         = "too_large"
	ResultNotConfigured    = "not_configured"
	ResultStoreError       = "store_error"
	ResultIgnored          = "ignored"
)

// webhookResults lists every result, so each series exists from the start.
var webhookResults = [...]string{
	ResultCreated, ResultDuplicate, ResultInvalidSignature, ResultValidationError,
	ResultTooLarge, ResultNotConfigured, ResultStoreError, ResultIgnored,
}

// unmatchedPath labels every request that matches no route, so that no client
// can grow the number of series.
const unmatchedPath = "unmatched"

// latencyBucketsMS returns the bucket bounds of request_latency_ms, from the
// contract; +Inf is implicit.
func latencyBucketsMS() []float64 { return []float64{100, 500, 1000, 2000, 5000} }

type metrics struct {
	handler  http.Handler
	requests *prometheus.CounterVec
	webhook  map[string]prometheus.Counter
	latency  *prometheus.HistogramVec
}

// newMetrics registers the handler's collectors on reg, and store's when
// the store is a prometheus.Collector.
func newMetrics(reg *prometheus.Registry, store Store) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests by matched route path (unmatched for 404 and 405) and status code.",
		}, []string{"path", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "request_latency_ms",
			Help:    "Request latency in milliseconds by matched route path.",
			Buckets: latencyBucketsMS(),
		}, []string{"path"}),
		webhook: make(map[string]prometheus.Counter, len(webhookResults)),
	}
	webhook := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "webhook_requests_total",
		Help: "POST /webhook requests by result.",
	}, []string{"result"})
	for _, r := range webhookResults {
		m.webhook[r] = webhook.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{
		m.requests, m.latency, webhook,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if c, ok := store.(prometheus.Collector); ok {
		// The caller may have registered the store on this registry
		// already: once is enough.
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !(errors.As(err, &already) && already.ExistingCollector == c) {
			return nil, fmt.Errorf("the store's collectors: %w", err)
		}
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	return m, nil
}

// observe records one finished request.
func (m *metrics) observe(path string, status int, latencyMS float64) {
	m.requests.WithLabelValues(path, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(path).Observe(latencyMS)
}
