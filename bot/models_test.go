package bot_test

import (
	"context"
	"errors"
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// TestUnknownModelListsServed: the refusal of an unknown model lists the
// models this process serves, from the models table, and a model hidden by
// KONTEXT_MODELS (kontext.Restrict) is refused as a default model and in a
// request, with the same sentence.
func TestUnknownModelListsServed(t *testing.T) {
	t.Cleanup(func() { _ = kontext.Restrict(nil) })
	tests := []struct {
		name     string
		restrict []string
		model    string
		want     string
	}{
		{"all served", nil, "dall-e",
			`Unknown model "dall-e": use flux-kontext-max, flux-kontext-pro, flux-2-pro or flux-2-flex.`},
		{"two served", []string{"pro", "flux-2-pro"}, "flux-kontext-max",
			`Unknown model "flux-kontext-max": use flux-kontext-pro or flux-2-pro.`},
		{"one served", []string{"flux-2-flex"}, "pro",
			`Unknown model "pro": use flux-2-flex.`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_ = kontext.Restrict(nil) // the harness's client is made with the default model
			ctx := context.Background()
			h := newHarness(t, bot.Config{}, kontexttest.Options{})
			if err := kontext.Restrict(tc.restrict); err != nil {
				t.Fatal(err)
			}
			if got := bot.Explain(bot.UnknownModel(tc.model)); got != tc.want {
				t.Errorf("UnknownModel: got %q, want %q", got, tc.want)
			}
			admin := &bot.Request{Conv: conv, User: "mod", Admin: true}
			_, err := h.core.SetSettings(ctx, admin, bot.WorkspaceSettings{Model: tc.model})
			var ue *bot.UserError
			if !errors.As(err, &ue) || ue.Msg != tc.want {
				t.Errorf("SetSettings(model %s): got %v, want %q", tc.model, err, tc.want)
			}
			_, err = h.core.Submit(ctx, &bot.Request{Kind: bot.KindImagine, Conv: conv, User: "ada", Prompt: "a fox", Model: tc.model})
			if !errors.As(err, &ue) || ue.Msg != tc.want {
				t.Errorf("Submit(model %s): got %v, want %q", tc.model, err, tc.want)
			}
			if got := h.fake.Stats().Creates; got != 0 {
				t.Errorf("creates: got %d, want 0", got)
			}
		})
	}
}
