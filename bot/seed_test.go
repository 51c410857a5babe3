package bot_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// withoutLogs serves fake, but answers every poll with empty "logs", as
// CometAPI's documented prediction object does ("logs":""): the seed is
// then only known from the create request.
func withoutLogs(fake http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/replicate/v1/predictions/") {
			fake.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		fake.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		var p map[string]any
		if rec.Code == http.StatusOK && json.Unmarshal(body, &p) == nil {
			p["logs"] = ""
			body, _ = json.Marshal(p)
		}
		for k, v := range rec.Header() {
			if k != "Content-Length" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

// TestSeedSurvivesRestart stops the bot while a job's prediction runs,
// starts it again, and checks the resumed job keeps its seed in the
// caption and in the conversation's history, although the provider's
// polls do not tell it.
func TestSeedSurvivesRestart(t *testing.T) {
	tests := []struct {
		name string
		seed *int64 // nil: the core draws one
	}{
		{name: "GivenSeed", seed: ptr(int64(42))},
		{name: "DrawnSeed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := kontexttest.New(kontexttest.Options{APIKey: "k", Latency: 800 * time.Millisecond, Pixels: 128 * 128})
			h := &harness{t: t, fake: &kontexttest.Server{Fake: fake, Server: httptest.NewServer(withoutLogs(fake))},
				dbPath: filepath.Join(t.TempDir(), "k.db"),
				cfg:    bot.Config{Prices: map[string]float64{kontext.ModelMax: 0.08, kontext.ModelPro: 0.04}}}
			h.start(newRecorder(), 1)
			t.Cleanup(func() {
				h.stop(time.Minute)
				h.fake.Close()
			})
			job := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse", Seed: tt.seed})
			h.eventually("the job reaching the provider", func() bool {
				j, _ := h.db.Job(context.Background(), job.ID)
				return j != nil && j.State == bot.JobSubmitted
			})
			h.stop(50 * time.Millisecond) // too short for the prediction
			h.start(newRecorder(), 1)
			if ids, err := h.core.Recover(context.Background()); err != nil || len(ids) != 1 {
				t.Fatalf("Recover: %v %v, want the job", ids, err)
			}
			d := h.mustDeliver(job.ID)
			if p := provenance(t, d); p.Seed != job.Seed {
				t.Fatalf("the provider used seed %d, want the job's %d", p.Seed, job.Seed)
			}
			want := "seed " + strconv.FormatInt(job.Seed, 10)
			if got := d.Caption(); !strings.Contains(got, want) {
				t.Errorf("caption %q, want it to say %q", got, want)
			}
			conv, err := h.db.Conversation(context.Background(), conv)
			if err != nil {
				t.Fatal(err)
			}
			cur := conv.Current()
			if cur == nil || cur.Seed == nil || *cur.Seed != job.Seed || cur.SHA256 != digest(d.Image) {
				t.Errorf("history: %+v, want the delivered image with seed %d", cur, job.Seed)
			}
			if st := h.fake.Stats(); st.Creates != 1 {
				t.Errorf("creates: got %d, want 1", st.Creates)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
