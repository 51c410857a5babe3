package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	slackgo "github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"

	"kontextbot/bot"
)

func parseURL(s string) (*url.URL, error) { return url.Parse(s) }

// Help is what the bot answers to /imagine help (or without a prompt), and
// to a mention it cannot act on: the same help as Discord's /help.
var Help = bot.Help(bot.HelpStyle{Bold: "*%s*", Imagine: "/imagine PROMPT", Edit: "/edit PROMPT", Usage: "/usage",
	Help: "/imagine help", Options: "Options: `--ar 16:9`, `--seed N` (same seed + same prompt = same image), `--model pro`, `--enhance` (the model enhances your prompt). Its message starts the picture's thread.",
	Menu: "⋯ More actions on a message with an image", Buttons: true, Thread: "the picture's thread", Settings: "/imagine settings",
	History: "History (or /imagine history)", Use: "pick one in its menu",
	Mention:    "*@kontextbot PROMPT* with an image attached, or in a thread below one: edits that image. Attach up to 3 more images (or post them in a picture's thread) to use them too.",
	Variations: "--n 4"})

// handleEvent handles one Events API event, already acknowledged. A retry
// of an event this process saw is dropped at once; the messages the bot
// acts on are claimed in the store besides (first), so neither a retry
// after a restart nor the message and app_mention events of one message
// act twice.
func (b *Bot) handleEvent(ctx context.Context, ev slackevents.EventsAPIEvent) {
	if cb, ok := ev.Data.(*slackevents.EventsAPICallbackEvent); ok && cb.EventID != "" && !b.seen.first("event:"+cb.EventID) {
		return // a retry of an event already handled
	}
	team := ev.TeamID
	if team == "" {
		team = b.team
	}
	switch e := ev.InnerEvent.Data.(type) {
	case *slackevents.MessageEvent:
		b.onMessage(ctx, team, e)
	case *slackevents.AppMentionEvent:
		b.onMention(ctx, team, e)
	}
}

// fromBot reports whether a message was written by a bot (this one or
// another) rather than a person.
func (b *Bot) fromBot(user, botID string) bool {
	return user == "" || botID != "" || user == b.botUser
}

// onMessage: in a picture's thread, a person's message edits the current
// image, using the images attached to it too (after it, in order). In a
// direct message with the bot, a top-level message counts as a mention.
func (b *Bot) onMessage(ctx context.Context, team string, e *slackevents.MessageEvent) {
	m := e.Message
	if m == nil {
		return
	}
	switch e.SubType {
	case "", "file_share", "thread_broadcast":
	default:
		return // edits, deletions, joins, bot messages...
	}
	if b.fromBot(m.User, m.BotID) || b.fromBot(e.User, e.BotID) {
		return
	}
	channel, ts, thread := e.Channel, m.Timestamp, m.ThreadTimestamp
	if channel == "" || ts == "" {
		return
	}
	p := place{team: team, channel: channel, thread: thread, user: m.User}
	if thread == "" || thread == ts {
		if e.ChannelType == slackevents.ChannelTypeIM {
			b.mention(ctx, p, ts, m.Text, m.Files)
		}
		return
	}
	key := p.conv()
	ok, err := b.pictureThread(ctx, key)
	if err == nil && !ok && m.ParentUserId == b.botUser {
		// A reply to one of the bot's messages: maybe a picture whose
		// thread the core records a moment after it is posted.
		ok, err = b.awaitPictureThread(ctx, key, 5*time.Second)
	}
	if err != nil || !ok {
		if err != nil {
			b.log.Error("slack: look up thread", "key", key.String(), "err", err)
		}
		return
	}
	handled, ok := b.firstMessage(ctx, team, messageID(channel, ts))
	if !ok {
		return
	}
	defer handled()
	prompt, opts, err := bot.ParseOptions(b.cleanText(m.Text))
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	req := &bot.Request{Kind: bot.KindEdit, Conv: key, User: m.User, Prompt: prompt,
		Aspect: opts.Aspect, Seed: opts.Seed, Model: opts.Model, Enhance: opts.Enhance, Count: opts.Count}
	if len(m.Files) > 0 {
		// The thread's current image first, then the files, in order.
		fs, err := b.pickFiles(ctx, m.Files)
		if err == nil {
			req.Refs, err = b.downloadRefs(ctx, fs)
		}
		if err != nil {
			b.reply(ctx, p, err)
			return
		}
	}
	b.submit(ctx, p, req)
}

// pictureThread reports whether the thread at key is one of the bot's
// conversations.
func (b *Bot) pictureThread(ctx context.Context, key bot.ConvKey) (bool, error) {
	if key.Thread == "" {
		return false, nil
	}
	_, err := b.core.Store().Conversation(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, bot.ErrNotFound):
		return false, nil
	}
	return false, err
}

// awaitPictureThread waits up to d for the thread at key to become a
// picture thread.
func (b *Bot) awaitPictureThread(ctx context.Context, key bot.ConvKey, d time.Duration) (bool, error) {
	deadline := time.Now().Add(d)
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		ok, err := b.pictureThread(ctx, key)
		if ok || err != nil || time.Now().After(deadline) {
			return ok, err
		}
	}
}

// onMention: outside the bot's threads, a mention with an image attached,
// or in a thread below an image, edits that image.
func (b *Bot) onMention(ctx context.Context, team string, e *slackevents.AppMentionEvent) {
	if b.fromBot(e.User, e.BotID) || e.Edited != nil {
		return
	}
	p := place{team: team, channel: e.Channel, thread: e.ThreadTimeStamp, user: e.User}
	if p.thread != "" && p.thread != e.TimeStamp {
		if ok, err := b.pictureThread(ctx, p.conv()); err != nil || ok {
			return // the message event handles messages in picture threads
		}
	}
	b.mention(ctx, p, e.TimeStamp, e.Text, e.Files)
}

// mention edits the image attached to a message, or the latest image
// above it in its thread; further attached images are used too, in order
// (in a thread, all of them come after the image above). The result goes to the message's thread.
func (b *Bot) mention(ctx context.Context, p place, ts, text string, files []slackgo.File) {
	handled, ok := b.firstMessage(ctx, p.team, messageID(p.channel, ts))
	if !ok {
		return
	}
	defer handled()
	top := p.thread == "" || p.thread == ts
	if top {
		p.thread = ts // answer in the message's own thread
	}
	prompt, opts, err := bot.ParseOptions(b.cleanText(text))
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	req := &bot.Request{Kind: bot.KindEdit, Conv: p.conv(), User: p.user, Prompt: prompt,
		Aspect: opts.Aspect, Seed: opts.Seed, Model: opts.Model, Enhance: opts.Enhance, Count: opts.Count}
	var above *slackgo.Message
	if !top {
		if above, err = b.imageAbove(ctx, p.channel, p.thread, ts); err != nil {
			b.reply(ctx, p, err)
			return
		}
	}
	switch {
	case len(files) > 0:
		// The files in order; in a thread, after the latest image above.
		fs, err := b.pickFiles(ctx, files)
		if err == nil && above != nil {
			err = b.baseFromMessage(ctx, req, p.conv(), above.Timestamp, b.fromBot(above.User, above.BotID), above.Files)
		} else if err == nil {
			req.Image, err = b.download(ctx, fileURL(fs[0]))
			fs = fs[1:]
		}
		if err == nil {
			req.Refs, err = b.downloadRefs(ctx, fs)
		}
		if err != nil {
			b.reply(ctx, p, err)
			return
		}
	case !top:
		msg := above
		if msg == nil {
			b.ephemeral(ctx, p, "I found no image above in this thread. Attach one to your message, or reply in a picture's thread.")
			return
		}
		if err := b.baseFromMessage(ctx, req, p.conv(), msg.Timestamp, b.fromBot(msg.User, msg.BotID), msg.Files); err != nil {
			b.reply(ctx, p, err)
			return
		}
	default:
		if strings.TrimSpace(prompt) == "" {
			b.ephemeral(ctx, p, Help)
		} else {
			b.ephemeral(ctx, p, "To edit an image, attach it to your message (or mention me in a thread below one). To make a new one, use /imagine "+prompt)
		}
		return
	}
	b.submit(ctx, p, req)
}

// imageAbove returns the latest message with an image in a thread,
// before the message at ts; nil when there is none.
func (b *Bot) imageAbove(ctx context.Context, channel, thread, ts string) (*slackgo.Message, error) {
	var all []slackgo.Message
	cursor := ""
	for range 10 {
		msgs, more, next, err := b.api.GetConversationRepliesContext(ctx, &slackgo.GetConversationRepliesParameters{
			ChannelID: channel, Timestamp: thread, Cursor: cursor, Limit: 200})
		if err != nil {
			return nil, fmt.Errorf("slack: conversations.replies: %w", err)
		}
		all = append(all, msgs...)
		if !more || next == "" {
			break
		}
		cursor = next
	}
	sort.SliceStable(all, func(i, j int) bool { return tsLess(all[i].Timestamp, all[j].Timestamp) })
	for i := len(all) - 1; i >= 0; i-- {
		m := &all[i]
		if !tsLess(m.Timestamp, ts) {
			continue
		}
		for j := range m.Files {
			if isImageFile(&m.Files[j]) || isStub(&m.Files[j]) && b.stubIsImage(ctx, &m.Files[j]) {
				return m, nil
			}
		}
	}
	return nil, nil
}

// tsAge is how long ago a message with Slack timestamp ts was posted
// (negative when ts is not a timestamp).
func tsAge(ts string) time.Duration {
	sec, frac, _ := strings.Cut(ts, ".")
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return -1
	}
	us, _ := strconv.ParseInt((frac + "000000")[:6], 10, 64)
	return time.Since(time.Unix(s, us*1000))
}

// tsLess orders Slack timestamps ("1712345678.000200").
func tsLess(a, b string) bool {
	as, af, _ := strings.Cut(a, ".")
	bs, bf, _ := strings.Cut(b, ".")
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	if as != bs {
		return as < bs
	}
	for len(af) < len(bf) {
		af += "0"
	}
	for len(bf) < len(af) {
		bf += "0"
	}
	return af < bf
}

// baseFromMessage sets the base of an edit to the image of the message at
// ts in the conversation at key: the bot's own result by its id, or a
// person's image downloaded.
func (b *Bot) baseFromMessage(ctx context.Context, req *bot.Request, key bot.ConvKey, ts string, own bool, files []slackgo.File) error {
	id := messageID(key.Channel, ts)
	req.ReplyTo = id
	if own {
		// The core records where a result was posted just after posting
		// it: for a message that new, give it a moment.
		wait := time.Duration(0)
		if age := tsAge(ts); age >= 0 && age < 30*time.Second {
			wait = 3 * time.Second
		}
		for deadline := time.Now().Add(wait); ; {
			_, _, err := b.core.Store().Message(ctx, key, id)
			if err == nil {
				return nil
			}
			if !errors.Is(err, bot.ErrNotFound) || time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	f, err := b.pickFile(ctx, files)
	if err != nil {
		return err
	}
	req.ReplyImage, err = b.download(ctx, fileURL(f))
	return err
}

var mentionRE = regexp.MustCompile(`<@([A-Z0-9]+)(\|[^>]*)?>`)

// cleanText turns message text into a prompt: the bot's own mentions
// removed, Slack's escaping undone.
func (b *Bot) cleanText(text string) string {
	text = mentionRE.ReplaceAllStringFunc(text, func(m string) string {
		if sub := mentionRE.FindStringSubmatch(m); sub != nil && sub[1] == b.botUser {
			return ""
		}
		return m
	})
	return strings.TrimSpace(unescape(text))
}

// submit checks the request with the core, posts a status message where
// it was made, then hands the request to the core with the status message
// in its Origin (so a restart finds it). A refused request is told why,
// only to the requester; one refused only at Submit (the queue's limits)
// takes its status message back.
func (b *Bot) submit(ctx context.Context, p place, req *bot.Request) {
	if err := b.core.Check(ctx, req); err != nil {
		b.reply(ctx, p, err)
		return
	}
	statusTS, err := b.postStatus(ctx, p.channel, p.thread, req.Prompt) // a reroll has no prompt yet
	if err != nil {
		if notInChannel(err) {
			b.ephemeral(ctx, p, fmt.Sprintf("I'm not in this channel yet: invite me with /invite @%s, then try again.", b.botName))
			return
		}
		b.reply(ctx, p, fmt.Errorf("slack: post status: %w", err))
		return
	}
	req.Origin = map[string]string{originChannel: p.channel, originThread: p.thread, originStatus: statusTS, originUser: p.user}
	job, err := b.core.Submit(ctx, req)
	if err != nil {
		b.deleteMessage(ctx, p.channel, statusTS)
		b.reply(ctx, p, err)
		return
	}
	b.log.Debug("slack: job accepted", "job", job.ID, "kind", job.Kind, "conv", job.Conv.String())
}

// handleSlash handles a slash command, already acknowledged, once per
// trigger_id.
func (b *Bot) handleSlash(ctx context.Context, cmd slackgo.SlashCommand) {
	team := cmd.TeamID
	if team == "" {
		team = b.team
	}
	if cmd.TriggerID != "" && !b.first(ctx, team, "trigger", cmd.TriggerID) {
		return
	}
	p := place{team: team, channel: cmd.ChannelID, user: cmd.UserID, responseURL: cmd.ResponseURL}
	text := strings.TrimSpace(unescape(cmd.Text))
	name := strings.TrimPrefix(cmd.Command, "/")
	switch {
	case strings.HasSuffix(name, "imagine") && strings.EqualFold(text, "settings"):
		b.openSettings(ctx, p, cmd.TriggerID)
	case strings.HasSuffix(name, "usage") || strings.HasSuffix(name, "imagine") && strings.EqualFold(text, "usage"):
		b.usage(ctx, p)
	case strings.HasSuffix(name, "imagine") && strings.EqualFold(text, "history"):
		b.history(ctx, p)
	case strings.HasSuffix(name, "imagine") && (text == "" || strings.EqualFold(text, "help")):
		b.ephemeral(ctx, p, Help)
	case strings.HasSuffix(name, "imagine"):
		b.command(ctx, p, bot.KindImagine, text, cmd.UserName)
	case strings.HasSuffix(name, "edit") && text == "":
		b.ephemeral(ctx, p, "Say what to change: /edit make it night. It edits this channel's latest picture.")
	case strings.HasSuffix(name, "edit"):
		b.command(ctx, p, bot.KindEdit, text, cmd.UserName)
	default:
		b.ephemeral(ctx, p, Help)
	}
}

// command runs /imagine or /edit in a channel; the result becomes the
// root of a new picture thread.
func (b *Bot) command(ctx context.Context, p place, kind bot.Kind, text, userName string) {
	prompt, opts, err := bot.ParseOptions(text)
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	b.submit(ctx, p, &bot.Request{Kind: kind, Conv: p.conv(), User: p.user, UserName: userName,
		Prompt: prompt, Aspect: opts.Aspect, Seed: opts.Seed, Model: opts.Model, Enhance: opts.Enhance, Count: opts.Count})
}

func (b *Bot) usage(ctx context.Context, p place) {
	rep, err := b.core.Usage(ctx, &bot.Request{Kind: bot.KindUsage, Conv: p.conv(), User: p.user})
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	b.ephemeral(ctx, p, rep.Text())
}

// handleInteraction handles a button, the shortcut or a modal
// submission, already acknowledged.
func (b *Bot) handleInteraction(ctx context.Context, cb slackgo.InteractionCallback) {
	team := cb.Team.ID
	if team == "" {
		team = cb.User.TeamID
	}
	if team == "" {
		team = b.team
	}
	if cb.TriggerID != "" && !b.first(ctx, team, "trigger", cb.TriggerID) {
		return
	}
	switch cb.Type {
	case slackgo.InteractionTypeBlockActions:
		for _, a := range cb.ActionCallback.BlockActions {
			b.onButton(ctx, team, cb, a)
		}
	case slackgo.InteractionTypeMessageAction:
		if cb.CallbackID == cbShortcut {
			b.onShortcut(ctx, team, cb)
		}
	case slackgo.InteractionTypeViewSubmission:
		switch cb.View.CallbackID {
		case cbEditModal:
			b.onEditSubmit(ctx, cb)
		case cbSettings:
			b.onSettingsSubmit(ctx, cb)
		}
	}
}

// onButton handles Reroll, Undo, Edit, History, Details, Delete, Use
// these settings, Cancel and the history's menus.
func (b *Bot) onButton(ctx context.Context, team string, cb slackgo.InteractionCallback, a *slackgo.BlockAction) {
	channel := cb.Container.ChannelID
	if channel == "" {
		channel = cb.Channel.ID
	}
	p := place{team: team, channel: channel, thread: cb.Container.ThreadTs, user: cb.User.ID, responseURL: cb.ResponseURL}
	if a.ActionID == actCancel {
		if err := b.core.Cancel(ctx, a.Value, p.user); err != nil {
			b.reply(ctx, p, err)
		}
		return
	}
	if a.ActionID == actHistoryUse || a.ActionID == actHistoryBranch {
		if ref, ok := parseTurnRef(a.SelectedOption.Value); ok {
			b.onHistoryPick(ctx, p, a.ActionID, ref)
		}
		return
	}
	ref, ok := parseTurnRef(a.Value)
	if !ok {
		return
	}
	// The conversation of an image is its thread; a message that is
	// itself the thread's root carries no thread in its buttons.
	p.thread = ref.Thread
	if p.thread == "" {
		p.thread = cb.Container.ThreadTs
	}
	if p.thread == "" {
		p.thread = cb.Container.MessageTs
	}
	key := p.conv()
	switch a.ActionID {
	case actReroll:
		b.submit(ctx, p, &bot.Request{Kind: bot.KindReroll, Conv: key, User: p.user, Turn: ref.Turn})
	case actUndo:
		b.undo(ctx, p, ref.Turn)
	case actHistory:
		b.history(ctx, p)
	case actUse:
		age := tsAge(cb.Container.MessageTs)
		b.use(ctx, p, ref.Turn, messageID(channel, cb.Container.MessageTs), age >= 0 && age < 30*time.Second)
	case actEdit:
		meta := editMeta{Team: team, Channel: channel, Thread: p.thread, Turn: ref.Turn}
		if _, err := b.api.OpenViewContext(ctx, cb.TriggerID, editModal(meta, "Edit image")); err != nil {
			b.reply(ctx, p, fmt.Errorf("slack: views.open: %w", err))
		}
	case actDetails:
		b.details(ctx, p, ref.Turn)
	case actUseSettings:
		b.useSettings(ctx, p, cb.TriggerID, ref.Turn)
	case actDelete:
		if cb.Container.IsEphemeral {
			return
		}
		b.delete(ctx, p, ref.Turn, cb.Container.MessageTs)
	}
}

// undo steps the conversation back and shows the image it returns to.
func (b *Bot) undo(ctx context.Context, p place, turn string) {
	d, err := b.core.Undo(ctx, &bot.Request{Kind: bot.KindUndo, Conv: p.conv(), User: p.user, Turn: turn})
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	b.show(ctx, p, d)
}

// use makes one image of a variations message the current image of its
// thread and shows it there again, with its own buttons.
func (b *Bot) use(ctx context.Context, p place, turn, msgID string, fresh bool) {
	// The core records a group's thread (every image, then the message)
	// just after Slack shares the message: a button pressed on a message
	// that new waits for that record.
	for deadline := time.Now().Add(3 * time.Second); fresh && time.Now().Before(deadline); {
		if _, _, err := b.core.Store().Message(ctx, p.conv(), msgID); !errors.Is(err, bot.ErrNotFound) {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	d, err := b.core.Use(ctx, &bot.Request{Conv: p.conv(), User: p.user, Turn: turn})
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	ts, err := b.postImage(ctx, p.channel, p.thread, d, "")
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	if ts == "" {
		return
	}
	if err := d.Record(ctx, bot.Posted{MessageID: messageID(p.channel, ts)}); err != nil {
		b.log.Error("slack: record use post", "err", err)
	}
}

// onShortcut opens the edit modal for a message's image.
func (b *Bot) onShortcut(ctx context.Context, team string, cb slackgo.InteractionCallback) {
	msg := cb.Message
	ts := msg.Timestamp
	if ts == "" {
		ts = cb.MessageTs
	}
	p := place{team: team, channel: cb.Channel.ID, thread: msg.ThreadTimestamp, user: cb.User.ID, responseURL: cb.ResponseURL}
	fs, err := b.pickFiles(ctx, msg.Files)
	if err == nil && len(fs) > bot.MaxImages {
		err = bot.ErrTooManyImages
	}
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	for _, f := range fs {
		if u, err := url.Parse(fileURL(f)); err != nil || !b.mayReceiveToken(u) {
			b.reply(ctx, p, errForeignFile)
			return
		}
	}
	f := fs[0]
	thread := msg.ThreadTimestamp
	if thread == "" {
		thread = ts // the edit continues in the message's own thread
	}
	meta := editMeta{Team: team, Channel: cb.Channel.ID, Thread: thread, Msg: messageID(cb.Channel.ID, ts),
		Own:  b.fromBot(msg.User, msg.BotID),
		File: &fileRef{URL: fileURL(f), Name: f.Name, Mime: f.Mimetype, Size: f.Size}}
	for _, f := range fs[1:] {
		meta.More = append(meta.More, fileRef{URL: fileURL(f), Name: f.Name, Mime: f.Mimetype, Size: f.Size})
	}
	if _, err := b.api.OpenViewContext(ctx, cb.TriggerID, editModal(meta, "Edit image")); err != nil {
		b.reply(ctx, p, fmt.Errorf("slack: views.open: %w", err))
	}
}

// onEditSubmit runs the edit a modal asked for.
func (b *Bot) onEditSubmit(ctx context.Context, cb slackgo.InteractionCallback) {
	var meta editMeta
	if err := json.Unmarshal([]byte(cb.View.PrivateMetadata), &meta); err != nil || meta.Channel == "" {
		b.log.Warn("slack: edit modal without metadata", "err", err)
		return
	}
	p := place{team: meta.Team, channel: meta.Channel, thread: meta.Thread, user: cb.User.ID}
	if p.team == "" {
		p.team = b.team
	}
	text := ""
	if cb.View.State != nil {
		text = cb.View.State.Values[blockPrompt][actPrompt].Value
	}
	prompt, opts, err := bot.ParseOptions(text)
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	req := &bot.Request{Kind: bot.KindEdit, Conv: p.conv(), User: p.user, UserName: cb.User.Name, Prompt: prompt,
		Aspect: opts.Aspect, Seed: opts.Seed, Model: opts.Model, Enhance: opts.Enhance, Count: opts.Count, Turn: meta.Turn}
	if meta.Msg != "" && meta.File != nil {
		_, ts, _ := strings.Cut(meta.Msg, ":")
		files := []slackgo.File{{URLPrivate: meta.File.URL, Name: meta.File.Name, Mimetype: meta.File.Mime, Size: meta.File.Size}}
		if err := b.baseFromMessage(ctx, req, p.conv(), ts, meta.Own, files); err != nil {
			b.reply(ctx, p, err)
			return
		}
		more := make([]*slackgo.File, 0, len(meta.More))
		for _, f := range meta.More {
			more = append(more, &slackgo.File{URLPrivate: f.URL, Name: f.Name, Mimetype: f.Mime, Size: f.Size})
		}
		var err error
		if req.Refs, err = b.downloadRefs(ctx, more); err != nil {
			b.reply(ctx, p, err)
			return
		}
	}
	b.submit(ctx, p, req)
}

// claimTTL is how long a command, interaction or message stays claimed:
// well past Slack's retries and its 5-minute signature window.
const claimTTL = time.Hour

// handlingTTL is how long a message stays claimed while a replica
// handles it (see firstMessage): a replica that dies meanwhile, before
// it acknowledged the event, blocks Slack's retries of it for no longer.
// Slack retries an unacknowledged event at once, after a minute and
// after five.
const handlingTTL = 30 * time.Second

// firstMessage claims a message (an Events API message or app_mention)
// of team and reports whether this delivery should handle it; handled
// marks it handled for claimTTL, to be called when its handling ends. A
// message is claimed twice: for handlingTTL while it is handled, so a
// replica killed before it acknowledged the event (its job is stored
// first, then the event acknowledged) leaves a claim that expires before
// Slack's later retries, which another replica then handles; and, once
// handled, for claimTTL, so a retry of an event whose acknowledgement was
// lost is dropped. Should the store fail, the message is handled.
func (b *Bot) firstMessage(ctx context.Context, team, id string) (handled func(), ok bool) {
	key := Platform + "/" + team + "/msg/" + id
	done := Platform + "/" + team + "/msg/done/" + id
	handled = func() {
		if _, err := b.core.Store().Claim(context.WithoutCancel(ctx), done, claimTTL); err != nil {
			b.log.Error("slack: claim", "key", done, "err", err)
		}
	}
	for _, c := range []struct {
		key string
		ttl time.Duration
	}{
		{done, 0}, // a probe: handled before?
		{key, handlingTTL},
	} {
		first, err := b.core.Store().Claim(ctx, c.key, c.ttl)
		if err != nil {
			b.log.Error("slack: claim", "key", c.key, "err", err)
			return handled, true
		}
		if !first {
			b.log.Info("slack: dropped a repeated delivery", "kind", "msg", "id", id)
			return nil, false
		}
	}
	return handled, true
}

// first claims a command or interaction (kind "trigger", by trigger_id)
// or a message (kind "msg") of team in the store, and reports whether
// this is its first delivery, in this process or any earlier one. Slack
// may deliver the same thing twice (its retries, a command sent again);
// only the first is acted on. Should the store fail, the request is
// handled: its Submit then fails and says so.
func (b *Bot) first(ctx context.Context, team, kind, id string) bool {
	key := Platform + "/" + team + "/" + kind + "/" + id
	ok, err := b.core.Store().Claim(ctx, key, claimTTL)
	if err != nil {
		b.log.Error("slack: claim", "key", key, "err", err)
		return true
	}
	if !ok {
		b.log.Info("slack: dropped a repeated delivery", "kind", kind, "id", id)
	}
	return ok
}
