package bot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/store"
)

// recorder is a platform that records everything the core reports, as a
// chat would show it.
type recorder struct {
	mu        sync.Mutex
	delivered map[string][]*bot.Delivery // by job id
	failed    map[string][]string        // by job id
	positions map[string][]int
	msgs      int
	thread    func(job *bot.Job) *bot.ConvKey     // a thread to open on delivery
	onPost    func(d *bot.Delivery, p bot.Posted) // called once posted, before Deliver returns
	failPost  bool
	ended     chan string // job ids, as they end

	// transient is how many of the next posts fail with a transient
	// error (after is the wait each asks for); posts were how many
	// Deliver calls came, and reposts how many of them had Repost set.
	transient int
	after     time.Duration
	posts     int
	reposts   []bool
	// delays makes its reporters DelayReporters, recording their calls.
	delays  bool
	delayed map[string]int
	held    map[string][]string
}

// delayRecorder is the recorder as a bot.DelayReporter.
type delayRecorder struct{ *recorder }

func (r delayRecorder) Delayed(_ context.Context, j *bot.Job) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delayed[j.ID]++
}

func (r delayRecorder) Held(_ context.Context, j *bot.Job, msg string) {
	r.mu.Lock()
	r.held[j.ID] = append(r.held[j.ID], msg)
	r.mu.Unlock()
	r.ended <- j.ID
}

func newRecorder() *recorder {
	return &recorder{delivered: map[string][]*bot.Delivery{}, failed: map[string][]string{},
		positions: map[string][]int{}, ended: make(chan string, 100), delayed: map[string]int{}, held: map[string][]string{}}
}

func (r *recorder) Name() string { return "test" }

func (r *recorder) Reporter(*bot.Job) bot.Reporter {
	if r.delays {
		return delayRecorder{r}
	}
	return r
}
func (r *recorder) Running(*bot.Job) {}

func (r *recorder) Queued(j *bot.Job, pos int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.positions[j.ID] = append(r.positions[j.ID], pos)
}

func (r *recorder) Deliver(_ context.Context, j *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	r.mu.Lock()
	r.posts++
	r.reposts = append(r.reposts, d.Repost)
	if r.failPost {
		r.mu.Unlock()
		return bot.Posted{}, errors.New("chat is down")
	}
	if r.transient != 0 {
		r.transient--
		r.mu.Unlock()
		return bot.Posted{}, bot.Transient(errors.New("chat answered 503"), r.after)
	}
	r.delivered[j.ID] = append(r.delivered[j.ID], d)
	r.msgs++
	p := bot.Posted{MessageID: fmt.Sprintf("m%d", r.msgs)}
	if r.thread != nil {
		p.Thread = r.thread(j)
	}
	onPost := r.onPost
	r.mu.Unlock()
	if onPost != nil {
		onPost(d, p)
	}
	r.ended <- j.ID
	return p, nil
}

func (r *recorder) Fail(_ context.Context, j *bot.Job, msg string) {
	r.mu.Lock()
	r.failed[j.ID] = append(r.failed[j.ID], msg)
	r.mu.Unlock()
	r.ended <- j.ID
}

// harness is the core over a real store, client, queue and fake provider.
type harness struct {
	t      *testing.T
	fake   *kontexttest.Server
	dbPath string
	db     *store.DB
	client *kontext.Client
	queue  *kontext.Queue
	core   *bot.Core
	rec    *recorder
	cfg    bot.Config
	closed bool
	// wrap, when set, wraps the client the core calls (to see requests).
	wrap func(bot.Generator) bot.Generator
	// wrapStore, when set, is what the core sees of the store, made from
	// it at each start.
	wrapStore func(bot.Store) bot.Store
}

const (
	ws1 = "guild1"
	ws2 = "guild2"
)

var conv = bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c1", Thread: "t1"}

func newHarness(t *testing.T, cfg bot.Config, fakeOpts kontexttest.Options) *harness {
	t.Helper()
	fakeOpts.APIKey = "k"
	if fakeOpts.Latency == 0 {
		fakeOpts.Latency = 20 * time.Millisecond
	}
	if fakeOpts.Pixels == 0 {
		fakeOpts.Pixels = 128 * 128
	}
	h := &harness{t: t, fake: kontexttest.NewServer(fakeOpts), dbPath: filepath.Join(t.TempDir(), "k.db"), cfg: cfg}
	if h.cfg.Prices == nil {
		h.cfg.Prices = map[string]float64{kontext.ModelMax: 0.08, kontext.ModelPro: 0.04}
	}
	h.start(newRecorder(), 6)
	t.Cleanup(func() {
		h.stop(time.Minute)
		h.fake.Close()
	})
	return h
}

// start opens the store and builds client, queue and core: a process start.
func (h *harness) start(rec *recorder, slots int) {
	h.t.Helper()
	var err error
	if h.db, err = store.Open(h.dbPath, store.Options{}); err != nil {
		h.t.Fatal(err)
	}
	h.client, err = kontext.NewClient(kontext.Config{BaseURL: h.fake.URL, APIKey: "k", Wait: -1,
		PollInterval: 10 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond, RetryBase: 5 * time.Millisecond})
	if err != nil {
		h.t.Fatal(err)
	}
	h.queue = kontext.NewQueue(kontext.QueueOptions{Slots: slots, UserRunning: slots})
	var gen bot.Generator = h.client
	if h.wrap != nil {
		gen = h.wrap(gen)
	}
	var st bot.Store = h.db
	if h.wrapStore != nil {
		st = h.wrapStore(h.db)
	}
	h.core = bot.New(h.cfg, st, gen, bot.NewLocalScheduler(h.queue))
	h.rec = rec
	h.core.Register(rec)
	h.closed = false
}

// stop is a process stop: running jobs get d to finish.
func (h *harness) stop(d time.Duration) {
	if h.closed {
		return
	}
	h.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	h.core.Close(ctx)
	h.client.Close()
	if err := h.db.Close(); err != nil {
		h.t.Error(err)
	}
}

func (h *harness) submit(req *bot.Request) *bot.Job {
	h.t.Helper()
	if req.Conv == (bot.ConvKey{}) {
		req.Conv = conv
	}
	if req.User == "" {
		req.User = "ada"
	}
	j, err := h.core.Submit(context.Background(), req)
	if err != nil {
		h.t.Fatalf("Submit %+v: %v", req.Kind, err)
	}
	return j
}

// wait waits for job id to end and returns its delivery (nil if it
// failed). A delivery has ended once the core has recorded the post.
func (h *harness) wait(id string) *bot.Delivery {
	h.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		h.rec.mu.Lock()
		d, f := h.rec.delivered[id], h.rec.failed[id]
		h.rec.mu.Unlock()
		switch {
		case len(d) > 0:
			h.eventually("job "+id+" recorded as delivered", func() bool {
				j, err := h.db.Job(context.Background(), id)
				return err == nil && j.State == bot.JobDelivered
			})
			return d[0]
		case len(f) > 0:
			return nil
		}
		select {
		case <-h.rec.ended:
		case <-deadline:
			h.t.Fatalf("job %s did not end", id)
		}
	}
}

// eventually polls cond until it holds, failing the test after 10 s.
func (h *harness) eventually(what string, cond func() bool) {
	h.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (h *harness) mustDeliver(id string) *bot.Delivery {
	h.t.Helper()
	d := h.wait(id)
	if d == nil {
		h.rec.mu.Lock()
		defer h.rec.mu.Unlock()
		h.t.Fatalf("job %s failed: %v", id, h.rec.failed[id])
	}
	return d
}

func provenance(t *testing.T, d *bot.Delivery) kontexttest.Provenance {
	t.Helper()
	p, err := kontexttest.ReadProvenance(d.Image)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestEditChain(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a harbour at dawn"}).ID)
	prev := d
	for i, prompt := range []string{"add boats", "make it rain", "paint it red", "add gulls", "night time"} {
		d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: prompt}).ID)
		p := provenance(t, d)
		if p.InputSHA256 != digest(prev.Image) {
			t.Fatalf("turn %d started from %s, want the previous result %s", i+1, p.InputSHA256, digest(prev.Image))
		}
		if d.Turn.Parent != prev.Turn.ID || d.Turn.SHA256 != digest(d.Image) {
			t.Errorf("turn %d: parent %s sha %s, want parent %s and the image's digest", i+1, d.Turn.Parent, d.Turn.SHA256, prev.Turn.ID)
		}
		prev = d
	}
	c, err := h.db.Conversation(context.Background(), conv)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Turns) != 6 || c.Head != prev.Turn.ID {
		t.Errorf("conversation has %d turns, head %s; want 6 and %s", len(c.Turns), c.Head, prev.Turn.ID)
	}
	// The provider's bytes are stored and posted unchanged.
	stored, err := h.db.Image(context.Background(), prev.Turn.SHA256)
	if err != nil || !bytes.Equal(stored, prev.Image) {
		t.Errorf("stored image differs from the delivered one (%v)", err)
	}
}

func TestUndoThenEditBranches(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	a := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a cat"}).ID)
	b := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "give it a hat"}).ID)
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make the hat green"}).ID)
	before := h.fake.Stats().Creates
	undone, err := h.core.Undo(context.Background(), &bot.Request{Kind: bot.KindUndo, Conv: conv, User: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	if undone.Turn.ID != b.Turn.ID || !bytes.Equal(undone.Image, b.Image) {
		t.Fatalf("undo showed %s, want %s", undone.Turn.ID, b.Turn.ID)
	}
	if got := h.fake.Stats().Creates; got != before {
		t.Errorf("undo called the provider (%d creates)", got-before)
	}
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make the hat blue"}).ID)
	if p := provenance(t, d); p.InputSHA256 != digest(b.Image) {
		t.Errorf("the edit after undo started from %s, want image b %s", p.InputSHA256, digest(b.Image))
	}
	// Undo twice more: to a, then nothing left.
	h.core.Undo(context.Background(), &bot.Request{Conv: conv, Turn: b.Turn.ID})
	if _, err := h.core.Undo(context.Background(), &bot.Request{Conv: conv, Turn: a.Turn.ID}); !errors.Is(err, bot.ErrNothingToUndo) {
		t.Errorf("undo past the first image: got %v, want ErrNothingToUndo", err)
	}
}

func TestReplyToOlderImage(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	first := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a tree"}).ID)
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "autumn"}).ID)
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "winter"}).ID)
	// The first image was posted as message m1.
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "spring", ReplyTo: "m1"}).ID)
	if p := provenance(t, d); p.InputSHA256 != digest(first.Image) {
		t.Errorf("the reply edited %s, want the first image %s", p.InputSHA256, digest(first.Image))
	}
	if d.Turn.Parent != first.Turn.ID {
		t.Errorf("parent: got %s, want %s", d.Turn.Parent, first.Turn.ID)
	}
}

func TestReplyToAPersonsImage(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	photo := pngOf(t, 64, 48)
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make it a painting", ReplyTo: "someone-elses-msg", ReplyImage: photo}).ID)
	if p := provenance(t, d); p.InputSHA256 != digest(photo) {
		t.Errorf("edited %s, want the person's image %s", p.InputSHA256, digest(photo))
	}
	c, _ := h.db.Conversation(context.Background(), conv)
	if up := c.Turn(d.Turn.Parent); up == nil || up.Kind != bot.KindUpload {
		t.Errorf("the person's image is not the result's parent upload: %+v", c.Turns)
	}
}

func TestReroll(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	base := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a robot", Aspect: "4:3"}).ID)
	edit := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make it gold", Model: kontext.ModelPro}).ID)
	re := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindReroll, Turn: edit.Turn.ID}).ID)
	pe, pr := provenance(t, edit), provenance(t, re)
	if pr.Prompt != pe.Prompt || pr.InputSHA256 != digest(base.Image) || re.Turn.Parent != base.Turn.ID {
		t.Errorf("reroll %+v, want prompt %q from parent %s", pr, pe.Prompt, base.Turn.ID)
	}
	if pr.Seed == pe.Seed {
		t.Errorf("reroll kept the seed %d", pr.Seed)
	}
	if re.Turn.Model != kontext.ModelPro {
		t.Errorf("reroll model: got %s, want the original's %s", re.Turn.Model, kontext.ModelPro)
	}
	// Rerolling an imagine makes another imagine of the same prompt.
	re2 := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindReroll, Turn: base.Turn.ID}).ID)
	if p := provenance(t, re2); p.Prompt != "a robot" || p.InputSHA256 != "" || p.AspectRatio != "4:3" {
		t.Errorf("reroll of an imagine: %+v", p)
	}
}

// pngOf encodes a w×h image.
func pngOf(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngHeader is a PNG that claims w×h in its header and holds no pixels: a
// decompression bomb's first bytes.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6 // 8-bit RGBA
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func TestBadInputRefusedBeforeAnyCall(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	good := pngOf(t, 64, 64)
	big := make([]byte, 30<<20)
	copy(big, good)
	tests := []struct {
		name string
		req  bot.Request
		want error
	}{
		{"TextFileNamedPNG", bot.Request{Kind: bot.KindEdit, Prompt: "x", Image: []byte("these are my notes, not a picture")}, bot.ErrNotImage},
		{"ThirtyMegabytes", bot.Request{Kind: bot.KindEdit, Prompt: "x", Image: big}, bot.ErrImageTooLarge},
		{"HugeDimensions", bot.Request{Kind: bot.KindEdit, Prompt: "x", Image: pngHeader(20000, 20000)}, bot.ErrImageTooBig},
		{"TruncatedPNG", bot.Request{Kind: bot.KindEdit, Prompt: "x", Image: good[:len(good)/2]}, bot.ErrImageBroken},
		{"EmptyPrompt", bot.Request{Kind: bot.KindImagine, Prompt: " \t\x00 "}, bot.ErrEmptyPrompt},
		{"LongPrompt", bot.Request{Kind: bot.KindImagine, Prompt: strings.Repeat("a", 5000)}, bot.ErrPromptTooLong},
		{"NoImageAnywhere", bot.Request{Kind: bot.KindEdit, Prompt: "x", Conv: bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "empty"}}, bot.ErrNoImage},
		{"UnknownAspect", bot.Request{Kind: bot.KindImagine, Prompt: "x", Aspect: "5:1"}, nil},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			if req.Conv == (bot.ConvKey{}) {
				req.Conv = conv
			}
			req.User = "ada"
			_, err := h.core.Submit(context.Background(), &req)
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			var ue *bot.UserError
			if !errors.As(err, &ue) {
				t.Errorf("%v is not a *UserError", err)
			}
			msg := bot.Explain(err)
			if other, dup := seen[msg]; dup {
				t.Errorf("same message as %s: %q", other, msg)
			}
			seen[msg] = tt.name
		})
	}
	if st := h.fake.Stats(); st.Creates != 0 {
		t.Errorf("the provider was called %d times", st.Creates)
	}
	jobs, _ := h.db.LiveJobs(context.Background())
	if len(jobs) != 0 {
		t.Errorf("%d jobs were kept", len(jobs))
	}
}

func TestDecompressionBombDoesNotAllocate(t *testing.T) {
	bomb := pngHeader(8000, 8000) // within the side limit, past nothing: header only
	huge := pngHeader(60000, 60000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		if err := bot.CheckImage(huge); !errors.Is(err, bot.ErrImageTooBig) {
			t.Fatalf("got %v, want ErrImageTooBig", err)
		}
		if err := bot.CheckImage(bomb); !errors.Is(err, bot.ErrImageTooBig) && !errors.Is(err, bot.ErrImageBroken) {
			t.Fatalf("got %v", err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Errorf("checking 20 bomb headers allocated %d bytes", got)
	}
}

func TestLimits(t *testing.T) {
	t.Run("DailyLimit", func(t *testing.T) {
		h := newHarness(t, bot.Config{UserDaily: 2}, kontexttest.Options{})
		a := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "one"})
		b := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "two"}) // counted while in flight
		_, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "three", Conv: conv, User: "ada"})
		if !errors.Is(err, bot.ErrDailyLimit) {
			t.Fatalf("third image: got %v, want ErrDailyLimit", err)
		}
		h.mustDeliver(a.ID)
		h.mustDeliver(b.ID)
		if _, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "three", Conv: conv, User: "ada"}); !errors.Is(err, bot.ErrDailyLimit) {
			t.Errorf("after delivery: got %v, want ErrDailyLimit", err)
		}
		if st := h.fake.Stats(); st.Creates != 2 {
			t.Errorf("creates: got %d, want 2", st.Creates)
		}
		// Another user is not affected.
		h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "mine", User: "bob"}).ID)
	})
	t.Run("WorkspaceBudget", func(t *testing.T) {
		h := newHarness(t, bot.Config{WorkspaceBudget: 0.10}, kontexttest.Options{})
		h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "one"}).ID)
		_, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "two", Conv: conv, User: "bob"})
		if !errors.Is(err, bot.ErrBudget) {
			t.Fatalf("got %v, want ErrBudget", err)
		}
		// The cheaper model still fits: 0.08 + 0.04 > 0.10, so no.
		if _, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "two", Model: kontext.ModelPro, Conv: conv, User: "bob"}); !errors.Is(err, bot.ErrBudget) {
			t.Errorf("pro: got %v, want ErrBudget", err)
		}
		// Another workspace has its own budget.
		other := bot.ConvKey{Platform: "test", Workspace: ws2, Channel: "c1"}
		h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "there", Conv: other}).ID)
		if st := h.fake.Stats(); st.Creates != 2 {
			t.Errorf("creates: got %d, want 2", st.Creates)
		}
	})
	t.Run("AdminsExempt", func(t *testing.T) {
		h := newHarness(t, bot.Config{UserDaily: 1, Admins: []string{"root"}, Channels: []string{"allowed"}}, kontexttest.Options{})
		for range 2 {
			h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "x", User: "root"}).ID)
		}
	})
	t.Run("Channels", func(t *testing.T) {
		h := newHarness(t, bot.Config{Channels: []string{"allowed"}}, kontexttest.Options{})
		if _, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "x", Conv: conv, User: "ada"}); !errors.Is(err, bot.ErrChannel) {
			t.Errorf("got %v, want ErrChannel", err)
		}
		ok := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "allowed", Thread: "t"}
		h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "x", Conv: ok}).ID)
	})
}

func TestModerationNotCharged(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "something forbidden"})
	if d := h.wait(j.ID); d != nil {
		t.Fatal("delivered a moderated image")
	}
	h.rec.mu.Lock()
	msg := h.rec.failed[j.ID]
	h.rec.mu.Unlock()
	if len(msg) != 1 || !strings.Contains(msg[0], "refused") {
		t.Errorf("failure message %q, want a content refusal", msg)
	}
	day, month, err := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if err != nil || day.Images != 0 || month.Spend != 0 {
		t.Errorf("usage after a refusal: %+v %+v (%v), want nothing charged", day, month, err)
	}
	stored, _ := h.db.Job(context.Background(), j.ID)
	if stored.State != bot.JobFailed {
		t.Errorf("job state %s, want failed", stored.State)
	}
	// A delivered image is charged.
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a kitten"}).ID)
	day, month, _ = h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if day.Images != 1 || month.Spend != 0.08 {
		t.Errorf("usage after one image: %+v %+v, want 1 image and $0.08", day, month)
	}
	report, _ := h.core.Usage(context.Background(), &bot.Request{Conv: conv, User: "ada"})
	if !strings.Contains(report.Text(), "1 image today") || !strings.Contains(report.Text(), "$0.08") {
		t.Errorf("usage text: %q", report.Text())
	}
}

func TestCancelWaitingJob(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 300 * time.Millisecond})
	h.stop(time.Minute)
	h.start(newRecorder(), 1)
	running := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "first"})
	waiting := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "second", Conv: bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c2"}})
	h.eventually("the waiting job told its place", func() bool {
		h.rec.mu.Lock()
		defer h.rec.mu.Unlock()
		return len(h.rec.positions[waiting.ID]) > 0
	})
	if err := h.core.Cancel(context.Background(), waiting.ID, "mallory"); !errors.Is(err, bot.ErrNotYours) {
		t.Errorf("someone else's cancel: got %v, want ErrNotYours", err)
	}
	if err := h.core.Cancel(context.Background(), waiting.ID, "ada"); err != nil {
		t.Fatal(err)
	}
	if d := h.wait(waiting.ID); d != nil {
		t.Fatal("a cancelled job was delivered")
	}
	h.mustDeliver(running.ID)
	if err := h.core.Cancel(context.Background(), running.ID, "ada"); !errors.Is(err, bot.ErrJobGone) {
		t.Errorf("cancel after the end: got %v, want ErrJobGone", err)
	}
	if st := h.fake.Stats(); st.Creates != 1 {
		t.Errorf("creates: got %d, want 1", st.Creates)
	}
	j, _ := h.db.Job(context.Background(), waiting.ID)
	if j.State != bot.JobCanceled {
		t.Errorf("state %s, want canceled", j.State)
	}
	h.rec.mu.Lock()
	if pos := h.rec.positions[waiting.ID]; len(pos) == 0 || pos[0] != 1 {
		t.Errorf("positions told: %v, want 1st in line", pos)
	}
	h.rec.mu.Unlock()
}

// TestRestartDeliversExactlyOnce stops the bot while one job runs and one
// waits, starts it again, and checks both are delivered once.
func TestRestartDeliversExactlyOnce(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 800 * time.Millisecond})
	h.stop(time.Minute)
	h.start(newRecorder(), 1)
	running := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "running"})
	waiting := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "waiting", Conv: bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c2"}})
	h.eventually("the running job reaching the provider", func() bool {
		j, _ := h.db.Job(context.Background(), running.ID)
		return j != nil && j.State == bot.JobSubmitted
	})
	first := h.rec
	h.stop(50 * time.Millisecond) // too short for the running job
	if len(first.delivered) != 0 || len(first.failed) != 0 {
		t.Fatalf("before the restart: delivered %v failed %v, want nothing told", first.delivered, first.failed)
	}

	h.start(newRecorder(), 1)
	ids, err := h.core.Recover(context.Background())
	if err != nil || len(ids) != 2 {
		t.Fatalf("Recover: %v %v, want both jobs", ids, err)
	}
	for _, j := range []*bot.Job{running, waiting} {
		d := h.mustDeliver(j.ID)
		if p := provenance(t, d); p.Prompt != j.Prompt {
			t.Errorf("job %s delivered %q", j.ID, p.Prompt)
		}
	}
	h.stop(time.Minute)
	for id, ds := range h.rec.delivered {
		if len(ds) != 1 {
			t.Errorf("job %s delivered %d times", id, len(ds))
		}
	}
	if st := h.fake.Stats(); st.Creates != 2 {
		t.Errorf("creates: got %d, want 2 (the running prediction followed, not made again)", st.Creates)
	}
	// A third start has nothing left.
	h.start(newRecorder(), 1)
	if ids, _ := h.core.Recover(context.Background()); len(ids) != 0 {
		t.Errorf("jobs left after delivery: %v", ids)
	}
}

func TestPostFailureIsRetriedAfterRestart(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	h.rec.failPost = true
	j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "stubborn"})
	if d := h.wait(j.ID); d != nil {
		t.Fatal("delivered although posting fails")
	}
	h.stop(time.Minute)
	h.start(newRecorder(), 6)
	if ids, _ := h.core.Recover(context.Background()); len(ids) != 1 {
		t.Fatalf("recovered %v, want the unposted job", ids)
	}
	h.mustDeliver(j.ID)
	if st := h.fake.Stats(); st.Creates != 1 {
		t.Errorf("creates: got %d, want 1 (the stored image is posted, not made again)", st.Creates)
	}
	day, _, _ := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
	if day.Images != 1 {
		t.Errorf("charged %d images, want 1", day.Images)
	}
}

func TestWorkspacesAreIsolated(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	a := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "general"}
	b := bot.ConvKey{Platform: "test", Workspace: ws2, Channel: "general"}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "secret plans", Conv: a}).ID) // posted as m1
	for _, req := range []bot.Request{
		{Kind: bot.KindEdit, Prompt: "show me", Conv: b, ReplyTo: "m1"},
		{Kind: bot.KindEdit, Prompt: "show me", Conv: b},
		{Kind: bot.KindReroll, Conv: b},
	} {
		req.User = "eve"
		if _, err := h.core.Submit(context.Background(), &req); !errors.Is(err, bot.ErrNoImage) {
			t.Errorf("%s from the other workspace: got %v, want ErrNoImage", req.Kind, err)
		}
	}
	if _, err := h.core.Undo(context.Background(), &bot.Request{Conv: b}); !errors.Is(err, bot.ErrNoImage) {
		t.Errorf("undo from the other workspace: got %v", err)
	}
	if st := h.fake.Stats(); st.Creates != 1 {
		t.Errorf("creates: got %d, want 1", st.Creates)
	}
}

func TestFollowUpsBackToBack(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 150 * time.Millisecond})
	base := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a room"}).ID)
	first := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add a sofa"})
	second := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make the sofa red", User: "bob"})
	d1, d2 := h.mustDeliver(first.ID), h.mustDeliver(second.ID)
	if p := provenance(t, d1); p.InputSHA256 != digest(base.Image) {
		t.Errorf("first follow-up edited %s, want the base", p.InputSHA256)
	}
	if p := provenance(t, d2); p.InputSHA256 != digest(d1.Image) {
		t.Errorf("second follow-up edited %s, want the first's result %s", p.InputSHA256, digest(d1.Image))
	}
	// Follow-ups may even come before the first image exists.
	other := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c9", Thread: "t9"}
	im := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a boat", Conv: other})
	ed := h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add a sail", Conv: other})
	di, de := h.mustDeliver(im.ID), h.mustDeliver(ed.ID)
	if p := provenance(t, de); p.InputSHA256 != digest(di.Image) {
		t.Errorf("the edit sent during the imagine edited %s, want its result", p.InputSHA256)
	}
}

func TestThreadOpenedOnDelivery(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	channel := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art"}
	thread := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art", Thread: "th1"}
	h.rec.thread = func(j *bot.Job) *bot.ConvKey {
		if j.Kind == bot.KindImagine {
			return &thread
		}
		return nil
	}
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a dragon", Conv: channel}).ID)
	e := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "breathing fire", Conv: thread}).ID)
	if p := provenance(t, e); p.InputSHA256 != digest(d.Image) {
		t.Errorf("the thread's first edit started from %s, want the picture that opened it", p.InputSHA256)
	}
	// A reply to the picture's message (m1) finds it in the thread's conversation.
	r := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "as a statue", Conv: channel, ReplyTo: "m1"}).ID)
	if p := provenance(t, r); p.InputSHA256 != digest(d.Image) {
		t.Errorf("reply to m1 edited %s, want the dragon", p.InputSHA256)
	}
}

func TestShutdownRefusesNewWork(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	core := h.core
	h.stop(time.Second)
	_, err := core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "late", Conv: conv, User: "ada"})
	if !errors.Is(err, kontext.ErrShutdown) || !strings.Contains(bot.Explain(err), "restarting") {
		t.Errorf("got %v (%q), want a restarting message", err, bot.Explain(err))
	}
}

func TestNoGoroutineLeaks(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "tidy"}).ID)
	h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "left waiting"})
	h.stop(time.Second)
	h.fake.Close()
}

func TestThreadCarriesAncestors(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	channel := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art"}
	threads := 0
	h.rec.thread = func(j *bot.Job) *bot.ConvKey {
		threads++
		return &bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art", Thread: fmt.Sprintf("th%d", threads)}
	}
	first := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a castle", Conv: channel}).ID)
	// An edit in the channel edits its latest picture and opens its own thread.
	second := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "at night", Conv: channel}).ID)
	thread := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art", Thread: "th2"}
	c, err := h.db.Conversation(context.Background(), thread)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Turns) != 2 || c.Turns[0].ID != first.Turn.ID || c.Head != second.Turn.ID {
		t.Fatalf("thread turns %+v head %s, want the castle then its edit as head", c.Turns, c.Head)
	}
	undone, err := h.core.Undo(context.Background(), &bot.Request{Conv: thread, User: "ada"})
	if err != nil || undone.Turn.ID != first.Turn.ID {
		t.Fatalf("undo in the thread: %v, want the castle", err)
	}
	re := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindReroll, Conv: thread, Turn: second.Turn.ID}).ID)
	if p := provenance(t, re); p.InputSHA256 != digest(first.Image) || p.Prompt != "at night" {
		t.Errorf("reroll in the thread: %+v, want \"at night\" from the castle", p)
	}
}

func TestRecordBeforeDeliverReturns(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	channel := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art"}
	thread := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "art", Thread: "th"}
	h.rec.thread = func(*bot.Job) *bot.ConvKey { return &thread }
	checks := make(chan error, 4)
	h.rec.onPost = func(d *bot.Delivery, p bot.Posted) {
		// As an adapter would: the message posted and its thread opened,
		// record both; a person replying or writing in the thread at once
		// is served, before Deliver has even returned.
		checks <- d.Record(context.Background(), p)
		checks <- h.core.Check(context.Background(), &bot.Request{Kind: bot.KindEdit, Prompt: "x", Conv: channel, ReplyTo: p.MessageID, User: "bob"})
		checks <- h.core.Check(context.Background(), &bot.Request{Kind: bot.KindEdit, Prompt: "x", Conv: thread, User: "bob"})
		checks <- d.Record(context.Background(), p) // again: harmless
	}
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a kite", Conv: channel}).ID)
	for i := range 4 {
		if err := <-checks; err != nil {
			t.Errorf("step %d: %v", i, err)
		}
	}
	c, _ := h.db.Conversation(context.Background(), thread)
	if len(c.Turns) != 1 || c.Head != d.Turn.ID || len(c.Turns[0].Messages) != 1 {
		t.Errorf("thread after recording twice: %+v, want the kite once with one message", c.Turns)
	}
}

func TestCheckChangesNothing(t *testing.T) {
	h := newHarness(t, bot.Config{UserDaily: 1}, kontexttest.Options{})
	ok := &bot.Request{Kind: bot.KindEdit, Prompt: "paint it", Image: pngOf(t, 32, 32), Conv: conv, User: "ada"}
	if err := h.core.Check(context.Background(), ok); err != nil {
		t.Fatalf("Check: %v", err)
	}
	for _, tt := range []struct {
		name string
		req  bot.Request
		want error
	}{
		{"NotImage", bot.Request{Kind: bot.KindEdit, Prompt: "x", Image: []byte("hello")}, bot.ErrNotImage},
		{"NoImage", bot.Request{Kind: bot.KindEdit, Prompt: "x"}, bot.ErrNoImage},
		{"EmptyPrompt", bot.Request{Kind: bot.KindImagine}, bot.ErrEmptyPrompt},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.Conv, req.User = conv, "ada"
			if err := h.core.Check(context.Background(), &req); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := h.db.Conversation(context.Background(), conv); !errors.Is(err, bot.ErrNotFound) {
		t.Errorf("Check stored the upload: %v", err)
	}
	if jobs, _ := h.db.LiveJobs(context.Background()); len(jobs) != 0 || h.fake.Stats().Creates != 0 {
		t.Errorf("Check made %d jobs and %d provider calls", len(jobs), h.fake.Stats().Creates)
	}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "one"}).ID)
	if err := h.core.Check(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "two", Conv: conv, User: "ada"}); !errors.Is(err, bot.ErrDailyLimit) {
		t.Errorf("Check past the daily limit: got %v", err)
	}
}

// TestSubmitWhileClosing submits from several goroutines while the core
// closes: every request is either accepted (and kept on disk or run) or
// told the bot is restarting, with no race between the two.
func TestSubmitWhileClosing(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{Latency: 50 * time.Millisecond})
	var wg sync.WaitGroup
	start := make(chan struct{})
	accepted := make([]int, 4)
	for g := range accepted {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := 0; ; i++ {
				key := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: fmt.Sprintf("c%d", g), Thread: fmt.Sprint(i)}
				_, err := h.core.Submit(context.Background(), &bot.Request{Kind: bot.KindImagine, Prompt: "race", Conv: key, User: fmt.Sprint("u", g, "-", i)})
				if errors.Is(err, kontext.ErrShutdown) {
					return
				}
				if err != nil {
					t.Errorf("Submit: %v", err)
					return
				}
				accepted[g]++
			}
		}()
	}
	close(start)
	time.Sleep(20 * time.Millisecond)
	h.stop(50 * time.Millisecond)
	wg.Wait()
	total := 0
	for _, n := range accepted {
		total += n
	}
	if total == 0 {
		t.Error("nothing was accepted before the close")
	}
}

// TestPostRetriedInProcess: transient post failures are retried in the
// process, the requester is told once that posting is delayed, every
// retry asks the adapter to look for an earlier post, and the image is
// delivered once and charged once, with no restart.
func TestPostRetriedInProcess(t *testing.T) {
	for _, c := range []struct {
		name   string
		delays bool
		after  time.Duration
	}{
		{"DelayReporter", true, 0},
		{"PlainReporter", false, 0},
		{"RateLimitedWait", true, 20 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, bot.Config{PostRetryBase: 5 * time.Millisecond}, kontexttest.Options{})
			h.rec.mu.Lock()
			h.rec.transient, h.rec.after, h.rec.delays = 3, c.after, c.delays
			h.rec.mu.Unlock()
			j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "flaky chat"})
			h.mustDeliver(j.ID)
			h.rec.mu.Lock()
			posts, reposts, delayed, held, failed := h.rec.posts, h.rec.reposts, h.rec.delayed[j.ID], h.rec.held[j.ID], h.rec.failed[j.ID]
			delivered := len(h.rec.delivered[j.ID])
			h.rec.mu.Unlock()
			if posts != 4 || delivered != 1 {
				t.Errorf("got %d posts and %d deliveries, want 4 posts (3 failed) and 1 delivery", posts, delivered)
			}
			if want := []bool{false, true, true, true}; fmt.Sprint(reposts) != fmt.Sprint(want) {
				t.Errorf("Repost per attempt: got %v, want %v", reposts, want)
			}
			wantDelayed := 0
			if c.delays {
				wantDelayed = 1
			}
			if delayed != wantDelayed || len(held) != 0 || len(failed) != 0 {
				t.Errorf("told delayed %d, held %q, failed %q; want delayed %d and nothing else", delayed, held, failed, wantDelayed)
			}
			day, _, _ := h.db.Usage(context.Background(), "test", ws1, "ada", time.Now())
			if st := h.fake.Stats(); day.Images != 1 || st.Creates != 1 {
				t.Errorf("charged %d images for %d predictions, want 1 and 1", day.Images, st.Creates)
			}
		})
	}
}

// TestPostHeldAfterRetryWindow: when posting keeps failing past
// PostRetry the image is held (a DelayReporter is told so, instead of
// Fail), and the next start posts it once, as a Repost.
func TestPostHeldAfterRetryWindow(t *testing.T) {
	h := newHarness(t, bot.Config{PostRetry: 60 * time.Millisecond, PostRetryBase: 5 * time.Millisecond}, kontexttest.Options{})
	h.rec.mu.Lock()
	h.rec.transient, h.rec.delays = 1<<30, true
	h.rec.mu.Unlock()
	j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "chat is down for long"})
	select {
	case <-h.rec.ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the job was neither delivered nor held")
	}
	h.rec.mu.Lock()
	posts, held, failed, delayed := h.rec.posts, h.rec.held[j.ID], h.rec.failed[j.ID], h.rec.delayed[j.ID]
	h.rec.mu.Unlock()
	if posts < 2 || len(held) != 1 || held[0] != bot.PostHeldText || len(failed) != 0 || delayed != 1 {
		t.Fatalf("posts %d, held %q, failed %q, delayed %d; want retries, one hold, no Fail, one delay", posts, held, failed, delayed)
	}
	if got, _ := h.db.Job(context.Background(), j.ID); got == nil || got.State != bot.JobPosting {
		t.Fatalf("job %+v, want it left posting", got)
	}
	h.stop(time.Minute)
	rec := newRecorder()
	h.start(rec, 6)
	if ids, _ := h.core.Recover(context.Background()); len(ids) != 1 {
		t.Fatalf("recovered %v, want the held job", ids)
	}
	h.mustDeliver(j.ID)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reposts) != 1 || !rec.reposts[0] {
		t.Errorf("after the restart: Repost per attempt %v, want one attempt that looks for an earlier post", rec.reposts)
	}
	if st := h.fake.Stats(); st.Creates != 1 {
		t.Errorf("creates: got %d, want 1", st.Creates)
	}
}

// TestCloseStopsPostRetries: Close does not wait out the retry window;
// the job stays posting for the next start and the requester is not told
// it failed.
func TestCloseStopsPostRetries(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := newHarness(t, bot.Config{PostRetry: time.Hour, PostRetryBase: time.Hour}, kontexttest.Options{})
	h.rec.mu.Lock()
	h.rec.transient, h.rec.delays = 1<<30, true
	h.rec.mu.Unlock()
	j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "retry forever"})
	h.eventually("the first failed post", func() bool {
		h.rec.mu.Lock()
		defer h.rec.mu.Unlock()
		return h.rec.delayed[j.ID] == 1
	})
	done := make(chan struct{})
	go func() {
		h.stop(time.Minute)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close waited for the posting retries")
	}
	db, err := store.Open(h.dbPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, _ := db.Job(context.Background(), j.ID); got == nil || got.State != bot.JobPosting {
		t.Errorf("job %+v, want it left posting", got)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if len(h.rec.failed[j.ID])+len(h.rec.held[j.ID]) != 0 {
		t.Errorf("the requester was told %q %q at shutdown", h.rec.failed[j.ID], h.rec.held[j.ID])
	}
	h.fake.Close()
}

// TestUndoInEmptyConversation: /undo before any image says there is
// nothing to undo, not that there is no image to edit.
func TestUndoInEmptyConversation(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	empty := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "empty"}
	_, err := h.core.Undo(context.Background(), &bot.Request{Kind: bot.KindUndo, Conv: empty, User: "ada"})
	if !errors.Is(err, bot.ErrEmptyUndo) {
		t.Fatalf("got %v, want ErrEmptyUndo", err)
	}
	if got, want := bot.Explain(err), "There is nothing to undo here: no image has been made in this conversation yet."; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
