package kontext

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// marshalCreate is the create body as the client built it before it was
// streamed: json.Marshal of the whole request, data URI included.
func marshalCreate(t *testing.T, route, model string, req Request, uri string) []byte {
	t.Helper()
	v := struct {
		Model string `json:"model,omitempty"`
		Input input  `json:"input"`
	}{Input: input{Prompt: req.Prompt, InputImage: uri, AspectRatio: req.AspectRatio, Seed: req.Seed,
		OutputFormat: req.OutputFormat, SafetyTolerance: req.SafetyTolerance}}
	if route == RoutePredictions {
		v.Model = replicateOwner + model
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestStreamedBodyMatchesMarshal sends edits and a text-to-image through
// the fake provider, which decodes each body and its input image, and
// compares the bytes on the wire with json.Marshal's body.
func TestStreamedBodyMatchesMarshal(t *testing.T) {
	small := photoPNG(t, 120, 90, false)
	big := photoPNG(t, 330, 300, false)
	tolerance := 2
	tricky := `a "quoted" <b>cat</b> & "input_image":"@" \ é ☃`
	tests := []struct {
		name   string
		route  string
		req    Request
		asIs   bool // the input goes byte for byte
		shrink bool // the input is re-encoded first
	}{
		{name: "SmallInputAsIs", route: RouteModels, req: Request{Prompt: "make it winter", InputImage: small}, asIs: true},
		{name: "TrickyPromptAndOptions", route: RouteModels, req: Request{Prompt: tricky, InputImage: small, AspectRatio: "16:9", Seed: seed(42), OutputFormat: "png", SafetyTolerance: &tolerance}, asIs: true},
		{name: "PredictionsRoute", route: RoutePredictions, req: Request{Prompt: tricky, InputImage: small, Seed: seed(0)}, asIs: true},
		{name: "ShrunkInput", route: RouteModels, req: Request{Prompt: "autumn", InputImage: big}, shrink: true},
		{name: "ShrunkJPEGInput", route: RouteModels, req: Request{Prompt: "autumn", InputImage: toJPEG(t, big)}, shrink: true},
		{name: "ShrunkInterlacedPNGInput", route: RouteModels, req: Request{Prompt: "autumn", InputImage: interlacedPNG(t, 330, 300)}, shrink: true},
		{name: "TextToImage", route: RouteModels, req: Request{Prompt: tricky, Seed: seed(7)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
			c := newTestClient(t, s, func(c *Config) {
				c.HTTPClient = &http.Client{Transport: rec}
				c.Route = tt.route
				if tt.shrink {
					setInputLimits(c, 64<<10, 128*128, 0)
				}
			})
			if _, err := c.Run(context.Background(), tt.req); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if st := s.Stats(); st.Creates != 1 || st.Created != 1 {
				t.Fatalf("got %d creates, %d predictions; want 1, 1", st.Creates, st.Created)
			}
			got := rec.bodies[0]
			var sent struct {
				Input struct {
					InputImage string `json:"input_image"`
				} `json:"input"`
			}
			if err := json.Unmarshal(got, &sent); err != nil {
				t.Fatalf("the body is not JSON: %v", err)
			}
			uri := sent.Input.InputImage
			switch {
			case tt.asIs:
				if want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(tt.req.InputImage); uri != want {
					t.Fatalf("got a data URI of %d bytes, want the input's own (%d bytes)", len(uri), len(want))
				}
			case tt.shrink:
				if !strings.HasPrefix(uri, "data:image/jpeg;base64,") {
					t.Fatalf("got input_image %.40q, want a re-encoded JPEG", uri)
				}
				if _, w, h, _ := rec.sentInput(t, 0); w*h > 128*128 {
					t.Fatalf("sent %dx%d, want it downscaled to at most %d pixels", w, h, 128*128)
				}
			case uri != "":
				t.Fatalf("got input_image %.40q for text-to-image", uri)
			}
			if want := marshalCreate(t, tt.route, c.Model(), tt.req, uri); !bytes.Equal(got, want) {
				t.Errorf("got body\n%.300s\nwant json.Marshal's\n%.300s", got, want)
			}
		})
	}
}

// TestBase64Reader: the streamed base64 equals EncodeToString whatever the
// length (padding only at the end) and however small the reads.
func TestBase64Reader(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 3071, 3072, 3073, 10000} {
		src := bytes.Repeat([]byte{0xfb, 0x01, 0x7e, 0x33, 0x80}, n/5+1)[:n]
		for _, chunk := range []int{1, 3, 4096, 1 << 16} {
			r := &base64Reader{src: src}
			var got []byte
			buf := make([]byte, chunk)
			for {
				k, err := r.Read(buf)
				got = append(got, buf[:k]...)
				if err != nil {
					break
				}
			}
			if want := base64.StdEncoding.EncodeToString(src); string(got) != want {
				t.Errorf("%d bytes read %d at a time: got %d characters, want %d", n, chunk, len(got), len(want))
			}
		}
	}
}

// TestShrinkWaitsForTheBudget: re-encoding an input waits while the
// budget is spent, runs once it is given back, and one too big for the
// whole budget is refused with a sentence, not left waiting.
func TestShrinkWaitsForTheBudget(t *testing.T) {
	big := photoPNG(t, 330, 300, false)
	need, err := DecodeMemory(big)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("WaitsThenRuns", func(t *testing.T) {
		budget := NewBudget(need + 5*128*128)
		release, err := budget.Acquire(context.Background(), budget.Size())
		if err != nil {
			t.Fatal(err)
		}
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { setInputLimits(c, 64<<10, 128*128, 0); c.Budget = budget })
		done := make(chan error, 1)
		go func() {
			_, err := c.Run(context.Background(), Request{Prompt: "x", InputImage: big})
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("Run ended (%v) while the budget was spent", err)
		case <-time.After(100 * time.Millisecond):
		}
		if st := s.Stats(); st.Creates != 0 {
			t.Fatalf("got %d creates while waiting, want 0", st.Creates)
		}
		release()
		if err := <-done; err != nil {
			t.Fatalf("Run after the budget was given back: %v", err)
		}
	})
	t.Run("TooBigForTheWholeBudget", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { setInputLimits(c, 64<<10, 128*128, 0); c.Budget = NewBudget(64 << 10) }) // less than the scaled image alone
		_, err := c.Run(context.Background(), Request{Prompt: "x", InputImage: big})
		if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(userMessage(err), "too large") {
			t.Errorf("got %v (%q), want ErrInvalidRequest saying it is too large", err, userMessage(err))
		}
		if st := s.Stats(); st.Creates != 0 {
			t.Errorf("got %d creates, want 0", st.Creates)
		}
	})
}

// TestBudget: acquisitions that fill the budget make the next one wait
// until one is released; a wait cancelled takes nothing; a request larger
// than the whole budget fails at once.
func TestBudget(t *testing.T) {
	const unit = 10
	b := NewBudget(6 * unit)
	var releases []func()
	for range 6 {
		r, err := b.Acquire(context.Background(), unit)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() {
		_, err := b.Acquire(ctx, unit)
		cancelled <- err
	}()
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled wait: got %v, want context.Canceled", err)
	}
	seventh := make(chan func(), 1)
	go func() {
		r, err := b.Acquire(context.Background(), unit)
		if err != nil {
			t.Error(err)
		}
		seventh <- r
	}()
	select {
	case <-seventh:
		t.Fatal("the seventh acquired while six filled the budget")
	case <-time.After(50 * time.Millisecond):
	}
	releases[0]()
	releases[0]() // a second release gives nothing back twice
	r7 := <-seventh
	// Exactly one unit is free again after the seventh returns its own:
	// the cancelled wait took nothing and the double release gave nothing.
	r7()
	r, err := b.Acquire(context.Background(), unit)
	if err != nil {
		t.Fatal(err)
	}
	if b.sem.TryAcquire(1) {
		t.Error("more than the budget was free: a cancelled wait or a double release gave memory back")
	}
	r()
	if _, err := b.Acquire(context.Background(), 6*unit+1); !errors.Is(err, ErrOverBudget) {
		t.Errorf("more than the whole budget: got %v, want ErrOverBudget", err)
	}
	var none *Budget
	if r, err := none.Acquire(context.Background(), 1<<40); err != nil {
		t.Errorf("a nil budget: got %v, want no bound", err)
	} else {
		r()
	}
}

// TestBudgetReclaimsBigShares: a share of ReclaimBytes or more is given
// back only after a collection, so the next waiter never starts while the
// last decode's dead pixels still fill the heap; a small share is given
// back without one.
func TestBudgetReclaimsBigShares(t *testing.T) {
	b := NewBudget(4 * ReclaimBytes)
	r, err := b.Acquire(context.Background(), ReclaimBytes)
	if err != nil {
		t.Fatal(err)
	}
	pixels := make([]byte, ReclaimBytes) // a decode's image, dead once released
	pixels[len(pixels)-1] = 1
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	pixels = nil
	_ = pixels
	r()
	runtime.ReadMemStats(&after)
	if after.NumGC <= before.NumGC {
		t.Errorf("releasing %d MiB: got %d collections, want at least one", ReclaimBytes>>20, after.NumGC-before.NumGC)
	}
	if after.HeapAlloc >= before.HeapAlloc {
		t.Errorf("heap after releasing the share: got %d bytes, want less than %d (the dead decode collected)", after.HeapAlloc, before.HeapAlloc)
	}
}

// toJPEG re-encodes an image as a JPEG: a format the client decodes whole.
func toJPEG(t *testing.T, data []byte) []byte {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// interlacedPNG is a w×h 8-bit RGB PNG in Adam7 passes (Go's encoder
// never interlaces), of noisy pixels: an input the client decodes whole.
func interlacedPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	passes := [7][4]int{{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}}
	var raw bytes.Buffer
	for _, p := range passes {
		for y := p[1]; y < h; y += p[3] {
			if p[0] >= w {
				break
			}
			raw.WriteByte(0) // filter: none
			for x := p[0]; x < w; x += p[2] {
				raw.Write([]byte{byte(x*y + x), byte(y*3 ^ x*5), byte((x + y) * 7)})
			}
		}
	}
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(raw.Bytes())
	zw.Close()
	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(data)))
		out.Write(n[:])
		out.WriteString(typ)
		out.Write(data)
		binary.BigEndian.PutUint32(n[:], crc32.ChecksumIEEE(append([]byte(typ), data...)))
		out.Write(n[:])
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9], ihdr[12] = 8, 2, 1
	chunk("IHDR", ihdr)
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	if _, err := png.Decode(bytes.NewReader(out.Bytes())); err != nil {
		t.Fatalf("the interlaced test PNG does not decode: %v", err)
	}
	return out.Bytes()
}
