package discordtest

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// endpointBot is a minimal HTTP-interactions bot for testing the fake:
// it checks signatures, answers PINGs, and answers every other
// interaction with answer.
type endpointBot struct {
	t      *testing.T
	key    ed25519.PublicKey
	answer func(w http.ResponseWriter, in map[string]any)

	mu  sync.Mutex
	got []map[string]any
}

func (b *endpointBot) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sig, _ := hex.DecodeString(r.Header.Get("X-Signature-Ed25519"))
	if !ed25519.Verify(b.key, append([]byte(r.Header.Get("X-Signature-Timestamp")), body...), sig) {
		http.Error(w, "invalid request signature", http.StatusUnauthorized)
		return
	}
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		b.t.Errorf("interaction not JSON: %v", err)
		return
	}
	if in["type"] == float64(1) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":1}`)
		return
	}
	b.mu.Lock()
	b.got = append(b.got, in)
	b.mu.Unlock()
	b.answer(w, in)
}

// endpointFake is a fake Discord with /imagine registered in guild 1's
// channel 10, a REST client, and an endpoint bot holding the app's key.
func endpointFake(t *testing.T) (*Server, *client, *endpointBot) {
	t.Helper()
	s := New(Options{})
	t.Cleanup(s.Close)
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	register(t, c, "1")
	key, err := hex.DecodeString(s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return s, c, &endpointBot{t: t, key: key}
}

// TestInteractionsEndpoint: with an Interactions Endpoint URL, the fake
// POSTs interactions signed with the app's key, takes a 200 answer's body
// as the initial response, takes 202 with no body when the callback
// endpoint was used, and counts anything else as a failure; Discord's
// 3 s deadline still applies.
func TestInteractionsEndpoint(t *testing.T) {
	tests := []struct {
		name   string
		answer func(c *client, w http.ResponseWriter, in map[string]any)
		// wantAck is the callback type the interaction ends with (0:
		// none, it fails at the deadline).
		wantAck        int
		wantFailure    string // in EndpointFailures
		wantViolations int
	}{
		{name: "inline message", answer: func(_ *client, w http.ResponseWriter, _ map[string]any) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"type":4,"data":{"content":"hi","flags":64,"allowed_mentions":{"parse":[]}}}`)
		}, wantAck: 4},
		{name: "callback then 202", answer: func(c *client, w http.ResponseWriter, in map[string]any) {
			if code, _, _ := c.do("POST", "/interactions/"+in["id"].(string)+"/"+in["token"].(string)+"/callback", map[string]any{"type": 5}); code != 204 {
				c.t.Errorf("callback: %d", code)
			}
			w.WriteHeader(http.StatusAccepted)
		}, wantAck: 5},
		{name: "202 without a callback", answer: func(_ *client, w http.ResponseWriter, _ map[string]any) {
			w.WriteHeader(http.StatusAccepted)
		}, wantViolations: 1}, // not answered within 3 s
		{name: "202 with a body", answer: func(c *client, w http.ResponseWriter, in map[string]any) {
			c.do("POST", "/interactions/"+in["id"].(string)+"/"+in["token"].(string)+"/callback", map[string]any{"type": 5})
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"type":5}`)
		}, wantAck: 5, wantViolations: 1},
		{name: "callback and an inline response", answer: func(c *client, w http.ResponseWriter, in map[string]any) {
			c.do("POST", "/interactions/"+in["id"].(string)+"/"+in["token"].(string)+"/callback", map[string]any{"type": 5})
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"type":4,"data":{"content":"again"}}`)
		}, wantAck: 5, wantViolations: 1}, // already acknowledged
		{name: "server error", answer: func(_ *client, w http.ResponseWriter, _ map[string]any) {
			http.Error(w, "boom", http.StatusInternalServerError)
		}, wantFailure: "answered 500", wantViolations: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, c, eb := endpointFake(t)
			eb.answer = func(w http.ResponseWriter, in map[string]any) { tc.answer(c, w, in) }
			srv := httptest.NewServer(eb)
			defer srv.Close()
			if err := s.SetInteractionsEndpoint(context.Background(), srv.URL); err != nil {
				t.Fatal(err)
			}
			in, err := s.Slash("10", "5", "imagine", String("prompt", "an owl"))
			if err != nil {
				t.Fatalf("with an endpoint and no gateway session: %v", err)
			}
			done := func() bool {
				got := s.Interaction(in.ID)
				return got.Ack != 0 || got.Failed || len(s.EndpointFailures()) > 0
			}
			if !s.Wait(5*time.Second, done) {
				t.Fatal("the interaction neither answered nor failed")
			}
			// Let the POST's answer and the deadline land.
			s.Wait(InteractionDeadline+time.Second, func() bool { return len(s.Violations()) >= tc.wantViolations && s.Interaction(in.ID).Ack == tc.wantAck })
			time.Sleep(100 * time.Millisecond)
			if got := s.Interaction(in.ID).Ack; got != tc.wantAck {
				t.Errorf("callback type %d, want %d", got, tc.wantAck)
			}
			if got := len(s.Violations()); got != tc.wantViolations {
				t.Errorf("violations %v, want %d", s.Violations(), tc.wantViolations)
			}
			f := s.EndpointFailures()
			if tc.wantFailure == "" && len(f) != 0 || tc.wantFailure != "" && (len(f) != 1 || !strings.Contains(f[0], tc.wantFailure)) {
				t.Errorf("endpoint failures %v, want %q", f, tc.wantFailure)
			}
			eb.mu.Lock()
			defer eb.mu.Unlock()
			if len(eb.got) != 1 || eb.got[0]["id"] != in.ID || eb.got[0]["token"] != in.Token {
				t.Errorf("the endpoint got %v, want interaction %s once", eb.got, in.ID)
			}
		})
	}
}

// TestInteractionsEndpointDown: an endpoint that does not answer fails
// the interaction (Discord does not retry) and the person is told the
// application did not respond.
func TestInteractionsEndpointDown(t *testing.T) {
	s, _, eb := endpointFake(t)
	srv := httptest.NewServer(eb)
	if err := s.SetInteractionsEndpoint(context.Background(), srv.URL); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	in, err := s.Slash("10", "5", "imagine", String("prompt", "an owl"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Wait(InteractionDeadline+2*time.Second, func() bool { return s.Interaction(in.ID).Failed }) {
		t.Fatal("an interaction nobody received did not fail")
	}
	if f := s.EndpointFailures(); len(f) != 1 || !strings.Contains(f[0], in.ID) {
		t.Errorf("endpoint failures %v, want one for %s", f, in.ID)
	}
}
