package discord

import (
	"errors"
	"testing"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

func TestParseMessageLink(t *testing.T) {
	tests := []struct {
		name, link, guild string
		channel, msg      string
		ok                bool
	}{
		{"Server", "https://discord.com/channels/11/22/33", "11", "22", "33", true},
		{"DM", "https://discord.com/channels/@me/22/33", "", "22", "33", true},
		{"PTBWithSpaces", "  https://ptb.discord.com/channels/11/22/33/ ", "11", "22", "33", true},
		{"OldDomain", "https://discordapp.com/channels/11/22/33", "11", "22", "33", true},
		{"OtherServer", "https://discord.com/channels/99/22/33", "11", "", "", false},
		{"DMLinkInAServer", "https://discord.com/channels/@me/22/33", "11", "", "", false},
		{"ChannelLink", "https://discord.com/channels/11/22", "11", "", "", false},
		{"OtherSite", "https://example.com/channels/11/22/33", "11", "", "", false},
		{"Words", "the beach one", "11", "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ch, msg, err := parseMessageLink(tt.link, tt.guild)
			if tt.ok != (err == nil) || ch != tt.channel || msg != tt.msg {
				t.Errorf("got %q %q %v, want %q %q ok=%v", ch, msg, err, tt.channel, tt.msg, tt.ok)
			}
			var ue *bot.UserError
			if err != nil && !errors.As(err, &ue) {
				t.Errorf("%v is not a sentence for the person", err)
			}
		})
	}
}

// TestParseSlashImages: image2..image4 come out in their numbers' order,
// whatever order the options arrive in, with gaps closed.
func TestParseSlashImages(t *testing.T) {
	att := func(id string) *discordgo.MessageAttachment {
		return &discordgo.MessageAttachment{ID: id, Filename: id + ".png"}
	}
	data := discordgo.ApplicationCommandInteractionData{
		Options: []*discordgo.ApplicationCommandInteractionDataOption{
			{Name: "prompt", Type: discordgo.ApplicationCommandOptionString, Value: "mix"},
			{Name: "image4", Type: discordgo.ApplicationCommandOptionAttachment, Value: "a4"},
			{Name: "image2", Type: discordgo.ApplicationCommandOptionAttachment, Value: "a2"},
			{Name: "image", Type: discordgo.ApplicationCommandOptionAttachment, Value: "a1"},
		},
		Resolved: &discordgo.ApplicationCommandInteractionDataResolved{Attachments: map[string]*discordgo.MessageAttachment{
			"a1": att("a1"), "a2": att("a2"), "a4": att("a4")}},
	}
	a, err := parseSlash(data)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range a.More {
		got = append(got, m.ID)
	}
	if a.Image == nil || a.Image.ID != "a1" || len(got) != 2 || got[0] != "a2" || got[1] != "a4" {
		t.Errorf("got image %v and more %v, want a1 and [a2 a4]", a.Image, got)
	}
	data.Options = append(data.Options, &discordgo.ApplicationCommandInteractionDataOption{Name: "image3", Type: discordgo.ApplicationCommandOptionAttachment, Value: "gone"})
	if _, err := parseSlash(data); err == nil {
		t.Error("an unresolved image3: got no error")
	}
}
