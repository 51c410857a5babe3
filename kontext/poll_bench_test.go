package kontext

import (
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// BenchmarkPollVsWait measures what create-then-poll costs against
// Prefer: wait, with the queue harness of BenchmarkQueueProvider (6 slots,
// 20 users keeping 3 jobs each submitted, a fake whose predictions take
// 0.8 L plus up to 0.4 L of jitter, L = 100 ms unless KONTEXT_BENCH_L says
// otherwise; run it with -benchtime=1x). The polling schedule is the
// default one scaled to L: the default first poll (4 s) and interval
// (0.5 s) are about L and L/8 at CometAPI's latency, so "poll" polls first
// at L and then every L/8; "poll-early" polls first at 0.8 L, the fastest
// run. Metrics:
//
//   - utilization: as in BenchmarkQueueProvider (completions per second in
//     the window over 6/L);
//   - added_L: the mean time a job's Run takes beyond the run time the
//     fake drew for its prediction, in units of L (HTTP round trips, and
//     for polling the wait between the prediction ending and the next poll
//     seeing it);
//   - polls_per_image: poll requests per successful prediction.
func BenchmarkPollVsWait(b *testing.B) {
	for _, bc := range []struct {
		name            string
		wait            time.Duration
		first, interval time.Duration
	}{
		{name: "wait", wait: 60 * time.Second},
		{name: "poll", wait: -1, first: provL, interval: provL / 8},
		{name: "poll-early", wait: -1, first: provL * 4 / 5, interval: provL / 8},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const key = "bench-key"
			srv := kontexttest.NewServer(kontexttest.Options{APIKey: key, Slots: provSlots,
				Latency: provLatency, Jitter: provJitter, Pixels: 64 * 64})
			defer srv.Close()
			client, err := NewClient(Config{BaseURL: srv.URL, APIKey: key, Model: ModelMax, Wait: bc.wait,
				FirstPoll: bc.first, PollInterval: bc.interval})
			if err != nil {
				b.Fatal(err)
			}
			defer client.Close()
			opts := QueueOptions{Slots: provSlots, UserRunning: provNoCap, Policy: RoundRobin,
				UserWaiting: provPerUser + 1, MaxWaiting: provUsers * provPerUser}

			b.ResetTimer()
			utilization, _, _, meanRun := provSaturate(b, client, srv, opts)
			b.StopTimer()

			st := srv.Stats()
			served := st.RunTime / time.Duration(max(st.Runs, 1))
			b.ReportMetric(utilization, "utilization")
			b.ReportMetric(float64(meanRun-served)/float64(provL), "added_L")
			b.ReportMetric(float64(st.Polls)/float64(max(st.Succeeded, 1)), "polls_per_image")
		})
	}
}
