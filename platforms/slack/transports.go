package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	slackgo "github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"
)

// socketLoop reads Socket Mode events until the adapter closes. Every
// envelope is handled in its own goroutine and acknowledged once the job
// it asks for is stored, or once its handling ends, or after ackWait,
// whichever comes first (see acker).
func (b *Bot) socketLoop(sm *socketmode.Client, ready chan<- struct{}) {
	signalled := false
	for {
		var evt socketmode.Event
		select {
		case <-b.sockCtx.Done():
			return
		case evt = <-sm.Events:
		}
		switch evt.Type {
		case socketmode.EventTypeConnecting:
			b.log.Debug("slack: Socket Mode connecting")
		case socketmode.EventTypeConnectionError:
			if e, ok := evt.Data.(*slackgo.ConnectionErrorEvent); ok {
				b.setDisconnected(e.ErrorObj)
				b.log.Warn("slack: Socket Mode connection failed", "err", e.ErrorObj, "attempt", e.Attempt)
			}
		case socketmode.EventTypeInvalidAuth:
			b.setDisconnected(errors.New("invalid_auth: check SLACK_APP_TOKEN"))
		case socketmode.EventTypeHello:
			b.connected.Store(true)
			b.log.Info("slack: Socket Mode connected")
			if !signalled {
				signalled = true
				close(ready)
			}
		case socketmode.EventTypeDisconnect:
			b.setDisconnected(errors.New("reconnecting at Slack's request"))
			b.log.Info("slack: Socket Mode reconnecting at Slack's request")
		case socketmode.EventTypeIncomingError, socketmode.EventTypeErrorBadMessage, socketmode.EventTypeErrorWriteFailed:
			// Only the cause at warn: a bad message's raw payload can carry
			// what people wrote.
			b.log.Warn("slack: Socket Mode", "event", evt.Type, "err", socketCause(evt.Data))
			b.log.Debug("slack: Socket Mode", "event", evt.Type, "data", evt.Data)
		case socketmode.EventTypeEventsAPI:
			a := b.newAcker(func() { b.ack(sm, evt) })
			if ev, ok := evt.Data.(slackevents.EventsAPIEvent); ok {
				b.dispatchEvent(ev, a)
			} else {
				a.ack()
			}
		case socketmode.EventTypeSlashCommand:
			a := b.newAcker(func() { b.ack(sm, evt) })
			if cmd, ok := evt.Data.(slackgo.SlashCommand); ok {
				b.dispatchSlash(cmd, a)
			} else {
				a.ack()
			}
		case socketmode.EventTypeInteractive:
			a := b.newAcker(func() { b.ack(sm, evt) })
			if cb, ok := evt.Data.(slackgo.InteractionCallback); ok {
				b.dispatchInteraction(cb, a)
			} else {
				a.ack()
			}
		}
	}
}

// dispatchEvent queues an event behind the earlier ones of its
// conversation: a thread, or a top-level message's own thread.
func (b *Bot) dispatchEvent(ev slackevents.EventsAPIEvent, a *acker) {
	key := "event"
	switch e := ev.InnerEvent.Data.(type) {
	case *slackevents.MessageEvent:
		thread := e.ThreadTimeStamp
		if thread == "" {
			thread = e.TimeStamp
		}
		key = e.Channel + "/" + thread
	case *slackevents.AppMentionEvent:
		thread := e.ThreadTimeStamp
		if thread == "" {
			thread = e.TimeStamp
		}
		key = e.Channel + "/" + thread
	}
	b.serial(key, a, false, func(ctx context.Context) { b.handleEvent(ctx, ev) })
}

// dispatchSlash queues a command behind the earlier ones of its channel,
// until they are stored.
func (b *Bot) dispatchSlash(cmd slackgo.SlashCommand, a *acker) {
	b.serial(cmd.ChannelID+"/", a, true, func(ctx context.Context) { b.handleSlash(ctx, cmd) })
}

// dispatchInteraction queues a button, shortcut or modal submission
// behind the earlier events of its thread.
func (b *Bot) dispatchInteraction(cb slackgo.InteractionCallback, a *acker) {
	if opensModal(cb) {
		// views.open must follow the click within 3 s: wait for no one.
		// It stores nothing: acknowledged at once.
		a.ack()
		end := b.track()
		if !b.spawn(func(ctx context.Context) {
			defer end()
			b.handleInteraction(ctx, cb)
		}) {
			end()
		}
		return
	}
	key := cb.Channel.ID + "/"
	switch {
	case cb.Container.ThreadTs != "":
		key = cb.Container.ChannelID + "/" + cb.Container.ThreadTs
	case cb.Container.MessageTs != "":
		key = cb.Container.ChannelID + "/" + cb.Container.MessageTs
	case cb.Type == slackgo.InteractionTypeViewSubmission:
		key = "view/" + cb.View.ID
	}
	b.serial(key, a, false, func(ctx context.Context) { b.handleInteraction(ctx, cb) })
}

func opensModal(cb slackgo.InteractionCallback) bool {
	if cb.Type == slackgo.InteractionTypeMessageAction {
		return true
	}
	for _, a := range cb.ActionCallback.BlockActions {
		if a.ActionID == actEdit || a.ActionID == actUseSettings {
			return true
		}
	}
	return false
}

// ack acknowledges an envelope, with no payload: slash commands show
// nothing, modals close.
func (b *Bot) ack(sm *socketmode.Client, evt socketmode.Event) {
	if evt.Request == nil || evt.Request.EnvelopeID == "" {
		return
	}
	if err := sm.AckCtx(b.ctx, evt.Request.EnvelopeID, nil); err != nil {
		b.log.Warn("slack: ack", "envelope", evt.Request.EnvelopeID, "err", err)
	}
}

// newHandler serves HTTP mode: every request is verified (signature and a
// timestamp at most 5 minutes old) before anything else, handled in a
// goroutine, and answered 200 once the job it asks for is stored, its
// handling ended, or ackWait passed (see acker): Slack retries an event
// that got no 2xx in time, and another replica behind the load balancer
// may take the retry.
func (b *Bot) newHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slack/events", b.verified(b.serveEvents))
	mux.HandleFunc("POST /slack/commands", b.verified(b.serveCommand))
	mux.HandleFunc("POST /slack/interactive", b.verified(b.serveInteractive))
	return mux
}

// verified reads the body and checks Slack's signature; a request that
// fails is answered 401 and nothing else happens. Slack's ssl_check (a
// form post with ssl_check=1, not necessarily signed, sent to command
// URLs) is answered 200 before that, and nothing else happens either.
func (b *Bot) verified(next func(w http.ResponseWriter, r *http.Request, body []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
			return
		}
		if isForm(r.Header.Get("Content-Type")) {
			if v, err := url.ParseQuery(string(body)); err == nil && v.Get("ssl_check") == "1" {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		sv, err := slackgo.NewSecretsVerifier(r.Header, b.cfg.SigningSecret)
		if err == nil {
			_, _ = sv.Write(body)
			err = sv.Ensure()
		}
		if err != nil {
			b.log.Warn("slack: refused an unverified request", "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		if !b.started.Load() || b.ctx.Err() != nil {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		next(w, r, body)
	}
}

func (b *Bot) serveEvents(w http.ResponseWriter, r *http.Request, body []byte) {
	ev, err := slackevents.ParseEvent(json.RawMessage(body), slackevents.OptionNoVerifyToken())
	if err != nil {
		// An event type slack-go does not know is still acknowledged, or
		// Slack retries it and eventually disables the subscription.
		b.log.Debug("slack: unparsed event", "err", err)
		w.WriteHeader(http.StatusOK)
		return
	}
	if ev.Type == slackevents.URLVerification {
		if v, ok := ev.Data.(*slackevents.EventsAPIURLVerificationEvent); ok {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"challenge": v.Challenge})
			return
		}
	}
	if ev.Type != slackevents.CallbackEvent {
		w.WriteHeader(http.StatusOK)
		return
	}
	b.answerOnceAcked(w, r, func(a *acker) { b.dispatchEvent(ev, a) })
}

func (b *Bot) serveCommand(w http.ResponseWriter, r *http.Request, body []byte) {
	req := &http.Request{Method: http.MethodPost, Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}},
		Body: io.NopCloser(bytes.NewReader(body))}
	cmd, err := slackgo.SlashCommandParse(req)
	if err != nil {
		http.Error(w, "bad command", http.StatusBadRequest)
		return
	}
	b.answerOnceAcked(w, r, func(a *acker) { b.dispatchSlash(cmd, a) })
}

func (b *Bot) serveInteractive(w http.ResponseWriter, r *http.Request, body []byte) {
	values, err := url.ParseQuery(string(body))
	var cb slackgo.InteractionCallback
	if err == nil {
		err = json.Unmarshal([]byte(values.Get("payload")), &cb)
	}
	if err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	b.answerOnceAcked(w, r, func(a *acker) { b.dispatchInteraction(cb, a) })
}

// answerOnceAcked dispatches an HTTP mode request and answers it 200 once
// its acker says so (see acker) or Slack has hung up.
func (b *Bot) answerOnceAcked(w http.ResponseWriter, r *http.Request, dispatch func(a *acker)) {
	a := b.newAcker(func() {})
	dispatch(a)
	a.wait(r.Context())
	w.WriteHeader(http.StatusOK)
}

// socketCause is the error inside a Socket Mode error event's data.
func socketCause(data any) error {
	switch d := data.(type) {
	case *socketmode.ErrorBadMessage:
		return d.Cause
	case *socketmode.ErrorWriteFailed:
		return d.Cause
	case error:
		return d
	}
	return fmt.Errorf("%T", data)
}

// ackWait is how long a request waits for its job to be stored before it
// is acknowledged anyway: Slack wants an acknowledgement within 3 s (a
// slash command then shows operation_timeout; an event is retried). A
// replica that dies between such an early acknowledgement and storing
// the job loses the request: the residual risk, only when storing is
// slower than ackWait.
const ackWait = 2 * time.Second

// acker acknowledges one envelope or HTTP request exactly once: when
// Submit has stored its job (bot.WithStored), when its handling ends
// (nothing to store: help, an error, a repeated delivery), or after
// ackWait, whichever comes first. A request whose replica dies before
// that is not acknowledged, so Slack retries it (events) or tells the
// person it failed (commands): never acknowledged and lost.
type acker struct {
	mu     sync.Mutex
	sent   bool
	send   func()
	forget func() // removes it from the Bot's unacked
	done   chan struct{}
	timer  *time.Timer
}

// newAcker returns an acker that calls send to acknowledge, at the
// latest ackWait from now.
func (b *Bot) newAcker(send func()) *acker {
	a := &acker{send: send, done: make(chan struct{})}
	a.forget = func() {
		b.ackMu.Lock()
		delete(b.unacked, a)
		b.ackMu.Unlock()
	}
	b.ackMu.Lock()
	if b.unacked == nil {
		b.unacked = map[*acker]bool{}
	}
	b.unacked[a] = true
	b.ackMu.Unlock()
	a.mu.Lock()
	a.timer = time.AfterFunc(ackWait, a.ack)
	a.mu.Unlock()
	return a
}

// ackPending acknowledges every request received and not acknowledged
// yet: Close calls it before it ends the connection, since this process
// still handles them (for up to closeGrace) and an acknowledgement can
// no longer be sent after that.
func (b *Bot) ackPending() {
	b.ackMu.Lock()
	all := make([]*acker, 0, len(b.unacked))
	for a := range b.unacked {
		all = append(all, a)
	}
	b.ackMu.Unlock()
	for _, a := range all {
		a.ack()
	}
}

// ack acknowledges, the first time it is called.
func (a *acker) ack() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sent {
		return
	}
	a.sent = true
	a.timer.Stop()
	a.send()
	close(a.done)
	a.forget()
}

// wait returns once the request is acknowledged or ctx ends.
func (a *acker) wait(ctx context.Context) {
	select {
	case <-a.done:
	case <-ctx.Done():
	}
}
