package discordtest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"
)

// Interactions over HTTP: an app with an Interactions Endpoint URL gets
// its interactions as signed POSTs to that URL instead of gateway events
// (the two are mutually exclusive). Discord signs each with the app's
// Ed25519 key (X-Signature-Ed25519 over X-Signature-Timestamp + body),
// validates the URL before saving it (a PING that must be answered 200
// with a PONG, and requests with bad signatures that must be answered
// 401), and takes the initial response either as the answer's body (200,
// an interaction response) or through the callback endpoint, the answer
// then being 202 with no body. It does not retry a request: an endpoint
// that does not answer in time leaves the person with "The application
// did not respond".

// EndpointTimeout is how long the fake waits for the endpoint's answer
// to an interaction, as Discord waits for the first response.
const EndpointTimeout = InteractionDeadline

// PublicKey is the application's public key in hex, as the Developer
// Portal shows it (DISCORD_PUBLIC_KEY).
func (s *Server) PublicKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys()
	return hex.EncodeToString(s.signer.Public().(ed25519.PublicKey))
}

// keys makes the application's key pair on first use; with s.mu held.
func (s *Server) keys() {
	if s.signer == nil {
		_, s.signer, _ = ed25519.GenerateKey(rand.Reader)
	}
}

// SetInteractionsEndpoint saves url as the app's Interactions Endpoint
// URL after validating it as Discord does: a signed PING must be answered
// 200, as JSON, with a PONG (type 1), and a PING with a bad signature must
// be answered 401. From then on interactions go there, no longer to the
// gateway. An empty url goes back to the gateway.
func (s *Server) SetInteractionsEndpoint(ctx context.Context, url string) error {
	if url == "" {
		s.mu.Lock()
		s.endpoint = ""
		s.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	id := s.newID()
	s.mu.Unlock()
	ping := []byte(fmt.Sprintf(`{"id":%q,"application_id":%q,"type":1,"token":"cGluZw","version":1,"user":{"id":"643945264868098049","username":"discord","discriminator":"0000","avatar":null,"global_name":null,"public_flags":1}}`,
		id, s.appID))
	status, ct, body, err := s.post(ctx, url, ping, true)
	if err != nil {
		return fmt.Errorf("discordtest: validating the interactions endpoint: PING: %w", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("discordtest: validating the interactions endpoint: PING answered %d, want 200", status)
	}
	if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
		return fmt.Errorf("discordtest: validating the interactions endpoint: PING answered with Content-Type %q, want application/json", ct)
	}
	var pong struct {
		Type *int `json:"type"`
	}
	if err := json.Unmarshal(body, &pong); err != nil || pong.Type == nil || *pong.Type != 1 {
		return fmt.Errorf("discordtest: validating the interactions endpoint: PING answered %q, want a PONG ({\"type\":1})", body)
	}
	status, _, _, err = s.post(ctx, url, ping, false)
	if err != nil {
		return fmt.Errorf("discordtest: validating the interactions endpoint: bad signature: %w", err)
	}
	if status != http.StatusUnauthorized {
		return fmt.Errorf("discordtest: validating the interactions endpoint: a PING with a bad signature was answered %d, want 401", status)
	}
	s.mu.Lock()
	s.endpoint = url
	s.mu.Unlock()
	return nil
}

// EndpointFailures lists the interactions sent to the endpoint that it
// did not take: no connection, an error status, a wrong answer.
func (s *Server) EndpointFailures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.endpointFailures...)
}

// post sends body to url signed with the app's key (signed false: with a
// signature that does not match) and returns the answer.
func (s *Server) post(ctx context.Context, url string, body []byte, signed bool) (status int, contentType string, answer []byte, err error) {
	s.mu.Lock()
	s.keys()
	key := s.signer
	s.mu.Unlock()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sig := ed25519.Sign(key, append([]byte(ts), body...))
	if !signed {
		sig[0] ^= 0xff
	}
	ctx, cancel := context.WithTimeout(ctx, EndpointTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Discord-Interactions/1.0 (+https://discord.com)")
	req.Header.Set("X-Signature-Ed25519", hex.EncodeToString(sig))
	req.Header.Set("X-Signature-Timestamp", ts)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, "", nil, err
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), answer, nil
}

// postInteraction sends in to the endpoint and applies the answer: 200
// with an interaction response is the initial response; 202 with no body
// says it was given through the callback endpoint; anything else is a
// failure (the deadline then tells the person it did not respond).
func (s *Server) postInteraction(url string, in *interaction) {
	defer s.posts.Done()
	s.mu.Lock()
	body, err := json.Marshal(in.data)
	s.mu.Unlock()
	if err != nil {
		panic(err) // the fake's own map
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	status, ct, answer, err := s.post(ctx, url, body, true)
	fail := func(format string, args ...any) {
		s.mu.Lock()
		s.endpointFailures = append(s.endpointFailures, fmt.Sprintf("interaction %s: ", in.ID)+fmt.Sprintf(format, args...))
		s.changed()
		s.mu.Unlock()
	}
	switch {
	case err != nil:
		fail("%v", err)
	case status == http.StatusAccepted:
		if len(bytes.TrimSpace(answer)) != 0 {
			s.mu.Lock()
			s.violation("interaction %s: the endpoint answered 202 with a body (%q); Discord wants none", in.ID, answer)
			s.mu.Unlock()
		}
	case status == http.StatusOK:
		if mt, _, _ := mime.ParseMediaType(ct); mt != "application/json" {
			fail("answered 200 with Content-Type %q", ct)
			return
		}
		p := &msgPayload{}
		if err := json.Unmarshal(answer, p); err != nil {
			fail("answered 200 with %q: %v", answer, err)
			return
		}
		if e := s.acknowledge(in.ID, in.Token, p, nil, time.Now()); e != nil {
			s.mu.Lock()
			s.violation("interaction %s: the endpoint's response was refused: %d %s", in.ID, e.code, e.message)
			s.mu.Unlock()
		}
	default:
		fail("answered %d %q", status, answer)
	}
}
