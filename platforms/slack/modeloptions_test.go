package slack

import (
	"reflect"
	"testing"
	"unicode/utf8"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
	"kontextbot/kontext"
)

// TestSettingsModelPicker: the settings modal's default model offers
// "Default" and then exactly the models this process serves, from the
// models table, in its order; a model hidden by KONTEXT_MODELS
// (kontext.Restrict) is not offered, the workspace's override is
// preselected when it is served, and the options stay within Block Kit's
// limits (100 options, texts of at most 75 characters).
func TestSettingsModelPicker(t *testing.T) {
	t.Cleanup(func() { _ = kontext.Restrict(nil) })
	tests := []struct {
		name     string
		restrict []string
		override string
		want     []string
		initial  string
	}{
		{"all", nil, kontext.ModelFlux2Pro,
			[]string{modelDefault, kontext.ModelMax, kontext.ModelPro, kontext.ModelFlux2Pro, kontext.ModelFlux2Flex}, kontext.ModelFlux2Pro},
		{"max hidden", []string{"pro", "flux-2-pro"}, "",
			[]string{modelDefault, kontext.ModelPro, kontext.ModelFlux2Pro}, modelDefault},
		{"override hidden", []string{"flux-2-flex"}, kontext.ModelMax,
			[]string{modelDefault, kontext.ModelFlux2Flex}, modelDefault},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := kontext.Restrict(tc.restrict); err != nil {
				t.Fatal(err)
			}
			eff := bot.Effective{Env: bot.Defaults{Model: kontext.ModelPro}, Overrides: bot.WorkspaceSettings{Model: tc.override}}
			view := settingsModal(settingsMeta{Team: "T1", Channel: "C1"}, eff)
			var sel *slackgo.SelectBlockElement
			for _, b := range view.Blocks.BlockSet {
				if in, ok := b.(*slackgo.InputBlock); ok && in.BlockID == blockModel {
					sel, _ = in.Element.(*slackgo.SelectBlockElement)
				}
			}
			if sel == nil {
				t.Fatal("no default model select in the settings modal")
			}
			var got []string
			for _, o := range sel.Options {
				got = append(got, o.Value)
				if n := utf8.RuneCountInString(o.Text.Text); n == 0 || n > 75 {
					t.Errorf("option %q has a %d-character text, want 1 to 75", o.Value, n)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got options %v, want %v", got, tc.want)
			}
			if len(sel.Options) > 100 {
				t.Errorf("%d options, Block Kit allows 100", len(sel.Options))
			}
			if sel.InitialOption == nil || sel.InitialOption.Value != tc.initial {
				t.Errorf("got initial option %+v, want %q", sel.InitialOption, tc.initial)
			}
		})
	}
}
