package discord

import (
	"context"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// Settings subcommands of /kontext settings, and the names of the
// settings (also the choices of reset).
const (
	grpSettings = "settings"
	subShow     = "show"
	subSet      = "set"
	subReset    = "reset"

	setDailyLimit = "daily_limit"
	setBudget     = "budget"
	setModel      = "model"
	setChannels   = "channels"
	setAdd        = "add_channel"
	setRemove     = "remove_channel"
	setAll        = "all"
)

// Permission bits of Discord's permissions bitfield.
const (
	permAdministrator int64 = 1 << 3
	permManageGuild   int64 = 1 << 5
)

// settingsCommand is /kontext settings show|set|reset: only in servers,
// shown by default to members with Manage Server (the server checks again).
func settingsCommand(install *[]discordgo.ApplicationIntegrationType) *discordgo.ApplicationCommand {
	zero, perms := 0.0, permManageGuild
	textChannels := []discordgo.ChannelType{discordgo.ChannelTypeGuildText, discordgo.ChannelTypeGuildNews}
	return &discordgo.ApplicationCommand{Name: cmdKontext, Description: "Settings of kontextbot for this server",
		Contexts: &[]discordgo.InteractionContextType{discordgo.InteractionContextGuild}, IntegrationTypes: install,
		DefaultMemberPermissions: &perms,
		Options: []*discordgo.ApplicationCommandOption{{Type: discordgo.ApplicationCommandOptionSubCommandGroup,
			Name: grpSettings, Description: "This server's limits, channels and default model",
			Options: []*discordgo.ApplicationCommandOption{
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: subShow, Description: "Show the settings in force here"},
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: subSet, Description: "Change settings; the others stay as they are",
					Options: []*discordgo.ApplicationCommandOption{
						{Type: discordgo.ApplicationCommandOptionInteger, Name: setDailyLimit,
							Description: "Images each person may make per UTC day (0: no limit)", MinValue: &zero, MaxValue: bot.MaxSettingsDailyLimit},
						{Type: discordgo.ApplicationCommandOptionNumber, Name: setBudget,
							Description: "US dollars this server may spend per UTC month (0: no budget)", MinValue: &zero, MaxValue: bot.MaxSettingsBudget},
						{Type: discordgo.ApplicationCommandOptionString, Name: setModel, Description: "Model used when a request names none",
							Choices: modelChoices()},
						{Type: discordgo.ApplicationCommandOptionString, Name: setChannels, MaxLength: 1000,
							Description: "The only channels I answer in: #channel mentions, or \"all\""},
						{Type: discordgo.ApplicationCommandOptionChannel, Name: setAdd, Description: "Allow one more channel",
							ChannelTypes: textChannels},
						{Type: discordgo.ApplicationCommandOptionChannel, Name: setRemove, Description: "Stop answering in a channel",
							ChannelTypes: textChannels},
					}},
				{Type: discordgo.ApplicationCommandOptionSubCommand, Name: subReset, Description: "Go back to the bot's default for a setting",
					Options: []*discordgo.ApplicationCommandOption{{Type: discordgo.ApplicationCommandOptionString, Name: "setting",
						Description: "Which setting", Required: true,
						Choices: []*discordgo.ApplicationCommandOptionChoice{
							{Name: "daily limit", Value: setDailyLimit}, {Name: "budget", Value: setBudget},
							{Name: "default model", Value: setModel}, {Name: "channels", Value: setChannels},
							{Name: "all of them", Value: setAll},
						}}}},
			}}},
	}
}

// platformAdmin reports whether Discord says the member manages the
// server: Manage Server or Administrator in the interaction's computed
// permissions.
func platformAdmin(in *discordgo.Interaction) bool {
	return in.Member != nil && in.Member.Permissions&(permManageGuild|permAdministrator) != 0
}

var channelMention = regexp.MustCompile(`<#([0-9]{1,20})>|\b([0-9]{15,20})\b`)

// parseChannels reads "#a #b" (mentions, as Discord's client writes
// them) or "all" (every channel: an empty, non-nil list).
func parseChannels(s string) ([]string, error) {
	if t := strings.ToLower(strings.TrimSpace(s)); t == "all" || t == "every" || t == "*" {
		return []string{}, nil
	}
	var out []string
	for _, m := range channelMention.FindAllStringSubmatch(s, -1) {
		id := m[1] + m[2]
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if len(out) == 0 {
		return nil, bot.Userf("Name the channels with #, like #art #memes, or write all to allow every channel.")
	}
	return out, nil
}

// settingsArgs applies a /kontext settings set or reset to cur.
func settingsArgs(sub *discordgo.ApplicationCommandInteractionDataOption, cur bot.WorkspaceSettings, env []string) (bot.WorkspaceSettings, error) {
	s := cur
	if sub.Name == subReset {
		for _, o := range sub.Options {
			v, _ := o.Value.(string)
			switch v {
			case setDailyLimit:
				s.DailyLimit = nil
			case setBudget:
				s.Budget = nil
			case setModel:
				s.Model = ""
			case setChannels:
				s.Channels = nil
			case setAll:
				s = bot.WorkspaceSettings{}
			default:
				return s, bot.Userf("I do not know the setting %q.", v)
			}
		}
		return s, nil
	}
	for _, o := range sub.Options {
		switch o.Name {
		case setDailyLimit:
			f, ok := o.Value.(float64)
			if !ok || f != math.Trunc(f) {
				return s, bot.Userf("The daily limit must be a whole number.")
			}
			n := int(f)
			s.DailyLimit = &n
		case setBudget:
			f, ok := o.Value.(float64)
			if !ok {
				return s, bot.Userf("The budget must be an amount in US dollars.")
			}
			s.Budget = &f
		case setModel:
			s.Model, _ = o.Value.(string)
		case setChannels:
			str, _ := o.Value.(string)
			chs, err := parseChannels(str)
			if err != nil {
				return s, err
			}
			s.Channels = chs
		}
	}
	// Adding and removing start from the list in force (the environment's
	// when the server has none of its own).
	for _, o := range sub.Options {
		id, _ := o.Value.(string)
		switch o.Name {
		case setAdd:
			if s.Channels == nil {
				s.Channels = slices.Clone(env)
			}
			if !slices.Contains(s.Channels, id) {
				s.Channels = append(slices.Clone(s.Channels), id)
			}
		case setRemove:
			if s.Channels == nil {
				s.Channels = slices.Clone(env)
			}
			if len(s.Channels) == 0 {
				return s, bot.Userf("Every channel is allowed now: set the channels I may answer in first, then remove one.")
			}
			s.Channels = slices.DeleteFunc(slices.Clone(s.Channels), func(c string) bool { return c == id })
			if len(s.Channels) == 0 {
				return s, bot.Userf("That would leave no channel at all: to allow every channel, use channels: all.")
			}
		}
	}
	return s, nil
}

// onKontext answers /kontext settings, privately.
func (b *Bot) onKontext(ctx context.Context, in *discordgo.Interaction, data discordgo.ApplicationCommandInteractionData) {
	if b.deferResponse(ctx, in, true) != nil {
		return
	}
	msg, err := b.settings(ctx, in, data)
	if err != nil {
		b.logUnexpected("settings", err)
		msg = bot.Explain(err)
	}
	if _, err := b.editOriginal(ctx, origin{Mode: "i", App: in.AppID, Token: in.Token, Place: place{Channel: in.ChannelID}},
		text(msg), nil, true); err != nil {
		b.log.Warn("discord: settings answer", "err", err)
	}
}

func (b *Bot) settings(ctx context.Context, in *discordgo.Interaction, data discordgo.ApplicationCommandInteractionData) (string, error) {
	if len(data.Options) != 1 || data.Options[0].Name != grpSettings || len(data.Options[0].Options) != 1 {
		return "", bot.Userf("Use /kontext settings show, set or reset.")
	}
	sub := data.Options[0].Options[0]
	user, name := who(in)
	req := &bot.Request{Conv: bot.ConvKey{Platform: Platform, Workspace: in.GuildID, Channel: in.ChannelID},
		User: user, UserName: name, Admin: platformAdmin(in)}
	eff, err := b.core.Settings(ctx, req)
	if err != nil {
		return "", err
	}
	switch sub.Name {
	case subShow:
		return "**Settings here**\n" + eff.Text(), nil
	case subSet, subReset:
		if sub.Name == subSet && len(sub.Options) == 0 {
			return "Nothing to change: give at least one option (daily_limit, budget, model, channels, add_channel, remove_channel).\n**Settings here**\n" + eff.Text(), nil
		}
		env := eff.Channels
		if eff.Overrides.Channels != nil {
			env = nil // only used when the server has no list of its own
		}
		s, err := settingsArgs(sub, eff.Overrides, env)
		if err != nil {
			return "", err
		}
		if eff, err = b.core.SetSettings(ctx, req, s); err != nil {
			return "", err
		}
		return "Saved: the settings apply from the next request.\n**Settings here**\n" + eff.Text(), nil
	}
	return "", bot.Userf("Use /kontext settings show, set or reset.")
}
