package discord

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// downloadTimeout bounds one attachment download.
const downloadTimeout = 30 * time.Second

var (
	errNotDiscordFile = &bot.UserError{Msg: "I can only read images uploaded to Discord itself."}
	errDownload       = &bot.UserError{Msg: "I could not download that image from Discord. Try attaching it again."}
)

// cdnHosts are the hosts Discord serves attachments from.
var cdnHosts = map[string]bool{"cdn.discordapp.com": true, "media.discordapp.net": true}

// allowed reports whether the bot may download from u: Discord's CDN over
// https, or the host of DISCORD_API_URL (a proxy, or a fake in tests).
func (b *Bot) allowed(u *url.URL) bool {
	if u.Scheme == "https" && cdnHosts[strings.ToLower(u.Hostname())] && (u.Port() == "" || u.Port() == "443") {
		return true
	}
	return b.api != nil && u.Scheme == b.api.Scheme && strings.EqualFold(u.Host, b.api.Host)
}

func (b *Bot) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return errors.New("too many redirects")
	}
	if !b.allowed(req.URL) {
		return fmt.Errorf("redirect to %s is not allowed", req.URL.Host)
	}
	return nil
}

// download fetches an attachment's bytes, from an allowed host only, with
// a size cap and a timeout. Its errors are written for the user.
func (b *Bot) download(ctx context.Context, a *discordgo.MessageAttachment) ([]byte, error) {
	if a == nil {
		return nil, bot.ErrNoImage
	}
	if a.Size > bot.MaxImageBytes {
		return nil, bot.ErrImageTooLarge
	}
	u, err := url.Parse(a.URL)
	if err != nil || !b.allowed(u) {
		b.log.Warn("discord: refused to download an attachment from an unexpected host", "url", a.URL)
		return nil, errNotDiscordFile
	}
	ctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &bot.UserError{Msg: errDownload.Msg, Err: err}
	}
	resp, err := b.fetch.Do(req)
	if err != nil {
		return nil, &bot.UserError{Msg: errDownload.Msg, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &bot.UserError{Msg: errDownload.Msg, Err: fmt.Errorf("GET %s: %s", u.Redacted(), resp.Status)}
	}
	if resp.ContentLength > bot.MaxImageBytes {
		return nil, bot.ErrImageTooLarge
	}
	data, err := bot.ReadImage(resp.Body, resp.ContentLength)
	switch {
	case errors.Is(err, bot.ErrImageTooLarge):
		return nil, err
	case err != nil:
		return nil, &bot.UserError{Msg: errDownload.Msg, Err: err}
	}
	return data, nil
}

// imageAttachment returns the first attachment of m that looks like an
// image, or nil.
func imageAttachment(m *discordgo.Message) *discordgo.MessageAttachment {
	if m == nil {
		return nil
	}
	for _, a := range m.Attachments {
		if isImage(a) {
			return a
		}
	}
	return nil
}

func isImage(a *discordgo.MessageAttachment) bool {
	if a == nil {
		return false
	}
	if strings.HasPrefix(strings.ToLower(a.ContentType), "image/") {
		return true
	}
	switch strings.ToLower(path.Ext(a.Filename)) {
	case ".png", ".jpg", ".jpeg", ".webp", ".gif":
		return a.ContentType == ""
	}
	return false
}

// imageAttachments are m's attachments for an edit, in order: every one
// that looks like an image, else its first attachment of any kind (which
// the core then refuses with a clear sentence), else none.
func imageAttachments(m *discordgo.Message) []*discordgo.MessageAttachment {
	if m == nil {
		return nil
	}
	var out []*discordgo.MessageAttachment
	for _, a := range m.Attachments {
		if isImage(a) {
			out = append(out, a)
		}
	}
	if len(out) == 0 && len(m.Attachments) > 0 {
		out = m.Attachments[:1]
	}
	return out
}
