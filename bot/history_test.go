package bot_test

import (
	"bytes"
	"context"
	"errors"
	"image/png"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
)

// branched makes imagine, edit, edit, undo, edit in conv: images 3 and 4
// are both made from 2, and 4 is current.
func branched(t *testing.T, h *harness) []*bot.Delivery {
	t.Helper()
	a := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse"}).ID)
	b := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "at night"}).ID)
	c := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "in a storm"}).ID)
	if _, err := h.core.Undo(context.Background(), &bot.Request{Kind: bot.KindUndo, Conv: conv, User: "ada"}); err != nil {
		t.Fatal(err)
	}
	d := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make it snow"}).ID)
	return []*bot.Delivery{a, b, c, d}
}

func TestHistorySheet(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	ds := branched(t, h)
	creates := h.fake.Stats().Creates
	hs, err := h.core.History(context.Background(), &bot.Request{Kind: bot.KindHistory, Conv: conv, User: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.fake.Stats().Creates; got != creates {
		t.Errorf("history called the provider (%d creates)", got-creates)
	}
	if got, want := len(hs.Items), 4; got != want {
		t.Fatalf("got %d items, want %d", got, want)
	}
	for i, it := range hs.Items {
		if it.Number != i+1 || it.Turn.ID != ds[i].Turn.ID {
			t.Errorf("item %d: number %d turn %s, want %d %s", i, it.Number, it.Turn.ID, i+1, ds[i].Turn.ID)
		}
		if got, want := it.Head, i == 3; got != want {
			t.Errorf("item %d: head %v, want %v", i+1, got, want)
		}
	}
	if got, want := hs.Text(true), "History: 4 images, the current one is 4 (framed). Pick one to make it current again, or to open it in a new thread."; got != want {
		t.Errorf("text: got %q, want %q", got, want)
	}
	if got, want := hs.Items[3].Label(100), "4 · make it snow (current)"; got != want {
		t.Errorf("label: got %q, want %q", got, want)
	}
	img, err := png.Decode(bytes.NewReader(hs.PNG))
	if err != nil {
		t.Fatalf("the sheet is not a PNG: %v", err)
	}
	if got, want := img.Bounds().Size(), hs.Layout.Size; got != want {
		t.Errorf("sheet is %v, layout says %v", got, want)
	}
	l := hs.Layout
	if len(l.Thumbs) != 4 || l.Thumbs[2].Rect.Min.X != l.Thumbs[3].Rect.Min.X || l.Thumbs[2].Rect.Min.Y == l.Thumbs[3].Rect.Min.Y {
		t.Errorf("the branch: 3 at %v and 4 at %v should share a column", l.Thumbs[2].Rect, l.Thumbs[3].Rect)
	}
	if hd := l.Head(); hd == nil || hd.Number != 4 {
		t.Errorf("head on the sheet: %+v, want 4", hd)
	}
}

func TestUseMakesAnOlderImageCurrent(t *testing.T) {
	tests := []struct {
		name string
		pick func(ds []*bot.Delivery) string
	}{
		{"by number", func([]*bot.Delivery) string { return "3" }},
		{"by id", func(ds []*bot.Delivery) string { return ds[2].Turn.ID }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, bot.Config{}, kontexttest.Options{})
			ds := branched(t, h)
			creates := h.fake.Stats().Creates
			d, err := h.core.Use(context.Background(), &bot.Request{Kind: bot.KindUse, Conv: conv, User: "ada", Turn: tt.pick(ds)})
			if err != nil {
				t.Fatal(err)
			}
			if d.Turn.ID != ds[2].Turn.ID || !bytes.Equal(d.Image, ds[2].Image) {
				t.Fatalf("use showed %s, want image 3 %s", d.Turn.ID, ds[2].Turn.ID)
			}
			if got := h.fake.Stats().Creates; got != creates {
				t.Errorf("use called the provider")
			}
			next := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add a boat"}).ID)
			if p := provenance(t, next); p.InputSHA256 != digest(ds[2].Image) {
				t.Errorf("the edit after use started from %s, want image 3 %s", p.InputSHA256, digest(ds[2].Image))
			}
		})
	}
}

func TestBranchOpensAThreadFromAnOlderImage(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	ds := branched(t, h)
	d, err := h.core.Branch(context.Background(), &bot.Request{Conv: conv, User: "ada", Turn: "2"})
	if err != nil {
		t.Fatal(err)
	}
	thread := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c1", Thread: "new"}
	if err := d.Record(context.Background(), bot.Posted{MessageID: "m99", Thread: &thread}); err != nil {
		t.Fatal(err)
	}
	c, err := h.db.Conversation(context.Background(), thread)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Turns) != 2 || c.Head != ds[1].Turn.ID {
		t.Errorf("new thread: %d turns, head %s; want image 1 and 2, head 2", len(c.Turns), c.Head)
	}
	old, err := h.db.Conversation(context.Background(), conv)
	if err != nil || old.Head != ds[3].Turn.ID {
		t.Errorf("the old conversation's head moved: %v %v", old, err)
	}
}

func TestHistoryRefusals(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	empty := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "quiet"}
	if _, err := h.core.History(context.Background(), &bot.Request{Conv: empty}); !errors.Is(err, bot.ErrEmptyHistory) {
		t.Errorf("history of an empty conversation: got %v, want ErrEmptyHistory", err)
	}
	if _, err := h.core.Use(context.Background(), &bot.Request{Conv: empty, Turn: "1"}); !errors.Is(err, bot.ErrEmptyHistory) {
		t.Errorf("use in an empty conversation: got %v, want ErrEmptyHistory", err)
	}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse"}).ID)
	for _, pick := range []string{"0", "2", "inope"} {
		_, err := h.core.Use(context.Background(), &bot.Request{Conv: conv, Turn: pick})
		var ue *bot.UserError
		if !errors.As(err, &ue) {
			t.Errorf("use %q: got %v, want a sentence", pick, err)
		}
	}
}

func TestHistoryLabel(t *testing.T) {
	long := strings.Repeat("é", 300)
	tests := []struct {
		name string
		item bot.HistoryItem
		n    int
		want string
	}{
		{"prompt", bot.HistoryItem{Number: 3, Turn: bot.Turn{Prompt: "make it\nsnow"}}, 100, "3 · make it snow"},
		{"upload", bot.HistoryItem{Number: 1, Turn: bot.Turn{Kind: bot.KindUpload}, Head: true}, 100, "1 · uploaded image (current)"},
		{"cut", bot.HistoryItem{Number: 12, Turn: bot.Turn{Prompt: long}}, 75, "12 · " + strings.Repeat("é", 69) + "…"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.item.Label(tt.n)
			if got != tt.want || utf8.RuneCountInString(got) > tt.n {
				t.Errorf("got %q (%d runes), want %q", got, utf8.RuneCountInString(got), tt.want)
			}
		})
	}
}

// countingStore is a real store that counts the image and thumbnail
// reads and writes the core makes, by image digest.
type countingStore struct {
	bot.Store
	mu                  sync.Mutex
	images, thumbs, put map[string]int
}

func newCountingStore(s bot.Store) *countingStore {
	return &countingStore{Store: s, images: map[string]int{}, thumbs: map[string]int{}, put: map[string]int{}}
}

func (s *countingStore) Image(ctx context.Context, sha string) ([]byte, error) {
	s.mu.Lock()
	s.images[sha]++
	s.mu.Unlock()
	return s.Store.Image(ctx, sha)
}

func (s *countingStore) Thumbnail(ctx context.Context, sha string) ([]byte, error) {
	s.mu.Lock()
	s.thumbs[sha]++
	s.mu.Unlock()
	return s.Store.Thumbnail(ctx, sha)
}

func (s *countingStore) PutThumbnail(ctx context.Context, sha string, data []byte) error {
	s.mu.Lock()
	s.put[sha]++
	s.mu.Unlock()
	return s.Store.PutThumbnail(ctx, sha, data)
}

// counts is how many images were read, thumbnails read and thumbnails
// stored, and resets the counters.
func (s *countingStore) counts() (images, thumbs, put map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	images, thumbs, put = s.images, s.thumbs, s.put
	s.images, s.thumbs, s.put = map[string]int{}, map[string]int{}, map[string]int{}
	return images, thumbs, put
}

// restartCounting stops the process and starts a new one (an empty
// thumbnail cache) over the same store, seen through a countingStore.
func restartCounting(h *harness) *countingStore {
	h.t.Helper()
	var cs *countingStore
	h.wrapStore = func(s bot.Store) bot.Store {
		cs = newCountingStore(s)
		return cs
	}
	h.stop(time.Minute)
	h.start(newRecorder(), 6)
	return cs
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestHistoryAfterRestartReadsThumbnails: thumbnails are stored as
// images are delivered, so after a restart (or on another replica) a
// history sheet reads the thumbnails and not one full image.
func TestHistoryAfterRestartReadsThumbnails(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	ds := branched(t, h)
	for i, d := range ds {
		if _, err := h.db.Thumbnail(context.Background(), d.Turn.SHA256); err != nil {
			t.Errorf("image %d delivered: thumbnail: %v, want it stored", i+1, err)
		}
	}
	cs := restartCounting(h)
	hs, err := h.core.History(context.Background(), &bot.Request{Kind: bot.KindHistory, Conv: conv, User: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(hs.Layout.Thumbs), len(ds); got != want {
		t.Fatalf("got %d thumbnails on the sheet, want %d", got, want)
	}
	images, thumbs, put := cs.counts()
	if got := sum(images); got != 0 {
		t.Errorf("history after a restart read %d full images (%v), want none", got, images)
	}
	for i, d := range ds {
		if got := thumbs[d.Turn.SHA256]; got != 1 {
			t.Errorf("image %d: thumbnail read %d times, want once", i+1, got)
		}
	}
	if got := sum(put); got != 0 {
		t.Errorf("history stored %d thumbnails (%v), want none (all were stored)", got, put)
	}
	if _, err := png.Decode(bytes.NewReader(hs.PNG)); err != nil {
		t.Errorf("the sheet is not a PNG: %v", err)
	}
	// Asked again in the same process: from memory, no store read at all.
	if _, err := h.core.History(context.Background(), &bot.Request{Kind: bot.KindHistory, Conv: conv, User: "ada"}); err != nil {
		t.Fatal(err)
	}
	if images, thumbs, put := cs.counts(); sum(images)+sum(thumbs)+sum(put) != 0 {
		t.Errorf("the second sheet read %v images and %v thumbnails and stored %v, want nothing", images, thumbs, put)
	}
}

// TestHistoryStoresMissingThumbnails: an image stored without a
// thumbnail (delivered before thumbnails were stored) is decoded once,
// by the first sheet that shows it, and its thumbnail stored: no later
// sheet, in any process, reads it again.
func TestHistoryStoresMissingThumbnails(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	a := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse"}).ID)
	// An older bot's image: in the store, with no thumbnail.
	old := append(bytes.Clone(a.Image), 0) // other bytes, the same picture
	oldSHA := digest(old)
	if _, err := h.db.AddTurn(context.Background(), conv, bot.Turn{ID: "old1", Parent: a.Turn.ID, Kind: bot.KindEdit, Prompt: "older", Format: "png"}, old, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.db.Thumbnail(context.Background(), oldSHA); !errors.Is(err, bot.ErrNotFound) {
		t.Fatalf("the older image's thumbnail: %v, want none yet", err)
	}
	steps := []struct {
		name   string
		images map[string]int
		put    map[string]int
	}{
		{name: "the first sheet makes the missing thumbnail", images: map[string]int{oldSHA: 1}, put: map[string]int{oldSHA: 1}},
		{name: "a sheet after another restart reads none", images: map[string]int{}, put: map[string]int{}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			cs := restartCounting(h)
			hs, err := h.core.History(context.Background(), &bot.Request{Kind: bot.KindHistory, Conv: conv, User: "ada"})
			if err != nil {
				t.Fatal(err)
			}
			if got := len(hs.Items); got != 2 {
				t.Fatalf("got %d images on the sheet, want 2", got)
			}
			images, _, put := cs.counts()
			if !maps.Equal(images, st.images) {
				t.Errorf("images read: got %v, want %v", images, st.images)
			}
			if !maps.Equal(put, st.put) {
				t.Errorf("thumbnails stored: got %v, want %v", put, st.put)
			}
			if _, err := h.db.Thumbnail(context.Background(), oldSHA); err != nil {
				t.Errorf("the older image's thumbnail after the sheet: %v, want it stored", err)
			}
		})
	}
}

// TestHistoryOfANewThreadSharesThumbnails: a thread opened from an older
// image holds the same images, so its sheet, after a restart, reads the
// thumbnails already stored and no image.
func TestHistoryOfANewThreadSharesThumbnails(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	ds := branched(t, h)
	d, err := h.core.Branch(context.Background(), &bot.Request{Conv: conv, User: "ada", Turn: "2"})
	if err != nil {
		t.Fatal(err)
	}
	thread := bot.ConvKey{Platform: "test", Workspace: ws1, Channel: "c1", Thread: "new"}
	if err := d.Record(context.Background(), bot.Posted{MessageID: "m99", Thread: &thread}); err != nil {
		t.Fatal(err)
	}
	cs := restartCounting(h)
	hs, err := h.core.History(context.Background(), &bot.Request{Kind: bot.KindHistory, Conv: thread, User: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(hs.Items); got != 2 {
		t.Fatalf("got %d images on the thread's sheet, want 2", got)
	}
	images, thumbs, put := cs.counts()
	if sum(images) != 0 || sum(put) != 0 {
		t.Errorf("the thread's sheet read images %v and stored thumbnails %v, want none", images, put)
	}
	for i, d := range ds[:2] {
		if got := thumbs[d.Turn.SHA256]; got != 1 {
			t.Errorf("image %d: thumbnail read %d times, want once", i+1, got)
		}
	}
}
