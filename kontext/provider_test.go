package kontext

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// Tests for issue 10: never pay twice, never lose a prediction, speak
// CometAPI exactly. Each drives the client against kontexttest with faults
// injected per request.

// logRecorder is a slog.Handler that keeps every record.
type logRecorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, r.Clone())
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }

// has reports whether a record of level carries substr in its message.
func (l *logRecorder) has(level slog.Level, substr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.recs {
		if r.Level == level && strings.Contains(r.Message, substr) {
			return true
		}
	}
	return false
}

// TestCreateNeverResentWhenUnsure: a create whose request was sent and
// whose answer was lost or came as 502/504/524 may have made a paid
// prediction. It is sent exactly once, on every route, with Prefer: wait
// and without; the error is ErrTimeout ("the provider did not answer in
// time"), marked Unsure, and logged at warn.
func TestCreateNeverResentWhenUnsure(t *testing.T) {
	faults := []struct {
		name  string
		fault kontexttest.Fault
	}{
		{"Hang", kontexttest.Fault{Hang: true}},
		{"ResetAfterSent", kontexttest.Fault{Reset: true}},
		{"502", kontexttest.Fault{Status: 502}},
		{"504", kontexttest.Fault{Status: 504}},
		{"524", kontexttest.Fault{Status: 524}},
	}
	for _, route := range []string{RouteModels, RoutePredictions, RouteImages} {
		for _, wait := range []time.Duration{-1, time.Second} {
			for _, f := range faults {
				t.Run(fmt.Sprintf("%s/wait=%v/%s", route, wait > 0, f.name), func(t *testing.T) {
					t.Parallel()
					s := newFake(t, kontexttest.Options{})
					ep := kontexttest.Create
					if route == RouteImages {
						ep = kontexttest.Images
					}
					s.Inject(ep, f.fault)
					logs := &logRecorder{}
					c := newTestClient(t, s, func(c *Config) {
						c.Route, c.Wait, c.RequestTimeout, c.Logger = route, wait, 200*time.Millisecond, slog.New(logs)
					})
					res, err := c.Run(context.Background(), Request{Prompt: "a red fox"})
					if !errors.Is(err, ErrTimeout) || !isUnsure(err) || res != nil {
						t.Fatalf("Run: got %v, want an unsure ErrTimeout and no result", err)
					}
					c.Close()
					st := s.Stats()
					if posts := st.Creates + st.Images; posts != 1 {
						t.Errorf("got %d POSTs, want exactly 1", posts)
					}
					if !logs.has(slog.LevelWarn, "not re-sent") {
						t.Error("the ambiguous create was not logged at warn")
					}
				})
			}
		}
	}
}

// TestCreateRetriedWhenNothingMade: 429, 5xx without a prediction and a
// connection refused before anything was written are retried, and one
// prediction is made.
func TestCreateRetriedWhenNothingMade(t *testing.T) {
	tests := []struct {
		name   string
		faults []kontexttest.Fault
		refuse int32 // connections refused before reaching the fake
	}{
		{name: "429", faults: []kontexttest.Fault{{Status: 429}}},
		{name: "500", faults: []kontexttest.Fault{{Status: 500}}},
		{name: "503", faults: []kontexttest.Fault{{Status: 503}}},
		{name: "ConnectionRefused", refuse: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			s.Inject(kontexttest.Create, tt.faults...)
			// A port nobody listens on: dialing it is refused for real.
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closed := l.Addr().String()
			l.Close()
			var dials atomic.Int32
			tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				if dials.Add(1) <= tt.refuse {
					addr = closed
				}
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}
			t.Cleanup(tr.CloseIdleConnections)
			c := newTestClient(t, s, func(c *Config) { c.Wait = -1; c.HTTPClient = &http.Client{Transport: tr} })
			if _, err := c.Run(context.Background(), Request{Prompt: "a red fox"}); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if st := s.Stats(); st.Creates != len(tt.faults)+1 || st.Created != 1 {
				t.Errorf("got %d creates, %d predictions; want %d and 1", st.Creates, st.Created, len(tt.faults)+1)
			}
			if tt.refuse > 0 && dials.Load() <= tt.refuse {
				t.Errorf("dialed %d times, want more than the %d refused", dials.Load(), tt.refuse)
			}
		})
	}
}

// TestErrorCodesNeverRetried: CometAPI's envelope with a code saying the
// request is wrong is not retried whatever the status, and the provider's
// message reaches the person; Replicate's {"detail"} too.
func TestErrorCodesNeverRetried(t *testing.T) {
	tests := []struct {
		name    string
		fault   kontexttest.Fault
		wantErr error
		wantMsg string
	}{
		{"InvalidRequestWith500", kontexttest.Fault{Status: 500, Code: "invalid_request", Message: "input_image must be a valid image"},
			ErrInvalidRequest, "input_image must be a valid image"},
		{"InvalidParameterWith502", kontexttest.Fault{Status: 502, Code: "invalid_parameter", Message: "aspect_ratio is not supported"},
			ErrInvalidRequest, "aspect_ratio is not supported"},
		{"CometAPI400", kontexttest.Fault{Status: 400, Code: "invalid_request", Message: "prompt is too long"},
			ErrInvalidRequest, "prompt is too long"},
		{"Replicate422", kontexttest.Fault{Status: 422}, ErrInvalidRequest, "Invalid input (injected fault)"},
		{"ContentPolicy400", kontexttest.Fault{Status: 400, Code: "content_policy_violation", Message: "Your request was rejected by the safety system"},
			ErrContentRefused, "Your request was rejected by the safety system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			s.Inject(kontexttest.Create, tt.fault)
			c := newTestClient(t, s, nil)
			_, err := c.Run(context.Background(), Request{Prompt: "a red fox"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: got %v, want %v", err, tt.wantErr)
			}
			if got := userMessage(err); got != tt.wantMsg {
				t.Errorf("user message: got %q, want %q", got, tt.wantMsg)
			}
			if st := s.Stats(); st.Creates != 1 {
				t.Errorf("got %d creates, want 1 (never retried)", st.Creates)
			}
		})
	}
	t.Run("FailureMessageIsNotForThePerson", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		s.Inject(kontexttest.Create, kontexttest.Fault{Failed: "CUDA out of memory on node 7"})
		c := newTestClient(t, s, nil)
		_, err := c.Run(context.Background(), Request{Prompt: "a red fox"})
		if !errors.Is(err, ErrProviderFailure) || userMessage(err) != "" {
			t.Errorf("got %v with user message %q, want ErrProviderFailure and none", err, userMessage(err))
		}
	})
}

// TestForbiddenIsNotUnauthorized: 403 (the request or model is not
// allowed for this key) and 401 (a bad key) are different kinds.
func TestForbiddenIsNotUnauthorized(t *testing.T) {
	for _, tt := range []struct {
		status      int
		want, wrong error
	}{{403, errForbidden, ErrUnauthorized}, {401, ErrUnauthorized, errForbidden}} {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			s.Inject(kontexttest.Create, kontexttest.Fault{Status: tt.status})
			c := newTestClient(t, s, nil)
			_, err := c.Run(context.Background(), Request{Prompt: "x"})
			if !errors.Is(err, tt.want) || errors.Is(err, tt.wrong) {
				t.Errorf("got %v, want %v and not %v", err, tt.want, tt.wrong)
			}
		})
	}
}

// TestEveryFailureCancels: a job that ends without delivering, for any
// reason but a shutdown, cancels its prediction; a prediction that ended
// by itself (failed) needs none.
func TestEveryFailureCancels(t *testing.T) {
	poll := func(c *Config) { c.Wait = -1 }
	tests := []struct {
		name        string
		opts        kontexttest.Options
		cfg         func(*Config)
		inject      map[kontexttest.Endpoint][]kontexttest.Fault
		wantErr     error
		wantCancels int
	}{
		{name: "PollsTimeOutToTheDeadline", opts: kontexttest.Options{Latency: 10 * time.Second}, wantErr: ErrTimeout, wantCancels: 1,
			cfg: func(c *Config) {
				c.Wait = -1
				c.RequestTimeout = 100 * time.Millisecond
				c.JobTimeout = 500 * time.Millisecond
				c.MaxRetries = 100
			},
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: repeat(kontexttest.Fault{Hang: true}, 20)}},
		{name: "PollTimeoutsExhausted", opts: kontexttest.Options{Latency: 10 * time.Second}, wantErr: ErrTimeout, wantCancels: 1,
			cfg:    func(c *Config) { c.Wait = -1; c.RequestTimeout = 100 * time.Millisecond },
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: repeat(kontexttest.Fault{Hang: true}, 4)}},
		{name: "PollRetriesExhausted", opts: kontexttest.Options{Latency: 10 * time.Second}, cfg: poll, wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: repeat(kontexttest.Fault{Status: 503}, 4)}},
		{name: "MalformedPoll", cfg: poll, wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: {{MalformedJSON: true}}}},
		{name: "DownloadFails", wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: repeat(kontexttest.Fault{Status: 503}, 4)}},
		{name: "ExpiredResult", wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Expired: true}}}},
		{name: "UndecodableResult", wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{Body: []byte("<html>not an image</html>")}}}},
		{name: "TruncatedResult", wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{MalformedJSON: true}}}},
		{name: "ResultOverMaxImageBytes", cfg: func(c *Config) { c.MaxImageBytes = 1000 }, wantErr: ErrProviderFailure, wantCancels: 1},
		{name: "ResultFarAbove1MP", wantErr: ErrProviderFailure, wantCancels: 1,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{Body: pngHeaderOnly(8192, 8192, 16, 6)}}}},
		{name: "FailedPredictionNeedsNone", wantErr: ErrProviderFailure, wantCancels: 0,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Failed: "GPU fell over"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newFake(t, tt.opts)
			for ep, faults := range tt.inject {
				s.Inject(ep, faults...)
			}
			c := newTestClient(t, s, tt.cfg)
			_, err := c.Run(context.Background(), Request{Prompt: "a red fox"})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Run: got %v, want %v", err, tt.wantErr)
			}
			c.Close() // waits for the background cancel
			if st := s.Stats(); st.Cancels != tt.wantCancels {
				t.Errorf("got %d cancel requests, want %d", st.Cancels, tt.wantCancels)
			}
		})
	}
	t.Run("Cancel404IsDebug", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		s.Inject(kontexttest.Poll, kontexttest.Fault{MalformedJSON: true})
		s.Inject(kontexttest.Cancel, kontexttest.Fault{Status: 404})
		logs := &logRecorder{}
		c := newTestClient(t, s, func(c *Config) { c.Wait = -1; c.Logger = slog.New(logs) })
		if _, err := c.Run(context.Background(), Request{Prompt: "x"}); !errors.Is(err, ErrProviderFailure) {
			t.Fatalf("Run: got %v", err)
		}
		c.Close()
		if s.Stats().Cancels != 1 || !logs.has(slog.LevelDebug, "no cancel") || logs.has(slog.LevelWarn, "could not cancel") {
			t.Errorf("got %d cancels; want 1, logged at debug only", s.Stats().Cancels)
		}
	})
}

func repeat(f kontexttest.Fault, n int) []kontexttest.Fault {
	out := make([]kontexttest.Fault, n)
	for i := range out {
		out[i] = f
	}
	return out
}

// TestPollSchedule: without Prefer: wait, the first poll comes near the
// model's latency, not at once: a 600 ms prediction first polled 550 ms
// after the create and then every 100 ms takes 2 or 3 polls (a schedule
// starting small would take a dozen). Only the lower bound is a time
// (timers never fire early); the count allows a slow machine some polls.
func TestPollSchedule(t *testing.T) {
	s := newFake(t, kontexttest.Options{Latency: 600 * time.Millisecond})
	var mu sync.Mutex
	var sent, firstPoll time.Time
	observe := func(a Attempt) {
		mu.Lock()
		defer mu.Unlock()
		start := time.Now().Add(-a.Duration)
		switch {
		case a.Op == "create":
			sent = start
		case a.Op == "poll" && firstPoll.IsZero():
			firstPoll = start
		}
	}
	c := newTestClient(t, s, func(c *Config) {
		c.Wait, c.Observe = -1, observe
		setPolling(c, 550*time.Millisecond, 100*time.Millisecond)
	})
	if _, err := c.Run(context.Background(), Request{Prompt: "a red fox"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// 550ms from before the create was built, so a little less from when
	// it was sent.
	if got := firstPoll.Sub(sent); got < 500*time.Millisecond {
		t.Errorf("first poll %v after the create, want about 550ms", got)
	}
	if st := s.Stats(); st.Polls < 1 || st.Polls > 5 {
		t.Errorf("got %d polls, want 1 to 5", st.Polls)
	}
}

func TestNextPoll(t *testing.T) {
	c := &Client{cfg: Config{BackoffAfter: 15 * time.Second, MaxPollInterval: 5 * time.Second}}
	tests := []struct {
		name          string
		prev, elapsed time.Duration
		want          time.Duration
	}{
		{"AfterTheFirstPoll", 4 * time.Second, 4 * time.Second, 500 * time.Millisecond},
		{"ShortIntervalsAtFirst", 500 * time.Millisecond, 14 * time.Second, 500 * time.Millisecond},
		{"BackingOffOnLongRuns", 500 * time.Millisecond, 16 * time.Second, 750 * time.Millisecond},
		{"Growing", 2 * time.Second, 30 * time.Second, 3 * time.Second},
		{"Capped", 4 * time.Second, 60 * time.Second, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.nextPoll(tt.prev, tt.elapsed, 500*time.Millisecond); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPollDefaults(t *testing.T) {
	c, err := NewClient(Config{BaseURL: "https://api.cometapi.com", APIKey: "k", Wait: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		model           string
		first, interval time.Duration
	}{{ModelMax, 4 * time.Second, 500 * time.Millisecond}, {ModelPro, 3 * time.Second, 375 * time.Millisecond}} {
		if first, interval := c.schedule(tt.model); first != tt.first || interval != tt.interval {
			t.Errorf("%s: first poll %v then every %v, want %v and %v (the model's latency, then an eighth of it)", tt.model, first, interval, tt.first, tt.interval)
		}
	}
	c, err = NewClient(Config{BaseURL: "https://api.cometapi.com", APIKey: "k", FirstPoll: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if first, interval := c.schedule(ModelMax); first != 40*time.Millisecond || interval != 10*time.Millisecond {
		t.Errorf("a 40ms first poll: got %v then every %v, want 40ms then 10ms", first, interval)
	}
	if c.cfg.InputPixels != WorkingPixels || c.cfg.InputMaxBytes != DefaultInputMaxBytes || WorkingPixels != 1<<20 {
		t.Errorf("input defaults: %d pixels, %d bytes; want 1 MP and DefaultInputMaxBytes", c.cfg.InputPixels, c.cfg.InputMaxBytes)
	}
	if c.cfg.RequestTimeout <= 45*time.Second {
		t.Errorf("request timeout %v, want above the 45 s CometAPI has seen a query take", c.cfg.RequestTimeout)
	}
	c, err = NewClient(Config{BaseURL: "https://api.cometapi.com", APIKey: "k", PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.FirstPoll != 10*time.Millisecond {
		t.Errorf("first poll %v, want the PollInterval given", c.cfg.FirstPoll)
	}
}

// TestResumePollsAtOnce: after a restart the prediction may be long done:
// Resume does not wait for the first-poll delay.
func TestResumePollsAtOnce(t *testing.T) {
	s := newFake(t, kontexttest.Options{Latency: 50 * time.Millisecond})
	c := newTestClient(t, s, func(c *Config) { c.Wait = -1 })
	ctx, cancel := context.WithCancelCause(context.Background())
	var id string
	c.Run(ctx, Request{Prompt: "later", OnCreated: func(p string) { id = p; cancel(ErrShutdown) }})
	for deadline := time.Now().Add(10 * time.Second); s.Stats().Succeeded == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the prediction never finished")
		}
	}
	later := newTestClient(t, s, func(c *Config) { c.Wait = -1; setPolling(c, time.Minute, time.Minute); c.JobTimeout = 3 * time.Second })
	if _, err := later.Resume(context.Background(), id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
}

// TestDataURIOutputs: an output may be the image itself as a data: URI
// (string or array element), bounded by MaxImageBytes.
func TestDataURIOutputs(t *testing.T) {
	for _, asString := range []bool{false, true} {
		t.Run(fmt.Sprint("AsString=", asString), func(t *testing.T) {
			s := newFake(t, kontexttest.Options{OutputAsString: asString})
			s.Inject(kontexttest.Create, kontexttest.Fault{DataURIOutput: true})
			c := newTestClient(t, s, nil)
			res, err := c.Run(context.Background(), Request{Prompt: "inline", Seed: seed(6)})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			prov, err := kontexttest.ReadProvenance(res.Data)
			if err != nil || prov.Prompt != "inline" || prov.Seed != 6 || res.Format != "png" {
				t.Errorf("got %s %+v (%v), want the inline PNG", res.Format, prov, err)
			}
			if st := s.Stats(); st.Downloads != 0 {
				t.Errorf("got %d downloads, want none", st.Downloads)
			}
		})
	}
	t.Run("TooBig", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		s.Inject(kontexttest.Create, kontexttest.Fault{DataURIOutput: true})
		c := newTestClient(t, s, func(c *Config) { c.MaxImageBytes = 1000 })
		if _, err := c.Run(context.Background(), Request{Prompt: "inline"}); !errors.Is(err, ErrProviderFailure) {
			t.Errorf("got %v, want ErrProviderFailure", err)
		}
	})
}

// TestBaseURLForms: the base as CometAPI's docs write it (.../v1) and
// with trailing slashes reaches the same routes.
func TestBaseURLForms(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	for _, base := range []string{s.URL, s.URL + "/", s.URL + "/v1", s.URL + "/v1/", s.URL + "/V1//"} {
		t.Run(strings.TrimPrefix(base, s.URL), func(t *testing.T) {
			before := s.Stats().Succeeded
			c := newTestClient(t, s, func(c *Config) { c.BaseURL = base })
			if _, err := c.Run(context.Background(), Request{Prompt: "x"}); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if s.Stats().Succeeded != before+1 {
				t.Error("no prediction succeeded")
			}
		})
	}
	for _, bad := range []string{"api.cometapi.com", "ftp://api.cometapi.com", "https://", "https://api.cometapi.com/?x=1"} {
		if _, err := ParseBaseURL(bad); err == nil {
			t.Errorf("ParseBaseURL(%q): want an error", bad)
		}
	}
}

// recorder keeps the body of every POST the client sends.
type recorder struct {
	mu     sync.Mutex
	bodies [][]byte
	next   http.RoundTripper
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && req.Body != nil {
		data, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.bodies = append(r.bodies, data)
		r.mu.Unlock()
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(data))
	}
	return r.next.RoundTrip(req)
}

// sentInput decodes the input_image of the i-th POST.
func (r *recorder) sentInput(t *testing.T, i int) (format string, w, h, uriLen int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var body struct {
		Input struct {
			InputImage string `json:"input_image"`
		} `json:"input"`
	}
	if err := json.Unmarshal(r.bodies[i], &body); err != nil {
		t.Fatal(err)
	}
	uri := body.Input.InputImage
	payload := uri[strings.Index(uri, ",")+1:]
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return format, cfg.Width, cfg.Height, len(uri)
}

// photoPNG is a w×h PNG that compresses like a photo (a gradient with
// a little noise), with an alpha gradient when alpha is set.
func photoPNG(t testing.TB, w, h int, alpha bool) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(1, 2))
	for y := range h {
		row := img.Pix[y*img.Stride:]
		for x := range w {
			n := uint8(rng.IntN(32))
			a := uint8(255)
			if alpha {
				a = uint8(64 + x*191/w)
			}
			copy(row[4*x:], []byte{uint8(x*200/w) + n, uint8(y*200/h) + n, uint8((x+y)*200/(w+h)) + n, a})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestInputSizes: a small input goes byte for byte; one whose data URI is
// over InputMaxBytes is downscaled to InputPixels (the model's 1 MP; a
// small area here, to keep -race fast) and re-encoded (JPEG, or PNG with
// transparency); a 413 makes the client shrink and send once more; the
// person never sees "try again" for a 413.
func TestInputSizes(t *testing.T) {
	const w, h, pixels, limit = 330, 300, 128 * 128, 64 << 10
	opaque := photoPNG(t, w, h, false)
	transparent := photoPNG(t, w, h, true)
	if len(opaque) < 100<<10 {
		t.Fatalf("the test input is %d bytes, want over 100 KiB", len(opaque))
	}
	tests := []struct {
		name        string
		input       []byte
		fakeMax     int64
		inputMax    int
		wantFormat  string
		wantCreates int
		want413     int
	}{
		{name: "LargeOpaqueReencoded", input: opaque, fakeMax: 100 << 10, inputMax: limit, wantFormat: "jpeg", wantCreates: 1},
		{name: "LargeTransparentReencoded", input: transparent, fakeMax: 100 << 10, inputMax: limit, wantFormat: "png", wantCreates: 1},
		{name: "413ShrinksOnce", input: opaque, fakeMax: 100 << 10, inputMax: 64 << 20, wantFormat: "jpeg", wantCreates: 2, want413: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{MaxRequestBytes: tt.fakeMax})
			rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
			c := newTestClient(t, s, func(c *Config) {
				c.HTTPClient = &http.Client{Transport: rec}
				setInputLimits(c, tt.inputMax, pixels, 0)
			})
			res, err := c.Run(context.Background(), Request{Prompt: "make it winter", InputImage: tt.input})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if _, err := kontexttest.ReadProvenance(res.Data); err != nil {
				t.Fatal(err)
			}
			st := s.Stats()
			if st.Creates != tt.wantCreates || st.TooLarge != tt.want413 || st.Created != 1 {
				t.Errorf("got %d creates, %d 413s, %d predictions; want %d, %d, 1", st.Creates, st.TooLarge, st.Created, tt.wantCreates, tt.want413)
			}
			format, sw, sh, n := rec.sentInput(t, len(rec.bodies)-1)
			if format != tt.wantFormat || sw*sh > pixels || n > min(tt.inputMax, int(tt.fakeMax)) {
				t.Errorf("sent a %s of %dx%d in a %d-byte data URI; want %s, at most %d pixels and %d bytes", format, sw, sh, n, tt.wantFormat, pixels, min(tt.inputMax, int(tt.fakeMax)))
			}
			if ratio := sw * 1000 / sh; sw*sh < pixels/4 || ratio < 1090 || ratio > 1110 {
				t.Errorf("sent %dx%d: want the aspect ratio kept, and not shrunk below a quarter of %d pixels", sw, sh, pixels)
			}
		})
	}
	t.Run("SmallGoesByteForByte", func(t *testing.T) {
		small := photoPNG(t, 300, 200, false)
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, nil)
		res, err := c.Run(context.Background(), Request{Prompt: "x", InputImage: small})
		if err != nil {
			t.Fatal(err)
		}
		if prov, _ := kontexttest.ReadProvenance(res.Data); prov.InputSHA256 != sha(small) {
			t.Error("the small input was not sent byte for byte")
		}
	})
	t.Run("413WithoutInputIsInvalid", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		s.Inject(kontexttest.Create, kontexttest.Fault{Status: 413})
		c := newTestClient(t, s, nil)
		_, err := c.Run(context.Background(), Request{Prompt: "x"})
		if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(userMessage(err), "too large") {
			t.Errorf("got %v (%q), want ErrInvalidRequest saying it is too large", err, userMessage(err))
		}
		if st := s.Stats(); st.Creates != 1 {
			t.Errorf("got %d creates, want 1", st.Creates)
		}
	})
	t.Run("OverTheDecodeBudget", func(t *testing.T) {
		huge := pngHeaderOnly(6000, 6000, 16, 6) // 288 MB decoded
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { setInputLimits(c, 64, 0, 0) })
		var alloc uint64
		_, err := measureAlloc(&alloc, func() (*Result, error) {
			return c.Run(context.Background(), Request{Prompt: "x", InputImage: huge})
		})
		if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(userMessage(err), "too large") {
			t.Errorf("got %v (%q), want ErrInvalidRequest saying it is too large", err, userMessage(err))
		}
		if st := s.Stats(); st.Creates != 0 {
			t.Errorf("got %d creates, want none", st.Creates)
		}
		if alloc > 16<<20 {
			t.Errorf("allocated %d bytes refusing it, want under 16 MiB", alloc)
		}
	})
}

// measureAlloc runs f and stores the bytes the process allocated meanwhile.
func measureAlloc(alloc *uint64, f func() (*Result, error)) (*Result, error) {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	res, err := f()
	runtime.ReadMemStats(&m1)
	*alloc = m1.TotalAlloc - m0.TotalAlloc
	return res, err
}

// pngHeaderOnly is a PNG whose header announces w×h at depth bits per
// sample (colorType 6: RGBA) followed by a tiny image stream: enough for
// image.DecodeConfig, and for a decoder that trusts the header to allocate
// the whole image.
func pngHeaderOnly(w, h int, depth, colorType byte) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		crc := crc32.NewIEEE()
		io.WriteString(crc, typ)
		crc.Write(data)
		b.WriteString(typ)
		b.Write(data)
		binary.Write(&b, binary.BigEndian, crc.Sum32())
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = depth, colorType
	chunk("IHDR", ihdr)
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	zw.Write(make([]byte, 64))
	zw.Close()
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return b.Bytes()
}

// TestHugeResultRefusedFromItsHeader: results are about 1 MP; an
// 8192×8192 16-bit result (512 MB decoded) is refused from its header
// without decoding, allocating little; a real 1 MP 16-bit result passes.
func TestHugeResultRefusedFromItsHeader(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	c := newTestClient(t, s, nil)
	var alloc uint64
	_, err := measureAlloc(&alloc, func() (*Result, error) { return c.verify(pngHeaderOnly(8192, 8192, 16, 6)) })
	if err == nil {
		t.Fatal("the 8192x8192 16-bit result was accepted")
	}
	if alloc > 1<<20 {
		t.Errorf("allocated %d bytes refusing it, want under 1 MiB", alloc)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewNRGBA64(image.Rect(0, 0, 1024, 1024))); err != nil {
		t.Fatal(err)
	}
	if _, err := c.verify(buf.Bytes()); err != nil {
		t.Errorf("a 1 MP 16-bit result was refused: %v", err)
	}
}

// TestModerationAndTransientStatuses: Black Forest Labs' moderation
// statuses and texts are a content refusal (not retried, no cancel); a
// 422 about safety_tolerance is not; 524 on a poll or a download is
// transient.
func TestModerationAndTransientStatuses(t *testing.T) {
	tolerance := 5
	tests := []struct {
		name    string
		cfg     func(*Config)
		inject  map[kontexttest.Endpoint][]kontexttest.Fault
		req     Request
		wantErr error // nil: success
		wantMsg string
	}{
		{name: "ContentModeratedStatus", wantErr: ErrContentRefused,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{EndStatus: "Content Moderated"}}}},
		{name: "RequestModeratedStatus", wantErr: ErrContentRefused,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{EndStatus: "Request Moderated"}}}},
		{name: "RequestModeratedError", wantErr: ErrContentRefused,
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Create: {{Failed: "Request Moderated"}}}},
		{name: "SafetyToleranceIsInvalidNotRefused", wantErr: ErrInvalidRequest, wantMsg: "safety_tolerance",
			req: Request{SafetyTolerance: &tolerance}},
		{name: "Poll524Retried", cfg: func(c *Config) { c.Wait = -1 },
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Poll: {{Status: 524}}}},
		{name: "Download524Retried",
			inject: map[kontexttest.Endpoint][]kontexttest.Fault{kontexttest.Download: {{Status: 524}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			for ep, faults := range tt.inject {
				s.Inject(ep, faults...)
			}
			c := newTestClient(t, s, tt.cfg)
			req := tt.req
			req.Prompt = "a red fox"
			if req.SafetyTolerance != nil {
				req.InputImage = testPNG(t, 64, 64)
			}
			_, err := c.Run(context.Background(), req)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Run: %v", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Run: got %v, want %v", err, tt.wantErr)
			case !strings.Contains(userMessage(err), tt.wantMsg):
				t.Errorf("user message %q, want it to mention %q", userMessage(err), tt.wantMsg)
			}
			c.Close()
			if st := s.Stats(); st.Creates != 1 || st.Cancels != 0 {
				t.Errorf("got %d creates %d cancels, want 1 and 0", st.Creates, st.Cancels)
			}
		})
	}
}

// TestImagesRouteRefusesWhatItDrops: the OpenAI-style route documents no
// seed and no aspect ratio; asking for either is refused with a sentence
// naming the route that takes them, before anything is sent.
func TestImagesRouteRefusesWhatItDrops(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"Seed", Request{Prompt: "x", Seed: seed(42)}},
		{"Aspect", Request{Prompt: "x", AspectRatio: "16:9"}},
		{"Both", Request{Prompt: "x", Seed: seed(42), AspectRatio: "9:16"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			c := newTestClient(t, s, func(c *Config) { c.Route = RouteImages })
			_, err := c.Run(context.Background(), tt.req)
			if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(userMessage(err), "KONTEXT_ROUTE=models") {
				t.Errorf("got %v (%q), want ErrInvalidRequest naming the models route", err, userMessage(err))
			}
			if st := s.Stats(); st.Images != 0 {
				t.Errorf("got %d images requests, want none", st.Images)
			}
		})
	}
	t.Run("SquareWithoutSeedIsFine", func(t *testing.T) {
		s := newFake(t, kontexttest.Options{})
		c := newTestClient(t, s, func(c *Config) { c.Route = RouteImages })
		if _, err := c.Run(context.Background(), Request{Prompt: "x", AspectRatio: "1:1"}); err != nil {
			t.Fatal(err)
		}
	})
}

// TestJobTimeoutAboveRequestTimeout: the job's deadline must leave room
// for one whole create.
func TestJobTimeoutAboveRequestTimeout(t *testing.T) {
	tests := []struct {
		name           string
		job, req, wait time.Duration
		wantErr        bool
	}{
		{"Defaults", 0, 0, -1, false},
		{"JobShorter", 30 * time.Second, 60 * time.Second, -1, true},
		{"JobAboveRequest", 61 * time.Second, 60 * time.Second, -1, false},
		{"WaitCounts", 90 * time.Second, 60 * time.Second, 60 * time.Second, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewClient(Config{BaseURL: "https://api.cometapi.com", APIKey: "k", JobTimeout: tt.job, RequestTimeout: tt.req, Wait: tt.wait})
			if (err != nil) != tt.wantErr {
				t.Errorf("got %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

// TestDecide lists the retry rules for a create and for a poll.
func TestDecide(t *testing.T) {
	c := &Client{cfg: Config{MaxRetries: 3, RetryBase: time.Millisecond}}
	netErr := &net.OpError{Op: "read", Net: "tcp", Err: io.ErrUnexpectedEOF}
	pred := []byte(`{"id":"p1","status":"starting"}`)
	invalid := []byte(`{"error":{"message":"bad","type":"invalid_request_error","code":"invalid_request"}}`)
	tests := []struct {
		name          string
		create        bool
		r             reply
		retry, unsure bool
	}{
		{"Create429", true, reply{status: 429}, true, false},
		{"CreateRefusedBeforeWriting", true, reply{err: netErr, wrote: false}, true, false},
		{"CreateLostAfterWriting", true, reply{err: netErr, wrote: true}, false, true},
		{"CreateTimeoutAfterWriting", true, reply{err: context.DeadlineExceeded, wrote: true}, false, true},
		{"Create500NoPrediction", true, reply{status: 500}, true, false},
		{"Create503NoPrediction", true, reply{status: 503, body: []byte(`{"detail":"busy"}`)}, true, false},
		{"Create500WithPrediction", true, reply{status: 500, body: pred}, false, true},
		{"Create502", true, reply{status: 502}, false, true},
		{"Create504", true, reply{status: 504}, false, true},
		{"Create524", true, reply{status: 524}, false, true},
		{"Create500InvalidRequest", true, reply{status: 500, body: invalid}, false, false},
		{"Create2xxUnreadable", true, reply{status: 201, err: errTooLarge, wrote: true}, false, true},
		{"Create413", true, reply{status: 413}, false, false},
		{"Create422", true, reply{status: 422}, false, false},
		{"PollTimeout", false, reply{err: context.DeadlineExceeded, wrote: true}, true, false},
		{"PollReset", false, reply{err: netErr, wrote: true}, true, false},
		{"Poll502", false, reply{status: 502}, true, false},
		{"Poll524", false, reply{status: 524}, true, false},
		{"Poll500InvalidRequest", false, reply{status: 500, body: invalid}, false, false},
		{"Poll404", false, reply{status: 404}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := c.decide(tt.create, tt.r, 1)
			if d.retry != tt.retry || d.unsure != tt.unsure {
				t.Errorf("got retry %v unsure %v, want %v and %v", d.retry, d.unsure, tt.retry, tt.unsure)
			}
		})
	}
	if d := c.decide(true, reply{status: 429}, 4); d.retry {
		t.Error("a 429 was retried past MaxRetries")
	}
}

func TestUserMessage(t *testing.T) {
	long := strings.Repeat("é", 250)
	tests := []struct {
		name string
		err  *APIError
		want string
	}{
		{"Invalid", &APIError{Kind: ErrInvalidRequest, Message: "prompt is too long."}, "prompt is too long"},
		{"Refused", &APIError{Kind: ErrContentRefused, Message: "Content Moderated"}, "Content Moderated"},
		{"ControlsAndSpaces", &APIError{Kind: ErrInvalidRequest, Message: "bad\x1b[31m\n  input\x07"}, "bad [31m input"},
		{"Cut", &APIError{Kind: ErrInvalidRequest, Message: long}, strings.Repeat("é", 200) + "…"},
		{"FailureIsForLogs", &APIError{Kind: ErrProviderFailure, Message: "node 7 exploded"}, ""},
		{"TimeoutIsForLogs", &APIError{Kind: ErrTimeout, Message: "lost"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.UserMessage(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
