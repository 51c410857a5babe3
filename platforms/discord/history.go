package discord

import (
	"context"
	"fmt"
	"strings"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// History: /history and a result's History button answer with the
// conversation's contact sheet and two string selects, one to make an
// image current and one to open it in a new thread. The selects' custom
// ids carry the conversation ("k:hu:<channel>:<thread>"), their values
// the images' turn ids: nothing is kept in memory, so they work after a
// restart.
const (
	actHistory = "hist" // button: the conversation's contact sheet
	actHistUse = "hu"   // select: make the chosen image current
	actBranch  = "hb"   // select: open the chosen image in a new thread
)

// historyDescription is /history's description: what a new user sees in
// the command list.
const historyDescription = "See this conversation's pictures as one numbered sheet; pick one to go back to or to branch off"

// maxSelectOptions is Discord's limit of options in a select menu.
const maxSelectOptions = 25

// historySelectID is the custom id of a history select for conversation
// key: "k:<action>:<channel>:<thread>" (at most 47 characters).
func historySelectID(action string, key bot.ConvKey) string {
	return "k:" + action + ":" + key.Channel + ":" + key.Thread
}

// parseHistorySelectID reads a history select's custom id back into its
// action and conversation, the workspace being the interaction's guild.
func parseHistorySelectID(s, guildID string) (string, bot.ConvKey, bool) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] != "k" || (parts[1] != actHistUse && parts[1] != actBranch) ||
		!snowflake.MatchString(parts[2]) || (parts[3] != "" && !snowflake.MatchString(parts[3])) {
		return "", bot.ConvKey{}, false
	}
	return parts[1], bot.ConvKey{Platform: Platform, Workspace: guildID, Channel: parts[2], Thread: parts[3]}, true
}

// historyMessage is the answer to /history: the sheet as an attachment,
// a caption, and the selects (the last 25 images when there are more).
// The thread select is left out where no thread can be opened (a DM).
func historyMessage(h *bot.HistorySheet) (outMessage, *outFile) {
	items := h.Items
	if len(items) > maxSelectOptions {
		items = items[len(items)-maxSelectOptions:]
	}
	options := func() []discordgo.SelectMenuOption {
		var out []discordgo.SelectMenuOption
		for _, it := range items {
			out = append(out, discordgo.SelectMenuOption{Label: it.Label(100), Value: it.Turn.ID})
		}
		return out
	}
	rows := []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.SelectMenu{MenuType: discordgo.StringSelectMenu, CustomID: historySelectID(actHistUse, h.Conv),
			Placeholder: "Make an image the current one…", Options: options()}}}}
	threads := placeOf(h.Conv).Kind != kindDM
	if threads {
		rows = append(rows, discordgo.ActionsRow{Components: []discordgo.MessageComponent{
			discordgo.SelectMenu{MenuType: discordgo.StringSelectMenu, CustomID: historySelectID(actBranch, h.Conv),
				Placeholder: "Open an image in a new thread…", Options: options()}}})
	}
	name := "history.png"
	m := text(h.Text(threads), rows...)
	m.Attachments = []outAttachment{{ID: 0, Filename: name,
		Description: truncate(fmt.Sprintf("The %d images of this conversation, numbered, as a tree", len(h.Items)), 1024)}}
	return m, &outFile{Name: name, ContentType: "image/png", Data: h.PNG}
}

// onHistory answers /history (conv: where it was typed) or a result's
// History button (conv: the result's conversation) with the contact sheet.
func (b *Bot) onHistory(ctx context.Context, in *discordgo.Interaction, conv bot.ConvKey) {
	if b.deferResponse(ctx, in, false) != nil {
		return
	}
	user, name := who(in)
	h, err := b.core.History(ctx, &bot.Request{Kind: bot.KindHistory, Conv: conv, User: user, UserName: name})
	if err != nil {
		b.failDeferred(ctx, in, err)
		return
	}
	m, file := historyMessage(h)
	if _, err := b.editOriginal(ctx, origin{Mode: "i", App: in.AppID, Token: in.Token, Place: place{Channel: in.ChannelID}},
		m, file, true); err != nil {
		b.failDeferred(ctx, in, err)
	}
}

// onHistorySelect handles a pick in a history select: make the image
// current (shown again in its conversation) or open it in a new thread.
func (b *Bot) onHistorySelect(ctx context.Context, in *discordgo.Interaction, action string, conv bot.ConvKey, values []string) {
	if b.deferUpdate(ctx, in) != nil {
		return
	}
	if len(values) != 1 || !idArg.MatchString(values[0]) {
		b.privately(ctx, in, bot.Userf("Pick one image from the menu."))
		return
	}
	user, name := who(in)
	req := &bot.Request{Kind: bot.KindUse, Conv: conv, User: user, UserName: name, Turn: values[0]}
	if action == actHistUse {
		d, err := b.core.Use(ctx, req)
		if err != nil {
			b.privately(ctx, in, err)
			return
		}
		b.show(ctx, in, d, "Current again: ", "p", false)
		return
	}
	d, err := b.core.Branch(ctx, req)
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	b.branch(ctx, in, d)
}

// branch posts d's image in the conversation's channel and opens a new
// thread from it, which continues from that image.
func (b *Bot) branch(ctx context.Context, in *discordgo.Interaction, d *bot.Delivery) {
	p := placeOf(d.Conv)
	if p.Kind == kindThread {
		p = place{Guild: p.Guild, Channel: p.Parent, Kind: kindText}
	}
	if p.Kind != kindText {
		b.privately(ctx, in, bot.Userf("I cannot open threads here: pick \"Make an image the current one\" instead."))
		return
	}
	m0, f0 := result(d, "New thread from: ")
	m, file, err := b.fitResult(m0, f0, p.Guild, b.knownLimit(in.GuildID))
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	posted, err := b.send(ctx, p.Channel, once(m, "n", in.ID), file)
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	out := bot.Posted{MessageID: posted.ID, Thread: b.openThread(ctx, p, posted, d.Turn.Prompt)}
	if out.Thread == nil {
		b.privately(ctx, in, bot.Userf("I posted the image but could not open a thread from it (the bot may lack Create Public Threads here)."))
	}
	if err := d.Record(ctx, out); err != nil {
		b.log.Error("discord: record a branch post", "err", err)
	}
}
