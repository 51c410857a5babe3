package discord

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// Status texts.
const (
	startingText = "Starting…"
	noImageText  = "That message has no image I can edit: use \"Edit image\" on a message with a PNG, JPEG, WebP or GIF."
)

// reopenText answers an "Edit image" form whose image the bot can no
// longer read: it restarted since the form opened, and without the
// Message Content intent Discord hides the message's files from it.
const reopenText = "I was restarted after you opened that form, and without Discord's Message Content intent I cannot see that message's image again. Use **Apps → Edit image** on it once more."

// target is the image of a message an "Edit image" modal will edit, kept
// between the menu and the modal's submit. After a restart the message is
// fetched again instead.
type target struct {
	att *discordgo.MessageAttachment
	at  time.Time
}

// who is the interaction's user: id and display name.
func who(in *discordgo.Interaction) (string, string) {
	u := in.User
	if in.Member != nil && in.Member.User != nil {
		u = in.Member.User
	}
	if u == nil {
		return "", ""
	}
	return u.ID, displayName(u)
}

func displayName(u *discordgo.User) string {
	if u.GlobalName != "" {
		return u.GlobalName
	}
	return u.Username
}

// onEvent sees every gateway event raw: interactions are taken from here,
// for a field discordgo v0.29 does not read (attachment_size_limit).
func (b *Bot) onEvent(s *discordgo.Session, e *discordgo.Event) {
	if e == nil || e.Type != "INTERACTION_CREATE" {
		return
	}
	ic, ok := e.Struct.(*discordgo.InteractionCreate)
	if !ok {
		return
	}
	b.noteUploadLimitIn(e.RawData)
	b.onInteraction(s, ic)
}

// onInteraction runs in the gateway's reader: it hands the interaction to
// a goroutine at once, which answers Discord well inside 3 seconds.
func (b *Bot) onInteraction(_ *discordgo.Session, ic *discordgo.InteractionCreate) {
	if ic == nil || ic.Interaction == nil {
		return
	}
	in := ic.Interaction
	received := b.now()
	b.spawn(func(ctx context.Context) { b.interaction(ctx, in, received) })
}

func (b *Bot) interaction(ctx context.Context, in *discordgo.Interaction, received time.Time) {
	switch in.Type {
	case discordgo.InteractionApplicationCommand:
		data := in.ApplicationCommandData()
		switch {
		case data.CommandType == discordgo.MessageApplicationCommand && data.Name == cmdEditImage:
			b.onEditImage(ctx, in, data)
		case data.Name == cmdImagine:
			b.onSlash(ctx, in, data, bot.KindImagine, received)
		case data.Name == cmdEdit:
			b.onSlash(ctx, in, data, bot.KindEdit, received)
		case data.Name == cmdUsage:
			b.onUsage(ctx, in)
		case data.Name == cmdHistory:
			b.onHistory(ctx, in, b.placeFor(ctx, in.GuildID, in.ChannelID).key())
		case data.Name == cmdKontext:
			b.onKontext(ctx, in, data)
		case data.Name == cmdHelp:
			if err := b.ephemeral(ctx, in, helpText); err != nil {
				b.log.Warn("discord: answer /help", "err", err)
			}
		default:
			b.answerError(ctx, in, bot.Userf("I do not know that command any more."))
		}
	case discordgo.InteractionMessageComponent:
		data := in.MessageComponentData()
		if action, conv, ok := parseHistorySelectID(data.CustomID, in.GuildID); ok {
			b.onHistorySelect(ctx, in, action, conv, data.Values)
			return
		}
		b.onButton(ctx, in, data.CustomID, received)
	case discordgo.InteractionModalSubmit:
		b.onModal(ctx, in, in.ModalSubmitData(), received)
	}
}

// answerError answers an interaction not yet answered with err's sentence,
// only to its user; errors not of the user's making are logged.
func (b *Bot) answerError(ctx context.Context, in *discordgo.Interaction, err error) {
	b.logUnexpected("interaction", err)
	if rerr := b.ephemeral(ctx, in, bot.Explain(err)); rerr != nil {
		b.log.Warn("discord: answer interaction", "err", rerr)
	}
}

func (b *Bot) logUnexpected(what string, err error) {
	var ue *bot.UserError
	if !errors.As(err, &ue) {
		b.log.Error("discord: "+what+" failed", "err", err)
	}
}

// deferResponse acknowledges an interaction: Discord shows "thinking…"
// until the response is edited.
func (b *Bot) deferResponse(ctx context.Context, in *discordgo.Interaction, ephemeral bool) error {
	r := &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredChannelMessageWithSource}
	if ephemeral {
		r.Data = &discordgo.InteractionResponseData{Flags: discordgo.MessageFlagsEphemeral}
	}
	if err := b.respond(ctx, in, r); err != nil {
		b.log.Warn("discord: could not acknowledge an interaction", "type", in.Type, "err", err)
		return err
	}
	return nil
}

// deferUpdate acknowledges a button or modal without a message of its own.
func (b *Bot) deferUpdate(ctx context.Context, in *discordgo.Interaction) error {
	if err := b.respond(ctx, in, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseDeferredMessageUpdate}); err != nil {
		b.log.Warn("discord: could not acknowledge an interaction", "type", in.Type, "err", err)
		return err
	}
	return nil
}

// failDeferred tells the user, privately, why a deferred command did
// nothing: its public "thinking…" response is removed and an ephemeral
// follow-up says why.
func (b *Bot) failDeferred(ctx context.Context, in *discordgo.Interaction, err error) {
	b.logUnexpected("request", err)
	if derr := b.deleteOriginal(ctx, in.AppID, in.Token); derr != nil {
		b.log.Warn("discord: delete response", "err", derr)
	}
	if ferr := b.followup(ctx, in.AppID, in.Token, text(bot.Explain(err)), true); ferr != nil {
		b.log.Warn("discord: error follow-up", "err", ferr)
	}
}

// responseOrigin notes where an interaction not yet acknowledged will be
// answered: its response, edited through the token. It has no message id
// (the response does not exist yet): a job that outlives the token names
// its user in its reply instead of replying to the response.
func (b *Bot) responseOrigin(ctx context.Context, in *discordgo.Interaction, received time.Time) origin {
	o := origin{Mode: "i", App: in.AppID, Token: in.Token, At: received, Place: b.placeFor(ctx, in.GuildID, in.ChannelID),
		Lim: b.knownLimit(in.GuildID)}
	if o.App == "" {
		o.App, _ = b.ids()
	}
	return o
}

// onSlash handles /imagine and /edit. The job is stored before the
// interaction is acknowledged (deferral), so a replica that dies in
// between leaves either a stored job that another replica runs or an
// interaction Discord says did not respond, never a "thinking…" that
// nothing follows.
func (b *Bot) onSlash(ctx context.Context, in *discordgo.Interaction, data discordgo.ApplicationCommandInteractionData, kind bot.Kind, received time.Time) {
	d := b.deferLater(ctx, in, false)
	user, name := who(in)
	args, err := parseSlash(data)
	o := b.responseOrigin(ctx, in, received)
	req := &bot.Request{Kind: kind, Conv: o.Place.key(), User: user, UserName: name, Prompt: args.Prompt,
		Aspect: args.Aspect, Seed: args.Seed, Model: args.Model, Enhance: args.Enhance, Count: args.Count, Origin: o.encode()}
	switch {
	case err != nil || kind != bot.KindEdit:
	case args.Image != nil:
		req.Image, err = b.download(ctx, args.Image)
	case o.Place.Kind == kindThread && o.Place.Ours:
		b.pictureThread(ctx, o.Place) // a thread opened a moment ago: let its picture be recorded
	}
	if err == nil && kind == bot.KindEdit {
		req.Refs, err = b.downloadRefs(ctx, args.More)
	}
	b.submitDeferred(ctx, in, d, &o, req, err)
}

// submitDeferred submits req, the job of interaction in answered through
// its response (origin o), unless preparing it failed (err): in is
// acknowledged (d) once the job is stored, or told why nothing was done.
func (b *Bot) submitDeferred(ctx context.Context, in *discordgo.Interaction, d *deferral, o *origin, req *bot.Request, err error) {
	if d.failed() {
		return // the interaction is void: no one would see the job
	}
	if err == nil {
		_, err = b.core.Submit(d.stored(ctx, o), req)
	}
	if err != nil {
		d.fail(ctx, b, in, err, func() { b.failDeferred(ctx, in, err) })
		return
	}
	d.ack() // held behind a group, or stored without the hook
}

// onUsage answers /usage, privately.
func (b *Bot) onUsage(ctx context.Context, in *discordgo.Interaction) {
	if b.deferResponse(ctx, in, true) != nil {
		return
	}
	user, name := who(in)
	rep, err := b.core.Usage(ctx, &bot.Request{Kind: bot.KindUsage, User: user, UserName: name,
		Conv: bot.ConvKey{Platform: Platform, Workspace: in.GuildID, Channel: in.ChannelID}})
	msg := rep.Text()
	if err != nil {
		b.logUnexpected("usage", err)
		msg = bot.Explain(err)
	}
	if _, err := b.editOriginal(ctx, origin{Mode: "i", App: in.AppID, Token: in.Token, Place: place{Channel: in.ChannelID}},
		text(msg), nil, true); err != nil {
		b.log.Warn("discord: usage answer", "err", err)
	}
}

// onEditImage handles the "Edit image" message menu: it opens the modal
// asking what to change, or says the message has no image.
func (b *Bot) onEditImage(ctx context.Context, in *discordgo.Interaction, data discordgo.ApplicationCommandInteractionData) {
	var m *discordgo.Message
	if data.Resolved != nil {
		m = data.Resolved.Messages[data.TargetID]
	}
	att := imageAttachment(m)
	if att == nil {
		if err := b.ephemeral(ctx, in, noImageText); err != nil {
			b.log.Warn("discord: answer interaction", "err", err)
		}
		return
	}
	b.mu.Lock()
	for id, t := range b.targets {
		if b.now().Sub(t.at) > time.Hour {
			delete(b.targets, id)
		}
	}
	b.targets[data.TargetID] = target{att: att, at: b.now()}
	b.mu.Unlock()
	if err := b.respond(ctx, in, editModal(editMsgID(in.ChannelID, data.TargetID), true)); err != nil {
		b.log.Warn("discord: open modal", "err", err)
	}
}

// onModal handles a submitted edit modal.
func (b *Bot) onModal(ctx context.Context, in *discordgo.Interaction, data discordgo.ModalSubmitInteractionData, received time.Time) {
	action, id, err := parseCustomID(data.CustomID)
	if err != nil || (action != actEditMsg && action != actEditTurn) {
		b.answerError(ctx, in, bot.Userf("That form is from an older version of the bot: please start again."))
		return
	}
	raw, err := modalPrompt(data)
	if err != nil {
		b.answerError(ctx, in, err)
		return
	}
	if action == actEditTurn {
		_, msg, _ := parseTurnMsgID(data.CustomID)
		b.onEditTurn(ctx, in, id, msg, raw)
		return
	}
	// "Edit image" on a message: the answer is the interaction's response,
	// acknowledged once the job is stored.
	d := b.deferLater(ctx, in, false)
	user, name := who(in)
	o := b.responseOrigin(ctx, in, received)
	req := &bot.Request{Kind: bot.KindEdit, Conv: o.Place.key(), User: user, UserName: name, ReplyTo: id, Origin: o.encode()}
	req.Prompt, err = b.applyOptions(req, raw)
	channelID := in.ChannelID
	if _, ch, ok := parseEditMsgID(data.CustomID); ok && ch != "" {
		channelID = ch
	}
	if err == nil {
		err = b.attachTarget(ctx, req, channelID, id)
	}
	if link, _ := modalValue(data, linkInput); err == nil && strings.TrimSpace(link) != "" {
		var ref bot.Ref
		if ref, err = b.linkedRef(ctx, req.Conv, in.GuildID, link); err == nil {
			req.Refs = []bot.Ref{ref}
		}
	}
	b.submitDeferred(ctx, in, d, &o, req, err)
}

// linkedRef is the image of the message a link in the "Edit image" form
// points to: one of the bot's images by its message, a person's by its
// bytes.
func (b *Bot) linkedRef(ctx context.Context, key bot.ConvKey, guild, link string) (bot.Ref, error) {
	channelID, msgID, err := parseMessageLink(link, guild)
	if err != nil {
		return bot.Ref{}, err
	}
	_, _, err = b.core.Store().Message(ctx, key, msgID)
	switch {
	case err == nil:
		return bot.Ref{Message: msgID}, nil
	case !errors.Is(err, bot.ErrNotFound):
		return bot.Ref{}, err
	}
	m, err := b.message(ctx, channelID, msgID)
	if err != nil {
		return bot.Ref{}, &bot.UserError{Msg: "I cannot see the message that link points to.", Err: err}
	}
	att := imageAttachment(m)
	if att == nil {
		return bot.Ref{}, bot.Userf("The message that link points to has no image I can use (PNG, JPEG, WebP or GIF).")
	}
	data, err := b.download(ctx, att)
	if err != nil {
		return bot.Ref{}, err
	}
	return bot.Ref{Image: data}, nil
}

// downloadRefs downloads attachments to use as an edit's further
// references, in order. More than an edit can use is refused before any
// download.
func (b *Bot) downloadRefs(ctx context.Context, atts []*discordgo.MessageAttachment) ([]bot.Ref, error) {
	if 1+len(atts) > bot.MaxImages {
		return nil, bot.ErrTooManyImages
	}
	var refs []bot.Ref
	for _, a := range atts {
		data, err := b.download(ctx, a)
		if err != nil {
			return nil, err
		}
		refs = append(refs, bot.Ref{Image: data})
	}
	return refs, nil
}

// applyOptions reads "--ar 16:9"-style options typed in a prompt into req.
func (b *Bot) applyOptions(req *bot.Request, raw string) (string, error) {
	prompt, o, err := textOptions(raw)
	if err != nil {
		return "", err
	}
	req.Aspect, req.Seed, req.Model, req.Enhance, req.Count = o.Aspect, o.Seed, o.Model, o.Enhance, o.Count
	return prompt, nil
}

// attachTarget sets the bytes of message msgID's image on req unless the
// message is one of the bot's posted images (which the core finds by id).
func (b *Bot) attachTarget(ctx context.Context, req *bot.Request, channelID, msgID string) error {
	_, _, err := b.core.Store().Message(ctx, req.Conv, msgID)
	if err == nil {
		return nil
	}
	if !errors.Is(err, bot.ErrNotFound) {
		return err
	}
	b.mu.Lock()
	t, ok := b.targets[msgID]
	b.mu.Unlock()
	att := t.att
	if !ok {
		// Opened before a restart (or long ago): the custom id says which
		// message; ask Discord for it again.
		m, err := b.message(ctx, channelID, msgID)
		if err != nil {
			return &bot.UserError{Msg: "I can no longer see that message.", Err: err}
		}
		_, botID := b.ids()
		if att = imageAttachment(m); att == nil && b.unreadable(m, botID) {
			return bot.Userf(reopenText)
		}
		if att == nil {
			return bot.Userf(noImageText)
		}
	}
	data, err := b.download(ctx, att)
	if err != nil {
		return err
	}
	req.ReplyImage = data
	return nil
}

// buttonConv is the conversation of the image message a button (or the
// modal it opened) was pressed on: where the bot recorded it, else where
// the button is.
func (b *Bot) buttonConv(ctx context.Context, in *discordgo.Interaction) bot.ConvKey {
	here := b.placeFor(ctx, in.GuildID, in.ChannelID).key()
	if key, ok := b.recorded(ctx, here, in.Message); ok {
		return key
	}
	return here
}

// recorded finds the conversation the bot recorded message m under. A
// result is recorded as soon as Discord answers its post, so only a
// message the bot posted or edited a moment ago can be seen before its
// record; for those it waits a little.
func (b *Bot) recorded(ctx context.Context, here bot.ConvKey, m *discordgo.Message) (bot.ConvKey, bool) {
	if m == nil {
		return bot.ConvKey{}, false
	}
	_, botID := b.ids()
	at := m.Timestamp
	if m.EditedTimestamp != nil {
		at = *m.EditedTimestamp
	}
	fresh := m.Author != nil && m.Author.ID == botID && b.now().Sub(at) < time.Minute
	for i := 0; ; i++ {
		key, _, err := b.core.Store().Message(ctx, here, m.ID)
		switch {
		case err == nil:
			return key, true
		case !errors.Is(err, bot.ErrNotFound):
			b.log.Warn("discord: look up a posted image", "message", m.ID, "err", err)
			return bot.ConvKey{}, false
		case !fresh || i >= 60:
			return bot.ConvKey{}, false
		}
		if sleep(ctx, 50*time.Millisecond) != nil {
			return bot.ConvKey{}, false
		}
	}
}

// onButton handles Reroll, Edit, Undo, History, Details, Delete, Use
// these settings and Cancel.
func (b *Bot) onButton(ctx context.Context, in *discordgo.Interaction, id string, received time.Time) {
	action, arg, err := parseCustomID(id)
	if err != nil {
		b.answerError(ctx, in, bot.Userf("That button is from an older version of the bot."))
		return
	}
	user, name := who(in)
	switch action {
	case actCancel:
		if err := b.core.Cancel(ctx, arg, user); err != nil {
			b.answerError(ctx, in, err)
			return
		}
		_ = b.deferUpdate(ctx, in) // the job's status says "Cancelled." when the core settles it
	case actEdit:
		if err := b.respond(ctx, in, editModal(customID(actEditTurn, arg), false)); err != nil {
			b.log.Warn("discord: open modal", "err", err)
		}
	case actReroll:
		d := b.deferLater(ctx, in, true)
		conv := b.buttonConv(ctx, in)
		b.submitInPlace(ctx, in, d, &bot.Request{Kind: bot.KindReroll, Conv: conv, User: user, UserName: name, Turn: arg})
	case actUndo:
		if b.deferUpdate(ctx, in) != nil {
			return
		}
		b.undo(ctx, in, b.buttonConv(ctx, in), arg, user, name)
	case actDetails:
		b.details(ctx, in, arg)
	case actUseSettings:
		_, msg, _ := parseTurnMsgID(id)
		b.useSettings(ctx, in, arg, msg)
	case actDelete:
		b.delete(ctx, in, arg, user)
	case actHistory:
		b.onHistory(ctx, in, b.buttonConv(ctx, in))
	case actUse:
		if b.deferUpdate(ctx, in) != nil {
			return
		}
		b.use(ctx, in, b.buttonConv(ctx, in), arg, user, name)
	default:
		b.answerError(ctx, in, bot.Userf("That button does nothing any more."))
	}
}

// onEditTurn handles the modal of a result's Edit button, or of "Use
// these settings" in the Details of result message msg ("" for Edit).
func (b *Bot) onEditTurn(ctx context.Context, in *discordgo.Interaction, turn, msg, raw string) {
	d := b.deferLater(ctx, in, true)
	user, name := who(in)
	conv := b.buttonConv(ctx, in)
	if msg != "" {
		conv = b.messageConv(ctx, in, msg)
	}
	req := &bot.Request{Kind: bot.KindEdit, Conv: conv, User: user, UserName: name, Turn: turn}
	var err error
	if req.Prompt, err = b.applyOptions(req, raw); err != nil {
		d.fail(ctx, b, in, err, func() { b.privately(ctx, in, err) })
		return
	}
	b.submitInPlace(ctx, in, d, req)
}

// privately tells the user of an acknowledged interaction why nothing
// happened, in an ephemeral follow-up.
func (b *Bot) privately(ctx context.Context, in *discordgo.Interaction, err error) {
	b.logUnexpected("request", err)
	if ferr := b.followup(ctx, in.AppID, in.Token, text(bot.Explain(err)), true); ferr != nil {
		b.log.Warn("discord: error follow-up", "err", ferr)
	}
}

// submitInPlace submits a button's job: its progress and result go in a
// new message where the conversation lives (the picture's thread). The
// interaction is acknowledged (d) once the job is stored.
func (b *Bot) submitInPlace(ctx context.Context, in *discordgo.Interaction, d *deferral, req *bot.Request) {
	status, p, err := b.sendIn(ctx, placeOf(req.Conv), once(text(startingText), "s", in.ID), nil)
	if err != nil {
		d.fail(ctx, b, in, err, func() { b.privately(ctx, in, err) })
		return
	}
	o := origin{Mode: "c", Place: p, Msg: status.ID, Lim: b.knownLimit(in.GuildID)}
	req.Origin = o.encode()
	if _, err := b.core.Submit(d.stored(ctx, nil), req); err != nil {
		if derr := b.s.ChannelMessageDelete(p.Channel, status.ID, discordgo.WithContext(ctx)); derr != nil {
			b.log.Warn("discord: delete status", "err", derr)
		}
		d.fail(ctx, b, in, err, func() { b.privately(ctx, in, err) })
		return
	}
	d.ack()
}

// undo shows the image before turn again, in the conversation's place.
func (b *Bot) undo(ctx context.Context, in *discordgo.Interaction, conv bot.ConvKey, turn, user, name string) {
	d, err := b.core.Undo(ctx, &bot.Request{Kind: bot.KindUndo, Conv: conv, User: user, UserName: name, Turn: turn})
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	b.show(ctx, in, d, "Back to: ", "u", false)
}

// use makes image turn (one of a variations message) the conversation's
// current image and shows it again with its own buttons: in the
// picture's thread, or, posted in a text channel, in a thread it opens.
func (b *Bot) use(ctx context.Context, in *discordgo.Interaction, conv bot.ConvKey, turn, user, name string) {
	d, err := b.core.Use(ctx, &bot.Request{Conv: conv, User: user, UserName: name, Turn: turn})
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	prefix := "Now the current image: "
	if d.Turn.Variation > 0 {
		prefix = fmt.Sprintf("Image %d, now the current image: ", d.Turn.Variation)
	}
	b.show(ctx, in, d, prefix, "v", true)
}

// show posts an image shown again (after an undo, picked from the history
// or from variations) in its conversation's place, once per interaction
// (kind is the nonce's letter), and records the post. When the post lands
// in a text channel it opens a thread for it if thread is set, or if the
// conversation's thread is gone.
func (b *Bot) show(ctx context.Context, in *discordgo.Interaction, d *bot.Delivery, prefix, kind string, thread bool) {
	p := b.live(placeOf(d.Conv))
	m0, f0 := result(d, prefix)
	m, file, err := b.fitResult(m0, f0, p.Guild, b.knownLimit(in.GuildID))
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	posted, p, err := b.sendIn(ctx, p, once(m, kind, in.ID), file)
	if err != nil {
		b.privately(ctx, in, err)
		return
	}
	out := bot.Posted{MessageID: posted.ID}
	if p.Kind == kindText && (thread || placeOf(d.Conv).Kind == kindThread) {
		// The picture's thread is gone (or the image is picked in the
		// channel): the image shown in the channel opens a new one.
		out.Thread = b.openThread(ctx, p, posted, prefix+d.Turn.Prompt)
	}
	if d.Record != nil {
		if err := d.Record(ctx, out); err != nil {
			b.log.Error("discord: record a shown image", "err", err)
		}
	} else if err := b.core.RecordPost(ctx, d.Conv, d.Turn.ID, out); err != nil {
		b.log.Error("discord: record a shown image", "err", err)
	}
}

// live is where to post for place p: a thread found gone is replaced by
// its parent channel.
func (b *Bot) live(p place) place {
	if p.Kind != kindThread || p.Parent == "" {
		return p
	}
	b.mu.Lock()
	dead := b.deadThreads[p.Channel]
	b.mu.Unlock()
	if dead {
		return place{Guild: p.Guild, Channel: p.Parent, Kind: kindText}
	}
	return p
}

// forgetThread notes that a thread can no longer be posted in.
func (b *Bot) forgetThread(threadID string, why error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.deadThreads) >= 10000 {
		clear(b.deadThreads)
	}
	b.deadThreads[threadID] = true
	delete(b.channels, threadID)
	b.log.Info("discord: a picture's thread is gone (deleted, or archived and locked); posting in its channel instead", "thread", threadID, "err", why)
}

// sendIn posts m in place p, or, when p is a thread that is gone, in its
// parent channel; it returns the place it posted in.
func (b *Bot) sendIn(ctx context.Context, p place, m outMessage, file *outFile) (*discordgo.Message, place, error) {
	if q := b.live(p); q != p {
		p, m.Reference = q, nil // the message replied to is in the thread
	}
	msg, err := b.send(ctx, p.Channel, m, file)
	if err != nil && p.Kind == kindThread && p.Parent != "" && threadGone(err) {
		b.forgetThread(p.Channel, err)
		p = place{Guild: p.Guild, Channel: p.Parent, Kind: kindText}
		m.Reference = nil // the message replied to is in the thread
		msg, err = b.send(ctx, p.Channel, m, file)
	}
	return msg, p, err
}

// onMessage runs in the gateway's reader: messages of one channel are
// handled in order, each after the previous one was submitted.
func (b *Bot) onMessage(_ *discordgo.Session, mc *discordgo.MessageCreate) {
	if mc == nil || mc.Message == nil {
		return
	}
	m := mc.Message
	if m.Author == nil || m.Author.Bot || m.Author.System || m.WebhookID != "" {
		return // never answer bots, ourselves included
	}
	if m.Type != discordgo.MessageTypeDefault && m.Type != discordgo.MessageTypeReply {
		return
	}
	b.serialize(m.ChannelID, func(ctx context.Context) { b.handleMessage(ctx, m) })
}

var mentionRe = regexp.MustCompile(`<@!?(\d+)>`)

// handleMessage turns a person's message into a request when it is meant
// for the bot: in a DM, in a picture thread, replying to a message with an
// image, or mentioning the bot.
func (b *Bot) handleMessage(ctx context.Context, m *discordgo.Message) {
	_, botID := b.ids()
	// Only an explicit <@bot> in the text is a mention: a reply to one of
	// the bot's messages puts the bot in Mentions too (reply pings are on
	// by default), and "ok, thanks!" is not a command.
	mentioned := botID != "" && slices.ContainsFunc(mentionRe.FindAllStringSubmatch(m.Content, -1),
		func(sm []string) bool { return sm[1] == botID })
	rawText := strings.TrimSpace(mentionRe.ReplaceAllStringFunc(m.Content, func(s string) string {
		if mentionRe.FindStringSubmatch(s)[1] == botID {
			return ""
		}
		return s
	}))
	p := b.placeFor(ctx, m.GuildID, m.ChannelID)
	ref := m.ReferencedMessage
	refImg := imageAttachment(ref)
	picture := p.Kind == kindThread && b.pictureThread(ctx, p)
	if !(p.Kind == kindDM || picture || mentioned || refImg != nil) {
		return
	}
	if refImg == nil && m.MessageReference != nil && b.unreadable(ref, botID) {
		// A reply whose message the bot cannot read (no Message Content
		// intent): ask Discord for it; never edit or make something else.
		if ref, refImg = b.reread(ctx, m.MessageReference, ref); refImg == nil && b.unreadable(ref, botID) {
			if rawText != "" || mentioned {
				b.reply(ctx, m, cannotSeeText)
			}
			return
		}
	}
	if rawText == "" {
		if mentioned || p.Kind == kindDM {
			b.reply(ctx, m, bot.ErrEmptyPrompt.Msg)
		}
		return // an image or an empty message in a thread is not an edit
	}
	o := origin{Mode: "c", Place: p, Ref: m.ID}
	req := &bot.Request{Kind: bot.KindEdit, Conv: p.key(), User: m.Author.ID, UserName: displayName(m.Author), Origin: o.encode()}
	// The status is posted once the job is stored, so a replica that dies
	// in between leaves no "Starting…" that nothing follows. Without one
	// (Discord refused it) the job still runs, and its result replies to
	// the person's message.
	statusID := ""
	stored := bot.WithStored(ctx, func(j *bot.Job) {
		status, err := b.send(ctx, m.ChannelID, once(b.replyTo(m, startingText), "s", m.ID), nil)
		if err != nil {
			b.log.Warn("discord: post status", "channel", m.ChannelID, "err", err)
			return
		}
		statusID = status.ID
		withMsg := o
		withMsg.Msg = status.ID
		j.Origin = withMsg.encode()
	})
	var err error
	req.Prompt, err = b.applyOptions(req, rawText)
	followHead := false
	atts := imageAttachments(m)
	if err == nil {
		switch {
		case refImg != nil:
			// The replied image first, then the attached ones.
			req.ReplyTo = ref.ID
			if _, ok := b.recorded(ctx, req.Conv, ref); !ok {
				req.ReplyImage, err = b.download(ctx, refImg) // a person's image
			}
			if err == nil {
				req.Refs, err = b.downloadRefs(ctx, atts)
			}
		case len(atts) > 0 && picture:
			// The thread's current image first, then the attached ones.
			req.Refs, err = b.downloadRefs(ctx, atts)
		case len(atts) > 0:
			if req.Refs, err = b.downloadRefs(ctx, atts[1:]); err == nil {
				req.Image, err = b.download(ctx, atts[0])
			}
		case picture || p.Kind == kindDM:
			followHead = true // edit the conversation's current image
		default:
			req.Kind = bot.KindImagine // a mention with a prompt: a new picture
		}
	}
	if err == nil {
		_, err = b.core.Submit(stored, req)
		if followHead && errors.Is(err, bot.ErrNoImage) {
			req.Kind = bot.KindImagine // nothing to edit yet in this DM: make one
			_, err = b.core.Submit(stored, req)
		}
	}
	if err == nil {
		return
	}
	b.logUnexpected("message", err)
	if statusID == "" { // refused before it was stored
		b.reply(ctx, m, bot.Explain(err))
		return
	}
	if _, eerr := b.edit(ctx, m.ChannelID, statusID, text(bot.Explain(err)), nil, true); eerr != nil {
		b.log.Warn("discord: edit status", "err", eerr)
	}
}

// cannotSeeText answers a reply to a message the bot cannot read.
const cannotSeeText = "I cannot see the image in the message you replied to: without Discord's Message Content intent I only see messages that mention me. Use **Apps → Edit image** on that message instead (right-click it, or long-press on a phone)."

// unreadable reports whether a replied-to message may hide an image from
// the bot: the bot runs without the Message Content intent and the
// message, not the bot's own, shows neither text nor files (Discord
// blanks both).
func (b *Bot) unreadable(ref *discordgo.Message, botID string) bool {
	b.mu.Lock()
	content := b.content
	b.mu.Unlock()
	if content {
		return false
	}
	if ref == nil {
		return true
	}
	if ref.Author != nil && ref.Author.ID == botID {
		return false
	}
	return strings.TrimSpace(ref.Content) == "" && len(ref.Attachments) == 0 && len(ref.Embeds) == 0
}

// reread fetches a replied-to message through REST. Without the intent
// Discord blanks it there too unless it is the bot's or mentions it, so
// this only helps in those cases; on any failure the old copy is kept.
func (b *Bot) reread(ctx context.Context, mr *discordgo.MessageReference, old *discordgo.Message) (*discordgo.Message, *discordgo.MessageAttachment) {
	if mr.MessageID == "" || mr.ChannelID == "" {
		return old, nil
	}
	m, err := b.message(ctx, mr.ChannelID, mr.MessageID)
	if err != nil || m == nil {
		b.log.Info("discord: could not fetch a replied-to message", "message", mr.MessageID, "err", err)
		return old, nil
	}
	return m, imageAttachment(m)
}

// pictureThread reports whether a thread is a picture's conversation.
// A thread the bot opened a moment ago may not be recorded yet (the core
// records it just after the result is posted), so for those it waits a
// little.
func (b *Bot) pictureThread(ctx context.Context, p place) bool {
	for i := 0; ; i++ {
		_, err := b.core.Store().Conversation(ctx, p.key())
		if err == nil {
			return true
		}
		if !errors.Is(err, bot.ErrNotFound) {
			b.log.Warn("discord: look up a thread's conversation", "thread", p.Channel, "err", err)
			return false
		}
		if !p.Ours || i >= 60 || b.now().Sub(snowflakeTime(p.Channel)) > time.Minute {
			return false
		}
		if sleep(ctx, 50*time.Millisecond) != nil {
			return false
		}
	}
}

// snowflakeTime is when a Discord id was made.
func snowflakeTime(id string) time.Time {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return time.Time{}
	}
	return time.UnixMilli(int64(n>>22) + 1420070400000)
}

// replyTo is a text message replying to m.
func (b *Bot) replyTo(m *discordgo.Message, content string) outMessage {
	out := text(content)
	f := false
	out.Reference = &discordgo.MessageReference{MessageID: m.ID, ChannelID: m.ChannelID, GuildID: m.GuildID, FailIfNotExists: &f}
	return out
}

// reply answers a person's message with a sentence.
func (b *Bot) reply(ctx context.Context, m *discordgo.Message, content string) {
	if _, err := b.send(ctx, m.ChannelID, b.replyTo(m, content), nil); err != nil {
		b.log.Warn("discord: reply", "err", err)
	}
}

// messageConv is the conversation result message msg was recorded in,
// else the one where the interaction is.
func (b *Bot) messageConv(ctx context.Context, in *discordgo.Interaction, msg string) bot.ConvKey {
	here := b.placeFor(ctx, in.GuildID, in.ChannelID).key()
	key, _, err := b.core.Store().Message(ctx, here, msg)
	if err != nil {
		if !errors.Is(err, bot.ErrNotFound) {
			b.log.Warn("discord: look up a posted image", "message", msg, "err", err)
		}
		return here
	}
	return key
}

// permManageMessages is Discord's Manage Messages permission: who has it
// in the channel may delete others' messages, the bot's results included.
const permManageMessages int64 = 1 << 13

// mayDeleteOthers reports whether the member may delete other people's
// messages in the interaction's channel (Manage Messages or
// Administrator in the computed permissions).
func mayDeleteOthers(in *discordgo.Interaction) bool {
	return in.Member != nil && in.Member.Permissions&(permManageMessages|permAdministrator) != 0
}

// detailsStyle writes Details for Discord: bold labels, mentions that
// ping nobody (every answer carries an empty allowed_mentions), message
// links and Discord timestamps.
func detailsStyle() bot.DetailsStyle {
	return bot.DetailsStyle{Bold: "**%s**",
		Mention: func(user string) string { return "<@" + user + ">" },
		Link: func(conv bot.ConvKey, t *bot.Turn, label string) string {
			if len(t.Messages) == 0 {
				return ""
			}
			return "[" + label + "](" + messageLink(conv, t.Messages[len(t.Messages)-1]) + ")"
		},
		Time: func(t time.Time) string { return "<t:" + strconv.FormatInt(t.Unix(), 10) + ":f>" },
	}
}

// messageLink is the link to message msg of the conversation at conv: a
// thread's starter message lives in the parent channel, any other of its
// messages in the thread.
func messageLink(conv bot.ConvKey, msg string) string {
	guild := conv.Workspace
	if guild == "" {
		guild = "@me"
	}
	return "https://discord.com/channels/" + guild + "/" + messageChannel(conv, msg) + "/" + msg
}

// messageChannel is the channel message msg of the conversation at conv
// is in: a thread's starter message is in the parent channel (it has the
// thread's id), any other message of a thread in the thread.
func messageChannel(conv bot.ConvKey, msg string) string {
	if conv.Thread != "" && msg != conv.Thread {
		return conv.Thread
	}
	return conv.Channel
}

// details answers the Details button of turn, only to the presser: the
// image's prompt, seed, model and the rest, and "Use these settings".
func (b *Bot) details(ctx context.Context, in *discordgo.Interaction, turn string) {
	// Acknowledged first, only to the presser: finding the image's
	// conversation may wait for a post recorded a moment ago.
	if b.deferResponse(ctx, in, true) != nil {
		return
	}
	conv := b.buttonConv(ctx, in)
	d, err := b.core.Details(ctx, &bot.Request{Conv: conv, Turn: turn})
	if err != nil {
		b.logUnexpected("details", err)
		b.answerDeferred(ctx, in, text(bot.Explain(err)))
		return
	}
	var comps []discordgo.MessageComponent
	if in.Message != nil && snowflake.MatchString(in.Message.ID) && d.Turn.Kind != bot.KindUpload {
		comps = []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
			discordgo.Button{Label: "Use these settings", Style: discordgo.PrimaryButton, CustomID: turnMsgID(actUseSettings, turn, in.Message.ID)},
		}}}
	}
	b.answerDeferred(ctx, in, text(d.Text(detailsStyle()), comps...))
}

// answerDeferred writes the answer of an interaction acknowledged with
// deferResponse (ephemeral when it was deferred so).
func (b *Bot) answerDeferred(ctx context.Context, in *discordgo.Interaction, m outMessage) {
	o := origin{Mode: "i", App: in.AppID, Token: in.Token, Place: place{Channel: in.ChannelID}}
	if o.App == "" {
		o.App, _ = b.ids()
	}
	if _, err := b.editOriginal(ctx, o, m, nil, true); err != nil {
		b.log.Warn("discord: answer interaction", "err", err)
	}
}

// useSettings opens the Edit modal with the settings of turn typed in:
// it edits the image turn was made from (the same base, prompt and seed
// make the same image), or turn itself when it has none.
func (b *Bot) useSettings(ctx context.Context, in *discordgo.Interaction, turn, msg string) {
	conv := b.messageConv(ctx, in, msg)
	d, err := b.core.Details(ctx, &bot.Request{Conv: conv, Turn: turn})
	if err != nil {
		b.answerError(ctx, in, err)
		return
	}
	if err := b.respond(ctx, in, prefilledModal(turnMsgID(actEditTurn, d.Target, msg), d.Settings(), false)); err != nil {
		b.log.Warn("discord: open modal", "err", err)
	}
}

// delete handles the Delete button of turn: the requester, an admin of
// the bot, or a member who may manage messages here deletes the image
// and its posts; anyone else is told who can.
func (b *Bot) delete(ctx context.Context, in *discordgo.Interaction, turn, user string) {
	if b.deferResponse(ctx, in, true) != nil {
		return
	}
	conv := b.buttonConv(ctx, in)
	del, err := b.core.Delete(ctx, &bot.Request{Conv: conv, Turn: turn, User: user, Admin: mayDeleteOthers(in)})
	if err != nil {
		b.logUnexpected("delete", err)
		b.answerDeferred(ctx, in, text(bot.Explain(err)))
		return
	}
	msg := "Deleted."
	if del.Kept {
		msg = "Deleted. A later image was made from it, so I keep it out of sight for undo."
	}
	b.answerDeferred(ctx, in, text(msg))
	// The post the button is on, then any other post of the image in
	// its conversation (an Undo shows an image again).
	if in.Message != nil {
		if err := b.deleteMessage(ctx, in.ChannelID, in.Message.ID); err != nil {
			b.log.Warn("discord: delete a result's post", "message", in.Message.ID, "err", err)
		}
	}
	for _, m := range del.Turn.Messages {
		if in.Message != nil && m == in.Message.ID || !snowflake.MatchString(m) {
			continue
		}
		if err := b.deleteMessage(ctx, messageChannel(conv, m), m); err != nil {
			b.log.Info("discord: could not delete another post of a deleted image", "message", m, "err", err)
		}
	}
}
