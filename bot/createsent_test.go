package bot_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// markStore sees the core's PutJob calls: creates is how many creates
// the provider had received when the job was first stored with
// CreateSent.
type markStore struct {
	bot.Store
	fake *kontexttest.Server

	mu      sync.Mutex
	creates map[string]int // job id -> provider creates when marked
}

func (s *markStore) PutJob(ctx context.Context, j *bot.Job) error {
	s.mu.Lock()
	if _, seen := s.creates[j.ID]; !seen && !j.CreateSent.IsZero() {
		s.creates[j.ID] = s.fake.Stats().Creates
	}
	s.mu.Unlock()
	return s.Store.PutJob(ctx, j)
}

// TestCreateSentIsStoredFirst: a job is stored as "create sent" before
// its create reaches the provider, and keeps its prediction id after.
func TestCreateSentIsStoredFirst(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	ms := &markStore{fake: h.fake, creates: map[string]int{}}
	h.stop(time.Minute)
	h.wrapStore = func(s bot.Store) bot.Store { ms.Store = s; return ms }
	h.start(newRecorder(), 6)
	j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a marked owl"})
	h.mustDeliver(j.ID)
	ms.mu.Lock()
	at, ok := ms.creates[j.ID]
	ms.mu.Unlock()
	if !ok || at != 0 {
		t.Errorf("stored with CreateSent: %v, when the provider had %d creates; want stored before the first", ok, at)
	}
	got, err := h.db.Job(context.Background(), j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.CreateSent.IsZero() || got.PredictionID == "" {
		t.Errorf("delivered job: create sent %v, prediction %q; want both recorded", got.CreateSent, got.PredictionID)
	}
}

// TestCreateNeverSentTwice: a job a stopped process left with its create
// sent but no prediction id recorded (it died in between) is not created
// again after the restart: the prediction may exist and be paid for. Its
// person is told, and nothing is charged. A job left before its create
// was sent is created as usual.
func TestCreateNeverSentTwice(t *testing.T) {
	tests := []struct {
		name        string
		createSent  bool
		wantCreates int
	}{
		{name: "create sent, no prediction recorded", createSent: true, wantCreates: 0},
		{name: "create not sent yet", createSent: false, wantCreates: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bot.Config{}, kontexttest.Options{})
			h.stop(time.Minute)
			h.start(newRecorder(), 6)
			now := time.Now()
			j := &bot.Job{ID: "j-left", Kind: bot.KindImagine, User: "ada", Prompt: "a left owl", Model: kontext.ModelMax,
				Conv: conv, State: bot.JobWaiting, Created: now, Updated: now}
			if tc.createSent {
				j.CreateSent = now
			}
			if err := h.db.PutJob(context.Background(), j); err != nil {
				t.Fatal(err)
			}
			if ids, err := h.core.Recover(context.Background()); err != nil || len(ids) != 1 {
				t.Fatalf("Recover: %v %v, want the left job", ids, err)
			}
			d := h.wait(j.ID)
			if st := h.fake.Stats(); st.Creates != tc.wantCreates {
				t.Errorf("creates: got %d, want %d", st.Creates, tc.wantCreates)
			}
			got, err := h.db.Job(context.Background(), j.ID)
			if err != nil {
				t.Fatal(err)
			}
			day, _, _ := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
			if !tc.createSent {
				if d == nil || got.State != bot.JobDelivered || day.Images != 1 {
					t.Errorf("delivered %v, state %s, charged %d; want delivered once and charged", d != nil, got.State, day.Images)
				}
				return
			}
			h.rec.mu.Lock()
			failed := h.rec.failed[j.ID]
			h.rec.mu.Unlock()
			if d != nil || got.State != bot.JobFailed || day.Images != 0 {
				t.Errorf("delivered %v, state %s, charged %d; want failed and not charged", d != nil, got.State, day.Images)
			}
			if len(failed) != 1 || failed[0] != bot.Explain(bot.ErrCreateUnsure) {
				t.Errorf("told %q, want %q once", failed, bot.Explain(bot.ErrCreateUnsure))
			}
		})
	}
}
