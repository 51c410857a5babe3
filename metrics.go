package main

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kontextbot/bot"
	"kontextbot/kontext"
)

// metrics are the bot's Prometheus metrics, on a registry of their own.
type metrics struct {
	reg       *prometheus.Registry
	jobs      *prometheus.CounterVec
	delivered *prometheus.CounterVec
	spend     *prometheus.CounterVec
	provider  *prometheus.HistogramVec
	queueWait prometheus.Histogram
	requests  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	limited   prometheus.Counter
	budget    prometheus.Gauge
}

// Label values known in advance: every series with these labels exists from
// the start, at zero, so a dashboard or an alert sees it before its first
// event (a rate over a series that does not exist yet is no data, not 0).
var (
	jobKinds    = []bot.Kind{bot.KindImagine, bot.KindEdit, bot.KindReroll}
	jobOutcomes = []string{"delivered", "failed", "refused", "canceled", "kept"}
	providerOps = []string{"create", "poll", "download", "images"}
)

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kontextbot_jobs_total", Help: "Jobs ended, by kind and outcome (delivered, failed, refused, canceled, kept).",
		}, []string{"kind", "outcome"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kontextbot_images_delivered_total", Help: "Images delivered, by platform.",
		}, []string{"platform"}),
		spend: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kontextbot_spend_usd_total", Help: "Spend on delivered images in USD, by model.",
		}, []string{"model"}),
		provider: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kontextbot_provider_seconds", Help: "Time the provider took to make an image, by outcome.",
			Buckets: []float64{0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 120, 300},
		}, []string{"outcome"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kontextbot_queue_wait_seconds", Help: "Time jobs waited for a slot.",
			Buckets: []float64{0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600},
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kontextbot_provider_requests_total", Help: "HTTP requests to the provider, by operation and status code (0: no answer).",
		}, []string{"op", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kontextbot_provider_retries_total", Help: "Provider requests retried, by operation.",
		}, []string{"op"}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kontextbot_provider_429_total", Help: "429 Too Many Requests answers from the provider.",
		}),
		budget: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kontextbot_workspace_budget_usd", Help: "KONTEXT_WORKSPACE_BUDGET: spend allowed per workspace per UTC month in USD (0: no limit).",
		}),
	}
	b := readBuildInfo()
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kontextbot_build_info", Help: "Always 1; the labels say what this binary was built from.",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion},
	})
	info.Set(1)
	m.reg.MustRegister(m.jobs, m.delivered, m.spend, m.provider, m.queueWait, m.requests, m.retries, m.limited, m.budget, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, k := range jobKinds {
		for _, o := range jobOutcomes {
			m.jobs.WithLabelValues(string(k), o)
		}
	}
	for _, o := range jobOutcomes {
		m.provider.WithLabelValues(o)
	}
	for _, model := range kontext.ModelNames() { // after kontext.Restrict (KONTEXT_MODELS)
		m.spend.WithLabelValues(model)
	}
	for _, op := range providerOps {
		m.retries.WithLabelValues(op)
		m.requests.WithLabelValues(op, "200")
	}
	return m
}

// watchPlatform exports whether the platform is connected, and starts its
// count of delivered images at zero.
func (m *metrics) watchPlatform(name string, healthy func() error) {
	m.delivered.WithLabelValues(name)
	if healthy == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kontextbot_platform_up", Help: "1 while the chat platform is connected, else 0.",
		ConstLabels: prometheus.Labels{"platform": name},
	}, func() float64 {
		if healthy() != nil {
			return 0
		}
		return 1
	}))
}

// watchQueue exports the queue's waiting jobs and busy slots.
func (m *metrics) watchQueue(q *kontext.Queue) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kontextbot_queue_waiting", Help: "Jobs waiting for a slot."},
			func() float64 { return float64(q.Stats().Waiting) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kontextbot_slots_busy", Help: "Provider slots running a job."},
			func() float64 { return float64(q.Stats().Running) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kontextbot_slots", Help: "Provider slots in all."},
			func() float64 { return float64(q.Stats().Slots) }),
	)
}

// attempt records one HTTP request to the provider.
func (m *metrics) attempt(a kontext.Attempt) {
	m.requests.WithLabelValues(a.Op, strconv.Itoa(a.Status)).Inc()
	if a.Retry {
		m.retries.WithLabelValues(a.Op).Inc()
	}
	if a.Status == http.StatusTooManyRequests {
		m.limited.Inc()
	}
}

// jobEnd records a job's end.
func (m *metrics) jobEnd(e bot.JobEnd) {
	m.jobs.WithLabelValues(string(e.Kind), e.Outcome).Inc()
	m.queueWait.Observe(e.Wait.Seconds())
	if e.Provider > 0 {
		m.provider.WithLabelValues(e.Outcome).Observe(e.Provider.Seconds())
	}
	if e.Outcome == "delivered" {
		m.delivered.WithLabelValues(e.Platform).Inc()
		m.spend.WithLabelValues(e.Model).Add(e.USD)
	}
}

// handler serves the metrics in Prometheus's text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
