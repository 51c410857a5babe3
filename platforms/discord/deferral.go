package discord

import (
	"context"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"
	"kontextbot/bot"
)

// storeWait is how long an interaction that asks for a job waits for the
// job to be stored before it is acknowledged anyway. Discord wants the
// first response within 3 s, or the person sees "The application did not
// respond" and the token is void. A replica that dies between such an
// early acknowledgement and storing the job loses the request: the
// residual risk, only when storing takes longer than storeWait.
const storeWait = 2 * time.Second

// deferral states.
const (
	deferPending = iota // not acknowledged yet
	deferDone           // the deferred response was sent
	deferFailed         // Discord refused the deferred response
)

// deferral acknowledges one interaction with a deferred response once the
// job it asks for is stored (bot.WithStored), or after storeWait,
// whichever is first; an error is told as before, after a deferral.
// A replica that dies before it acknowledged leaves the person with
// "did not respond", never with a "thinking…" that nothing follows.
type deferral struct {
	mu    sync.Mutex
	state int
	send  func() error
	timer *time.Timer
	// response is the id of the deferred response's message, once sent
	// (not for an update).
	response string
}

// deferLater starts the deferral of in: a deferred message update
// (update, for buttons and modals answered in place) or a deferred
// channel message.
func (b *Bot) deferLater(ctx context.Context, in *discordgo.Interaction, update bool) *deferral {
	d := &deferral{}
	d.send = func() error {
		if update {
			return b.deferUpdate(ctx, in)
		}
		if err := b.deferResponse(ctx, in, false); err != nil {
			return err
		}
		app := in.AppID
		if app == "" {
			app, _ = b.ids()
		}
		// Its id lets a job that outlives the token reply to it; without
		// it the reply names the user instead.
		if m, err := b.original(ctx, app, in.Token); err == nil && m != nil {
			d.response = m.ID // under d.mu: send runs in ack
		}
		return nil
	}
	d.mu.Lock()
	d.timer = time.AfterFunc(storeWait, func() { d.ack() })
	d.mu.Unlock()
	return d
}

// ack sends the deferred response unless the interaction was answered,
// and reports whether it is deferred now.
func (d *deferral) ack() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == deferPending {
		d.timer.Stop()
		d.state = deferDone
		if d.send() != nil {
			d.state = deferFailed
		}
	}
	return d.state == deferDone
}

// failed reports whether Discord refused the deferred response: the
// interaction is void, nothing more can be said through it.
func (d *deferral) failed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state == deferFailed
}

// stored is the context under which Submit acknowledges the interaction
// once its job is stored. With o (a job answered through the response),
// the job's origin gets the response's message id, which Submit stores.
func (d *deferral) stored(ctx context.Context, o *origin) context.Context {
	return bot.WithStored(ctx, func(j *bot.Job) {
		if !d.ack() || o == nil {
			return
		}
		d.mu.Lock()
		msg := d.response
		d.mu.Unlock()
		if msg != "" {
			withMsg := *o
			withMsg.Msg = msg
			j.Origin = withMsg.encode()
		}
	})
}

// fail tells the person why nothing was done through deferred (the
// follow-up for an acknowledged interaction), acknowledging it first if
// it is not yet.
func (d *deferral) fail(ctx context.Context, b *Bot, in *discordgo.Interaction, err error, deferred func()) {
	if d.ack() {
		deferred()
		return
	}
	b.logUnexpected("request", err)
}
