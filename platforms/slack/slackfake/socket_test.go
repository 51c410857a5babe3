package slackfake

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// dialSocket opens a Socket Mode connection as a client does: the URL
// from apps.connections.open, then the websocket, then hello.
func dialSocket(t *testing.T, s *Server) (*websocket.Conn, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.APIURL()+"apps.connections.open", nil)
	req.Header.Set("Authorization", "Bearer "+s.Options().AppToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var open struct {
		OK  bool   `json:"ok"`
		URL string `json:"url"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &open); err != nil || !open.OK {
		t.Fatalf("apps.connections.open: %s", b)
	}
	ws, _, err := websocket.DefaultDialer.Dial(open.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	var hello map[string]any
	if err := ws.ReadJSON(&hello); err != nil || hello["type"] != "hello" {
		t.Fatalf("hello: %v %v", hello, err)
	}
	return ws, hello
}

// readEnvelope reads the next envelope on ws and acknowledges it.
func readEnvelope(t *testing.T, ws *websocket.Conn) map[string]any {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var env map[string]any
	if err := ws.ReadJSON(&env); err != nil {
		t.Fatalf("read envelope: %v", err)
	}
	if err := ws.WriteJSON(map[string]any{"envelope_id": env["envelope_id"]}); err != nil {
		t.Fatal(err)
	}
	return env
}

// TestSocketModeSeveralConnections: the app's connections stay open
// together, each envelope goes out on exactly one of them, spread over
// all, and a redelivered event carries the same event with the next
// retry_attempt.
func TestSocketModeSeveralConnections(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := New(Options{PingInterval: time.Hour})
	defer s.Close()
	defer http.DefaultClient.CloseIdleConnections()
	one, hello1 := dialSocket(t, s)
	two, hello2 := dialSocket(t, s)
	if hello1["num_connections"] != 1.0 || hello2["num_connections"] != 2.0 {
		t.Errorf("hello num_connections %v then %v, want 1 then 2", hello1["num_connections"], hello2["num_connections"])
	}
	if n := s.OpenConnections(); n != 2 {
		t.Fatalf("open connections %d, want 2 (a second one must not close the first)", n)
	}
	ch := s.CreateChannel("art", true)
	var envs []*Envelope
	for i := range 4 {
		envs = append(envs, s.Event(map[string]any{"type": "app_mention", "user": "U1", "channel": ch,
			"text": s.Mention("n" + string(rune('0'+i))), "ts": "1.00000" + string(rune('0'+i))}))
	}
	var got1, got2 []string
	for range 2 {
		got1 = append(got1, readEnvelope(t, one)["envelope_id"].(string))
		got2 = append(got2, readEnvelope(t, two)["envelope_id"].(string))
	}
	seen := map[string]int{}
	for _, id := range append(got1, got2...) {
		seen[id]++
	}
	for _, e := range envs {
		if seen[e.ID] != 1 {
			t.Errorf("envelope %s delivered %d times, want once", e.ID, seen[e.ID])
		}
		if !e.Acked(time.Second) {
			t.Errorf("envelope %s not acknowledged", e.ID)
		}
	}
	if envs[0].Connection() == envs[1].Connection() {
		t.Errorf("consecutive envelopes both on connection %d, want them spread", envs[0].Connection())
	}

	r := s.Redeliver(envs[0])
	env := readEnvelope(t, two) // another connection than the first delivery's
	if env["envelope_id"] != r.ID || env["retry_attempt"] != 1.0 || env["retry_reason"] != "timeout" {
		t.Errorf("redelivery %v, want envelope %s with retry_attempt 1", env, r.ID)
	}
	var a, b map[string]any
	_ = json.Unmarshal(envs[0].Payload, &a)
	_ = json.Unmarshal(r.Payload, &b)
	if a["event_id"] == nil || a["event_id"] != b["event_id"] {
		t.Errorf("redelivered event_id %v, want %v", b["event_id"], a["event_id"])
	}
	one.Close()
	if !s.Wait(5*time.Second, func() bool { return s.OpenConnections() == 1 }) {
		t.Errorf("open connections %d after one closed, want 1", s.OpenConnections())
	}
	s.Event(map[string]any{"type": "app_mention", "user": "U1", "channel": ch, "text": s.Mention("last"), "ts": "2.000001"})
	if env := readEnvelope(t, two); env["type"] != "events_api" {
		t.Errorf("after one closed, the other got %v", env)
	}
	if p := s.Problems(); len(p) > 0 {
		t.Errorf("problems: %s", strings.Join(p, "\n"))
	}
}

// TestHTTPModeOnly200Acknowledges: in HTTP mode only a 200 answer
// acknowledges a request, as Slack counts it; any other status (a load
// balancer's 502 when the replica died mid-request) is not one: Slack
// fails the command. The answer is still kept.
func TestHTTPModeOnly200Acknowledges(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		wantAcked bool
	}{
		{name: "200", status: http.StatusOK, wantAcked: true},
		{name: "502 from a load balancer", status: http.StatusBadGateway},
		{name: "500", status: http.StatusInternalServerError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{})
			defer s.Close()
			bot := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(tc.status) }))
			defer bot.Close()
			s.SetHTTPTarget(bot.URL)
			ch := s.CreateChannel("art", true)
			env := s.Slash("U1", ch, "/imagine", "an owl")
			for deadline := time.Now().Add(5 * time.Second); env.Status() == 0; time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the command was never answered")
				}
			}
			if got := env.Acked(0); got != tc.wantAcked {
				t.Errorf("answered %d: acknowledged %v, want %v", env.Status(), got, tc.wantAcked)
			}
			if got := env.Status(); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
			if got := len(s.Problems()) != 0; got == tc.wantAcked {
				t.Errorf("problems %v", s.Problems())
			}
		})
	}
}
