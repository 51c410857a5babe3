package main

import (
	"reflect"
	"strings"
	"testing"

	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
)

// TestDiscordImagineFlux2Pro: /imagine model:flux-2-pro is made by
// flux-2-pro at the provider (the fake's provenance names the model) and
// charged once at flux-2-pro's price, not the default model's.
func TestDiscordImagineFlux2Pro(t *testing.T) {
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}, env: map[string]string{
		// Prices far apart, so /usage shows which one was charged.
		"KONTEXT_PRICE_FLUX_KONTEXT_MAX": "1",
		"KONTEXT_PRICE_FLUX_2_PRO":       "0.25",
	}})
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a lighthouse in fog"),
		discordtest.String("model", kontext.ModelFlux2Pro))
	got := dcProv(t, h.result(in))
	if got.Model != kontext.ModelFlux2Pro || got.Prompt != "a lighthouse in fog" {
		t.Errorf("provenance: model %q prompt %q, want %q %q", got.Model, got.Prompt, kontext.ModelFlux2Pro, "a lighthouse in fog")
	}
	if got := h.prov.Stats().Creates; got != 1 {
		t.Errorf("creates: got %d, want 1", got)
	}
	want := "You have made 1 image today. This workspace has made 1 image in "
	var text string
	usage := h.slash(dcArt, dcAda, "usage")
	h.wait("the usage answer", func() bool {
		m, ok := h.dc.Original(usage.ID)
		text = m.Content
		return ok && strings.Contains(m.Content, "You have made")
	})
	if !strings.HasPrefix(text, want) || !strings.Contains(text, "costing $0.25.") {
		t.Errorf("usage %q, want it to start with %q and say \"costing $0.25.\" (flux-2-pro's price)", text, want)
	}
}

// TestDiscordModelsHidden: with KONTEXT_MODELS naming two models, the
// commands registered on Discord offer only those in /imagine model: and
// in the settings' default model, so Discord refuses a hidden one before
// the bot sees it, and nothing reaches the provider.
func TestDiscordModelsHidden(t *testing.T) {
	t.Cleanup(func() { _ = kontext.Restrict(nil) }) // serve runs in this process
	h := dcStart(t, dcOptions{provider: kontexttest.Options{Pixels: 64 * 64}, env: map[string]string{
		"KONTEXT_MODELS": "flux-kontext-pro,flux-2-pro",
		"KONTEXT_MODEL":  "flux-kontext-pro",
	}})
	want := []any{kontext.ModelPro, kontext.ModelFlux2Pro}
	pickers := map[string][]any{}
	var walk func(where string, opts []discordtest.CommandOption)
	walk = func(where string, opts []discordtest.CommandOption) {
		for _, o := range opts {
			if o.Name == "model" && o.Type == 3 { // a string option
				var vals []any
				for _, c := range o.Choices {
					vals = append(vals, c.Value)
				}
				pickers[where+" "+o.Name] = vals
			}
			walk(where+" "+o.Name, o.Options)
		}
	}
	for _, c := range h.dc.Commands(dcGuild) {
		walk("/"+c.Name, c.Options)
	}
	for _, where := range []string{"/imagine model", "/kontext settings set model"} {
		if got, ok := pickers[where]; !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: choices %v (registered: %v), want %v", where, got, ok, want)
		}
	}
	if _, err := h.dc.Slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a fox"),
		discordtest.String("model", kontext.ModelMax)); err == nil {
		t.Errorf("/imagine model:%s was accepted by Discord, want it refused as not one of the choices", kontext.ModelMax)
	}
	in := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a fox"), discordtest.String("model", kontext.ModelFlux2Pro))
	if got := dcProv(t, h.result(in)).Model; got != kontext.ModelFlux2Pro {
		t.Errorf("made by %q, want %q", got, kontext.ModelFlux2Pro)
	}
	if got := h.prov.Stats().Creates; got != 1 {
		t.Errorf("creates: got %d, want 1", got)
	}
}
