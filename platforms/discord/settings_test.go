package discord

import (
	"errors"
	"reflect"
	"testing"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

func TestParseChannels(t *testing.T) {
	tests := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"<#111111111111111111> <#222222222222222222>", []string{"111111111111111111", "222222222222222222"}, false},
		{"<#111111111111111111>,<#111111111111111111>", []string{"111111111111111111"}, false},
		{"111111111111111111", []string{"111111111111111111"}, false},
		{" All ", []string{}, false},
		{"#art", nil, true},
		{"", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseChannels(tc.in)
			var ue *bot.UserError
			if tc.wantErr != (err != nil) || err != nil && !errors.As(err, &ue) {
				t.Fatalf("err %v, want a user error: %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestSettingsArgs(t *testing.T) {
	ten := 10
	opt := func(name string, v any) *discordgo.ApplicationCommandInteractionDataOption {
		return &discordgo.ApplicationCommandInteractionDataOption{Name: name, Value: v}
	}
	sub := func(name string, opts ...*discordgo.ApplicationCommandInteractionDataOption) *discordgo.ApplicationCommandInteractionDataOption {
		return &discordgo.ApplicationCommandInteractionDataOption{Name: name, Type: discordgo.ApplicationCommandOptionSubCommand, Options: opts}
	}
	cur := bot.WorkspaceSettings{DailyLimit: &ten, Model: "flux-kontext-pro"}
	tests := []struct {
		name    string
		sub     *discordgo.ApplicationCommandInteractionDataOption
		cur     bot.WorkspaceSettings
		env     []string
		want    bot.WorkspaceSettings
		wantErr bool
	}{
		{"set keeps the others", sub(subSet, opt(setBudget, 2.5)), cur, nil,
			bot.WorkspaceSettings{DailyLimit: &ten, Budget: ptrTo(2.5), Model: "flux-kontext-pro"}, false},
		{"set a limit", sub(subSet, opt(setDailyLimit, 3.0)), bot.WorkspaceSettings{}, nil, bot.WorkspaceSettings{DailyLimit: ptrTo(3)}, false},
		{"fractional limit", sub(subSet, opt(setDailyLimit, 2.5)), bot.WorkspaceSettings{}, nil, bot.WorkspaceSettings{}, true},
		{"add to the environment's list", sub(subSet, opt(setAdd, "3")), bot.WorkspaceSettings{}, []string{"1", "2"},
			bot.WorkspaceSettings{Channels: []string{"1", "2", "3"}}, false},
		{"remove", sub(subSet, opt(setRemove, "1")), bot.WorkspaceSettings{Channels: []string{"1", "2"}}, nil,
			bot.WorkspaceSettings{Channels: []string{"2"}}, false},
		{"remove the last", sub(subSet, opt(setRemove, "1")), bot.WorkspaceSettings{Channels: []string{"1"}}, nil, bot.WorkspaceSettings{}, true},
		{"remove while all are allowed", sub(subSet, opt(setRemove, "1")), bot.WorkspaceSettings{}, nil, bot.WorkspaceSettings{}, true},
		{"reset one", sub(subReset, opt("setting", setModel)), cur, nil, bot.WorkspaceSettings{DailyLimit: &ten}, false},
		{"reset all", sub(subReset, opt("setting", setAll)), cur, nil, bot.WorkspaceSettings{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := settingsArgs(tc.sub, tc.cur, tc.env)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestPlatformAdmin(t *testing.T) {
	tests := []struct {
		name string
		in   *discordgo.Interaction
		want bool
	}{
		{"manage server", &discordgo.Interaction{Member: &discordgo.Member{Permissions: 1 << 5}}, true},
		{"administrator", &discordgo.Interaction{Member: &discordgo.Member{Permissions: 1 << 3}}, true},
		{"member", &discordgo.Interaction{Member: &discordgo.Member{Permissions: 2248473465835073}}, false},
		{"direct message", &discordgo.Interaction{User: &discordgo.User{ID: "1"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := platformAdmin(tc.in); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
