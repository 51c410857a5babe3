package bot_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

func intp(n int) *int           { return &n }
func floatp(f float64) *float64 { return &f }

// TestSettingsOverrideEnvironment: an admin's overrides apply to the next
// request of that workspace only, and resetting them brings back the
// environment's values.
func TestSettingsOverrideEnvironment(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, bot.Config{UserDaily: 5, Admins: []string{"root"}}, kontexttest.Options{})
	admin := &bot.Request{Kind: bot.KindUsage, Conv: conv, User: "mod", Admin: true}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "one"}).ID)

	if _, err := h.core.SetSettings(ctx, admin, bot.WorkspaceSettings{DailyLimit: intp(1), Model: kontext.ModelPro}); err != nil {
		t.Fatal(err)
	}
	_, err := h.core.Submit(ctx, &bot.Request{Kind: bot.KindImagine, Prompt: "two", Conv: conv, User: "ada"})
	var ue *bot.UserError
	if !errors.Is(err, bot.ErrDailyLimit) || !errors.As(err, &ue) || !strings.Contains(ue.Msg, "your 1 images") {
		t.Fatalf("over the new limit: got %v, want the daily limit sentence naming 1", err)
	}
	if got, want := h.fake.Stats().Creates, 1; got != want {
		t.Errorf("creates: got %d, want %d", got, want)
	}
	// The default model changed for the workspace; another is untouched.
	j := h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "bob's", User: "bob"})
	if got, want := j.Model, kontext.ModelPro; got != want {
		t.Errorf("model here: got %s, want %s", got, want)
	}
	h.mustDeliver(j.ID)
	other := bot.ConvKey{Platform: "test", Workspace: ws2, Channel: "c1"}
	j = h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "there", Conv: other})
	if got, want := j.Model, kontext.ModelMax; got != want {
		t.Errorf("model elsewhere: got %s, want %s", got, want)
	}
	h.mustDeliver(j.ID)

	rep, err := h.core.Usage(ctx, &bot.Request{Kind: bot.KindUsage, Conv: conv, User: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"(limit 1)", "Daily limit per person: 1 images (set here)", "Default model: flux-kontext-pro (set here)", "Monthly budget: none (default)"} {
		if !strings.Contains(rep.Text(), want) {
			t.Errorf("usage %q lacks %q", rep.Text(), want)
		}
	}

	// Back to the environment.
	eff, err := h.core.SetSettings(ctx, admin, bot.WorkspaceSettings{})
	if err != nil {
		t.Fatal(err)
	}
	if eff.DailyLimit != 5 || eff.Model != kontext.ModelMax || !eff.Overrides.Empty() {
		t.Errorf("after reset: got %+v, want the environment's", eff)
	}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "two"}).ID)

	// Settings survive a restart.
	if _, err := h.core.SetSettings(ctx, admin, bot.WorkspaceSettings{Channels: []string{"elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	h.stop(time.Minute)
	h.start(newRecorder(), 6)
	if _, err := h.core.Submit(ctx, &bot.Request{Kind: bot.KindImagine, Prompt: "x", Conv: conv, User: "ada"}); !errors.Is(err, bot.ErrChannel) {
		t.Errorf("after restart, channel not allowed: got %v, want ErrChannel", err)
	}
}

// TestSettingsAdmins: only platform admins and KONTEXT_ADMINS may see or
// change settings; everyone else gets the sentence saying who can.
func TestSettingsAdmins(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, bot.Config{Admins: []string{"root"}}, kontexttest.Options{})
	s := bot.WorkspaceSettings{DailyLimit: intp(3)}
	tests := []struct {
		name string
		req  bot.Request
		want error
	}{
		{"platform admin", bot.Request{Conv: conv, User: "mod", Admin: true}, nil},
		{"KONTEXT_ADMINS", bot.Request{Conv: conv, User: "root"}, nil},
		{"member", bot.Request{Conv: conv, User: "ada"}, bot.ErrNotSettingsAdmin},
		{"direct message", bot.Request{Conv: bot.ConvKey{Platform: "test", Channel: "dm"}, User: "root"}, bot.ErrSettingsNoWorkspace},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := h.core.SetSettings(ctx, &tc.req, s); !errors.Is(err, tc.want) {
				t.Errorf("SetSettings: got %v, want %v", err, tc.want)
			}
			if _, err := h.core.Settings(ctx, &tc.req); !errors.Is(err, tc.want) {
				t.Errorf("Settings: got %v, want %v", err, tc.want)
			}
		})
	}
	if !strings.Contains(bot.Explain(bot.ErrNotSettingsAdmin), "Manage Server") {
		t.Errorf("refusal %q does not say who can", bot.Explain(bot.ErrNotSettingsAdmin))
	}
}

// TestSettingsValidate: bad values get a sentence and change nothing.
func TestSettingsValidate(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	admin := &bot.Request{Conv: conv, User: "mod", Admin: true}
	tests := []struct {
		name string
		s    bot.WorkspaceSettings
		want string
	}{
		{"negative limit", bot.WorkspaceSettings{DailyLimit: intp(-1)}, "daily limit"},
		{"huge limit", bot.WorkspaceSettings{DailyLimit: intp(bot.MaxSettingsDailyLimit + 1)}, "daily limit"},
		{"negative budget", bot.WorkspaceSettings{Budget: floatp(-2)}, "budget"},
		{"NaN budget", bot.WorkspaceSettings{Budget: floatp(math.NaN())}, "budget"},
		{"unknown model", bot.WorkspaceSettings{Model: "dall-e"}, "Unknown model"},
		{"bad channel", bot.WorkspaceSettings{Channels: []string{"a/b"}}, "channel"},
		{"too many channels", bot.WorkspaceSettings{Channels: make([]string, bot.MaxSettingsChannels+1)}, "At most"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.core.SetSettings(ctx, admin, tc.s)
			var ue *bot.UserError
			if !errors.As(err, &ue) || !strings.Contains(ue.Msg, tc.want) {
				t.Fatalf("got %v, want a sentence about %q", err, tc.want)
			}
			if got, _ := h.db.Settings(ctx, conv.Platform, conv.Workspace); !got.Empty() {
				t.Errorf("stored %+v after a refused change", got)
			}
		})
	}
}

// TestSettingsBudget: a budget override applies to the next request; a
// zero override lifts the environment's budget.
func TestSettingsBudget(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t, bot.Config{WorkspaceBudget: 0.01}, kontexttest.Options{})
	admin := &bot.Request{Conv: conv, User: "mod", Admin: true}
	if _, err := h.core.Submit(ctx, &bot.Request{Kind: bot.KindImagine, Prompt: "x", Conv: conv, User: "ada"}); !errors.Is(err, bot.ErrBudget) {
		t.Fatalf("under the environment's budget: got %v, want ErrBudget", err)
	}
	if _, err := h.core.SetSettings(ctx, admin, bot.WorkspaceSettings{Budget: floatp(0)}); err != nil {
		t.Fatal(err)
	}
	h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "free"}).ID)
	if _, err := h.core.SetSettings(ctx, admin, bot.WorkspaceSettings{Budget: floatp(0.10)}); err != nil {
		t.Fatal(err)
	}
	_, err := h.core.Submit(ctx, &bot.Request{Kind: bot.KindImagine, Prompt: "y", Conv: conv, User: "bob"})
	var ue *bot.UserError
	if !errors.Is(err, bot.ErrBudget) || !errors.As(err, &ue) || !strings.Contains(ue.Msg, "$0.10") {
		t.Errorf("0.08 spent of a 0.10 budget, another 0.08: got %v, want the budget sentence naming $0.10", err)
	}
	if got := h.fake.Stats().Creates; got != 1 {
		t.Errorf("creates: got %d, want 1", got)
	}
}
