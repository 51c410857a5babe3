package discord

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"
)

// Interactions over HTTP. With an Interactions Endpoint URL set in the
// Developer Portal, Discord POSTs every interaction (commands, buttons,
// modals) to that URL instead of sending it over the gateway: any replica
// behind a load balancer answers it, and none is lost while the gateway
// moves from a dead replica to a live one. The gateway still brings
// messages (picture threads, replies, mentions).

// EndpointPath is where serve mounts the interactions endpoint: the
// Interactions Endpoint URL is the bot's public address plus this path.
const EndpointPath = "/discord/interactions"

// maxInteractionBody bounds an interaction's body: the largest carry a
// resolved message with its embeds and components, well under this.
const maxInteractionBody = 4 << 20

// signatureSkew is how far an interaction's X-Signature-Timestamp may be
// from this replica's clock: an old, replayed request is refused.
const signatureSkew = 5 * time.Minute

// answerWithin is how long the endpoint waits for the interaction's
// initial response (sent through the callback endpoint) before it
// answers Discord's request; Discord wants both within 3 s.
const answerWithin = 2800 * time.Millisecond

// ParsePublicKey reads the application's public key as the Developer
// Portal shows it (General Information → Public Key): 64 hex digits.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	k, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(k) != ed25519.PublicKeySize {
		return nil, errors.New("discord: DISCORD_PUBLIC_KEY is not a public key: copy the 64 hex digits of Public Key from the Developer Portal (your app → General Information)")
	}
	return ed25519.PublicKey(k), nil
}

// Handler serves the Interactions Endpoint URL (EndpointPath), or is nil
// when Config.PublicKey is not set (interactions come over the gateway).
func (b *Bot) Handler() http.Handler {
	if b.key == nil {
		return nil
	}
	return http.HandlerFunc(b.serveInteraction)
}

// serveInteraction checks the request's signature (401 when it does not
// match, as Discord requires), answers a PING with a PONG, and hands any
// other interaction to the same handlers as the gateway's. Those give the
// initial response through the callback endpoint; once they have, the
// request is answered 202 with no body, as Discord asks of an endpoint
// that responds that way.
func (b *Bot) serveInteraction(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	received := b.now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxInteractionBody))
	if err != nil {
		b.log.Warn("discord: interaction body unreadable", "err", err)
		http.Error(w, "body too large or unreadable", http.StatusRequestEntityTooLarge)
		return
	}
	if err := b.verify(r.Header, body, time.Now()); err != nil {
		b.log.Warn("discord: interaction refused", "err", err, "remote", r.RemoteAddr)
		http.Error(w, "invalid request signature", http.StatusUnauthorized)
		return
	}
	in := &discordgo.Interaction{}
	if err := json.Unmarshal(body, in); err != nil {
		b.log.Warn("discord: interaction unreadable", "err", err)
		http.Error(w, "not an interaction", http.StatusBadRequest)
		return
	}
	if in.Type == discordgo.InteractionPing {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"type":1}`))
		return
	}
	if in.ID == "" || in.Token == "" {
		b.log.Warn("discord: interaction without an id or a token", "type", in.Type)
		http.Error(w, "not an interaction", http.StatusBadRequest)
		return
	}
	b.noteUploadLimitIn(body)
	answered := b.awaitAnswer(in.ID)
	defer b.forgetAnswer(in.ID)
	if !b.spawn(func(ctx context.Context) { b.interaction(ctx, in, received) }) {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	t := time.NewTimer(answerWithin - b.now().Sub(received))
	defer t.Stop()
	select {
	case <-answered:
	case <-t.C:
		b.log.Warn("discord: no response to an interaction in time", "type", in.Type, "interaction", in.ID)
	case <-r.Context().Done():
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// verify checks an interaction's Ed25519 signature over
// X-Signature-Timestamp + body, and that the timestamp is recent.
func (b *Bot) verify(h http.Header, body []byte, now time.Time) error {
	sig, err := hex.DecodeString(h.Get("X-Signature-Ed25519"))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return errors.New("discord: no valid X-Signature-Ed25519")
	}
	ts := h.Get("X-Signature-Timestamp")
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("discord: no valid X-Signature-Timestamp")
	}
	if d := now.Sub(time.Unix(secs, 0)); d > signatureSkew || d < -signatureSkew {
		return fmt.Errorf("discord: X-Signature-Timestamp is %s from this clock", d.Round(time.Second))
	}
	msg := make([]byte, 0, len(ts)+len(body))
	msg = append(append(msg, ts...), body...)
	if !ed25519.Verify(b.key, msg, sig) {
		return errors.New("discord: the signature does not match")
	}
	return nil
}

// awaitAnswer is closed once the interaction id has been given its
// initial response (or Discord refused it).
func (b *Bot) awaitAnswer(id string) <-chan struct{} {
	ch := make(chan struct{})
	b.mu.Lock()
	b.answers[id] = ch
	b.mu.Unlock()
	return ch
}

func (b *Bot) forgetAnswer(id string) {
	b.mu.Lock()
	delete(b.answers, id)
	b.mu.Unlock()
}

// answered tells the endpoint's request for id, if one waits, that the
// initial response was sent.
func (b *Bot) answered(id string) {
	b.mu.Lock()
	ch := b.answers[id]
	delete(b.answers, id)
	b.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}
