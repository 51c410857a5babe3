package bot_test

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// photoJPEG is a w×h baseline JPEG: a format the check decodes whole,
// inside the image budget.
func photoJPEG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fillBudget takes the whole budget in six shares, as six decodes at
// once would, and returns their releases.
func fillBudget(t *testing.T, b *kontext.Budget, share int64) []func() {
	t.Helper()
	var rs []func()
	for range 6 {
		r, err := b.Acquire(context.Background(), share)
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	return rs
}

// free reports whether n bytes of b can be taken now (and gives them back).
func free(b *kontext.Budget, n int64) bool {
	r, ok := b.TryAcquire(n)
	if ok {
		r()
	}
	return ok
}

// TestImageBudget: six large checks fill the budget; a seventh edit
// waits for one of them and then runs (it is not refused); an edit whose
// wait is cancelled stores nothing and takes nothing; an image larger than
// the whole budget is refused with a sentence at once.
func TestImageBudget(t *testing.T) {
	photo := photoJPEG(t, 320, 240)
	share, err := bot.DecodeMemory(photo)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("SeventhWaitsThenRuns", func(t *testing.T) {
		budget := kontext.NewBudget(6 * share)
		h := newHarness(t, bot.Config{ImageBudget: budget}, kontexttest.Options{})
		releases := fillBudget(t, budget, share)
		type result struct {
			job *bot.Job
			err error
		}
		done := make(chan result, 1)
		go func() {
			j, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindEdit, Conv: conv, User: "ada", Prompt: "winter", Image: photo})
			done <- result{j, err}
		}()
		select {
		case r := <-done:
			t.Fatalf("the seventh returned (%v, %v) while six filled the budget", r.job, r.err)
		case <-time.After(100 * time.Millisecond):
		}
		releases[0]()
		r := <-done
		if r.err != nil {
			t.Fatalf("the seventh, once a share was free: %v", r.err)
		}
		h.mustDeliver(r.job.ID)
		for _, rel := range releases[1:] {
			rel()
		}
		if !free(budget, 6*share) {
			t.Error("the budget is not whole again once every job ended")
		}
	})
	t.Run("CancelledWaitTakesNothing", func(t *testing.T) {
		budget := kontext.NewBudget(6 * share)
		h := newHarness(t, bot.Config{ImageBudget: budget}, kontexttest.Options{})
		releases := fillBudget(t, budget, share)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := h.core.Submit(ctx, &bot.Request{Kind: bot.KindEdit, Conv: conv, User: "ada", Prompt: "winter", Image: photo})
			done <- err
		}()
		time.Sleep(20 * time.Millisecond) // let it start waiting (the result holds either way)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		if c, err := h.db.Conversation(context.Background(), conv); err == nil && len(c.Turns) != 0 {
			t.Errorf("the cancelled edit stored %d turns, want none", len(c.Turns))
		}
		if free(budget, 1) {
			t.Error("the cancelled wait gave back memory it never took")
		}
		for _, rel := range releases {
			rel()
		}
		if !free(budget, 6*share) {
			t.Error("the cancelled wait kept memory")
		}
	})
	t.Run("LargerThanTheWholeBudget", func(t *testing.T) {
		budget := kontext.NewBudget(share / 2)
		h := newHarness(t, bot.Config{ImageBudget: budget}, kontexttest.Options{})
		_, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindEdit, Conv: conv, User: "ada", Prompt: "winter", Image: photo})
		var ue *bot.UserError
		if !errors.As(err, &ue) || !errors.Is(err, bot.ErrImageMemory) || !strings.Contains(bot.Explain(err), "smaller version") {
			t.Errorf("got %v (%q), want a sentence asking for a smaller image", err, bot.Explain(err))
		}
	})
}

// TestSubmitAfterCheckChecksOnce: an adapter that calls Check and then
// Submit with the same request (Slack) has the image decoded once: with
// the whole budget taken after the Check, Submit still goes through.
func TestSubmitAfterCheckChecksOnce(t *testing.T) {
	photo := photoJPEG(t, 320, 240)
	share, err := bot.DecodeMemory(photo)
	if err != nil {
		t.Fatal(err)
	}
	budget := kontext.NewBudget(share)
	h := newHarness(t, bot.Config{ImageBudget: budget}, kontexttest.Options{})
	req := &bot.Request{Kind: bot.KindEdit, Conv: conv, User: "ada", Prompt: "winter", Image: photo}
	if err := h.core.Check(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	release, err := budget.Acquire(context.Background(), share)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	j, err := h.core.Submit(ctx, req)
	release()
	if err != nil {
		t.Fatalf("Submit after Check decoded the image again (waited for the budget): %v", err)
	}
	h.mustDeliver(j.ID)
	t.Run("AnotherImageIsChecked", func(t *testing.T) {
		other := photoJPEG(t, 200, 100)
		bad := append([]byte(nil), other[:len(other)/2]...)
		req.Image = bad
		if _, err := h.core.Submit(context.Background(), req); !errors.Is(err, bot.ErrImageBroken) {
			t.Errorf("a different, broken image after a Check: got %v, want ErrImageBroken", err)
		}
	})
}

// TestReadImage: a download is read whole within MaxImageBytes, whether
// its size is known or not, and refused above it.
func TestReadImage(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		size    int64
		wantErr error
	}{
		{"KnownSize", 3 << 20, 3 << 20, nil},
		{"UnknownSize", 3 << 20, -1, nil},
		{"AtTheLimit", bot.MaxImageBytes, bot.MaxImageBytes, nil},
		{"OverTheLimitUnknownSize", bot.MaxImageBytes + 1, -1, bot.ErrImageTooLarge},
		{"DeclaredOverTheLimit", 10, bot.MaxImageBytes + 1, bot.ErrImageTooLarge},
		{"ShorterThanDeclared", 100, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Repeat([]byte{7}, tt.n)
			got, err := bot.ReadImage(io.MultiReader(bytes.NewReader(data)), tt.size)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err == nil && !bytes.Equal(got, data) {
				t.Errorf("got %d bytes, want the %d sent", len(got), len(data))
			}
		})
	}
}
