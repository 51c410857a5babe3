package sheet

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"kontextbot/kontext"
)

// solid is a w×h PNG of one colour.
func solid(t testing.TB, w, h int, c color.RGBA) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// colourOf is a distinct colour for image i, never one the sheet uses.
func colourOf(i int) color.RGBA {
	return color.RGBA{uint8(40 + 50*(i%4)), uint8(200 - 30*(i%5)), uint8(60 + 17*i), 0xff}
}

type pos struct{ gen, row, band, col, parent int }

func TestPlan(t *testing.T) {
	tests := []struct {
		name  string
		nodes []Node
		head  string
		want  []pos
		rows  int
		bands int
	}{
		{name: "empty", rows: 0, bands: 0},
		{name: "one image", nodes: []Node{{ID: "a"}}, head: "a",
			want: []pos{{0, 0, 0, 0, 0}}, rows: 1, bands: 1},
		{name: "chain", nodes: []Node{{ID: "a"}, {ID: "b", Parent: "a"}, {ID: "c", Parent: "b"}}, head: "c",
			want: []pos{{0, 0, 0, 0, 0}, {1, 0, 0, 1, 1}, {2, 0, 0, 2, 2}}, rows: 1, bands: 1},
		{
			// imagine, edit, edit, undo, edit: 3 and 4 are both made from 2.
			name:  "branch after an undo",
			nodes: []Node{{ID: "a"}, {ID: "b", Parent: "a"}, {ID: "c", Parent: "b"}, {ID: "d", Parent: "b"}}, head: "d",
			want: []pos{{0, 0, 0, 0, 0}, {1, 0, 0, 1, 1}, {2, 0, 0, 2, 2}, {2, 1, 0, 2, 2}}, rows: 2, bands: 1,
		},
		{
			name: "branch below a longer first branch",
			nodes: []Node{{ID: "a"}, {ID: "b", Parent: "a"}, {ID: "c", Parent: "b"}, {ID: "c2", Parent: "b"},
				{ID: "d", Parent: "a"}},
			want: []pos{{0, 0, 0, 0, 0}, {1, 0, 0, 1, 1}, {2, 0, 0, 2, 2}, {2, 1, 0, 2, 2}, {1, 2, 0, 1, 1}}, rows: 3, bands: 1,
		},
		{
			name:  "two pictures and a parent no longer kept",
			nodes: []Node{{ID: "a"}, {ID: "b", Parent: "gone"}, {ID: "c", Parent: "a"}},
			want:  []pos{{0, 0, 0, 0, 0}, {0, 1, 0, 0, 0}, {1, 0, 0, 1, 1}}, rows: 2, bands: 1,
		},
		{
			name: "a band is as tall as the rows it uses",
			nodes: []Node{{ID: "a"}, {ID: "b", Parent: "a"}, {ID: "b2", Parent: "a"}, {ID: "c", Parent: "b"}, {ID: "d", Parent: "c"},
				{ID: "e", Parent: "d"}},
			want: []pos{{0, 0, 0, 0, 0}, {1, 0, 0, 1, 1}, {1, 1, 0, 1, 1}, {2, 0, 0, 2, 2}, {3, 0, 0, 3, 4}, {4, 0, 1, 0, 5}},
			rows: 2, bands: 2,
		},
		{
			name: "a long chain continues in the next band",
			nodes: []Node{{ID: "a"}, {ID: "b", Parent: "a"}, {ID: "c", Parent: "b"}, {ID: "d", Parent: "c"},
				{ID: "e", Parent: "d"}, {ID: "f", Parent: "e"}},
			want: []pos{{0, 0, 0, 0, 0}, {1, 0, 0, 1, 1}, {2, 0, 0, 2, 2}, {3, 0, 0, 3, 3}, {4, 0, 1, 0, 4}, {5, 0, 1, 1, 5}},
			rows: 1, bands: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := Plan(tt.nodes, tt.head)
			if got, want := len(l.Thumbs), len(tt.want); got != want {
				t.Fatalf("got %d thumbs, want %d", got, want)
			}
			if l.Rows != tt.rows || l.Bands != tt.bands {
				t.Errorf("got %d rows, %d bands; want %d, %d", l.Rows, l.Bands, tt.rows, tt.bands)
			}
			full := image.Rectangle{Max: l.Size}
			for i, th := range l.Thumbs {
				got := pos{th.Gen, th.Row, th.Band, th.Col, th.ParentNumber}
				if got != tt.want[i] {
					t.Errorf("thumb %d: got %+v, want %+v", i+1, got, tt.want[i])
				}
				if th.Number != i+1 || th.ID != tt.nodes[i].ID {
					t.Errorf("thumb %d: got number %d id %q", i+1, th.Number, th.ID)
				}
				if th.Rect.Dx() != ThumbSize || th.Rect.Dy() != ThumbSize || !th.Rect.Inset(-HeadBorder).In(full) {
					t.Errorf("thumb %d: rect %v not a %d box inside %v", i+1, th.Rect, ThumbSize, full)
				}
				if got, want := th.Head, th.ID == tt.head; got != want {
					t.Errorf("thumb %d: head %v, want %v", i+1, got, want)
				}
				for j, o := range l.Thumbs[:i] {
					if o.Rect.Inset(-HeadBorder).Overlaps(th.Rect) {
						t.Errorf("thumbs %d and %d overlap: %v, %v", j+1, i+1, o.Rect, th.Rect)
					}
				}
			}
			if l.Size.X > 2*Margin+PerBand*ThumbSize+(PerBand-1)*ColGap {
				t.Errorf("sheet %v wider than %d generations", l.Size, PerBand)
			}
		})
	}
}

// decode reads a rendered sheet back.
func decode(t *testing.T, data []byte) *image.RGBA {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the sheet is not a PNG: %v", err)
	}
	rgba := image.NewRGBA(img.Bounds())
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			rgba.Set(x, y, img.At(x, y))
		}
	}
	return rgba
}

func near(a, b color.RGBA) bool {
	d := func(x, y uint8) int {
		if x > y {
			return int(x - y)
		}
		return int(y - x)
	}
	return d(a.R, b.R) <= 6 && d(a.G, b.G) <= 6 && d(a.B, b.B) <= 6
}

func TestRender(t *testing.T) {
	// imagine, edit, edit, undo, edit (head), with one wide and one tall
	// image and one that does not decode.
	sizes := []image.Point{{64, 64}, {128, 64}, {48, 96}, {80, 80}, {32, 32}}
	parents := []string{"", "n1", "n2", "n2", "n4"}
	var nodes []Node
	for i, s := range sizes {
		nodes = append(nodes, Node{ID: fmt.Sprintf("n%d", i+1), Parent: parents[i], Image: solid(t, s.X, s.Y, colourOf(i))})
	}
	nodes[4].Image = []byte("not an image")
	data, l, err := Render(context.Background(), nodes, "n4", Options{})
	if err != nil {
		t.Fatal(err)
	}
	img := decode(t, data)
	if got, want := img.Bounds().Size(), l.Size; got != want {
		t.Fatalf("got a %v picture, layout says %v", got, want)
	}
	if l.Thumbs[2].Gen != l.Thumbs[3].Gen || l.Thumbs[2].Rect.Min.X != l.Thumbs[3].Rect.Min.X || l.Thumbs[2].Rect.Min.Y >= l.Thumbs[3].Rect.Min.Y {
		t.Errorf("the branch: thumbs 3 %v and 4 %v are not stacked in one column", l.Thumbs[2].Rect, l.Thumbs[3].Rect)
	}
	shown := 0
	for i, th := range l.Thumbs {
		c := th.Rect.Min.Add(image.Pt(ThumbSize/2, ThumbSize/2+20)) // below the number
		got := img.RGBAAt(c.X, c.Y)
		switch {
		case i == 4:
			if !near(got, BoxColor) {
				t.Errorf("thumb 5 (not an image): centre %v, want the empty box %v", got, BoxColor)
			}
		case near(got, colourOf(i)):
			shown++
		default:
			t.Errorf("thumb %d: centre %v, want its image's %v", i+1, got, colourOf(i))
		}
		// Just outside the box: the head's frame, or the background.
		ring := img.RGBAAt(th.Rect.Min.X-HeadBorder/2, th.Rect.Max.Y-10)
		if got, want := near(ring, HeadColor), th.Head; got != want {
			t.Errorf("thumb %d: frame pixel %v; head colour %v, want %v", i+1, ring, got, want)
		}
		// The number's badge has white (black on the head) text in it.
		fg := TextColor
		if th.Head {
			fg = BadgeColor
		}
		if !hasColour(img, image.Rect(th.Rect.Min.X, th.Rect.Min.Y, th.Rect.Min.X+40, th.Rect.Min.Y+NumberSize), fg) {
			t.Errorf("thumb %d: no number drawn in its corner", i+1)
		}
	}
	if shown != 4 {
		t.Errorf("got %d thumbnails showing their image, want 4", shown)
	}
	// The lines: 1→2 runs along row 0; 2→4 turns down in the gap after 2.
	gap := l.Thumbs[1].Rect.Max.X + ColGap/2
	if got := img.RGBAAt(gap, (l.Thumbs[3].Rect.Min.Y+l.Thumbs[3].Rect.Max.Y)/2); !near(got, LineColor) {
		t.Errorf("no line down to the branch: %v", got)
	}
	if got := img.RGBAAt(l.Thumbs[0].Rect.Max.X+5, (l.Thumbs[0].Rect.Min.Y+l.Thumbs[0].Rect.Max.Y)/2); !near(got, LineColor) {
		t.Errorf("no line from 1 to 2: %v", got)
	}
	// A wide image is fitted: its box has empty space above it.
	if got := img.RGBAAt(l.Thumbs[1].Rect.Min.X+ThumbSize/2, l.Thumbs[1].Rect.Max.Y-5); !near(got, BoxColor) {
		t.Errorf("thumb 2 (wide) should leave the bottom of its box empty: %v", got)
	}
}

func hasColour(img *image.RGBA, r image.Rectangle, c color.RGBA) bool {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if near(img.RGBAAt(x, y), c) {
				return true
			}
		}
	}
	return false
}

func TestRenderEmptyAndCanceled(t *testing.T) {
	data, l, err := Render(context.Background(), nil, "", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Thumbs) != 0 || decode(t, data).Bounds().Empty() {
		t.Errorf("an empty sheet: %d thumbs", len(l.Thumbs))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Render(ctx, []Node{{ID: "a", Image: solid(t, 8, 8, colourOf(0))}}, "a", Options{}); err == nil {
		t.Error("a cancelled render succeeded")
	}
}

// TestCacheKeepsThumbnails: a second render with a cache decodes
// nothing it has seen (an image whose bytes are gone still shows from the
// cache), and the cache drops the least recently used past its size.
func TestCacheKeepsThumbnails(t *testing.T) {
	c := NewCache(2)
	nodes := []Node{{ID: "a", Key: "ka", Image: solid(t, 16, 16, colourOf(0))}, {ID: "b", Parent: "a", Key: "kb", Image: solid(t, 16, 16, colourOf(1))}}
	if _, _, err := Render(context.Background(), nodes, "b", Options{Cache: c}); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 2 {
		t.Fatalf("cache holds %d, want 2", c.Len())
	}
	nodes[0].Image = nil // cached: not read nor decoded again
	nodes[0].Load = func(context.Context) ([]byte, error) {
		t.Error("a cached image was read again")
		return nil, nil
	}
	nodes[1].Image, nodes[1].Key = nil, "" // not cached: read when drawn
	loaded := 0
	nodes[1].Load = func(context.Context) ([]byte, error) { loaded++; return solid(t, 16, 16, colourOf(1)), nil }
	data, l, err := Render(context.Background(), nodes, "b", Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	img := decode(t, data)
	ctr := l.Thumbs[0].Rect.Min.Add(image.Pt(ThumbSize/2, ThumbSize/2+20))
	if got := img.RGBAAt(ctr.X, ctr.Y); !near(got, colourOf(0)) {
		t.Errorf("the cached thumbnail was not drawn: %v", got)
	}
	ctr = l.Thumbs[1].Rect.Min.Add(image.Pt(ThumbSize/2, ThumbSize/2+20))
	if got := img.RGBAAt(ctr.X, ctr.Y); loaded != 1 || !near(got, colourOf(1)) {
		t.Errorf("the image to load was loaded %d times and drawn as %v", loaded, got)
	}
	nodes[1].Key = "kb"
	nodes = append(nodes, Node{ID: "c", Parent: "b", Key: "kc", Image: solid(t, 16, 16, colourOf(2))})
	if _, _, err := Render(context.Background(), nodes[1:], "c", Options{Cache: c}); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 2 || c.get("ka") != nil || c.get("kc") == nil {
		t.Errorf("after a third image: %d kept, a kept %v, c kept %v", c.Len(), c.get("ka") != nil, c.get("kc") != nil)
	}
}

// TestEncodePNG: the sheet's own PNG writer (Sub filter, segments
// deflated side by side) decodes with image/png to the same pixels, for
// any number of segments.
func TestEncodePNG(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 37, 23))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7 % 251)
		if i%4 == 3 {
			img.Pix[i] = 0xff
		}
	}
	for _, workers := range []int{1, 2, 3, 8, 40} {
		t.Run(fmt.Sprint(workers), func(t *testing.T) {
			data, err := encodePNG(img, workers)
			if err != nil {
				t.Fatal(err)
			}
			got := decode(t, data)
			if got.Bounds() != img.Bounds() || !bytes.Equal(got.Pix, img.Pix) {
				t.Errorf("the decoded picture differs from the one encoded")
			}
		})
	}
}

// TestCacheAdd: a thumbnail made as an image is stored is the one a
// sheet draws, without reading the image again.
func TestCacheAdd(t *testing.T) {
	c := NewCache(4)
	enc, err := c.Add(context.Background(), "ka", solid(t, 40, 20, colourOf(3)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if th, err := DecodeThumb(enc); err != nil || th.Bounds().Dx() != ThumbSize || th.Bounds().Dy() != ThumbSize/2 {
		t.Errorf("the encoded thumbnail: %v, %v; want a %d×%d JPEG", err, th.Bounds(), ThumbSize, ThumbSize/2)
	}
	if enc, err := c.Add(context.Background(), "kb", []byte("not an image"), nil); err != nil || enc != nil || c.Len() != 1 {
		t.Fatalf("an unreadable image: %v, %d bytes, %d kept", err, len(enc), c.Len())
	}
	full := kontext.NewBudget(64)
	if enc, err := c.Add(context.Background(), "kc", solid(t, 40, 20, colourOf(1)), full); err != nil || enc != nil || c.Len() != 1 {
		t.Fatalf("an image whose decode the budget cannot take now: %v, %d bytes, %d kept (want none made, at once)", err, len(enc), c.Len())
	}
	nodes := []Node{{ID: "a", Key: "ka", Load: func(context.Context) ([]byte, error) {
		t.Error("an image added to the cache was read again")
		return nil, nil
	}}}
	data, l, err := Render(context.Background(), nodes, "a", Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	img := decode(t, data)
	ctr := l.Thumbs[0].Rect.Min.Add(image.Pt(ThumbSize/2, ThumbSize/2))
	if got := img.RGBAAt(ctr.X, ctr.Y); !near(got, colourOf(3)) {
		t.Errorf("the added thumbnail was not drawn: %v", got)
	}
}

// photo is a w×h JPEG with detail everywhere, like a generated image.
func photo(b testing.TB, w, h int, seed uint64) []byte {
	b.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			n := uint8(r.IntN(48))
			img.SetRGBA(x, y, color.RGBA{uint8(x*255/w) ^ n, uint8(y*255/h) + n, uint8((x+y)*127/(w+h)) + n, 0xff})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkContactSheet20 renders 20 images of about 1 MP (1024×1024
// JPEGs, as the provider returns), branched every few images.
func BenchmarkContactSheet20(b *testing.B) {
	nodes := make([]Node, 20)
	for i := range nodes {
		nodes[i] = Node{ID: fmt.Sprintf("n%d", i+1), Image: photo(b, 1024, 1024, uint64(i))}
		if i > 0 {
			nodes[i].Parent = fmt.Sprintf("n%d", i)
			if i%5 == 0 {
				nodes[i].Parent = fmt.Sprintf("n%d", i-1) // a sibling of the one before
			}
		}
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	n := 0
	for b.Loop() {
		if _, _, err := Render(context.Background(), nodes, "n20", Options{}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	// The CPU time a sheet takes, whatever else the machine runs: the
	// wall time on an idle machine is about this over the cores.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(n), "cpu-ms/op")
}

// BenchmarkContactSheet20Warm renders the same 20 images with a cache
// that holds the first 19: a sheet asked for again after one more edit.
func BenchmarkContactSheet20Warm(b *testing.B) {
	nodes := make([]Node, 20)
	for i := range nodes {
		nodes[i] = Node{ID: fmt.Sprintf("n%d", i+1), Key: fmt.Sprintf("k%d", i+1), Image: photo(b, 1024, 1024, uint64(i))}
		if i > 0 {
			nodes[i].Parent = fmt.Sprintf("n%d", i)
		}
	}
	warm := NewCache(128)
	if _, _, err := Render(context.Background(), nodes[:19], "n19", Options{Cache: warm}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	n := 0
	for b.Loop() {
		c := NewCache(128)
		for _, nd := range nodes[:19] {
			c.put(nd.Key, warm.get(nd.Key))
		}
		if _, _, err := Render(context.Background(), nodes, "n20", Options{Cache: c}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(n), "cpu-ms/op")
}

// BenchmarkDecode1MP is one of the 20 decodes, for scale.
func BenchmarkDecode1MP(b *testing.B) {
	data := photo(b, 1024, 1024, 1)
	for b.Loop() {
		if _, err := thumbnail(context.Background(), data, nil, true); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
