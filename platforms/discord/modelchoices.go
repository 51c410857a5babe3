package discord

import (
	"github.com/bwmarrin/discordgo"

	"kontextbot/kontext"
)

// modelChoices are the /imagine model: choices: the models this process
// serves (kontext.Available, KONTEXT_MODELS), as the models table names
// them. Discord allows 25 choices.
func modelChoices() []*discordgo.ApplicationCommandOptionChoice {
	var out []*discordgo.ApplicationCommandOptionChoice
	for _, m := range kontext.Available() {
		out = append(out, &discordgo.ApplicationCommandOptionChoice{Name: m.Label, Value: m.Name})
	}
	return out[:min(len(out), 25)]
}
