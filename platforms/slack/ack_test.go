package slack

import (
	"context"
	"testing"
	"time"

	"kontextbot/bot"
)

// TestAckAfterStored: a slash command asking for an image is acknowledged
// (Socket Mode envelope ack, HTTP 200) only once its job is in the
// store, so a replica killed before that leaves Slack unanswered, never
// an acknowledged request without a job. Requests that store nothing
// (help) are acknowledged when their handling ends.
func TestAckAfterStored(t *testing.T) {
	for _, mode := range []string{"socket", "http"} {
		t.Run(mode, func(t *testing.T) {
			h := newHarness(t, harnessOpts{mode: mode})
			ch := h.fake.CreateChannel("art", true)
			env := h.fake.Slash("U1", ch, "/imagine", "a red fox")
			if !env.Acked(5 * time.Second) {
				t.Fatal("the command was never acknowledged")
			}
			if got, want := env.Status(), 200; mode == "http" && got != want {
				t.Errorf("HTTP status: got %d, want %d", got, want)
			}
			// The job is stored before the acknowledgement; the provider
			// (20 ms a step) cannot have delivered it yet.
			jobs, err := h.core.Store().LiveJobs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for _, j := range jobs {
				found = found || j.Prompt == "a red fox" && j.Kind == bot.KindImagine
			}
			if !found {
				t.Errorf("acknowledged with %d live jobs and none for the command; want its job stored first", len(jobs))
			}
			h.wait("the image", func() bool { return len(h.botImages(ch, "")) > 0 })
			help := h.fake.Slash("U1", ch, "/imagine", "help")
			if !help.Acked(5 * time.Second) {
				t.Error("help was never acknowledged")
			}
			h.wait("the help answer", func() bool { return len(h.fake.Ephemerals("U1")) == 1 })
		})
	}
}
