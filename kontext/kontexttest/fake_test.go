package kontexttest_test

import (
	"errors"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

func TestAuth(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{})
	id := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil).ID
	routes := []struct {
		name, method, path string
		body               any
	}{
		{"create model route", http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}},
		{"create generic route", http.MethodPost, genPath, map[string]any{"model": "black-forest-labs/flux-kontext-max", "input": map[string]any{"prompt": "a cat"}}},
		{"poll", http.MethodGet, genPath + "/" + id, nil},
		{"cancel", http.MethodPost, genPath + "/" + id + "/cancel", nil},
		{"images", http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}},
	}
	auths := []struct{ name, header string }{
		{"no header", ""},
		{"wrong key", "Bearer nope"},
		{"empty bearer", "Bearer "},
		{"wrong scheme", "Basic " + key},
		{"bare key", key},
	}
	want := 0
	for _, rt := range routes {
		for _, a := range auths {
			t.Run(rt.name+"/"+a.name, func(t *testing.T) {
				r := call(t, s, rt.method, rt.path, rt.body, map[string]string{"Authorization": a.header})
				want++
				if got, want := r.status, http.StatusUnauthorized; got != want {
					t.Fatalf("status = %d (%s), want %d", got, r.body, want)
				}
				if got, want := r.detail(t), "Unauthorized"; got != want {
					t.Errorf("detail = %q, want %q", got, want)
				}
			})
		}
	}
	if got := s.Stats().Unauthorized; got != want {
		t.Errorf("Stats().Unauthorized = %d, want %d", got, want)
	}
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{})
	img := dataURI("image/png", twoTone(t, 64, 48))
	in := func(kv ...any) map[string]any {
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return map[string]any{"input": m}
	}
	tests := []struct {
		name   string
		path   string
		body   any
		status int
		detail string // substring of the body's detail
	}{
		{"missing prompt", maxPath, in(), 422, "input.prompt is required"},
		{"blank prompt", maxPath, in("prompt", "  \t "), 422, "input.prompt is required"},
		{"prompt not a string", maxPath, in("prompt", 42), 422, "input.prompt must be a string"},
		{"unknown model on model route", "/replicate/v1/models/black-forest-labs/flux-dev/predictions", in("prompt", "x"), 422, `unknown model "black-forest-labs/flux-dev"`},
		{"unknown owner on model route", "/replicate/v1/models/acme/flux-kontext-max/predictions", in("prompt", "x"), 422, "unknown model"},
		{"unknown model on generic route", genPath, map[string]any{"model": "black-forest-labs/flux-schnell", "input": map[string]any{"prompt": "x"}}, 422, "unknown model"},
		{"bare model on generic route", genPath, map[string]any{"model": "flux-kontext-max", "input": map[string]any{"prompt": "x"}}, 422, "unknown model"},
		{"missing model on generic route", genPath, map[string]any{"input": map[string]any{"prompt": "x"}}, 422, "model is required"},
		{"unknown input field", maxPath, in("prompt", "x", "promt_upsampling", true), 422, `unknown field "promt_upsampling"`},
		{"input field in wrong case", maxPath, in("Prompt", "x"), 422, `unknown field "Prompt"`},
		{"unknown top-level field", maxPath, map[string]any{"input": map[string]any{"prompt": "x"}, "webhook": "https://example.com"}, 422, `unknown field "webhook"`},
		{"model field on model route", maxPath, map[string]any{"model": "black-forest-labs/flux-kontext-max", "input": map[string]any{"prompt": "x"}}, 422, `unknown field "model"`},
		{"missing input", maxPath, map[string]any{}, 422, "input is required"},
		{"input not an object", maxPath, map[string]any{"input": "a cat"}, 422, "input must be a JSON object"},
		{"body not an object", maxPath, `["a cat"]`, 422, "body must be a JSON object"},
		{"bad aspect ratio", maxPath, in("prompt", "x", "aspect_ratio", "7:5"), 422, `aspect_ratio "7:5"`},
		{"seed not an integer", maxPath, in("prompt", "x", "seed", 1.5), 422, "input.seed must be an integer"},
		{"seed as a string", maxPath, in("prompt", "x", "seed", "42"), 422, "input.seed must be an integer"},
		{"bad output format", maxPath, in("prompt", "x", "output_format", "webp"), 422, "output_format"},
		{"safety_tolerance 7", maxPath, in("prompt", "x", "safety_tolerance", 7), 422, "between 0 and 6"},
		{"safety_tolerance 3 with input image", maxPath, in("prompt", "x", "safety_tolerance", 3, "input_image", img), 422, "at most 2 with input_image"},
		{"prompt_upsampling not a bool", maxPath, in("prompt", "x", "prompt_upsampling", "yes"), 422, "prompt_upsampling must be a boolean"},
		{"undecodable input image", maxPath, in("prompt", "x", "input_image", dataURI("image/png", []byte("not a png at all"))), 422, "could not be decoded"},
		{"truncated input image", maxPath, in("prompt", "x", "input_image", dataURI("image/png", twoTone(t, 64, 48)[:100])), 422, "could not be decoded"},
		{"bad base64", maxPath, in("prompt", "x", "input_image", "data:image/png;base64,!!!!"), 422, "invalid base64"},
		{"unsupported media type", maxPath, in("prompt", "x", "input_image", dataURI("image/bmp", twoTone(t, 8, 8))), 422, "unsupported media type"},
		{"data URI without base64", maxPath, in("prompt", "x", "input_image", "data:image/png,abc"), 422, "data URI"},
		{"input image on another host", maxPath, in("prompt", "x", "input_image", "https://example.com/cat.png"), 422, "could not fetch input_image"},
		{"input image unknown result", maxPath, in("prompt", "x", "input_image", s.URL+"/files/nope.png"), 422, "could not fetch input_image"},
		{"input image not a URL", maxPath, in("prompt", "x", "input_image", "cat.png"), 422, "input_image must be"},
		{"invalid JSON", maxPath, `{"input": {"prompt": "x"`, 400, "invalid JSON"},
		{"trailing data", maxPath, `{"input": {"prompt": "x"}} {}`, 400, "invalid JSON"},
		{"empty body", maxPath, "", 400, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, s, http.MethodPost, tt.path, tt.body, nil)
			if got, want := r.status, tt.status; got != want {
				t.Fatalf("status = %d (%s), want %d", got, r.body, want)
			}
			if got := r.detail(t); !strings.Contains(got, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", got, tt.detail)
			}
		})
	}
	st := s.Stats()
	if got, want := st.Invalid, len(tests); got != want {
		t.Errorf("Stats().Invalid = %d, want %d", got, want)
	}
	if got, want := st.Creates, len(tests); got != want {
		t.Errorf("Stats().Creates = %d, want %d", got, want)
	}
	if got := st.MaxActive; got != 0 {
		t.Errorf("Stats().MaxActive = %d, want 0 (refused requests take no slot)", got)
	}
}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9]{26}$`)
	timePattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
)

func TestCreateRoutes(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 500 * time.Millisecond})
	tests := []struct {
		name, path, model string
		body              any
	}{
		{"model route max", maxPath, "black-forest-labs/flux-kontext-max", map[string]any{"input": map[string]any{"prompt": "a cat", "seed": 3}}},
		{"model route pro", proPath, "black-forest-labs/flux-kontext-pro", map[string]any{"input": map[string]any{"prompt": "a cat", "seed": 3}}},
		{"generic route", genPath, "black-forest-labs/flux-kontext-max", map[string]any{"model": "black-forest-labs/flux-kontext-max", "input": map[string]any{"prompt": "a cat", "seed": 3}}},
		{"every input field", genPath, "black-forest-labs/flux-kontext-pro", map[string]any{"model": "black-forest-labs/flux-kontext-pro", "input": map[string]any{
			"prompt": "a cat", "seed": 3, "aspect_ratio": "16:9", "output_format": "jpg", "safety_tolerance": 6, "prompt_upsampling": true,
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := create(t, s, tt.path, tt.body, nil)
			if !idPattern.MatchString(p.ID) {
				t.Errorf("id = %q, want 26 lower-case alphanumerics", p.ID)
			}
			if got, want := p.Model, tt.model; got != want {
				t.Errorf("model = %q, want %q", got, want)
			}
			if got, want := p.Status, "starting"; got != want {
				t.Errorf("status = %q, want %q", got, want)
			}
			if got, want := p.Input["prompt"], any("a cat"); got != want {
				t.Errorf("input.prompt = %v, want %v", got, want)
			}
			if got, want := p.Input["seed"], any(3.0); got != want {
				t.Errorf("input.seed = %v, want %v", got, want)
			}
			if got, want := string(p.Output), "null"; got != want {
				t.Errorf("output = %s, want %s", got, want)
			}
			if p.Error != nil || p.StartedAt != nil || p.CompletedAt != nil {
				t.Errorf("error, started_at, completed_at = %v, %v, %v; want all null", p.Error, p.StartedAt, p.CompletedAt)
			}
			if !timePattern.MatchString(p.CreatedAt) {
				t.Errorf("created_at = %q, want RFC 3339 UTC with milliseconds", p.CreatedAt)
			}
			if got, want := p.URLs.Get, "https://api.replicate.com/v1/predictions/"+p.ID; got != want {
				t.Errorf("urls.get = %q, want %q", got, want)
			}
			if got, want := p.URLs.Cancel, "https://api.replicate.com/v1/predictions/"+p.ID+"/cancel"; got != want {
				t.Errorf("urls.cancel = %q, want %q", got, want)
			}
			call(t, s, http.MethodPost, genPath+"/"+p.ID+"/cancel", nil, nil)
		})
	}
}

func TestPreferWait(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 30 * time.Millisecond, Pixels: 64 * 64})
	t.Run("create returns a final prediction", func(t *testing.T) {
		p := generate(t, s, map[string]any{"prompt": "a cat", "seed": 42})
		if !strings.Contains(p.Logs, "Using seed: 42\n") {
			t.Errorf("logs = %q, want a line %q", p.Logs, "Using seed: 42")
		}
		if url := p.url(t); !strings.HasPrefix(url, s.URL+"/files/") || !strings.HasSuffix(url, ".png") {
			t.Errorf("output URL = %q, want %s/files/....png", url, s.URL)
		}
		if p.StartedAt == nil || p.CompletedAt == nil || !timePattern.MatchString(*p.CompletedAt) {
			t.Errorf("started_at, completed_at = %v, %v; want both set", p.StartedAt, p.CompletedAt)
		}
		if got, want := p.Metrics["image_count"], 1.0; got != want {
			t.Errorf("metrics.image_count = %v, want %v", got, want)
		}
		if got := p.Metrics["predict_time"]; got <= 0 {
			t.Errorf("metrics.predict_time = %v, want > 0", got)
		}
	})
	t.Run("poll returns a final prediction", func(t *testing.T) {
		p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil)
		r := call(t, s, http.MethodGet, genPath+"/"+p.ID, nil, wait)
		if got, want := r.prediction(t).Status, "succeeded"; got != want {
			t.Errorf("status = %q, want %q", got, want)
		}
	})
	for _, prefer := range []string{"wait=abc", "wait=0", "wait=61", "wait", "respond-async"} {
		t.Run("ignores "+prefer, func(t *testing.T) {
			p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, map[string]string{"Prefer": prefer})
			if got, want := p.Status, "starting"; got != want {
				t.Errorf("status = %q, want %q", got, want)
			}
		})
	}
	t.Run("among other preferences", func(t *testing.T) {
		p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, map[string]string{"Prefer": "respond-async, wait=5"})
		if got, want := p.Status, "succeeded"; got != want {
			t.Errorf("status = %q, want %q", got, want)
		}
	})
}

func TestPreferWaitRunsOut(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 5 * time.Second})
	start := time.Now()
	p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, map[string]string{"Prefer": "wait=1"})
	if got, want := p.Status, "processing"; got != want {
		t.Errorf("status = %q, want %q", got, want)
	}
	if got := time.Since(start); got < time.Second || got > 3*time.Second {
		t.Errorf("answered after %v, want about 1s", got)
	}
}

func TestPolling(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 150 * time.Millisecond, Pixels: 64 * 64})
	p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil)
	if got, want := p.Status, "starting"; got != want {
		t.Fatalf("status = %q, want %q", got, want)
	}
	p, seen := pollUntilFinal(t, s, p.ID)
	if got, want := strings.Join(seen, ","), "starting,processing,succeeded"; got != want && got != "processing,succeeded" {
		t.Errorf("statuses seen = %s, want %s", got, want)
	}
	r := download(t, s, p.url(t))
	if got, want := r.header.Get("Content-Type"), "image/png"; got != want {
		t.Errorf("Content-Type = %q, want %q", got, want)
	}
	if _, format := decode(t, r.body); format != "png" {
		t.Errorf("format = %q, want png", format)
	}
	st := s.Stats()
	if st.Succeeded != 1 || st.Active != 0 || st.MaxActive != 1 {
		t.Errorf("Stats() = %+v, want Succeeded 1, Active 0, MaxActive 1", st)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Slots: 1, Latency: 5 * time.Second})
	body := map[string]any{"input": map[string]any{"prompt": "a cat"}}
	p := create(t, s, maxPath, body, nil)

	t.Run("slot is taken", func(t *testing.T) {
		if got, want := call(t, s, http.MethodPost, maxPath, body, nil).status, http.StatusTooManyRequests; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		r := call(t, s, http.MethodPost, genPath+"/"+p.ID+"/cancel", nil, nil)
		if got, want := r.status, http.StatusOK; got != want {
			t.Fatalf("status = %d (%s), want %d", got, r.body, want)
		}
		c := r.prediction(t)
		if got, want := c.Status, "canceled"; got != want {
			t.Errorf("status = %q, want %q", got, want)
		}
		if c.CompletedAt == nil {
			t.Errorf("completed_at = null, want set")
		}
	})
	t.Run("slot is free", func(t *testing.T) {
		q := create(t, s, maxPath, body, nil)
		call(t, s, http.MethodPost, genPath+"/"+q.ID+"/cancel", nil, nil)
	})
	t.Run("poll stays canceled", func(t *testing.T) {
		if got, want := call(t, s, http.MethodGet, genPath+"/"+p.ID, nil, nil).prediction(t).Status, "canceled"; got != want {
			t.Errorf("status = %q, want %q", got, want)
		}
	})
	t.Run("unknown id", func(t *testing.T) {
		r := call(t, s, http.MethodPost, genPath+"/nope/cancel", nil, nil)
		if r.status != http.StatusNotFound || r.detail(t) != "Not found" {
			t.Errorf("got %d %s, want 404 Not found", r.status, r.body)
		}
	})
	if got, want := s.Stats().Canceled, 2; got != want {
		t.Errorf("Stats().Canceled = %d, want %d", got, want)
	}
}

func TestCancelFinal(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	p := generate(t, s, map[string]any{"prompt": "a cat"})
	c := call(t, s, http.MethodPost, genPath+"/"+p.ID+"/cancel", nil, nil).prediction(t)
	if got, want := c.Status, "succeeded"; got != want {
		t.Errorf("status after cancel = %q, want %q", got, want)
	}
	if got, want := c.url(t), p.url(t); got != want {
		t.Errorf("output after cancel = %q, want %q", got, want)
	}
	if st := s.Stats(); st.Canceled != 0 || st.Succeeded != 1 {
		t.Errorf("Stats() = %+v, want Canceled 0, Succeeded 1", st)
	}
}

func TestSlotLimit(t *testing.T) {
	t.Parallel()
	t.Run("sequential", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, kontexttest.Options{Slots: 2, Latency: 300 * time.Millisecond, Pixels: 64 * 64})
		body := map[string]any{"input": map[string]any{"prompt": "a cat"}}
		create(t, s, maxPath, body, nil)
		create(t, s, genPath, map[string]any{"model": "black-forest-labs/flux-kontext-pro", "input": body["input"]}, nil)
		r := call(t, s, http.MethodPost, maxPath, body, nil)
		if got, want := r.status, http.StatusTooManyRequests; got != want {
			t.Fatalf("status = %d (%s), want %d", got, r.body, want)
		}
		m := r.object(t)
		if got, want := m["detail"], any("Too many requests"); got != want {
			t.Errorf("detail = %v, want %v", got, want)
		}
		if got, want := m["retry_after"], any(1.0); got != want {
			t.Errorf("retry_after = %v, want %v", got, want)
		}
		if got, want := r.header.Get("Retry-After"), "1"; got != want {
			t.Errorf("Retry-After = %q, want %q", got, want)
		}
		st := s.Stats()
		if st.SlotLimit429 != 1 || st.Injected429 != 0 || st.MaxActive != 2 || st.Active != 2 {
			t.Errorf("Stats() = %+v, want SlotLimit429 1, Injected429 0, MaxActive 2, Active 2", st)
		}
		st = statsWait(t, s, func(st kontexttest.Stats) bool { return st.Active == 0 })
		if st.Active != 0 || st.Succeeded != 2 {
			t.Errorf("after completion Stats() = %+v, want Active 0, Succeeded 2", st)
		}
		create(t, s, maxPath, body, nil)
	})
	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, kontexttest.Options{Slots: 3, Latency: 5 * time.Second, Pixels: 64 * 64})
		const n = 10
		statuses := make(chan int, n)
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				statuses <- call(t, s, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil).status
			})
		}
		wg.Wait()
		close(statuses)
		count := map[int]int{}
		for st := range statuses {
			count[st]++
		}
		if count[201] != 3 || count[429] != n-3 {
			t.Errorf("statuses = %v, want 3×201 and %d×429", count, n-3)
		}
		st := s.Stats()
		if st.MaxActive != 3 || st.SlotLimit429 != n-3 {
			t.Errorf("Stats() = %+v, want MaxActive 3, SlotLimit429 %d", st, n-3)
		}
	})
	t.Run("per key", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, kontexttest.Options{Slots: 1, ExtraKeys: []string{"other-key"}, Latency: 300 * time.Millisecond})
		body := map[string]any{"input": map[string]any{"prompt": "a cat"}}
		create(t, s, maxPath, body, nil)
		create(t, s, maxPath, body, map[string]string{"Authorization": "Bearer other-key"})
		if got, want := call(t, s, http.MethodPost, maxPath, body, nil).status, http.StatusTooManyRequests; got != want {
			t.Errorf("status = %d, want %d", got, want)
		}
		if st := s.Stats(); st.MaxActive != 1 || st.Active != 2 {
			t.Errorf("Stats() = %+v, want MaxActive 1 (per key), Active 2", st)
		}
	})
}

func TestOtherKeysPrediction(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{ExtraKeys: []string{"other-key"}, Latency: time.Second})
	p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil)
	other := map[string]string{"Authorization": "Bearer other-key"}
	tests := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"poll by another key", http.MethodGet, genPath + "/" + p.ID, other, 404},
		{"cancel by another key", http.MethodPost, genPath + "/" + p.ID + "/cancel", other, 404},
		{"poll by its own key", http.MethodGet, genPath + "/" + p.ID, nil, 200},
		{"unknown id", http.MethodGet, genPath + "/aaaaaaaaaaaaaaaaaaaaaaaaaa", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, s, tt.method, tt.path, nil, tt.hdr)
			if got, want := r.status, tt.status; got != want {
				t.Fatalf("status = %d (%s), want %d", got, r.body, want)
			}
			if tt.status == 404 && r.detail(t) != "Not found" {
				t.Errorf("detail = %q, want %q", r.detail(t), "Not found")
			}
			if tt.status == 200 && r.prediction(t).Status == "canceled" {
				t.Errorf("the other key's cancel reached the prediction")
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{})
	tests := []struct {
		name, method, path string
		status             int
		allow              string
	}{
		{"unknown route", http.MethodGet, "/v1/models", 404, ""},
		{"root", http.MethodGet, "/", 404, ""},
		{"trailing slash", http.MethodPost, genPath + "/", 404, ""},
		{"BFL route", http.MethodPost, "/flux/v1/flux-kontext-max", 404, ""},
		{"list predictions", http.MethodGet, genPath, 405, "POST"},
		{"get on model route", http.MethodGet, maxPath, 405, "POST"},
		{"delete prediction", http.MethodDelete, genPath + "/abc", 405, "GET"},
		{"get cancel", http.MethodGet, genPath + "/abc/cancel", 405, "POST"},
		{"post file", http.MethodPost, "/files/abc.png", 405, "GET"},
		{"get images", http.MethodGet, imgPath, 405, "POST"},
		{"unknown file", http.MethodGet, "/files/abc.png", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, s, tt.method, tt.path, nil, nil)
			if got, want := r.status, tt.status; got != want {
				t.Fatalf("status = %d (%s), want %d", got, r.body, want)
			}
			if got, want := r.header.Get("Allow"), tt.allow; got != want {
				t.Errorf("Allow = %q, want %q", got, want)
			}
			if got, want := r.header.Get("Content-Type"), "application/json"; got != want {
				t.Errorf("Content-Type = %q, want %q", got, want)
			}
			r.detail(t) // a JSON body
		})
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	body := map[string]any{"input": map[string]any{"prompt": "a cat"}}
	tests := []struct {
		name   string
		ep     kontexttest.Endpoint
		fault  kontexttest.Fault
		status int
		detail string
		header map[string]string // expected response headers ("" = absent)
		fields map[string]any    // expected body fields (nil value = absent)
		stats  func(kontexttest.Stats) bool
	}{
		{name: "429 with retry-after", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 429, RetryAfter: 1500 * time.Millisecond},
			status: 429, detail: "Too many requests", header: map[string]string{"Retry-After": "2"}, fields: map[string]any{"retry_after": 1.5},
			stats: func(st kontexttest.Stats) bool { return st.Injected429 == 1 && st.SlotLimit429 == 0 }},
		{name: "429 with whole retry-after", ep: kontexttest.Poll, fault: kontexttest.Fault{Status: 429, RetryAfter: 3 * time.Second},
			status: 429, header: map[string]string{"Retry-After": "3"}, fields: map[string]any{"retry_after": 3.0}},
		{name: "429 without retry-after", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 429},
			status: 429, header: map[string]string{"Retry-After": ""}, fields: map[string]any{"retry_after": nil}},
		{name: "500 on create", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 500}, status: 500, detail: "Internal Server Error"},
		{name: "502 on poll", ep: kontexttest.Poll, fault: kontexttest.Fault{Status: 502}, status: 502, detail: "Bad Gateway"},
		{name: "503 on create", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 503}, status: 503, detail: "Service Unavailable"},
		{name: "504 on cancel", ep: kontexttest.Cancel, fault: kontexttest.Fault{Status: 504}, status: 504, detail: "Gateway Timeout"},
		{name: "500 on download", ep: kontexttest.Download, fault: kontexttest.Fault{Status: 500}, status: 500},
		{name: "402 on create", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 402}, status: 402, detail: "Insufficient credits"},
		{name: "401 on create", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 401}, status: 401, detail: "Unauthorized",
			stats: func(st kontexttest.Stats) bool { return st.Unauthorized == 1 }},
		{name: "422 on create", ep: kontexttest.Create, fault: kontexttest.Fault{Status: 422}, status: 422,
			stats: func(st kontexttest.Stats) bool { return st.Invalid == 1 }},
		{name: "400 on images", ep: kontexttest.Images, fault: kontexttest.Fault{Status: 400}, status: 400, detail: "Bad Request",
			fields: map[string]any{"error": map[string]any{"message": "Bad Request", "type": "invalid_request_error"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
			p := generate(t, s, map[string]any{"prompt": "a cat"})
			paths := map[kontexttest.Endpoint]struct {
				method, path string
				body         any
			}{
				kontexttest.Create:   {http.MethodPost, maxPath, body},
				kontexttest.Poll:     {http.MethodGet, genPath + "/" + p.ID, nil},
				kontexttest.Cancel:   {http.MethodPost, genPath + "/" + p.ID + "/cancel", nil},
				kontexttest.Download: {http.MethodGet, p.url(t), nil},
				kontexttest.Images:   {http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}},
			}
			s.Inject(tt.ep, tt.fault)
			rt := paths[tt.ep]
			r := call(t, s, rt.method, rt.path, rt.body, nil)
			if got, want := r.status, tt.status; got != want {
				t.Fatalf("status = %d (%s), want %d", got, r.body, want)
			}
			m := r.object(t)
			if tt.detail != "" && m["detail"] != tt.detail {
				t.Errorf("detail = %v, want %q", m["detail"], tt.detail)
			}
			for k, want := range tt.header {
				if got := r.header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			for k, want := range tt.fields {
				got, ok := m[k]
				if want == nil && ok {
					t.Errorf("body field %s = %v, want it absent", k, got)
				}
				if want != nil && !equalJSON(got, want) {
					t.Errorf("body field %s = %v, want %v", k, got, want)
				}
			}
			if tt.stats != nil && !tt.stats(s.Stats()) {
				t.Errorf("Stats() = %+v, not as expected", s.Stats())
			}
			// The fault is spent: the next request is handled normally.
			if got := call(t, s, rt.method, rt.path, rt.body, nil).status; got >= 400 {
				t.Errorf("after the fault: status = %d, want success", got)
			}
		})
	}
}

func equalJSON(a, b any) bool {
	switch b := b.(type) {
	case map[string]any:
		am, ok := a.(map[string]any)
		if !ok || len(am) != len(b) {
			return false
		}
		for k, v := range b {
			if !equalJSON(am[k], v) {
				return false
			}
		}
		return true
	default:
		return a == b
	}
}

func TestFaultQueueOrder(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	s.Inject(kontexttest.Create, kontexttest.Fault{Status: 503}, kontexttest.Fault{Status: 500})
	s.Inject(kontexttest.Create, kontexttest.Fault{Status: 429})
	body := map[string]any{"input": map[string]any{"prompt": "a cat"}}
	for i, want := range []int{503, 500, 429, 201, 201} {
		if got := call(t, s, http.MethodPost, maxPath, body, nil).status; got != want {
			t.Errorf("request %d: status = %d, want %d", i+1, got, want)
		}
	}
	if got, want := s.Stats().Creates, 5; got != want {
		t.Errorf("Stats().Creates = %d, want %d", got, want)
	}
}

func TestFaultHang(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	p := generate(t, s, map[string]any{"prompt": "a cat"})
	s.Inject(kontexttest.Poll, kontexttest.Fault{Hang: true})
	c := &http.Client{Transport: s.Client().Transport, Timeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := try(c, s, http.MethodGet, genPath+"/"+p.ID, nil, nil)
	var timeout interface{ Timeout() bool }
	if err == nil || !errors.As(err, &timeout) || !timeout.Timeout() {
		t.Fatalf("err = %v, want a client timeout", err)
	}
	if got := time.Since(start); got < 100*time.Millisecond {
		t.Errorf("gave up after %v, want at least the client timeout", got)
	}
	if got, want := call(t, s, http.MethodGet, genPath+"/"+p.ID, nil, nil).status, http.StatusOK; got != want {
		t.Errorf("next poll: status = %d, want %d", got, want)
	}
}

func TestCloseReleasesHeldRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(s *kontexttest.Server) (method, path string, body any, hdr map[string]string)
	}{
		{"hang", func(s *kontexttest.Server) (string, string, any, map[string]string) {
			s.Inject(kontexttest.Create, kontexttest.Fault{Hang: true})
			return http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil
		}},
		{"prefer wait", func(s *kontexttest.Server) (string, string, any, map[string]string) {
			return http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, map[string]string{"Prefer": "wait=60"}
		}},
		{"delay", func(s *kontexttest.Server) (string, string, any, map[string]string) {
			s.Inject(kontexttest.Images, kontexttest.Fault{Delay: time.Minute})
			return http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}, nil
		}},
		{"images", func(s *kontexttest.Server) (string, string, any, map[string]string) {
			return http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}, nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, kontexttest.Options{Latency: time.Minute})
			method, path, body, hdr := tt.setup(s)
			done := make(chan error, 1)
			go func() {
				_, err := try(s.Client(), s, method, path, body, hdr)
				done <- err
			}()
			statsWait(t, s, func(st kontexttest.Stats) bool { return st.Creates+st.Images > 0 })
			time.Sleep(20 * time.Millisecond)
			closed := make(chan struct{})
			go func() {
				s.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(5 * time.Second):
				t.Fatal("Close did not return within 5s")
			}
			select {
			case <-done: // answered or cut off: either way released
			case <-time.After(5 * time.Second):
				t.Fatal("the held request was not released by Close")
			}
			s.Close() // idempotent
		})
	}
}

func TestFaultDelay(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	p := generate(t, s, map[string]any{"prompt": "a cat"})
	s.Inject(kontexttest.Download, kontexttest.Fault{Delay: 200 * time.Millisecond})
	start := time.Now()
	r := download(t, s, p.url(t))
	if got := time.Since(start); got < 200*time.Millisecond {
		t.Errorf("answered after %v, want at least 200ms", got)
	}
	decode(t, r.body)
}

func TestFaultMalformed(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	p := generate(t, s, map[string]any{"prompt": "a cat"})
	tests := []struct {
		name   string
		ep     kontexttest.Endpoint
		method string
		path   string
		body   any
	}{
		{"create", kontexttest.Create, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}},
		{"poll", kontexttest.Poll, http.MethodGet, genPath + "/" + p.ID, nil},
		{"cancel", kontexttest.Cancel, http.MethodPost, genPath + "/" + p.ID + "/cancel", nil},
		{"images", kontexttest.Images, http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.Inject(tt.ep, kontexttest.Fault{MalformedJSON: true})
			r := call(t, s, tt.method, tt.path, tt.body, nil)
			if got, want := r.status, http.StatusOK; got != want {
				t.Fatalf("status = %d, want %d", got, want)
			}
			var v any
			if err := jsonUnmarshal(r.body, &v); err == nil {
				t.Errorf("body %q decodes as JSON, want it malformed", r.body)
			}
		})
	}
	t.Run("download", func(t *testing.T) {
		s.Inject(kontexttest.Download, kontexttest.Fault{MalformedJSON: true})
		r := download(t, s, p.url(t))
		if _, _, err := imageDecode(r.body); err == nil {
			t.Errorf("truncated download decodes, want an error")
		}
	})
}

func TestOutcomeFaults(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		fault   kontexttest.Fault
		opts    kontexttest.Options
		prompt  string
		status  string
		errText string // "" = error null
		stats   func(kontexttest.Stats) bool
	}{
		{name: "moderated", fault: kontexttest.Fault{Moderated: true}, status: "failed", errText: kontexttest.ModerationError,
			stats: func(st kontexttest.Stats) bool { return st.Failed == 1 }},
		{name: "moderated by the default rule", prompt: "something ForBidden here", status: "failed", errText: kontexttest.ModerationError},
		{name: "moderated by Options.Moderate", opts: kontexttest.Options{Moderate: func(p string) bool { return strings.Contains(p, "dog") }},
			prompt: "a dog", status: "failed", errText: kontexttest.ModerationError},
		{name: "custom Moderate lets forbidden through", opts: kontexttest.Options{Moderate: func(string) bool { return false }},
			prompt: "forbidden fruit", status: "succeeded"},
		{name: "aborted", fault: kontexttest.Fault{Aborted: true}, status: "aborted",
			stats: func(st kontexttest.Stats) bool { return st.Aborted == 1 }},
		{name: "failed", fault: kontexttest.Fault{Failed: "CUDA out of memory"}, status: "failed", errText: "CUDA out of memory"},
		{name: "with a delay", fault: kontexttest.Fault{Delay: 50 * time.Millisecond, Aborted: true}, status: "aborted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := tt.opts
			opts.Latency, opts.Pixels = 10*time.Millisecond, 64*64
			s := newServer(t, opts)
			s.Inject(kontexttest.Create, tt.fault)
			prompt := tt.prompt
			if prompt == "" {
				prompt = "a cat"
			}
			p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": prompt}}, wait)
			if got, want := p.Status, tt.status; got != want {
				t.Fatalf("status = %q, want %q", got, want)
			}
			switch {
			case tt.errText == "" && p.Error != nil:
				t.Errorf("error = %q, want null", *p.Error)
			case tt.errText != "" && (p.Error == nil || *p.Error != tt.errText):
				t.Errorf("error = %v, want %q", p.Error, tt.errText)
			}
			if tt.status != "succeeded" && string(p.Output) != "null" {
				t.Errorf("output = %s, want null", p.Output)
			}
			if st := s.Stats(); st.Active != 0 || (tt.stats != nil && !tt.stats(st)) {
				t.Errorf("Stats() = %+v, not as expected", st)
			}
		})
	}
}

func TestExpiredResults(t *testing.T) {
	t.Parallel()
	t.Run("expired fault", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
		s.Inject(kontexttest.Create, kontexttest.Fault{Expired: true})
		p := generate(t, s, map[string]any{"prompt": "a cat"})
		r := call(t, s, http.MethodGet, p.url(t), nil, map[string]string{"Authorization": ""})
		if r.status != http.StatusNotFound || r.detail(t) != "Not found" {
			t.Errorf("download: %d %s, want 404 Not found", r.status, r.body)
		}
		download(t, s, generate(t, s, map[string]any{"prompt": "a cat"}).url(t))
	})
	t.Run("ResultTTL", func(t *testing.T) {
		t.Parallel()
		s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64, ResultTTL: 500 * time.Millisecond})
		url := generate(t, s, map[string]any{"prompt": "a cat"}).url(t)
		download(t, s, url)
		time.Sleep(600 * time.Millisecond)
		if got, want := call(t, s, http.MethodGet, url, nil, nil).status, http.StatusNotFound; got != want {
			t.Errorf("download after ResultTTL: status = %d, want %d", got, want)
		}
		in := map[string]any{"input": map[string]any{"prompt": "edit", "input_image": url}}
		r := call(t, s, http.MethodPost, maxPath, in, nil)
		if r.status != 422 || !strings.Contains(r.detail(t), "could not fetch input_image") {
			t.Errorf("edit of an expired result: %d %s, want 422 could not fetch input_image", r.status, r.body)
		}
	})
}

func TestDownloadsWithAuth(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	url := generate(t, s, map[string]any{"prompt": "a cat"}).url(t)
	download(t, s, url)
	if got, want := s.Stats().DownloadsWithAuth, 0; got != want {
		t.Errorf("DownloadsWithAuth = %d, want %d", got, want)
	}
	call(t, s, http.MethodGet, url, nil, nil) // carries the key
	st := s.Stats()
	if st.DownloadsWithAuth != 1 || st.Downloads != 2 {
		t.Errorf("Stats() = %+v, want DownloadsWithAuth 1, Downloads 2", st)
	}
}

func TestOutputAsString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		asString bool
		prefix   string
	}{
		{"CometAPI list", false, "["},
		{"Replicate string", true, `"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64, OutputAsString: tt.asString})
			p := generate(t, s, map[string]any{"prompt": "a cat"})
			if !strings.HasPrefix(string(p.Output), tt.prefix) {
				t.Errorf("output = %s, want it to start with %s", p.Output, tt.prefix)
			}
			download(t, s, p.url(t))
		})
	}
}

func TestImagesRoute(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	t.Run("url", func(t *testing.T) {
		r := call(t, s, http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat", "n": 1, "size": "1024x1024", "response_format": "url"}, nil)
		if r.status != http.StatusOK {
			t.Fatalf("status = %d (%s), want 200", r.status, r.body)
		}
		var out struct {
			Created int64 `json:"created"`
			Data    []struct {
				URL     string `json:"url"`
				B64JSON string `json:"b64_json"`
			} `json:"data"`
		}
		if err := jsonUnmarshal(r.body, &out); err != nil || len(out.Data) != 1 || out.Data[0].URL == "" || out.Created == 0 {
			t.Fatalf("body = %s, want created and one url", r.body)
		}
		img, _ := decode(t, download(t, s, out.Data[0].URL).body)
		if b := img.Bounds(); b.Dx() != b.Dy() {
			t.Errorf("size = %v, want square", b.Size())
		}
	})
	t.Run("b64_json", func(t *testing.T) {
		r := call(t, s, http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-pro", "prompt": "a cat", "response_format": "b64_json"}, nil)
		var out struct {
			Data []struct {
				URL     string `json:"url"`
				B64JSON string `json:"b64_json"`
			} `json:"data"`
		}
		if err := jsonUnmarshal(r.body, &out); err != nil || r.status != 200 || len(out.Data) != 1 || out.Data[0].B64JSON == "" || out.Data[0].URL != "" {
			t.Fatalf("got %d %.200s, want 200 with one b64_json", r.status, r.body)
		}
		data := mustBase64(t, out.Data[0].B64JSON)
		decode(t, data)
		prov, err := kontexttest.ReadProvenance(data)
		if err != nil || prov.Model != "flux-kontext-pro" || prov.Prompt != "a cat" || prov.AspectRatio != "1:1" {
			t.Errorf("provenance = %+v, %v; want flux-kontext-pro, a cat, 1:1", prov, err)
		}
	})
	t.Run("moderated", func(t *testing.T) {
		r := call(t, s, http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "forbidden thing"}, nil)
		if got, want := r.status, http.StatusBadRequest; got != want {
			t.Fatalf("status = %d, want %d", got, want)
		}
		want := map[string]any{"message": kontexttest.ModerationError, "type": "invalid_request_error"}
		if got := r.object(t)["error"]; !equalJSON(got, want) {
			t.Errorf("error = %v, want %v", got, want)
		}
	})
	invalid := []struct {
		name   string
		body   any
		detail string
	}{
		{"unknown field", map[string]any{"model": "flux-kontext-max", "prompt": "a cat", "quality": "hd"}, `unknown field "quality"`},
		{"n 2", map[string]any{"model": "flux-kontext-max", "prompt": "a cat", "n": 2}, "n must be 1"},
		{"replicate model name", map[string]any{"model": "black-forest-labs/flux-kontext-max", "prompt": "a cat"}, "unknown model"},
		{"missing model", map[string]any{"prompt": "a cat"}, "model is required"},
		{"missing prompt", map[string]any{"model": "flux-kontext-max"}, "prompt is required"},
		{"bad response_format", map[string]any{"model": "flux-kontext-max", "prompt": "a cat", "response_format": "png"}, "response_format"},
		{"input_image", map[string]any{"model": "flux-kontext-max", "prompt": "a cat", "input_image": "data:"}, `unknown field "input_image"`},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			r := call(t, s, http.MethodPost, imgPath, tt.body, nil)
			if got, want := r.status, http.StatusUnprocessableEntity; got != want {
				t.Fatalf("status = %d (%s), want %d", got, r.body, want)
			}
			if got := r.detail(t); !strings.Contains(got, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", got, tt.detail)
			}
			if _, ok := r.object(t)["error"].(map[string]any); !ok {
				t.Errorf("body %s lacks an OpenAI-style error object", r.body)
			}
		})
	}
}

func TestImagesTakeASlot(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Slots: 1, Latency: time.Second, Pixels: 64 * 64})
	done := make(chan int, 1)
	go func() {
		done <- call(t, s, http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}, nil).status
	}()
	if st := statsWait(t, s, func(st kontexttest.Stats) bool { return st.Active == 1 }); st.Active != 1 {
		t.Fatalf("Stats().Active = %d, want 1 while the images request runs", st.Active)
	}
	if got, want := call(t, s, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil).status, http.StatusTooManyRequests; got != want {
		t.Errorf("create while the images request runs: status = %d, want %d", got, want)
	}
	if got, want := <-done, http.StatusOK; got != want {
		t.Errorf("images: status = %d, want %d", got, want)
	}
	if st := s.Stats(); st.Active != 0 || st.MaxActive != 1 || st.SlotLimit429 != 1 {
		t.Errorf("Stats() = %+v, want Active 0, MaxActive 1, SlotLimit429 1", st)
	}
}

func TestStatsCounts(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	p := generate(t, s, map[string]any{"prompt": "a cat"})
	call(t, s, http.MethodGet, genPath+"/"+p.ID, nil, nil)
	call(t, s, http.MethodGet, genPath+"/"+p.ID, nil, nil)
	call(t, s, http.MethodPost, genPath+"/"+p.ID+"/cancel", nil, nil)
	download(t, s, p.url(t))
	call(t, s, http.MethodPost, imgPath, map[string]any{"model": "flux-kontext-max", "prompt": "a cat"}, nil)
	call(t, s, http.MethodGet, "/nowhere", nil, nil)
	got := s.Stats()
	// The one prediction ran its full 10 ms (no jitter); the images request
	// is not a prediction, but it was accepted (billed) like one, so "a cat"
	// was paid for twice.
	want := kontexttest.Stats{Creates: 1, Polls: 2, Cancels: 1, Downloads: 1, Images: 1, MaxActive: 1, Succeeded: 1, Created: 2,
		Runs: 1, RunTime: 10 * time.Millisecond, MaxActiveModel: map[string]int{"flux-kontext-max": 1}, CreatedByPrompt: map[string]int{"a cat": 2}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// TestStatsRunTime: only predictions that run to their end count, each
// with the run time drawn for it (latency plus jitter).
func TestStatsRunTime(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 20 * time.Millisecond, Jitter: 30 * time.Millisecond, Pixels: 64 * 64})
	for range 4 {
		generate(t, s, map[string]any{"prompt": "a cat"})
	}
	st := s.Stats()
	if st.Runs != 4 || st.RunTime < 4*20*time.Millisecond || st.RunTime >= 4*50*time.Millisecond {
		t.Errorf("Runs %d RunTime %s, want 4 runs of 20-50 ms each", st.Runs, st.RunTime)
	}
}

func TestRequestsAfterClose(t *testing.T) {
	t.Parallel()
	f := kontexttest.New(kontexttest.Options{})
	f.Close()
	f.Close()
	s := newServer(t, kontexttest.Options{})
	s.Fake.Close()
	if got, want := call(t, s, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, nil).status, http.StatusServiceUnavailable; got != want {
		t.Errorf("create after Close: status = %d, want %d", got, want)
	}
}

func TestLatencyAndJitter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		latency, jitter  time.Duration
		minTime, maxTime time.Duration
	}{
		{"negative latency is none", -1, 0, 0, 500 * time.Millisecond},
		{"fixed latency", 200 * time.Millisecond, 0, 200 * time.Millisecond, 2 * time.Second},
		{"latency plus jitter", 100 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, kontexttest.Options{Latency: tt.latency, Jitter: tt.jitter, Pixels: 64 * 64})
			start := time.Now()
			generate(t, s, map[string]any{"prompt": "a cat"})
			if got := time.Since(start); got < tt.minTime || got > tt.maxTime {
				t.Errorf("took %v, want between %v and %v", got, tt.minTime, tt.maxTime)
			}
		})
	}
}

// BenchmarkPrediction measures the fake's own cost per prediction: create
// with Prefer: wait, then download, with no latency and tiny images.
func BenchmarkPrediction(b *testing.B) {
	s := newServer(b, kontexttest.Options{Latency: -1, Pixels: 64 * 64, Slots: 1 << 20})
	body := map[string]any{"input": map[string]any{"prompt": "a cat", "seed": 1}}
	for b.Loop() {
		p := create(b, s, maxPath, body, wait)
		download(b, s, p.url(b))
	}
}
