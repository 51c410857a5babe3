package discord

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/platforms/discord/discordtest"
)

// startedHTTP is started with interactions over HTTP: the adapter's
// endpoint is served and saved as the app's Interactions Endpoint URL,
// which the fake validates as Discord does.
func startedHTTP(t *testing.T, core Core) (*Bot, *discordtest.Server) {
	t.Helper()
	dc := discordtest.New(discordtest.Options{})
	t.Cleanup(dc.Close)
	dc.AddTextChannel("1", "10", "art")
	b, err := New(Config{Token: dc.Token(), GuildID: "1", APIURL: dc.URL, PublicKey: dc.PublicKey()}, core)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	srv := httptest.NewServer(b.Handler())
	t.Cleanup(srv.Close)
	if err := dc.SetInteractionsEndpoint(context.Background(), srv.URL+EndpointPath); err != nil {
		t.Fatal(err)
	}
	return b, dc
}

// TestEndpointValidation: the fake saves an Interactions Endpoint URL
// only when it answers a signed PING with a JSON PONG and a badly signed
// one with 401, as Discord does; the adapter's endpoint passes, endpoints
// that skip a check do not.
func TestEndpointValidation(t *testing.T) {
	dc := discordtest.New(discordtest.Options{})
	defer dc.Close()
	b, err := New(Config{Token: dc.Token(), APIURL: dc.URL, PublicKey: dc.PublicKey()}, stubCore{})
	if err != nil {
		t.Fatal(err)
	}
	pong := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"type":1}`)
	}
	tests := []struct {
		name    string
		h       http.Handler
		wantErr string
	}{
		{name: "the adapter's endpoint", h: b.Handler()},
		{name: "no signature check", h: http.HandlerFunc(pong), wantErr: "want 401"},
		{name: "PONG as text", h: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, `{"type":1}`)
		}), wantErr: "Content-Type"},
		{name: "refuses everything", h: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "no", http.StatusUnauthorized)
		}), wantErr: "want 200"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.h)
			defer srv.Close()
			err := dc.SetInteractionsEndpoint(context.Background(), srv.URL)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("got %v, want the endpoint saved", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got %v, want an error saying %q", err, tc.wantErr)
			}
		})
	}
}

// TestEndpointRefusesBadRequests: only a POST signed with the app's key,
// over exactly the body it came with and a recent timestamp, is taken.
func TestEndpointRefusesBadRequests(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	b, err := New(Config{Token: "t", PublicKey: hex.EncodeToString(pub)}, stubCore{})
	if err != nil {
		t.Fatal(err)
	}
	ping := `{"id":"1","application_id":"2","type":1,"token":"x","version":1}`
	sign := func(key ed25519.PrivateKey, ts, body string) string {
		return hex.EncodeToString(ed25519.Sign(key, []byte(ts+body)))
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	old := strconv.FormatInt(time.Now().Add(-10*time.Minute).Unix(), 10)
	tests := []struct {
		name, method, body, ts, sig string
		want                        int
	}{
		{name: "signed ping", method: "POST", body: ping, ts: now, sig: sign(priv, now, ping), want: 200},
		{name: "GET", method: "GET", ts: now, sig: sign(priv, now, ""), want: 405},
		{name: "no signature", method: "POST", body: ping, ts: now, want: 401},
		{name: "another key", method: "POST", body: ping, ts: now, sig: sign(other, now, ping), want: 401},
		{name: "body changed", method: "POST", body: strings.Replace(ping, `"x"`, `"y"`, 1), ts: now, sig: sign(priv, now, ping), want: 401},
		{name: "old timestamp", method: "POST", body: ping, ts: old, sig: sign(priv, old, ping), want: 401},
		{name: "signed, not JSON", method: "POST", body: "type=1", ts: now, sig: sign(priv, now, "type=1"), want: 400},
		{name: "signed command without a token", method: "POST", body: `{"id":"1","type":2}`, ts: now,
			sig: sign(priv, now, `{"id":"1","type":2}`), want: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, EndpointPath, strings.NewReader(tc.body))
			r.Header.Set("Content-Type", "application/json")
			if tc.sig != "" {
				r.Header.Set("X-Signature-Ed25519", tc.sig)
			}
			r.Header.Set("X-Signature-Timestamp", tc.ts)
			w := httptest.NewRecorder()
			b.Handler().ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("got %d %q, want %d", w.Code, w.Body.String(), tc.want)
			}
			if tc.want == 200 && (w.Header().Get("Content-Type") != "application/json" || strings.TrimSpace(w.Body.String()) != `{"type":1}`) {
				t.Errorf("PONG: got %q as %q", w.Body.String(), w.Header().Get("Content-Type"))
			}
		})
	}
	if h := (&Bot{}).Handler(); h != nil {
		t.Error("a bot without a public key serves an endpoint")
	}
	if _, err := New(Config{Token: "t", PublicKey: "abc"}, stubCore{}); err == nil || !strings.Contains(err.Error(), "DISCORD_PUBLIC_KEY") {
		t.Errorf("a short public key: got %v, want a sentence naming DISCORD_PUBLIC_KEY", err)
	}
}

// TestEndpointSlash: with an Interactions Endpoint URL, a command comes
// over HTTP, not the gateway; its job is stored before the deferred
// response is sent through the callback endpoint, and Discord's request
// is answered 202 with no body after that; /help is answered at once.
func TestEndpointSlash(t *testing.T) {
	core := gateCore{stubCore: stubCore{submitted: make(chan *bot.Request, 2)}, release: make(chan struct{})}
	_, dc := startedHTTP(t, core)
	in, err := dc.Slash("10", "5", "imagine", discordtest.String("prompt", "an owl"))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-core.submitted:
		if req.Prompt != "an owl" {
			t.Errorf("submitted %q, want an owl", req.Prompt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
	}
	ackedOnceStored(t, dc, in, core.release, 5) // deferred, through the callback endpoint
	select {
	case req := <-core.submitted:
		t.Errorf("the command came twice (also %q): the gateway too?", req.Prompt)
	case <-time.After(200 * time.Millisecond):
	}

	help, err := dc.Slash("10", "5", "help")
	if err != nil {
		t.Fatal(err)
	}
	if !dc.Wait(5*time.Second, func() bool { return dc.Interaction(help.ID).Ack != 0 }) {
		t.Fatal("/help never answered")
	}
	if got := dc.Interaction(help.ID).Ack; got != 4 {
		t.Errorf("/help: callback type %d, want 4", got)
	}
	if f := dc.EndpointFailures(); len(f) != 0 {
		t.Errorf("the endpoint failed Discord's requests: %v", f)
	}
	if v := dc.Violations(); len(v) != 0 {
		t.Errorf("violations: %v", v)
	}
}
