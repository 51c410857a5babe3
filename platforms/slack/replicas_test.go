package slack

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/slack/slackfake"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

// slackReplica is one replica: its own connections to the database, its
// own core, client and queue, and its own Socket Mode connection.
type slackReplica struct {
	db   *postgres.DB
	core *bot.Core
	bot  *Bot
}

// TestTwoReplicasHandleEachEventOnce runs two adapters (two replicas) on
// one PostgreSQL database against one fake Slack: each opens its own
// Socket Mode connection, Slack spreads the envelopes over them (each
// replica handles some), and an event Slack delivers again (a retry, on
// the other connection) is handled once: one edit, one prediction.
//
// Across replicas only the store can tell a retry from a new event (each
// replica's memory sees the event once): the adapter claims events,
// commands and interactions with Store.Claim. Without the claims the
// retry is handled twice and this test fails.
func TestTwoReplicasHandleEachEventOnce(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	url := pgtest.Schema(t)
	kx := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Latency: 20 * time.Millisecond, Pixels: 96 * 96})
	fake := slackfake.New(slackfake.Options{PingInterval: 500 * time.Millisecond})
	client, err := kontext.NewClient(kontext.Config{BaseURL: kx.URL, APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var rs []*slackReplica
	t.Cleanup(func() {
		for _, r := range rs {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := r.core.Close(ctx); err != nil {
				t.Errorf("core close: %v", err)
			}
			cancel()
			r.bot.Close()
			r.db.Close()
		}
		client.Close()
		fake.Close()
		kx.Close()
		goleak.VerifyNone(t, ignore)
	})
	opts := fake.Options()
	for range 2 {
		db, err := postgres.Open(context.Background(), url, postgres.Options{})
		if err != nil {
			t.Fatal(err)
		}
		core := bot.New(bot.Config{}, db, client, bot.NewLocalScheduler(kontext.NewQueue(kontext.QueueOptions{Slots: 2})))
		b, err := New(Config{BotToken: opts.BotToken, AppToken: opts.AppToken, APIURL: fake.APIURL()}, core)
		if err != nil {
			db.Close()
			t.Fatal(err)
		}
		core.Register(b)
		rs = append(rs, &slackReplica{db: db, core: core, bot: b})
		if err := b.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		if !fake.Wait(10*time.Second, cond) {
			t.Fatalf("timed out waiting for %s; problems %q", what, fake.Problems())
		}
	}
	wait("both replicas' connections", func() bool { return fake.OpenConnections() == 2 })
	h := &harness{t: t, fake: fake}

	ch := fake.CreateChannel("general", true)
	one := fake.Slash("U1", ch, "/imagine", "a boat --seed 4")
	two := fake.Slash("U2", ch, "/imagine", "a kite --seed 5")
	wait("two images", func() bool { return len(h.botImages(ch, "")) == 2 })
	if one.Connection() == two.Connection() {
		t.Errorf("both commands went out on connection %d, want them spread over the replicas", one.Connection())
	}
	root := h.botImages(ch, "")[0]

	before := len(fake.Envelopes())
	fake.Say("U1", ch, root.TS, "make it sail")
	wait("the edit", func() bool { return len(h.botImages(ch, root.TS)) == 2 })
	var event *slackfake.Envelope
	for _, e := range fake.Envelopes()[before:] {
		if e.Type == "events_api" {
			event = e
			break
		}
	}
	if event == nil {
		t.Fatal("no events_api envelope for the thread message")
	}
	retry := fake.Redeliver(event)
	if !retry.Acked(5 * time.Second) {
		t.Fatal("the retry was not acknowledged")
	}
	if retry.Connection() == event.Connection() {
		t.Errorf("the retry went out on the same connection %d, want the other replica's", event.Connection())
	}
	// A second edit would come within the time the first took; give it
	// more than that before concluding there is none.
	if fake.Wait(3*time.Second, func() bool { return len(h.botImages(ch, root.TS)) > 2 }) {
		t.Errorf("the retried event was handled again: %d images in the thread, want 2", len(h.botImages(ch, root.TS)))
	}
	if got := kx.Stats().Creates; got != 3 {
		t.Errorf("provider creates %d, want 3 (two commands, one edit)", got)
	}
	for _, p := range fake.CheckAcks() {
		t.Errorf("fake Slack: %s", p)
	}
}
