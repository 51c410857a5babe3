package slack

import (
	"bytes"
	"context"
	"fmt"
	"time"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
)

// History: "/imagine history" and a result's History button post the
// conversation's contact sheet with two menus, one to make an image
// current and one to open it in a new thread. Each option's value is a
// turnRef (the image and its conversation's thread): nothing is kept in
// memory, so the menus work after a restart.
const (
	actHistory       = "kontext_history"        // button
	actHistoryUse    = "kontext_history_use"    // static_select: make current
	actHistoryBranch = "kontext_history_thread" // static_select: open in a new thread
	blockHistory     = "kontext_history"

	// Block Kit's limits on a static_select.
	maxSelectOptions = 100
	maxOptionText    = 75
)

// historyBlocks are the sheet's caption and menus; thread is the
// conversation's thread ("" for a channel's own conversation), carried
// in every option. The last 100 images are listed when there are more.
func historyBlocks(h *bot.HistorySheet, thread string) slackgo.Blocks {
	items := h.Items
	if len(items) > maxSelectOptions {
		items = items[len(items)-maxSelectOptions:]
	}
	var options []*slackgo.OptionBlockObject
	for _, it := range items {
		options = append(options, slackgo.NewOptionBlockObject(turnRef{Turn: it.Turn.ID, Thread: thread}.value(),
			plain(it.Label(maxOptionText)), nil))
	}
	use := slackgo.NewOptionsSelectBlockElement(slackgo.OptTypeStatic, plain("Make an image current…"), actHistoryUse, options...)
	branch := slackgo.NewOptionsSelectBlockElement(slackgo.OptTypeStatic, plain("Open an image in a new thread…"), actHistoryBranch, options...)
	return slackgo.Blocks{BlockSet: []slackgo.Block{
		slackgo.NewSectionBlock(plain(h.Text(true)), nil, nil),
		slackgo.NewActionBlock(blockHistory, use, branch),
	}}
}

// history posts the contact sheet of the conversation at p.
func (b *Bot) history(ctx context.Context, p place) {
	h, err := b.core.History(ctx, &bot.Request{Kind: bot.KindHistory, Conv: p.conv(), User: p.user})
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	if err := b.postSheet(ctx, p.channel, p.thread, h); err != nil {
		b.reply(ctx, p, err)
	}
}

// postSheet uploads the sheet as history.png with its menus, as images
// are uploaded (files.getUploadURLExternal, then
// files.completeUploadExternal).
func (b *Bot) postSheet(ctx context.Context, channel, thread string, h *bot.HistorySheet) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const name = "history.png"
	u, err := b.api.GetUploadURLExternalContext(ctx, slackgo.GetUploadURLExternalParameters{
		FileName: name, FileSize: len(h.PNG), AltTxt: fmt.Sprintf("The %d images of this conversation, numbered, as a tree", len(h.Items))})
	if err != nil {
		return fmt.Errorf("slack: upload history: files.getUploadURLExternal: %w", err)
	}
	if err := b.api.UploadToURL(ctx, slackgo.UploadToURLParameters{UploadURL: u.UploadURL, Reader: bytes.NewReader(h.PNG), Filename: name}); err != nil {
		return fmt.Errorf("slack: upload history: upload URL: %w", err)
	}
	if _, err := b.api.CompleteUploadExternalContext(ctx, slackgo.CompleteUploadExternalParameters{
		Files: []slackgo.FileSummary{{ID: u.FileID, Title: "History"}}, Channel: channel, ThreadTimestamp: thread,
		Blocks: historyBlocks(h, thread)}); err != nil {
		return fmt.Errorf("slack: upload history: files.completeUploadExternal: %w", err)
	}
	return nil
}

// onHistoryPick handles a pick in a history menu: make the image current
// (shown again in its conversation), or post it in the channel to start a
// new thread from it.
func (b *Bot) onHistoryPick(ctx context.Context, p place, action string, ref turnRef) {
	p.thread = ref.Thread
	req := &bot.Request{Kind: bot.KindUse, Conv: p.conv(), User: p.user, Turn: ref.Turn}
	if action == actHistoryUse {
		d, err := b.core.Use(ctx, req)
		if err != nil {
			b.reply(ctx, p, err)
			return
		}
		b.show(ctx, p, d)
		return
	}
	d, err := b.core.Branch(ctx, req)
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	ts, err := b.postImage(ctx, p.channel, "", d, "")
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	if ts == "" {
		return
	}
	thread := p.conv()
	thread.Thread = ts
	if err := d.Record(ctx, bot.Posted{MessageID: messageID(p.channel, ts), Thread: &thread}); err != nil {
		b.log.Error("slack: record a branch post", "err", err)
	}
}

// show posts an image shown again (an undo, a pick in the history) in
// its conversation at p and records the post.
func (b *Bot) show(ctx context.Context, p place, d *bot.Delivery) {
	ts, err := b.postImage(ctx, p.channel, p.thread, d, "")
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	if ts == "" {
		return
	}
	if err := b.core.RecordPost(ctx, d.Conv, d.Turn.ID, bot.Posted{MessageID: messageID(p.channel, ts)}); err != nil {
		b.log.Error("slack: record a post", "err", err)
	}
}
