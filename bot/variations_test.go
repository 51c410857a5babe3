package bot_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
)

// groupJobs are the ids of a group's jobs, from its first.
func groupJobs(first *bot.Job) []string {
	var ids []string
	for n := 1; n <= first.Count; n++ {
		ids = append(ids, bot.GroupJobID(first.Group, n))
	}
	return ids
}

func TestVariationsPostedTogether(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 300 * time.Millisecond})
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse", Count: 4})
	if first.Count != 4 || first.Index != 1 || first.Group == "" {
		t.Fatalf("first job: count %d index %d group %q, want 4, 1 and a group", first.Count, first.Index, first.Group)
	}
	d := h.mustDeliver(first.ID)
	if got := len(d.Group); got != 4 {
		t.Fatalf("images in the message: got %d, want 4", got)
	}
	seeds := map[int64]bool{}
	for i, v := range d.Group {
		p := provenance(t, &bot.Delivery{Image: v.Image})
		if v.N != i+1 || p.Prompt != "a lighthouse" {
			t.Errorf("image %d: number %d prompt %q", i+1, v.N, p.Prompt)
		}
		seeds[p.Seed] = true
	}
	if len(seeds) != 4 {
		t.Errorf("seeds: got %d different, want 4", len(seeds))
	}
	h.rec.mu.Lock()
	posts := h.rec.posts
	h.rec.mu.Unlock()
	if posts != 1 {
		t.Errorf("posts: got %d, want 1 message for the group", posts)
	}
	for _, id := range groupJobs(first) {
		j, err := h.db.Job(context.Background(), id)
		if err != nil || j.State != bot.JobDelivered {
			t.Errorf("job %s: %v %v, want delivered", id, j, err)
		}
	}
	day, month, err := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if err != nil || day.Images != 4 || month.Spend < 0.3199 || month.Spend > 0.3201 {
		t.Errorf("usage: %+v %+v (%v), want 4 images and $0.32", day, month, err)
	}
	if st := h.fake.Stats(); st.Creates != 4 || st.MaxActive != 4 {
		t.Errorf("provider: %d creates, %d at once; want 4 and 4 (side by side)", st.Creates, st.MaxActive)
	}
	c, _ := h.db.Conversation(context.Background(), conv)
	if c.Head != d.Group[0].Turn.ID {
		t.Errorf("head after the group: %s, want image 1 %s", c.Head, d.Group[0].Turn.ID)
	}
	if !strings.Contains(d.Caption(), "4 variations") || !strings.Contains(d.Caption(), "Use N") {
		t.Errorf("caption %q: want the count and how to pick one", d.Caption())
	}
}

func TestVariationsFollowUpWaitsThenUse(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 300 * time.Millisecond})
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a barn", Count: 3})
	edit := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make it snow"})
	if edit.After != first.Group {
		t.Errorf("the follow-up is held behind %q, want the group %q", edit.After, first.Group)
	}
	g := h.mustDeliver(first.ID)
	e := h.mustDeliver(edit.ID)
	if p := provenance(t, e); p.InputSHA256 != digest(g.Group[0].Image) {
		t.Errorf("the follow-up edited %s, want image 1 %s", p.InputSHA256, digest(g.Group[0].Image))
	}
	if h.rec.msgs != 2 {
		t.Errorf("messages: %d, want the group then the edit", h.rec.msgs)
	}
	used, err := h.core.Use(context.Background(), &bot.Request{Conv: conv, User: "ada", Turn: g.Group[2].Turn.ID})
	if err != nil {
		t.Fatal(err)
	}
	if used.Turn.Variation != 3 {
		t.Errorf("used image number %d, want 3", used.Turn.Variation)
	}
	e2 := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add a fox"}).ID)
	if p := provenance(t, e2); p.InputSHA256 != digest(g.Group[2].Image) {
		t.Errorf("after Use 3 the edit started from %s, want image 3 %s", p.InputSHA256, digest(g.Group[2].Image))
	}
	if _, err := h.core.Use(context.Background(), &bot.Request{Conv: conv, Turn: "inope"}); !errors.Is(err, bot.ErrNoImage) {
		t.Errorf("Use of an unknown image: %v, want ErrNoImage", err)
	}
}

func TestVariationsLimitsUpFront(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  bot.Config
		want string
	}{
		{"DailyLimit", bot.Config{UserDaily: 3}, "have 3 left today"},
		{"WaitingCap", bot.Config{UserWaiting: 2}, "only 2 more of yours can wait"},
		{"Budget", bot.Config{WorkspaceBudget: 0.2}, "image budget"},
		{"TooMany", bot.Config{}, "at most 4 variations"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.cfg, kontexttest.Options{})
			n := 4
			if tc.name == "TooMany" {
				n = 5
			}
			_, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Conv: conv, User: "ada", Prompt: "x", Count: n})
			if err == nil || !strings.Contains(bot.Explain(err), tc.want) {
				t.Fatalf("Submit: %v, want a sentence with %q", err, tc.want)
			}
			if live, _ := h.db.LiveJobs(context.Background()); len(live) != 0 {
				t.Errorf("live jobs after a refusal: %d, want 0", len(live))
			}
			if st := h.fake.Stats(); st.Creates != 0 {
				t.Errorf("creates after a refusal: %d", st.Creates)
			}
		})
	}
}

func TestVariationsModerationNoted(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "something forbidden", Count: 2})
	if d := h.wait(first.ID); d != nil {
		t.Fatal("a refused group was delivered")
	}
	h.rec.mu.Lock()
	msgs := h.rec.failed[first.ID]
	h.rec.mu.Unlock()
	if len(msgs) != 1 || !strings.Contains(msgs[0], "2 were refused by moderation") {
		t.Errorf("failure messages %q, want one saying both were refused", msgs)
	}
	day, _, _ := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if day.Images != 0 {
		t.Errorf("charged %d images for refusals", day.Images)
	}
}

// TestVariationsRestartMidGroup stops the bot while the group's jobs
// run and wait (one slot), and checks the next start posts one message
// with every image, each made and charged once.
func TestVariationsRestartMidGroup(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 400 * time.Millisecond})
	h.stop(time.Minute)
	h.start(newRecorder(), 1)
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a windmill", Count: 3})
	h.eventually("the first variation stored", func() bool {
		j, _ := h.db.Job(context.Background(), first.ID)
		return j != nil && j.State == bot.JobPosting
	})
	h.stop(50 * time.Millisecond)
	if h.rec.posts != 0 {
		t.Fatalf("posted %d messages before the group was complete", h.rec.posts)
	}
	h.start(newRecorder(), 2)
	if _, err := h.core.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := h.mustDeliver(first.ID)
	if len(d.Group) != 3 {
		t.Errorf("after the restart: %d images, want 3", len(d.Group))
	}
	h.stop(time.Minute)
	if h.rec.posts != 1 {
		t.Errorf("posts after the restart: %d, want 1", h.rec.posts)
	}
	if st := h.fake.Stats(); st.Creates != 3 {
		t.Errorf("creates: %d, want 3", st.Creates)
	}
	h.start(newRecorder(), 1)
	day, _, _ := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if day.Images != 3 {
		t.Errorf("charged %d images, want 3", day.Images)
	}
}

// TestVariationsCancel: Cancel on a waiting group (its first job's
// status) cancels every waiting job of it; nothing is made or charged.
func TestVariationsCancel(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 500 * time.Millisecond})
	h.stop(time.Minute)
	h.start(newRecorder(), 1)
	busy := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "first", User: "bob", Conv: bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c9"}})
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a fox", Count: 3})
	if err := h.core.Cancel(context.Background(), first.ID, "mallory"); !errors.Is(err, bot.ErrNotYours) {
		t.Errorf("someone else's cancel: %v, want ErrNotYours", err)
	}
	if err := h.core.Cancel(context.Background(), first.ID, "ada"); err != nil {
		t.Fatal(err)
	}
	if d := h.wait(first.ID); d != nil {
		t.Fatal("a cancelled group was posted")
	}
	h.rec.mu.Lock()
	msgs := h.rec.failed[first.ID]
	h.rec.mu.Unlock()
	if len(msgs) != 1 || msgs[0] != "Cancelled." {
		t.Errorf("told %q, want one Cancelled.", msgs)
	}
	for _, id := range groupJobs(first) {
		if j, _ := h.db.Job(context.Background(), id); j == nil || j.State != bot.JobCanceled {
			t.Errorf("job %s: %+v, want cancelled", id, j)
		}
	}
	h.mustDeliver(busy.ID)
	if got := h.fake.Stats().Creates; got != 1 {
		t.Errorf("creates: %d, want only the other job's", got)
	}
}

// TestVariationsHeldFollowUpSurvivesRestart: a follow-up held behind a
// group when the bot stops is queued after the restart once the group
// is posted, and edits image 1.
func TestVariationsHeldFollowUpSurvivesRestart(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 400 * time.Millisecond})
	h.stop(time.Minute)
	h.start(newRecorder(), 1)
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a barn", Count: 2})
	edit := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make it snow"})
	h.stop(50 * time.Millisecond)
	h.start(newRecorder(), 2)
	if j, _ := h.db.Job(context.Background(), edit.ID); j == nil || j.State != bot.JobWaiting || j.After != first.Group {
		t.Fatalf("the follow-up before the restart: %+v, want waiting behind the group", j)
	}
	if _, err := h.core.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	g := h.mustDeliver(first.ID)
	e := h.mustDeliver(edit.ID)
	if p := provenance(t, e); p.InputSHA256 != digest(g.Group[0].Image) {
		t.Errorf("the held follow-up edited %s, want image 1 %s", p.InputSHA256, digest(g.Group[0].Image))
	}
	if got := h.fake.Stats().Created; got != 3 {
		t.Errorf("predictions created: %d, want 3", got)
	}
}

// TestVariationsRepostAfterCrashWhileMarking: a crash after the group's
// post, while its jobs were being marked delivered, leaves some posting;
// the next start posts the group again as a Repost of every image (the
// adapter finds the first post instead of posting twice), charging
// nothing more.
func TestVariationsRepostAfterCrashWhileMarking(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	first := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a kite", Count: 3})
	h.mustDeliver(first.ID)
	j, err := h.db.Job(context.Background(), first.ID)
	if err != nil {
		t.Fatal(err)
	}
	j.State = bot.JobPosting // as if the process died before marking it
	if err := h.db.PutJob(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	h.stop(time.Minute)
	h.start(newRecorder(), 2)
	if _, err := h.core.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := h.mustDeliver(first.ID)
	if len(d.Group) != 3 || !d.Repost {
		t.Errorf("the repost: %d images, repost %v; want all 3 and a repost", len(d.Group), d.Repost)
	}
	day, _, _ := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if day.Images != 3 || h.fake.Stats().Creates != 3 {
		t.Errorf("charged %d images, %d creates; want 3 and 3", day.Images, h.fake.Stats().Creates)
	}
}
