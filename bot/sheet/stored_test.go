package sheet

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mapStore is a Store in memory, counting its calls.
type mapStore struct {
	mu   sync.Mutex
	data map[string][]byte
	gets int
	puts map[string]int
	err  error // what Thumb answers, when set
}

func newMapStore() *mapStore { return &mapStore{data: map[string][]byte{}, puts: map[string]int{}} }

func (m *mapStore) Thumb(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gets++
	if m.err != nil {
		return nil, m.err
	}
	return m.data[key], nil
}

func (m *mapStore) PutThumb(_ context.Context, key string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.puts[key]++
	m.data[key] = data
	return nil
}

// loading is n nodes of distinct colours whose Load counts its calls.
func loading(t *testing.T, n int, loads *atomic.Int32) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		img := solid(t, 64, 48, colourOf(i))
		nodes[i] = Node{ID: fmt.Sprintf("n%d", i+1), Key: fmt.Sprintf("k%d", i+1), Load: func(context.Context) ([]byte, error) {
			loads.Add(1)
			return img, nil
		}}
		if i > 0 {
			nodes[i].Parent = nodes[i-1].ID
		}
	}
	return nodes
}

// centres reads the colour at the centre of each thumbnail.
func centres(t *testing.T, data []byte, l Layout) []color.RGBA {
	t.Helper()
	img := decode(t, data)
	out := make([]color.RGBA, len(l.Thumbs))
	for i, th := range l.Thumbs {
		c := th.Rect.Min.Add(image.Pt(ThumbSize/2, ThumbSize/2))
		out[i] = img.RGBAAt(c.X, c.Y)
	}
	return out
}

// TestRenderStore: a sheet made with an empty store decodes every image
// once and keeps every thumbnail there; a sheet made later with an
// empty cache (a restarted process, another replica) reads no image and
// shows the same pictures.
func TestRenderStore(t *testing.T) {
	st := newMapStore()
	var loads atomic.Int32
	nodes := loading(t, 5, &loads)
	data, l, err := Render(context.Background(), nodes, "n5", Options{Store: st, Cache: NewCache(8)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := int(loads.Load()), len(nodes); got != want {
		t.Errorf("first sheet: %d images read, want %d", got, want)
	}
	for _, n := range nodes {
		if got := st.puts[n.Key]; got != 1 {
			t.Errorf("thumbnail %s put %d times, want once", n.Key, got)
		}
	}
	for i, got := range centres(t, data, l) {
		if !near(got, colourOf(i)) {
			t.Errorf("first sheet, thumb %d: %v, want %v", i+1, got, colourOf(i))
		}
	}

	tests := []struct {
		name  string
		cache *Cache
		loads int
		gets  int
	}{
		{name: "an empty cache reads every thumbnail from the store", cache: NewCache(8), gets: 5},
		{name: "no cache at all", cache: nil, gets: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loads.Store(0)
			st.gets = 0
			data, l, err := Render(context.Background(), nodes, "n5", Options{Store: st, Cache: tt.cache})
			if err != nil {
				t.Fatal(err)
			}
			if got := int(loads.Load()); got != tt.loads {
				t.Errorf("%d images read, want %d", got, tt.loads)
			}
			if st.gets != tt.gets {
				t.Errorf("%d thumbnails read from the store, want %d", st.gets, tt.gets)
			}
			for i, got := range centres(t, data, l) {
				if !near(got, colourOf(i)) {
					t.Errorf("thumb %d: %v, want %v", i+1, got, colourOf(i))
				}
			}
			if tt.cache != nil && tt.cache.Len() != len(nodes) {
				t.Errorf("cache holds %d thumbnails, want %d", tt.cache.Len(), len(nodes))
			}
		})
	}
}

// TestRenderStoreFaults: a stored thumbnail that does not decode is made
// again from the image and replaced; a store that cannot be read fails
// the render.
func TestRenderStoreFaults(t *testing.T) {
	tests := []struct {
		name    string
		stored  []byte
		err     error
		loads   int
		puts    int
		wantErr bool
	}{
		{name: "not a JPEG", stored: []byte("garbage"), loads: 1, puts: 1},
		{name: "too large to be a thumbnail", stored: solidJPEG(t, ThumbSize+1, 10), loads: 1, puts: 1},
		{name: "a good one is used", stored: solidJPEG(t, 50, 50), loads: 0, puts: 0},
		{name: "the store fails", err: errors.New("database is down"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.err = tt.err
			var loads atomic.Int32
			nodes := loading(t, 1, &loads)
			if tt.stored != nil {
				st.data[nodes[0].Key] = tt.stored
			}
			_, _, err := Render(context.Background(), nodes, "n1", Options{Store: st})
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want an error: %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if got := int(loads.Load()); got != tt.loads {
				t.Errorf("%d images read, want %d", got, tt.loads)
			}
			if got := st.puts[nodes[0].Key]; got != tt.puts {
				t.Errorf("%d thumbnails put, want %d", got, tt.puts)
			}
			if _, err := DecodeThumb(st.data[nodes[0].Key]); err != nil {
				t.Errorf("the stored thumbnail after the sheet: %v", err)
			}
		})
	}
}

// solidJPEG is a w×h thumbnail of one colour, encoded as stored.
func solidJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	th := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(th, th.Rect, colourOf(2))
	data, err := EncodeThumb(th)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestEncodeThumb: a thumbnail comes back the same size and colour; a
// transparent one comes back laid on the box colour, as a sheet draws it.
func TestEncodeThumb(t *testing.T) {
	tests := []struct {
		name string
		fill color.RGBA
		want color.RGBA
	}{
		{name: "opaque", fill: colourOf(4), want: colourOf(4)},
		{name: "transparent", fill: color.RGBA{}, want: BoxColor},
		{name: "half transparent white", fill: color.RGBA{0x80, 0x80, 0x80, 0x80},
			want: color.RGBA{0x80 + BoxColor.R/2, 0x80 + BoxColor.G/2, 0x80 + BoxColor.B/2, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := image.NewRGBA(image.Rect(0, 0, 120, 90))
			fill(th, th.Rect, tt.fill)
			data, err := EncodeThumb(th)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeThumb(data)
			if err != nil {
				t.Fatal(err)
			}
			if got.Bounds() != th.Bounds() {
				t.Errorf("got %v, want %v", got.Bounds(), th.Bounds())
			}
			if c := got.RGBAAt(60, 45); !near(c, tt.want) {
				t.Errorf("got %v, want %v", c, tt.want)
			}
		})
	}
	if _, err := EncodeThumb(nil); err == nil {
		t.Error("an empty thumbnail was encoded")
	}
}

// BenchmarkContactSheet20Stored renders the 20 images of
// BenchmarkContactSheet20 with an empty cache from a store holding their
// thumbnails: what a restarted process, or another replica, does.
func BenchmarkContactSheet20Stored(b *testing.B) {
	nodes := make([]Node, 20)
	for i := range nodes {
		nodes[i] = Node{ID: fmt.Sprintf("n%d", i+1), Key: fmt.Sprintf("k%d", i+1), Image: photo(b, 1024, 1024, uint64(i))}
		if i > 0 {
			nodes[i].Parent = fmt.Sprintf("n%d", i)
			if i%5 == 0 {
				nodes[i].Parent = fmt.Sprintf("n%d", i-1)
			}
		}
	}
	st := newMapStore()
	if _, _, err := Render(context.Background(), nodes, "n20", Options{Store: st}); err != nil {
		b.Fatal(err)
	}
	size := 0
	for _, d := range st.data {
		size += len(d)
	}
	for i := range nodes {
		nodes[i].Image = nil
		nodes[i].Load = func(context.Context) ([]byte, error) {
			b.Error("an image was read although its thumbnail is stored")
			return nil, nil
		}
	}
	b.ReportAllocs()
	cpu0, wall0 := cpuTime(b), time.Now()
	n := 0
	for b.Loop() {
		if _, _, err := Render(context.Background(), nodes, "n20", Options{Store: st, Cache: NewCache(128)}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000/float64(n), "cpu-ms/op")
	b.ReportMetric(float64(time.Since(wall0).Microseconds())/1000/float64(n), "wall-ms/op")
	b.ReportMetric(float64(size)/float64(len(nodes)), "thumb-bytes")
}

// BenchmarkDecodeThumb is one of the 20 stored thumbnails read, for scale.
func BenchmarkDecodeThumb(b *testing.B) {
	th, err := thumbnail(context.Background(), photo(b, 1024, 1024, 1), nil, true)
	if err != nil {
		b.Fatal(err)
	}
	data, err := EncodeThumb(th)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := DecodeThumb(data); err != nil {
			b.Fatal(err)
		}
	}
}
