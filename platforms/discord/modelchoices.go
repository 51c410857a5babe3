package discord

import (
	"github.com/bwmarrin/discordgo"

	"kontextbot/kontext"
)

// modelChoices are the /imagine model: choices: the models this process
// serves (kontext.Available, KONTEXT_MODELS), as the models table names
// them. Discord allows 25 choices, each named in at most 100 characters;
// /imagine's model: and the settings' default model use them.
func modelChoices() []*discordgo.ApplicationCommandOptionChoice {
	var out []*discordgo.ApplicationCommandOptionChoice
	for _, m := range kontext.Available() {
		out = append(out, &discordgo.ApplicationCommandOptionChoice{Name: truncate(m.Label, 100), Value: m.Name})
	}
	return out[:min(len(out), 25)]
}
