package kontext

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/image/bmp"

	"kontextbot/kontext/kontexttest"
)

const testKey = "sk-test"

// newFake starts a fake provider with small images and a short latency.
func newFake(t *testing.T, opts kontexttest.Options) *kontexttest.Server {
	t.Helper()
	if opts.APIKey == "" {
		opts.APIKey = testKey
	}
	if opts.Latency == 0 {
		opts.Latency = 20 * time.Millisecond
	}
	if opts.Pixels == 0 {
		opts.Pixels = 128 * 128
	}
	s := kontexttest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// newTestClient returns a client for s with fast retries and timeouts.
func newTestClient(t *testing.T, s *kontexttest.Server, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		BaseURL: s.URL, APIKey: testKey, Wait: 5 * time.Second,
		RequestTimeout: 2 * time.Second, JobTimeout: 20 * time.Second,
		PollInterval: 10 * time.Millisecond, MaxPollInterval: 50 * time.Millisecond,
		RetryBase: 5 * time.Millisecond, MaxRetries: 3,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func seed(n int64) *int64 { return &n }

// testPNG encodes a small opaque image.
func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x * 7), uint8(y * 5), 90, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRunSucceeds(t *testing.T) {
	input := testPNG(t, 96, 64)
	tests := []struct {
		name        string
		opts        kontexttest.Options
		cfg         func(*Config)
		req         Request
		wantFormat  string
		wantW       int
		wantH       int
		wantSeed    int64
		wantInput   string // sha256 of the input the provider received
		wantCreates int
		wantPolls   bool
	}{
		{name: "TextToImage", req: Request{Prompt: "a red fox", Seed: seed(7)},
			wantFormat: "png", wantW: 128, wantH: 128, wantSeed: 7, wantCreates: 1},
		{name: "PredictionsRoute", cfg: func(c *Config) { c.Route = RoutePredictions },
			req:        Request{Prompt: "a red fox", Seed: seed(8), Model: ModelPro},
			wantFormat: "png", wantW: 128, wantH: 128, wantSeed: 8, wantCreates: 1},
		{name: "OutputAsString", opts: kontexttest.Options{OutputAsString: true},
			req:        Request{Prompt: "a red fox", Seed: seed(9)},
			wantFormat: "png", wantW: 128, wantH: 128, wantSeed: 9, wantCreates: 1},
		{name: "AspectRatio", req: Request{Prompt: "wide", Seed: seed(1), AspectRatio: "16:9"},
			wantFormat: "png", wantSeed: 1, wantCreates: 1},
		{name: "JPEG", req: Request{Prompt: "a red fox", Seed: seed(3), OutputFormat: "jpg"},
			wantFormat: "jpeg", wantW: 128, wantH: 128, wantSeed: 3, wantCreates: 1},
		{name: "Edit", req: Request{Prompt: "make it winter", Seed: seed(5), InputImage: input},
			wantFormat: "png", wantSeed: 5, wantInput: sha(input), wantCreates: 1},
		{name: "PollingWithoutWait", cfg: func(c *Config) { c.Wait = -1 },
			req:        Request{Prompt: "a red fox", Seed: seed(11)},
			wantFormat: "png", wantW: 128, wantH: 128, wantSeed: 11, wantCreates: 1, wantPolls: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, tt.opts)
			c := newTestClient(t, s, tt.cfg)
			var created string
			tt.req.OnCreated = func(id string) { created = id }
			res, err := c.Run(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res.Format != tt.wantFormat {
				t.Errorf("format: got %q, want %q", res.Format, tt.wantFormat)
			}
			if tt.wantW != 0 && (res.Width != tt.wantW || res.Height != tt.wantH) {
				t.Errorf("size: got %dx%d, want %dx%d", res.Width, res.Height, tt.wantW, tt.wantH)
			}
			if res.Width%32 != 0 || res.Height%32 != 0 {
				t.Errorf("size %dx%d: sides are not multiples of 32", res.Width, res.Height)
			}
			if res.Seed == nil || *res.Seed != tt.wantSeed {
				t.Errorf("seed: got %v, want %d", res.Seed, tt.wantSeed)
			}
			if created == "" || created != res.PredictionID {
				t.Errorf("OnCreated got %q, result id %q", created, res.PredictionID)
			}
			prov, err := kontexttest.ReadProvenance(res.Data)
			if err != nil {
				t.Fatalf("ReadProvenance: %v", err)
			}
			if prov.Prompt != tt.req.Prompt || prov.InputSHA256 != tt.wantInput {
				t.Errorf("provenance: got prompt %q input %q, want %q %q", prov.Prompt, prov.InputSHA256, tt.req.Prompt, tt.wantInput)
			}
			st := s.Stats()
			if st.Creates != tt.wantCreates || st.Downloads != 1 {
				t.Errorf("requests: got %d creates %d downloads, want %d and 1", st.Creates, st.Downloads, tt.wantCreates)
			}
			if (st.Polls > 0) != tt.wantPolls {
				t.Errorf("polls: got %d, want polling %v", st.Polls, tt.wantPolls)
			}
			if st.DownloadsWithAuth != 0 {
				t.Errorf("the API key was sent to the result host %d times", st.DownloadsWithAuth)
			}
		})
	}
}

func TestRunSeedFromLogs(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	c := newTestClient(t, s, nil)
	res, err := c.Run(context.Background(), Request{Prompt: "no seed given"})
	if err != nil {
		t.Fatal(err)
	}
	prov, err := kontexttest.ReadProvenance(res.Data)
	if err != nil {
		t.Fatal(err)
	}
	if res.Seed == nil || *res.Seed != prov.Seed {
		t.Errorf("seed: got %v, want the provider's %d", res.Seed, prov.Seed)
	}
}

// TestRunFaults drives every injected fault and checks the error kind and
// how many requests each endpoint received.
func TestRunFaults(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*Config)
		inject  map[kontexttest.Endpoint][]kontexttest.Fault
		wantErr error // nil: success
		want    kontexttest.Stats
	}{
		{name: "429RetryAfterThenOK",
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 429, RetryAfter: 50 * time.Millisecond}}},
			want:   kontexttest.Stats{Creates: 2, Downloads: 1}},
		{name: "429BackoffThenOK",
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 429}, {Status: 429}}},
			want:   kontexttest.Stats{Creates: 3, Downloads: 1}},
		{name: "429Exhausted", wantErr: ErrRateLimited,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 429}, {Status: 429}, {Status: 429}, {Status: 429}}},
			want:   kontexttest.Stats{Creates: 4}},
		{name: "500ThenOK",
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 500}}},
			want:   kontexttest.Stats{Creates: 2, Downloads: 1}},
		{name: "500And503ThenOK", // 5xx that carry no prediction: nothing was created
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 500}, {Status: 503}}},
			want:   kontexttest.Stats{Creates: 3, Downloads: 1}},
		{name: "503Exhausted", wantErr: ErrProviderFailure,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}}},
			want:   kontexttest.Stats{Creates: 4}},
		{name: "401NotRetried", wantErr: ErrUnauthorized,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 401}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "403NotRetried", wantErr: errForbidden,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 403}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "402NotRetried", wantErr: ErrOutOfCredits,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 402}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "422NotRetried", wantErr: ErrInvalidRequest,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 422}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "400NotRetried", wantErr: ErrInvalidRequest,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Status: 400}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "HangNotResent", wantErr: ErrTimeout, cfg: func(c *Config) { c.RequestTimeout = 150 * time.Millisecond; c.Wait = -1 },
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Hang: true}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "MalformedJSON", wantErr: ErrProviderFailure,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{MalformedJSON: true}}},
			want:   kontexttest.Stats{Creates: 1}},
		{name: "Moderated", wantErr: ErrContentRefused,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Moderated: true}}},
			want:   kontexttest.Stats{Creates: 1, Failed: 1}},
		{name: "Aborted", wantErr: ErrProviderFailure,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Aborted: true}}},
			want:   kontexttest.Stats{Creates: 1, Aborted: 1}},
		{name: "Failed", wantErr: ErrProviderFailure,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Failed: "GPU fell over"}}},
			want:   kontexttest.Stats{Creates: 1, Failed: 1}},
		{name: "ExpiredResult", wantErr: ErrProviderFailure,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Expired: true}}},
			want:   kontexttest.Stats{Creates: 1, Downloads: 1}},
		{name: "SlowDownloadRetried", cfg: func(c *Config) { c.RequestTimeout = 150 * time.Millisecond },
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{Delay: time.Second}}},
			want:   kontexttest.Stats{Creates: 1, Downloads: 2}},
		{name: "Download503ThenOK",
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{Status: 503}}},
			want:   kontexttest.Stats{Creates: 1, Downloads: 2}},
		{name: "TruncatedDownload", wantErr: ErrProviderFailure,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{MalformedJSON: true}}},
			want:   kontexttest.Stats{Creates: 1, Downloads: 1}},
		{name: "Poll503ThenOK", cfg: func(c *Config) { c.Wait = -1 },
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: {{Status: 503}}},
			want:   kontexttest.Stats{Creates: 1, Downloads: 1}},
		{name: "PollMalformed", wantErr: ErrProviderFailure, cfg: func(c *Config) { c.Wait = -1 },
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: {{MalformedJSON: true}}},
			want:   kontexttest.Stats{Creates: 1, Polls: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			for ep, faults := range tt.inject {
				s.Inject(ep, faults...)
			}
			c := newTestClient(t, s, tt.cfg)
			res, err := c.Run(context.Background(), Request{Prompt: "a red fox", Seed: seed(1)})
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Run: %v", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Run: got error %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && res == nil:
				t.Fatal("Run: no result")
			}
			var ae *APIError
			if err != nil && !errors.As(err, &ae) {
				t.Errorf("error %T is not an *APIError", err)
			}
			st := s.Stats()
			if st.Creates != tt.want.Creates || st.Downloads != tt.want.Downloads {
				t.Errorf("requests: got %d creates %d downloads, want %d and %d", st.Creates, st.Downloads, tt.want.Creates, tt.want.Downloads)
			}
			if tt.want.Polls != 0 && st.Polls != tt.want.Polls {
				t.Errorf("polls: got %d, want %d", st.Polls, tt.want.Polls)
			}
			if st.Failed != tt.want.Failed || st.Aborted != tt.want.Aborted {
				t.Errorf("outcomes: got %d failed %d aborted, want %d and %d", st.Failed, st.Aborted, tt.want.Failed, tt.want.Aborted)
			}
		})
	}
}

func TestRunHonoursRetryAfter(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	s.Inject(kontexttest.Create, kontexttest.Fault{Status: 429, RetryAfter: 300 * time.Millisecond})
	c := newTestClient(t, s, nil)
	start := time.Now()
	if _, err := c.Run(context.Background(), Request{Prompt: "patience", Seed: seed(1)}); err != nil {
		t.Fatal(err)
	}
	// The backoff base is 5ms: only the provider's retry_after explains a
	// pause this long. (A lower bound, so no flakiness on a slow machine.)
	if got := time.Since(start); got < 300*time.Millisecond {
		t.Errorf("retried after %s, want at least the provider's 300ms", got)
	}
}

func TestRunSlotLimitRetriesInsideTheCall(t *testing.T) {
	s := newFake(t, kontexttest.Options{Slots: 1, Latency: 100 * time.Millisecond})
	c := newTestClient(t, s, func(c *Config) { c.MaxRetries = 10; c.RetryBase = 20 * time.Millisecond })
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Run(context.Background(), Request{Prompt: "one at a time", Seed: seed(int64(i))})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("run %d: %v", i, err)
		}
	}
	st := s.Stats()
	if st.SlotLimit429 == 0 || st.MaxActive != 1 || st.Succeeded != 2 {
		t.Errorf("got %d slot-limit 429s, max active %d, %d succeeded; want >0, 1, 2", st.SlotLimit429, st.MaxActive, st.Succeeded)
	}
}

func TestRunCancelCancelsPrediction(t *testing.T) {
	s := newFake(t, kontexttest.Options{Latency: 10 * time.Second})
	c := newTestClient(t, s, func(c *Config) { c.Wait = -1 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, Request{Prompt: "never mind", Seed: seed(1), OnCreated: func(string) { cancel() }})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run: got %v, want context.Canceled", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	c.Close() // waits for the background cancel
	if st := s.Stats(); st.Cancels != 1 || st.Canceled != 1 || st.Active != 0 {
		t.Errorf("got %d cancel requests, %d canceled, %d active; want 1, 1, 0", st.Cancels, st.Canceled, st.Active)
	}
}

func TestShutdownKeepsPredictionForResume(t *testing.T) {
	s := newFake(t, kontexttest.Options{Latency: 300 * time.Millisecond})
	c := newTestClient(t, s, func(c *Config) { c.Wait = -1 })
	ctx, cancel := context.WithCancelCause(context.Background())
	var id string
	_, err := c.Run(ctx, Request{Prompt: "survive a restart", Seed: seed(42), OnCreated: func(p string) {
		id = p
		cancel(ErrShutdown)
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: got %v, want context.Canceled", err)
	}
	c.Close()
	if st := s.Stats(); st.Cancels != 0 {
		t.Fatalf("the prediction was cancelled at shutdown (%d cancel requests)", st.Cancels)
	}
	res, err := c.Resume(context.Background(), id)
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	prov, err := kontexttest.ReadProvenance(res.Data)
	if err != nil || prov.Prompt != "survive a restart" || prov.Seed != 42 {
		t.Errorf("resumed image provenance %+v (%v), want the original prompt and seed 42", prov, err)
	}
	if res.PredictionID != id {
		t.Errorf("prediction id: got %q, want %q", res.PredictionID, id)
	}
}

func TestJobDeadline(t *testing.T) {
	s := newFake(t, kontexttest.Options{Latency: 10 * time.Second})
	c := newTestClient(t, s, func(c *Config) {
		c.Wait = -1
		c.JobTimeout = 200 * time.Millisecond
		c.RequestTimeout = 100 * time.Millisecond
	})
	_, err := c.Run(context.Background(), Request{Prompt: "too slow", Seed: seed(1)})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run: got %v, want ErrTimeout", err)
	}
	c.Close()
	if st := s.Stats(); st.Canceled != 1 {
		t.Errorf("the timed-out prediction was not cancelled: %+v", st)
	}
}

func TestRunRefusesBadRequestsLocally(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	c := newTestClient(t, s, nil)
	tests := []struct {
		name string
		req  Request
	}{
		{"EmptyPrompt", Request{Prompt: "  "}},
		{"UnknownModel", Request{Prompt: "x", Model: "flux-dev"}},
		{"UnknownAspect", Request{Prompt: "x", AspectRatio: "5:1"}},
		{"UndecodableInput", Request{Prompt: "x", InputImage: []byte("not an image")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Run(context.Background(), tt.req); !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("got %v, want ErrInvalidRequest", err)
			}
		})
	}
	if st := s.Stats(); st.Creates != 0 {
		t.Errorf("got %d creates, want none", st.Creates)
	}
}

func TestWrongKeyIsUnauthorized(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	c := newTestClient(t, s, func(c *Config) { c.APIKey = "sk-wrong" })
	_, err := c.Run(context.Background(), Request{Prompt: "x"})
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("got %v, want ErrUnauthorized", err)
	}
	if st := s.Stats(); st.Creates != 1 || st.Unauthorized != 1 {
		t.Errorf("got %d creates %d 401s, want 1 and 1", st.Creates, st.Unauthorized)
	}
}

func TestImagesRoute(t *testing.T) {
	t.Run("URL", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { c.Route = RouteImages })
		res, err := c.Run(context.Background(), Request{Prompt: "a red fox"})
		if err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Images != 1 || st.Creates != 0 || st.Downloads != 1 || st.DownloadsWithAuth != 0 {
			t.Errorf("requests: %+v, want one images call and one anonymous download", st)
		}
		if res.Format != "png" || res.Model != ModelMax {
			t.Errorf("got format %q model %q", res.Format, res.Model)
		}
	})
	t.Run("EditUsesReplicateRoute", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { c.Route = RouteImages })
		if _, err := c.Run(context.Background(), Request{Prompt: "winter", InputImage: testPNG(t, 64, 64)}); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Images != 0 || st.Creates != 1 {
			t.Errorf("requests: %+v, want the edit on the create route", st)
		}
	})
	t.Run("Moderated", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { c.Route = RouteImages })
		if _, err := c.Run(context.Background(), Request{Prompt: "something forbidden"}); !errors.Is(err, ErrContentRefused) {
			t.Errorf("got %v, want ErrContentRefused", err)
		}
	})
	t.Run("B64JSON", func(t *testing.T) {
		img := testPNG(t, 32, 32)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/images/generations" || r.Header.Get("Authorization") != "Bearer "+testKey {
				http.Error(w, `{"error":{"message":"bad request"}}`, http.StatusBadRequest)
				return
			}
			json.NewEncoder(w).Encode(map[string]any{"created": 1, "data": []map[string]string{{"b64_json": base64.StdEncoding.EncodeToString(img)}}})
		}))
		defer srv.Close()
		c, err := NewClient(Config{BaseURL: srv.URL, APIKey: testKey, Route: RouteImages})
		if err != nil {
			t.Fatal(err)
		}
		res, err := c.Run(context.Background(), Request{Prompt: "x"})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.Data, img) || res.Width != 32 {
			t.Errorf("got %d bytes %dx%d, want the served image", len(res.Data), res.Width, res.Height)
		}
	})
}

func TestDataURI(t *testing.T) {
	pngBytes := testPNG(t, 20, 10)
	var bmpBuf bytes.Buffer
	if err := bmp.Encode(&bmpBuf, image.NewRGBA(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	t.Run("PNGAsIs", func(t *testing.T) {
		uri, err := DataURI(pngBytes)
		if err != nil {
			t.Fatal(err)
		}
		want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(pngBytes)
		if uri != want {
			t.Errorf("the PNG was not sent byte for byte")
		}
	})
	t.Run("BMPReencoded", func(t *testing.T) {
		uri, err := DataURI(bmpBuf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		data, ok := strings.CutPrefix(uri, "data:image/png;base64,")
		if !ok {
			t.Fatalf("got %.40s, want a PNG data URI", uri)
		}
		b, _ := base64.StdEncoding.DecodeString(data)
		if Sniff(b) != "png" {
			t.Errorf("re-encoded bytes sniff as %q", Sniff(b))
		}
	})
	t.Run("Garbage", func(t *testing.T) {
		if _, err := DataURI([]byte("hello")); err == nil {
			t.Error("want an error")
		}
	})
}

func TestPredictionParsing(t *testing.T) {
	tests := []struct {
		name      string
		json      string
		wantFinal bool
		wantURL   string
		wantSeed  int64
	}{
		{"Starting", `{"id":"a","status":"starting","output":null}`, false, "", -1},
		{"Processing", `{"id":"a","status":"processing","output":null}`, false, "", -1},
		{"OutputString", `{"id":"a","status":"succeeded","output":"https://x/1.png","logs":"Using seed: 123\n"}`, true, "https://x/1.png", 123},
		{"OutputArray", `{"id":"a","status":"succeeded","output":["https://x/2.png"],"logs":"seed=77"}`, true, "https://x/2.png", 77},
		{"UnknownStatusIsFinal", `{"id":"a","status":"exploded"}`, true, "", -1},
		{"Aborted", `{"id":"a","status":"aborted"}`, true, "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p prediction
			if err := decodePrediction([]byte(tt.json), &p); err != nil {
				t.Fatal(err)
			}
			if got := p.final(); got != tt.wantFinal {
				t.Errorf("final: got %v, want %v", got, tt.wantFinal)
			}
			if tt.wantURL != "" {
				if got, err := p.outputURL(); err != nil || got != tt.wantURL {
					t.Errorf("output: got %q (%v), want %q", got, err, tt.wantURL)
				}
			}
			got := p.seed()
			if tt.wantSeed < 0 && got != nil || tt.wantSeed >= 0 && (got == nil || *got != tt.wantSeed) {
				t.Errorf("seed: got %v, want %d", got, tt.wantSeed)
			}
		})
	}
}

func TestRetryAfterParsing(t *testing.T) {
	tests := []struct {
		name   string
		header string
		body   string
		want   time.Duration
		wantOK bool
	}{
		{"Body", "", `{"retry_after": 2}`, 2 * time.Second, true},
		{"BodyFraction", "", `{"retry_after": 0.5}`, 500 * time.Millisecond, true},
		{"BodyWinsOverHeader", "9", `{"retry_after": 1}`, time.Second, true},
		{"Header", "3", `{"detail":"slow down"}`, 3 * time.Second, true},
		{"Capped", "100000", ``, maxRetryAfter, true},
		{"Neither", "", `{}`, 0, false},
		{"Garbage", "soon", `nope`, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.header != "" {
				h.Set("Retry-After", tt.header)
			}
			got, ok := retryAfter(h, []byte(tt.body))
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %s %v, want %s %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
