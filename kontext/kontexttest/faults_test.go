package kontexttest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// TestEndStatus: a prediction can end with a status passed through as it
// is (Black Forest Labs' moderation statuses).
func TestEndStatus(t *testing.T) {
	t.Parallel()
	for _, status := range []string{"Content Moderated", "Request Moderated"} {
		t.Run(status, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
			s.Inject(kontexttest.Create, kontexttest.Fault{EndStatus: status})
			p := create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "a cat"}}, wait)
			if p.Status != status || string(p.Output) != "null" {
				t.Errorf("got status %q output %s, want %q and null", p.Status, p.Output, status)
			}
			if st := s.Stats(); st.Active != 0 || st.Succeeded != 0 {
				t.Errorf("Stats() = %+v, want nothing active or succeeded", st)
			}
		})
	}
}

// TestDataURIOutput: the output can be the image itself as a data: URI,
// in either output shape.
func TestDataURIOutput(t *testing.T) {
	t.Parallel()
	for _, asString := range []bool{false, true} {
		s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64, OutputAsString: asString})
		s.Inject(kontexttest.Create, kontexttest.Fault{DataURIOutput: true})
		p := generate(t, s, map[string]any{"prompt": "a data cat", "seed": 4})
		uri := p.url(t)
		payload, ok := strings.CutPrefix(uri, "data:application/octet-stream;base64,")
		if !ok {
			t.Fatalf("output %.60q is not an octet-stream data URI", uri)
		}
		prov, err := kontexttest.ReadProvenance(mustBase64(t, payload))
		if err != nil || prov.Prompt != "a data cat" || prov.Seed != 4 {
			t.Errorf("provenance %+v (%v), want the prompt and seed 4", prov, err)
		}
	}
}

// TestErrorEnvelope: Code and Message answer CometAPI's error envelope.
func TestErrorEnvelope(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{})
	s.Inject(kontexttest.Create, kontexttest.Fault{Status: 500, Code: "invalid_request", Message: "input_image is not a valid image"})
	r := call(t, s, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "x"}}, nil)
	var body struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    string  `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if r.status != 500 || body.Error.Code != "invalid_request" || body.Error.Message != "input_image is not a valid image" || body.Error.Type != "server_error" {
		t.Errorf("got %d %s", r.status, r.body)
	}
	if st := s.Stats(); st.Created != 0 {
		t.Errorf("created %d predictions, want none", st.Created)
	}
}

// TestFaultReset: the request is handled (the prediction exists, and
// runs) but the answer never comes.
func TestFaultReset(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: time.Second, Pixels: 64 * 64})
	s.Inject(kontexttest.Create, kontexttest.Fault{Reset: true})
	if _, err := try(s.Client(), s, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "x"}}, nil); err == nil {
		t.Fatal("the reset create was answered")
	}
	if st := s.Stats(); st.Creates != 1 || st.Created != 1 || st.Active != 1 {
		t.Errorf("Stats() = %+v, want 1 create, 1 created, 1 active", st)
	}
}

// TestDownloadBody: a download can serve other bytes than the result.
func TestDownloadBody(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64})
	p := generate(t, s, map[string]any{"prompt": "x"})
	s.Inject(kontexttest.Download, kontexttest.Fault{Body: []byte("other"), ContentType: "image/webp"})
	r := download(t, s, p.url(t))
	if string(r.body) != "other" || r.header.Get("Content-Type") != "image/webp" {
		t.Errorf("got %q %q", r.body, r.header.Get("Content-Type"))
	}
}

// TestMaxRequestBytes: a body over the limit is 413 and creates nothing;
// one under it is served.
func TestMaxRequestBytes(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: 10 * time.Millisecond, Pixels: 64 * 64, MaxRequestBytes: 64 << 10})
	big := dataURI("image/png", bytes.Repeat([]byte{1}, 64<<10))
	r := call(t, s, http.MethodPost, maxPath, map[string]any{"input": map[string]any{"prompt": "x", "input_image": big}}, nil)
	if r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("status = %d (%s), want 413", r.status, r.body)
	}
	small := dataURI("image/png", twoTone(t, 32, 32))
	create(t, s, maxPath, map[string]any{"input": map[string]any{"prompt": "x", "input_image": small}}, wait)
	if st := s.Stats(); st.TooLarge != 1 || st.Created != 1 {
		t.Errorf("Stats() = %+v, want one 413 and one prediction", st)
	}
}
