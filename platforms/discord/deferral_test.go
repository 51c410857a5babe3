package discord

import (
	"context"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
	"kontextbot/platforms/discord/discordtest"
)

// gateCore is stubCore whose Submit waits for release: the time a
// shared store takes to store a job.
type gateCore struct {
	stubCore
	release chan struct{}
	err     error
}

func (c gateCore) Submit(ctx context.Context, req *bot.Request) (*bot.Job, error) {
	c.submitted <- req
	<-c.release
	if c.err != nil {
		return nil, c.err
	}
	return &bot.Job{ID: "j1", User: req.User, Origin: req.Origin, Prompt: req.Prompt}, nil
}

// TestSlashAcknowledgedAfterStored: /imagine is acknowledged (deferred)
// only once Submit stored its job, so a replica killed in between leaves
// no "thinking…" without a job; a store slower than storeWait is
// acknowledged anyway, inside Discord's 3 s; an error found before the
// acknowledgement is told after a deferral, only to its user.
func TestSlashAcknowledgedAfterStored(t *testing.T) {
	const deferred = 5 // callback type
	tests := []struct {
		name    string
		err     error
		hold    bool // Submit outlives storeWait
		wantAck int
	}{
		{name: "stored", wantAck: deferred},
		{name: "slow store", hold: true, wantAck: deferred},
		{name: "refused", err: bot.Userf("Say what to draw."), wantAck: deferred},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core := gateCore{stubCore: stubCore{submitted: make(chan *bot.Request, 1)}, release: make(chan struct{}), err: tc.err}
			_, dc, _ := started(t, core)
			in, err := dc.Slash("10", "5", "imagine", discordtest.String("prompt", "an owl"))
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-core.submitted:
			case <-time.After(5 * time.Second):
				t.Fatal("no request")
			}
			if got := dc.Interaction(in.ID).Ack; got != 0 {
				t.Errorf("acknowledged (type %d) before the job was stored", got)
			}
			if tc.hold {
				if !dc.Wait(5*time.Second, func() bool { return dc.Interaction(in.ID).Ack != 0 }) {
					t.Error("a slow store left the interaction unacknowledged")
				}
			}
			close(core.release)
			if !dc.Wait(5*time.Second, func() bool { return dc.Interaction(in.ID).Ack != 0 }) {
				t.Fatal("never acknowledged")
			}
			got := dc.Interaction(in.ID)
			if got.Ack != tc.wantAck || got.Failed {
				t.Errorf("got callback type %d (failed %v), want %d", got.Ack, got.Failed, tc.wantAck)
			}
			if tc.err != nil {
				var f []discordtest.Message
				if !dc.Wait(5*time.Second, func() bool { f = dc.Followups(in.ID); return len(f) == 1 }) {
					t.Fatal("no follow-up")
				}
				if !f[0].Ephemeral() || f[0].Content != bot.Explain(tc.err) {
					t.Errorf("follow-up %q (ephemeral %v), want %q only to its user", f[0].Content, f[0].Ephemeral(), bot.Explain(tc.err))
				}
			}
		})
	}
}

// TestRerollAcknowledgedAfterStored: a Reroll click is acknowledged
// (deferred update) only once Submit stored its job.
func TestRerollAcknowledgedAfterStored(t *testing.T) {
	const deferredUpdate = 6 // callback type
	core := gateCore{stubCore: stubCore{submitted: make(chan *bot.Request, 1)}, release: make(chan struct{})}
	b, dc, offset := started(t, core)
	id := customID(actReroll, "i1")
	m, err := b.s.ChannelMessageSendComplex("10", &discordgo.MessageSend{Content: "a picture",
		Components: []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
			discordgo.Button{Label: "Reroll", Style: discordgo.SecondaryButton, CustomID: id},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(2 * time.Minute)) // an old result: no wait for its record
	in, err := dc.Click("5", m.ID, id)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-core.submitted:
		if req.Kind != bot.KindReroll || req.Turn != "i1" {
			t.Errorf("submitted %s of %q, want a reroll of i1", req.Kind, req.Turn)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
	}
	ackedOnceStored(t, dc, in, core.release, deferredUpdate)
}

// ackedOnceStored checks that interaction in is not acknowledged while
// its job is being stored, then, once release lets the store finish, is
// acknowledged with callback type want.
func ackedOnceStored(t *testing.T, dc *discordtest.Server, in discordtest.Interaction, release chan struct{}, want int) {
	t.Helper()
	if got := dc.Interaction(in.ID).Ack; got != 0 {
		t.Errorf("acknowledged (type %d) before the job was stored", got)
	}
	close(release)
	if !dc.Wait(5*time.Second, func() bool { return dc.Interaction(in.ID).Ack != 0 }) {
		t.Fatal("never acknowledged")
	}
	if got := dc.Interaction(in.ID); got.Ack != want || got.Failed {
		t.Errorf("got callback type %d (failed %v), want %d", got.Ack, got.Failed, want)
	}
}

// storingCore is gateCore whose Submit, once released, stores the job as
// bot.Core does before it queues it (bot.Stored), and hands it over.
type storingCore struct {
	gateCore
	jobs chan *bot.Job
}

func (c storingCore) Submit(ctx context.Context, req *bot.Request) (*bot.Job, error) {
	c.submitted <- req
	<-c.release
	j := bot.Stored(ctx, &bot.Job{ID: "j1", User: req.User, Origin: req.Origin, Prompt: req.Prompt})
	c.jobs <- j
	return j, nil
}

// TestMessageStatusAfterStored: a request made by a message (here a
// mention) gets its "Starting…" reply only once its job is stored, so a
// replica that dies in between leaves no status that nothing follows; the
// stored job's origin names that status, which the result replaces.
func TestMessageStatusAfterStored(t *testing.T) {
	core := storingCore{gateCore: gateCore{stubCore: stubCore{submitted: make(chan *bot.Request, 1)}, release: make(chan struct{})},
		jobs: make(chan *bot.Job, 1)}
	_, dc, _ := started(t, core)
	said, err := dc.Say(discordtest.Say{ChannelID: "10", UserID: "5", Content: "<@" + dc.BotID() + "> a fox in the snow"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case req := <-core.submitted:
		if req.Prompt != "a fox in the snow" {
			t.Errorf("submitted %q", req.Prompt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no request")
	}
	botMessages := func() []discordtest.Message {
		var out []discordtest.Message
		for _, m := range dc.Messages("10") {
			if m.Author.Bot {
				out = append(out, m)
			}
		}
		return out
	}
	time.Sleep(100 * time.Millisecond) // room for a status posted too early
	if got := botMessages(); len(got) != 0 {
		t.Errorf("the bot posted %q before the job was stored", got[0].Content)
	}
	close(core.release)
	j := <-core.jobs
	var status []discordtest.Message
	if !dc.Wait(5*time.Second, func() bool { status = botMessages(); return len(status) == 1 }) {
		t.Fatalf("bot messages after storing: %v, want one status", status)
	}
	if status[0].Content != startingText || status[0].ReplyTo != said.ID {
		t.Errorf("status %q replying to %q, want %q replying to the person's message %s", status[0].Content, status[0].ReplyTo, startingText, said.ID)
	}
	if o, ok := parseOrigin(j.Origin); !ok || o.Msg != status[0].ID || o.Ref != said.ID {
		t.Errorf("the stored job's origin %v, want its status %s and the person's message %s", j.Origin, status[0].ID, said.ID)
	}
}
