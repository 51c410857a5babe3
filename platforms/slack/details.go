package slack

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
)

// detailsStyle writes Details for Slack: mrkdwn, mentions (an ephemeral
// message notifies nobody), permalinks from chat.getPermalink and
// Slack's dates in the reader's time zone.
func (b *Bot) detailsStyle(ctx context.Context) bot.DetailsStyle {
	return bot.DetailsStyle{Bold: "*%s*", Escape: escape,
		Mention: func(user string) string { return "<@" + user + ">" },
		Link: func(_ bot.ConvKey, t *bot.Turn, label string) string {
			if len(t.Messages) == 0 {
				return ""
			}
			channel, ts, ok := strings.Cut(t.Messages[len(t.Messages)-1], ":")
			if !ok {
				return ""
			}
			link, err := b.api.GetPermalinkContext(ctx, &slackgo.PermalinkParameters{Channel: channel, Ts: ts})
			if err != nil {
				b.log.Debug("slack: chat.getPermalink", "channel", channel, "ts", ts, "err", err)
				return ""
			}
			return "<" + link + "|" + escape(label) + ">"
		},
		Time: func(t time.Time) string {
			return "<!date^" + strconv.FormatInt(t.Unix(), 10) + "^{date_short_pretty} {time}|" + t.UTC().Format("2006-01-02 15:04 UTC") + ">"
		},
	}
}

// details shows the Details of turn to the person at p only, with "Use
// these settings".
func (b *Bot) details(ctx context.Context, p place, turn string) {
	d, err := b.core.Details(ctx, &bot.Request{Conv: p.conv(), Turn: turn, User: p.user})
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	text := d.Text(b.detailsStyle(ctx))
	blocks := detailsBlocks(text, turnRef{Turn: turn, Thread: p.thread}, d.Turn.Kind == bot.KindUpload)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	opts := []slackgo.MsgOption{slackgo.MsgOptionText("Details of this image", false), slackgo.MsgOptionBlocks(blocks...)}
	if p.thread != "" {
		opts = append(opts, slackgo.MsgOptionTS(p.thread))
	}
	if _, err := b.api.PostEphemeralContext(cctx, p.channel, p.user, opts...); err != nil {
		b.log.Warn("slack: post details", "channel", p.channel, "err", err)
		b.ephemeral(ctx, p, text)
	}
}

// useSettings opens the Edit modal with the settings of turn typed in:
// it edits the image turn was made from (the same base, prompt and seed
// make the same image), or turn itself when it has none.
func (b *Bot) useSettings(ctx context.Context, p place, trigger, turn string) {
	d, err := b.core.Details(ctx, &bot.Request{Conv: p.conv(), Turn: turn, User: p.user})
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	meta := editMeta{Team: p.team, Channel: p.channel, Thread: p.thread, Turn: d.Target}
	if _, err := b.api.OpenViewContext(ctx, trigger, prefilledModal(meta, "Edit image", d.Settings())); err != nil {
		b.reply(ctx, p, fmt.Errorf("slack: views.open: %w", err))
	}
}

// delete deletes turn and its post (message ts) for its requester, a
// KONTEXT_ADMINS user or a workspace admin or owner (users.info, as the
// settings ask); anyone else is told who can.
func (b *Bot) delete(ctx context.Context, p place, turn, ts string) {
	req := &bot.Request{Conv: p.conv(), Turn: turn, User: p.user}
	del, err := b.core.Delete(ctx, req)
	if errors.Is(err, bot.ErrCannotDelete) {
		// Only now ask Slack whether they administer the workspace.
		if admin, aerr := b.workspaceAdmin(ctx, p.team, p.user); aerr == nil && admin {
			req.Admin = true
			del, err = b.core.Delete(ctx, req)
		} else if aerr != nil {
			b.log.Info("slack: could not tell whether a user is a workspace admin", "user", p.user, "err", aerr)
		}
	}
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	// The post the button is on, then any other post of the image (an
	// Undo shows an image again).
	if ts != "" {
		b.deleteMessage(ctx, p.channel, ts)
	}
	for _, m := range del.Turn.Messages {
		if channel, mts, ok := strings.Cut(m, ":"); ok && !(channel == p.channel && mts == ts) {
			b.deleteMessage(ctx, channel, mts)
		}
	}
	msg := "Deleted."
	if del.Kept {
		msg = "Deleted. A later image was made from it, so I keep it out of sight for undo."
	}
	b.ephemeral(ctx, p, msg)
}
