package bot_test

import (
	"context"
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
)

// TestSubmitCallsStoredOnceStored: under bot.WithStored, Submit calls the
// adapter's function once the job is in the store (before it is queued),
// once for one image and for a group of variations; an origin the
// function sets is stored on every job of the request.
func TestSubmitCallsStoredOnceStored(t *testing.T) {
	tests := []struct {
		name  string
		count int
	}{
		{name: "one image", count: 1},
		{name: "variations", count: 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bot.Config{}, kontexttest.Options{})
			ctx := context.Background()
			calls := 0
			var storedErr error
			ctx = bot.WithStored(ctx, func(j *bot.Job) {
				calls++
				_, storedErr = h.core.Store().Job(ctx, j.ID)
				j.Origin = map[string]string{"msg": "response-1"}
			})
			job, err := h.core.Submit(ctx, &bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse", Conv: conv, User: "ada",
				Count: tc.count, Origin: map[string]string{"msg": ""}})
			if err != nil {
				t.Fatal(err)
			}
			if calls != 1 || storedErr != nil {
				t.Errorf("stored called %d times, job in the store then: %v; want once, stored", calls, storedErr)
			}
			jobs := []string{job.ID}
			if tc.count > 1 {
				jobs = nil
				live, err := h.core.Store().LiveJobs(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, j := range live {
					jobs = append(jobs, j.ID)
				}
				if len(jobs) != tc.count {
					t.Errorf("got %d live jobs, want %d", len(jobs), tc.count)
				}
			}
			for _, id := range jobs {
				got, err := h.core.Store().Job(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if got.Origin["msg"] != "response-1" {
					t.Errorf("job %s origin %v, want the one set at the acknowledgement", id, got.Origin)
				}
			}
			h.mustDeliver(job.ID) // a group is delivered as its first job
		})
	}
}
