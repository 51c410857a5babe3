package bot_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// seenRefs wraps the real client and records, per prompt, the digests of
// the further references each create sent (what the provider is asked
// to use after input_image).
type seenRefs struct {
	bot.Generator
	mu   sync.Mutex
	refs map[string][][]string
}

func (s *seenRefs) Run(ctx context.Context, req kontext.Request) (*kontext.Result, error) {
	var ds []string
	for _, r := range req.References {
		ds = append(ds, digest(r))
	}
	s.mu.Lock()
	s.refs[req.Prompt] = append(s.refs[req.Prompt], ds)
	s.mu.Unlock()
	return s.Generator.Run(ctx, req)
}

func (s *seenRefs) sent(prompt string) [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.refs[prompt])
}

// refsHarness is a harness whose core's creates are seen by the returned
// seenRefs.
func refsHarness(t *testing.T, opts kontexttest.Options) (*harness, *seenRefs) {
	t.Helper()
	seen := &seenRefs{refs: map[string][][]string{}}
	h := newHarness(t, bot.Config{}, opts)
	h.stop(time.Minute)
	h.wrap = func(g bot.Generator) bot.Generator { seen.Generator = g; return seen }
	h.start(newRecorder(), 6)
	return h, seen
}

func TestEditWithReferences(t *testing.T) {
	ctx := context.Background()
	h, seen := refsHarness(t, kontexttest.Options{})
	base := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a sunny beach"}).ID)
	dog, ball := pngOf(t, 64, 48), pngOf(t, 32, 32)
	job := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "put this dog with its ball on the beach",
		Refs: []bot.Ref{{Image: dog}, {Image: ball}}})
	if got, want := len(job.Refs), 2; got != want {
		t.Fatalf("job refs: got %d, want %d", got, want)
	}
	d := h.mustDeliver(job.ID)

	if got, want := provenance(t, d).Inputs, []string{digest(base.Image), digest(dog), digest(ball)}; !slices.Equal(got, want) {
		t.Errorf("provider inputs: got %v, want the current image then the two photos %v", got, want)
	}
	if got, want := seen.sent(job.Prompt), [][]string{{digest(dog), digest(ball)}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("references sent: got %v, want %v (in order)", got, want)
	}
	if !slices.Equal(d.Turn.Refs, job.Refs) || d.Turn.Parent != base.Turn.ID {
		t.Errorf("turn: parent %s refs %v, want parent %s refs %v", d.Turn.Parent, d.Turn.Refs, base.Turn.ID, job.Refs)
	}
	c, err := h.db.Conversation(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range job.Refs {
		r := c.Turn(id)
		if r == nil || r.Kind != bot.KindUpload || r.SHA256 != digest([][]byte{dog, ball}[i]) {
			t.Errorf("reference %d: got %+v, want an upload turn of the person's image", i+2, r)
		}
	}
	if c.Head != d.Turn.ID {
		t.Errorf("head: got %s, want the result %s", c.Head, d.Turn.ID)
	}
	if got, want := d.Caption(), "put this dog with its ball on the beach · from “a sunny beach” + your image 1 + your image 2 ·"; !strings.HasPrefix(got, want) {
		t.Errorf("caption: got %q, want it to start with %q", got, want)
	}

	t.Run("ReferencesDoNotMoveTheHead", func(t *testing.T) {
		h, _ := refsHarness(t, kontexttest.Options{Latency: 300 * time.Millisecond})
		a := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a cat"}).ID)
		j := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "with this hat", Refs: []bot.Ref{{Image: dog}}})
		c, err := h.db.Conversation(ctx, conv)
		if err != nil {
			t.Fatal(err)
		}
		if c.Head != a.Turn.ID || c.Turn(j.Refs[0]) == nil {
			t.Errorf("right after Submit: head %s (want %s), reference stored %v", c.Head, a.Turn.ID, c.Turn(j.Refs[0]) != nil)
		}
		h.mustDeliver(j.ID)
	})

	t.Run("Reroll", func(t *testing.T) {
		re := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindReroll, Turn: d.Turn.ID}).ID)
		if got, want := seen.sent(job.Prompt), [][]string{{digest(dog), digest(ball)}, {digest(dog), digest(ball)}}; !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("references sent: got %v, want the same twice %v", got, want)
		}
		if got, want := provenance(t, re).Inputs, provenance(t, d).Inputs; !slices.Equal(got, want) {
			t.Errorf("reroll's provider inputs: got %v, want the edit's %v", got, want)
		}
		if !slices.Equal(re.Turn.Refs, d.Turn.Refs) || re.Turn.Parent != d.Turn.Parent {
			t.Errorf("reroll turn: parent %s refs %v, want %s %v", re.Turn.Parent, re.Turn.Refs, d.Turn.Parent, d.Turn.Refs)
		}
	})

	t.Run("BotImagesByMessageAndTurn", func(t *testing.T) {
		// base was posted as m1; the edit d as m3.
		j := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "mix them", Turn: d.Turn.ID,
			Refs: []bot.Ref{{Message: "m1"}, {Turn: d.Turn.ID}, {Image: dog}}})
		out := h.mustDeliver(j.ID)
		if j.Refs[0] != base.Turn.ID || j.Refs[1] != d.Turn.ID {
			t.Errorf("job refs: got %v, want [%s %s upload]", j.Refs, base.Turn.ID, d.Turn.ID)
		}
		if got, want := seen.sent("mix them"), [][]string{{digest(base.Image), digest(d.Image), digest(dog)}}; !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("references sent: got %v, want %v", got, want)
		}
		if got, want := provenance(t, out).Inputs, []string{digest(d.Image), digest(base.Image), digest(d.Image), digest(dog)}; !slices.Equal(got, want) {
			t.Errorf("provider inputs: got %v, want %v", got, want)
		}
		if !strings.Contains(out.Caption(), "from “put this dog with its ball on the beach” + “a sunny beach” + “put this dog with its ball on the beach” + your image ·") {
			t.Errorf("caption: %q", out.Caption())
		}
	})
}

func TestReferencesRefusedBeforeAnyCharge(t *testing.T) {
	ctx := context.Background()
	h, _ := refsHarness(t, kontexttest.Options{})
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a garden"}).ID)
	before, err := h.db.Conversation(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	creates := h.fake.Stats().Creates
	img := pngOf(t, 16, 16)
	four := []bot.Ref{{Image: img}, {Image: img}, {Image: img}, {Image: img}}
	tests := []struct {
		name string
		req  bot.Request
		want error
	}{
		{"FiveImages", bot.Request{Kind: bot.KindEdit, Prompt: "x", Refs: four}, bot.ErrTooManyImages},
		{"FiveWithAnAttachedBase", bot.Request{Kind: bot.KindEdit, Prompt: "x", Image: img, Refs: four}, bot.ErrTooManyImages},
		{"NotAnImage", bot.Request{Kind: bot.KindEdit, Prompt: "x", Refs: []bot.Ref{{Image: img}, {Image: []byte("notes")}}}, bot.ErrNotImage},
		{"Bomb", bot.Request{Kind: bot.KindEdit, Prompt: "x", Refs: []bot.Ref{{Image: pngHeader(20000, 20000)}}}, bot.ErrImageTooBig},
		{"UnknownMessage", bot.Request{Kind: bot.KindEdit, Prompt: "x", Refs: []bot.Ref{{Message: "nope"}}}, nil},
		{"UnknownTurn", bot.Request{Kind: bot.KindEdit, Prompt: "x", Refs: []bot.Ref{{Turn: "igone"}}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Conv, req.User = conv, "ada"
			_, err := h.core.Submit(ctx, &req)
			var ue *bot.UserError
			if !errors.As(err, &ue) {
				t.Fatalf("got %v, want a sentence for the person", err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	if got := h.fake.Stats().Creates; got != creates {
		t.Errorf("provider creates: got %d more, want none", got-creates)
	}
	jobs, _ := h.db.LiveJobs(ctx)
	if len(jobs) != 0 {
		t.Errorf("%d jobs were kept", len(jobs))
	}
	after, err := h.db.Conversation(ctx, conv)
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Turns) != len(before.Turns) || after.Head != before.Head {
		t.Errorf("conversation changed: %d turns head %s, want %d turns head %s", len(after.Turns), after.Head, len(before.Turns), before.Head)
	}
	if day, _, _ := h.db.Usage(ctx, conv.Platform, conv.Workspace, "ada", time.Now()); day.Images != 1 {
		t.Errorf("images charged today: got %d, want 1 (the first imagine)", day.Images)
	}

	t.Run("FourImagesAccepted", func(t *testing.T) {
		j := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "four", Refs: four[:3]})
		h.mustDeliver(j.ID)
		if len(j.Refs) != 3 {
			t.Errorf("refs: got %d, want 3", len(j.Refs))
		}
	})
}

// TestReferencesSurviveARestart: a multi-reference edit accepted before a
// stop runs after the start with the same references.
func TestReferencesSurviveARestart(t *testing.T) {
	h, seen := refsHarness(t, kontexttest.Options{Latency: 800 * time.Millisecond})
	base := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a field"}).ID)
	h.stop(time.Minute)
	h.start(newRecorder(), 1)
	// One slot: the blocker runs, the edit waits behind it.
	h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "blocker", Conv: bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c9"}})
	cow := pngOf(t, 40, 30)
	job := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add this cow", Refs: []bot.Ref{{Image: cow}}})
	h.stop(50 * time.Millisecond)

	h.start(newRecorder(), 2)
	if _, err := h.core.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	d := h.mustDeliver(job.ID)
	if got, want := provenance(t, d).Inputs, []string{digest(base.Image), digest(cow)}; !slices.Equal(got, want) {
		t.Errorf("provider inputs after the restart: got %v, want %v", got, want)
	}
	if got, want := seen.sent("add this cow"), [][]string{{digest(cow)}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("references sent after the restart: got %v, want %v", got, want)
	}
	if !slices.Equal(d.Turn.Refs, job.Refs) {
		t.Errorf("turn refs: got %v, want %v", d.Turn.Refs, job.Refs)
	}
}

// TestThreadCarriesReferences: a result posted into a new thread brings
// its references along, so a reroll there uses them.
func TestThreadCarriesReferences(t *testing.T) {
	h, seen := refsHarness(t, kontexttest.Options{})
	thread := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c1", Thread: "new"}
	h.rec.thread = func(j *bot.Job) *bot.ConvKey {
		if j.Prompt == "add a moon" {
			return &thread
		}
		return nil
	}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a night sky"}).ID)
	moon := pngOf(t, 20, 20)
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add a moon", Refs: []bot.Ref{{Image: moon}}}).ID)
	h.eventually("the thread's conversation", func() bool {
		c, err := h.db.Conversation(context.Background(), thread)
		return err == nil && c.Head == d.Turn.ID
	})
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindReroll, Conv: thread}).ID)
	if got, want := seen.sent("add a moon"), [][]string{{digest(moon)}, {digest(moon)}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("references sent: got %v, want %v", got, want)
	}
}
