package discord

import (
	"reflect"
	"testing"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"kontextbot/kontext"
)

// findOption returns the option called name anywhere under opts
// (subcommand groups and subcommands included).
func findOption(opts []*discordgo.ApplicationCommandOption, name string) *discordgo.ApplicationCommandOption {
	for _, o := range opts {
		if o.Name == name && o.Type == discordgo.ApplicationCommandOptionString {
			return o
		}
		if found := findOption(o.Options, name); found != nil {
			return found
		}
	}
	return nil
}

// TestModelPickers: the settings' default model and /imagine's model:
// offer exactly the models this process serves, from the models table,
// in its order; a model hidden by KONTEXT_MODELS (kontext.Restrict) is
// offered in neither, and the choices stay within Discord's limits (25
// choices, names of at most 100 characters).
func TestModelPickers(t *testing.T) {
	t.Cleanup(func() { _ = kontext.Restrict(nil) })
	tests := []struct {
		name     string
		restrict []string
		want     []string
	}{
		{"all", nil, []string{kontext.ModelMax, kontext.ModelPro, kontext.ModelFlux2Pro, kontext.ModelFlux2Flex}},
		{"max hidden", []string{"pro", "flux-2-pro", "flux-2-flex"}, []string{kontext.ModelPro, kontext.ModelFlux2Pro, kontext.ModelFlux2Flex}},
		{"flux-2-pro only", []string{"flux-2-pro"}, []string{kontext.ModelFlux2Pro}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := kontext.Restrict(tc.restrict); err != nil {
				t.Fatal(err)
			}
			pickers := map[string]*discordgo.ApplicationCommandOption{}
			for _, cmd := range commands() {
				switch cmd.Name {
				case cmdKontext:
					pickers["/kontext settings set model"] = findOption(cmd.Options, setModel)
				case cmdImagine:
					pickers["/imagine model"] = findOption(cmd.Options, "model")
				}
			}
			if len(pickers) != 2 {
				t.Fatalf("found pickers %v, want /kontext settings and /imagine", pickers)
			}
			for where, opt := range pickers {
				if opt == nil {
					t.Fatalf("%s: no model option", where)
				}
				var got []string
				for _, c := range opt.Choices {
					got = append(got, c.Value.(string))
					if n := utf8.RuneCountInString(c.Name); n == 0 || n > 100 {
						t.Errorf("%s: choice %q is named in %d characters, want 1 to 100", where, c.Value, n)
					}
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s: got choices %v, want %v", where, got, tc.want)
				}
				if len(opt.Choices) > 25 {
					t.Errorf("%s: %d choices, Discord allows 25", where, len(opt.Choices))
				}
			}
		})
	}
}
