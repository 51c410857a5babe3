package kontexttest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// TestMain fails the run when a test leaves a goroutine of the fake, of an
// HTTP server or of a client connection behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkGoroutines(3 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

func checkGoroutines(patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaked []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "checkGoroutines") {
				continue
			}
			for _, marker := range []string{"kontexttest.", "net/http.(*conn).serve", "net/http.(*persistConn)", "httptest."} {
				if strings.Contains(g, marker) {
					leaked = append(leaked, g)
					break
				}
			}
		}
		if len(leaked) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("leaked goroutines:\n\n%s", strings.Join(leaked, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const (
	key     = kontexttest.DefaultAPIKey
	maxPath = "/replicate/v1/models/black-forest-labs/flux-kontext-max/predictions"
	proPath = "/replicate/v1/models/black-forest-labs/flux-kontext-pro/predictions"
	genPath = "/replicate/v1/predictions"
	imgPath = "/v1/images/generations"
)

// newServer starts a fake closed at the end of the test.
func newServer(t testing.TB, opts kontexttest.Options) *kontexttest.Server {
	t.Helper()
	s := kontexttest.NewServer(opts)
	t.Cleanup(s.Close)
	return s
}

// response is one HTTP answer, fully read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// call makes one request to s. body is sent as is when it is a string or
// []byte, else as JSON; nil sends no body. Authorization is "Bearer
// test-key" unless hdr sets it (an empty value removes it).
func call(t testing.TB, s *kontexttest.Server, method, path string, body any, hdr map[string]string) response {
	t.Helper()
	r, err := try(s.Client(), s, method, path, body, hdr)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func try(c *http.Client, s *kontexttest.Server, method, path string, body any, hdr map[string]string) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(data)
	}
	url := path
	if strings.HasPrefix(path, "/") {
		url = s.URL + path
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+key)
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// object decodes the body as a JSON object.
func (r response) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// detail returns the body's "detail" field.
func (r response) detail(t testing.TB) string {
	t.Helper()
	d, _ := r.object(t)["detail"].(string)
	return d
}

// prediction is the prediction object as a client decodes it.
type prediction struct {
	ID          string          `json:"id"`
	Model       string          `json:"model"`
	Input       map[string]any  `json:"input"`
	Status      string          `json:"status"`
	Output      json.RawMessage `json:"output"`
	Error       *string         `json:"error"`
	Logs        string          `json:"logs"`
	CreatedAt   string          `json:"created_at"`
	StartedAt   *string         `json:"started_at"`
	CompletedAt *string         `json:"completed_at"`
	URLs        struct {
		Get    string `json:"get"`
		Cancel string `json:"cancel"`
	} `json:"urls"`
	Metrics map[string]float64 `json:"metrics"`
}

func (r response) prediction(t testing.TB) prediction {
	t.Helper()
	var p prediction
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("body %q is not a prediction: %v", r.body, err)
	}
	return p
}

// url returns the result URL from output, in either shape.
func (p prediction) url(t testing.TB) string {
	t.Helper()
	var list []string
	if err := json.Unmarshal(p.Output, &list); err == nil && len(list) == 1 {
		return list[0]
	}
	var s string
	if err := json.Unmarshal(p.Output, &s); err == nil && s != "" {
		return s
	}
	t.Fatalf("output = %s, want one URL", p.Output)
	return ""
}

func final(status string) bool { return status != "starting" && status != "processing" }

// create makes a prediction and checks it was accepted.
func create(t testing.TB, s *kontexttest.Server, path string, body any, hdr map[string]string) prediction {
	t.Helper()
	r := call(t, s, http.MethodPost, path, body, hdr)
	if r.status != http.StatusCreated {
		t.Fatalf("create: status = %d (%s), want 201", r.status, r.body)
	}
	return r.prediction(t)
}

// wait is Prefer: wait=10.
var wait = map[string]string{"Prefer": "wait=10"}

// generate creates a prediction with Prefer: wait and checks it succeeded.
func generate(t testing.TB, s *kontexttest.Server, input map[string]any) prediction {
	t.Helper()
	p := create(t, s, maxPath, map[string]any{"input": input}, wait)
	if p.Status != "succeeded" {
		t.Fatalf("status = %q (error %v), want succeeded", p.Status, p.Error)
	}
	return p
}

// pollUntilFinal polls until the prediction is final, returning every
// status seen.
func pollUntilFinal(t testing.TB, s *kontexttest.Server, id string) (prediction, []string) {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := call(t, s, http.MethodGet, genPath+"/"+id, nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("poll: status = %d (%s), want 200", r.status, r.body)
		}
		p := r.prediction(t)
		if len(seen) == 0 || seen[len(seen)-1] != p.Status {
			seen = append(seen, p.Status)
		}
		if final(p.Status) {
			return p, seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("prediction %s still %s after 10s", id, p.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// download fetches a result URL without auth and checks it is served.
func download(t testing.TB, s *kontexttest.Server, url string) response {
	t.Helper()
	r := call(t, s, http.MethodGet, url, nil, map[string]string{"Authorization": ""})
	if r.status != http.StatusOK {
		t.Fatalf("download %s: status = %d (%s), want 200", url, r.status, r.body)
	}
	return r
}

// decode decodes an image and returns it with its format.
func decode(t testing.TB, data []byte) (image.Image, string) {
	t.Helper()
	img, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("result does not decode: %v", err)
	}
	return img, format
}

// dataURI encodes data as a data: URI of the given media type.
func dataURI(mime string, data []byte) string {
	return "data:" + mime + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// twoTone is a w×h PNG, red on the left half and blue on the right.
func twoTone(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.NRGBA{220, 20, 20, 255}
			if x >= w/2 {
				c = color.NRGBA{20, 20, 220, 255}
			}
			img.SetNRGBA(x, y, c)
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// statsWait polls Stats until ok holds or a second passes.
func statsWait(t testing.TB, s *kontexttest.Server, ok func(kontexttest.Stats) bool) kontexttest.Stats {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		st := s.Stats()
		if ok(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func imageDecode(data []byte) (image.Image, string, error) {
	return image.Decode(bytes.NewReader(data))
}

func mustBase64(t testing.TB, s string) []byte {
	t.Helper()
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("invalid base64: %v", err)
	}
	return data
}
