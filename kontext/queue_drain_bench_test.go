package kontext

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkQueueWaiting10kDrain queues 10,000 jobs of 1,000 users (10
// each) behind six busy slots, every job with a Position callback, then
// frees the slots and lets the line drain: each job holds its slot for
// 1 ms, so the line moves one step at a time as in real use (where a job
// holds its slot for seconds and every start moves everyone behind it); a
// Run that returned at once would let the notifier coalesce hundreds of
// moves into one pass and hide the cost. cpu_us_per_job is the process's CPU time (user+sys, GC
// included) from the first Submit to the last job's end, divided by the
// jobs; position_calls_per_job is how many Position callbacks a job got
// on average over the same span.
func BenchmarkQueueWaiting10kDrain(b *testing.B) {
	const jobs, users, slots = 10_000, 1_000, 6
	userIDs := make([]string, users)
	for i := range userIDs {
		userIDs[i] = fmt.Sprint("user", i)
	}
	jobIDs := make([]string, jobs)
	for i := range jobIDs {
		jobIDs[i] = fmt.Sprint("job", i)
	}
	var calls atomic.Int64
	position := func(int) { calls.Add(1) }
	run := func(context.Context) error { time.Sleep(time.Millisecond); return nil }
	var cpuSum time.Duration
	var callSum int64
	b.ReportAllocs()
	for range b.N {
		b.StopTimer()
		q := NewQueue(QueueOptions{Slots: slots, UserRunning: 2, UserWaiting: jobs / users, MaxWaiting: jobs})
		release := make(chan struct{})
		block := func(context.Context) error { <-release; return nil }
		for i := range slots {
			if _, err := q.Submit(context.Background(), Job{ID: "blocker", User: fmt.Sprint("blocker", i), Run: block}); err != nil {
				b.Fatal(err)
			}
		}
		tickets := make([]*Ticket, jobs)
		calls.Store(0)
		cpu0 := cpuTime(b)
		b.StartTimer()
		for i := range jobs {
			tk, err := q.Submit(context.Background(), Job{ID: jobIDs[i], User: userIDs[i%users], Run: run, Position: position})
			if err != nil {
				b.Fatalf("Submit %d: %v", i, err)
			}
			tickets[i] = tk
		}
		close(release)
		for _, tk := range tickets {
			<-tk.Done()
			if err := tk.Err(); err != nil {
				b.Fatalf("job: %v", err)
			}
		}
		if _, err := q.Shutdown(context.Background()); err != nil { // waits for the notifier too
			b.Fatal(err)
		}
		b.StopTimer()
		cpuSum += cpuTime(b) - cpu0
		callSum += calls.Load()
	}
	b.ReportMetric(float64(cpuSum.Nanoseconds())/1e3/float64(b.N)/jobs, "cpu_us_per_job")
	b.ReportMetric(float64(callSum)/float64(b.N)/jobs, "position_calls_per_job")
}
