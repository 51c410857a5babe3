package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"kontextbot/platforms/discord"
	"kontextbot/store/postgres"
)

// sharedScrapeTimeout bounds the database query behind the shared queue's
// metrics at each scrape.
const sharedScrapeTimeout = 2 * time.Second

// setupReplica wires what running as one of several replicas needs: the
// replica's info metric; and, on PostgreSQL, the shared queue's metrics
// as the database sees them and the Discord gateway's leases. On bbolt the
// leaser is nil (this process holds every shard). Call the returned func
// after the platforms are closed.
func setupReplica(cfg config, a *app, log *slog.Logger) (discord.Leaser, func()) {
	pg, ok := a.db.(*postgres.DB)
	backend := "bbolt"
	if ok {
		backend = "postgres"
	}
	a.met.replicaInfo(cfg.ReplicaID, backend)
	if !ok {
		return nil, func() {}
	}
	q := pg.Queue(cfg.ReplicaID, postgres.QueueOptions{Slots: cfg.Slots, Pools: cfg.Pools, UserRunning: cfg.UserRunning,
		UserWaiting: cfg.UserWaiting, MaxWaiting: cfg.QueueMax})
	a.met.watchSharedQueue(func(ctx context.Context) (sharedQueueStats, error) {
		st, err := q.Stats(ctx)
		return sharedQueueStats{Slots: st.Slots, Running: st.Running, Waiting: st.Waiting}, err
	}, sharedScrapeTimeout, log)
	leases := pg.Leases(postgres.LeaseOptions{Check: cfg.GatewayCheck, Replica: cfg.ReplicaID,
		Logger: log.With("component", "leases")})
	return leases, func() { leases.Close() }
}

// sharedQueueStats is the shared queue as the database sees it.
type sharedQueueStats struct{ Slots, Running, Waiting int }

// replicaInfo exports which replica this process is:
// kontextbot_replica_info{replica, backend} 1.
func (m *metrics) replicaInfo(id, backend string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kontextbot_replica_info", Help: "Always 1: this process's replica id (KONTEXT_REPLICA_ID or the host name) and store backend.",
	}, []string{"replica", "backend"})
	g.WithLabelValues(id, backend).Set(1)
	m.reg.MustRegister(g)
}

// watchSharedQueue exports the shared queue across every replica, read
// from the database at each scrape within timeout. When the database does
// not answer, only kontextbot_shared_queue_up 0 is reported (the rest of
// /metrics still is).
func (m *metrics) watchSharedQueue(stats func(context.Context) (sharedQueueStats, error), timeout time.Duration, log *slog.Logger) {
	m.reg.MustRegister(&sharedQueueCollector{stats: stats, timeout: timeout, log: log})
}

var (
	sharedUpDesc = prometheus.NewDesc("kontextbot_shared_queue_up",
		"1 when the shared queue's figures were read from the database at this scrape, else 0.", nil, nil)
	sharedWaitingDesc = prometheus.NewDesc("kontextbot_shared_queue_waiting",
		"Jobs waiting for a slot in the shared queue, across every replica.", nil, nil)
	sharedBusyDesc = prometheus.NewDesc("kontextbot_shared_slots_busy",
		"Provider slots running a job, across every replica.", nil, nil)
	sharedSlotsDesc = prometheus.NewDesc("kontextbot_shared_slots",
		"Provider slots of the API key, shared by every replica.", nil, nil)
)

// sharedQueueCollector reads the shared queue's figures on scrape.
type sharedQueueCollector struct {
	stats   func(context.Context) (sharedQueueStats, error)
	timeout time.Duration
	log     *slog.Logger
}

func (c *sharedQueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sharedUpDesc
	ch <- sharedWaitingDesc
	ch <- sharedBusyDesc
	ch <- sharedSlotsDesc
}

func (c *sharedQueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.stats(ctx)
	if err != nil {
		c.log.Warn("metrics: reading the shared queue", "err", err)
		ch <- prometheus.MustNewConstMetric(sharedUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(sharedUpDesc, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(sharedWaitingDesc, prometheus.GaugeValue, float64(st.Waiting))
	ch <- prometheus.MustNewConstMetric(sharedBusyDesc, prometheus.GaugeValue, float64(st.Running))
	ch <- prometheus.MustNewConstMetric(sharedSlotsDesc, prometheus.GaugeValue, float64(st.Slots))
}
