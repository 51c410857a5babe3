package discord

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// noMentions lets a message ping nobody: no @everyone, no roles, no users,
// not even the author of a message it replies to.
func noMentions() *discordgo.MessageAllowedMentions {
	return &discordgo.MessageAllowedMentions{Parse: []discordgo.AllowedMentionType{}}
}

// outMessage is a message create or edit body. Components is never nil,
// so an edit always sets them (an empty list removes buttons), and
// allowed_mentions is always empty.
type outMessage struct {
	Content         string                            `json:"content"`
	Components      []discordgo.MessageComponent      `json:"components"`
	Attachments     []outAttachment                   `json:"attachments,omitempty"`
	AllowedMentions *discordgo.MessageAllowedMentions `json:"allowed_mentions"`
	Reference       *discordgo.MessageReference       `json:"message_reference,omitempty"`
	Flags           discordgo.MessageFlags            `json:"flags,omitempty"`
	// Nonce, with EnforceNonce, makes a message create idempotent: for a
	// few minutes Discord answers a create with the same nonce with the
	// message already made. Only for creates (see once).
	Nonce        string `json:"nonce,omitempty"`
	EnforceNonce bool   `json:"enforce_nonce,omitempty"`
}

// once marks a message create as idempotent under a nonce made of a kind
// letter and an id that names the post (a job, a person's message, an
// interaction): a create that failed in a way that leaves its fate
// unknown (a server error, a lost connection) can then be sent again
// without posting twice.
func once(m outMessage, kind, id string) outMessage {
	m.Nonce, m.EnforceNonce = truncateBytes(kind+id, 25), true
	return m
}

func truncateBytes(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// outAttachment describes files[id]: its name and alt text.
type outAttachment struct {
	ID          int    `json:"id"`
	Filename    string `json:"filename"`
	Description string `json:"description,omitempty"`
}

// outFile is a file to upload with a message: files[0]; More are
// files[1], files[2]... of the same message (a variations message).
type outFile struct {
	Name        string
	ContentType string
	Data        []byte
	More        []*outFile
}

func text(content string, components ...discordgo.MessageComponent) outMessage {
	if components == nil {
		components = []discordgo.MessageComponent{}
	}
	return outMessage{Content: truncate(content, 2000), Components: components, AllowedMentions: noMentions()}
}

// truncate cuts s to at most n characters, marking the cut.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// call sends one REST request with body (multipart when file is set) and
// decodes the message Discord answers, if any. Rate limits are not retried
// here: see retry.
func (b *Bot) call(ctx context.Context, method, endpoint, bucket string, body outMessage, file *outFile) (*discordgo.Message, error) {
	if body.Components == nil {
		body.Components = []discordgo.MessageComponent{}
	}
	body.AllowedMentions = noMentions()
	opts := []discordgo.RequestOption{discordgo.WithContext(ctx), discordgo.WithRetryOnRatelimit(false)}
	var resp []byte
	var err error
	if file != nil {
		files := []*discordgo.File{{Name: file.Name, ContentType: file.ContentType, Reader: bytes.NewReader(file.Data)}}
		for _, f := range file.More {
			files = append(files, &discordgo.File{Name: f.Name, ContentType: f.ContentType, Reader: bytes.NewReader(f.Data)})
		}
		ct, data, merr := discordgo.MultipartBodyWithJSON(body, files)
		if merr != nil {
			return nil, merr
		}
		resp, err = b.s.RequestRaw(method, endpoint, ct, data, bucket, 0, opts...)
	} else {
		resp, err = b.s.RequestWithBucketID(method, endpoint, body, bucket, opts...)
	}
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(resp)) == 0 {
		return nil, nil
	}
	var m discordgo.Message
	if err := json.Unmarshal(resp, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Rate-limit waits. Discord's retry_after is waited in full (a shorter
// wait only earns another 429), bounded by the caller's deadline; a wait
// past the deadline is not started at all, and the 429 is returned for a
// retry layer to hold the work. maxRateWait bounds a wait when the caller
// has no deadline.
const (
	maxRateTries = 10
	maxRateWait  = 15 * time.Minute
)

// retry runs f until it succeeds, waiting out rate limits (429) as long
// as Discord asks and, for idempotent calls, retrying transient server
// errors a few times.
func (b *Bot) retry(ctx context.Context, what string, idempotent bool, f func(opts []discordgo.RequestOption) error) error {
	opts := []discordgo.RequestOption{discordgo.WithContext(ctx), discordgo.WithRetryOnRatelimit(false)}
	for attempt := 1; ; attempt++ {
		err := f(opts)
		var wait time.Duration
		var rl *discordgo.RateLimitError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &rl) && attempt < maxRateTries:
			wait = max(rl.RetryAfter, 50*time.Millisecond)
			if dl, ok := ctx.Deadline(); ok && b.now().Add(wait).After(dl) || wait > maxRateWait {
				b.log.Warn("discord: rate limited for longer than the work may wait", "what", what, "retry_after", rl.RetryAfter)
				return err
			}
			b.log.Info("discord: rate limited; retrying", "what", what, "after", wait)
		case idempotent && transient(err) && attempt < 4 && !callerRetries(ctx):
			wait = time.Duration(attempt) * 500 * time.Millisecond
			b.log.Info("discord: transient error; retrying", "what", what, "after", wait, "err", err)
		default:
			return err
		}
		if rl != nil {
			err = b.wait(ctx, wait)
		} else {
			err = sleep(ctx, wait)
		}
		if err != nil {
			return err
		}
	}
}

// transient reports a failure worth retrying for an idempotent call: a
// server error (500, 502, 503, 504) or a connection that failed or broke.
func transient(err error) bool {
	switch status(err) {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// Temporary reports whether a failed Discord call may succeed if tried
// again later: a rate limit (429), a server error (5xx) or a network
// failure. Any other answer of Discord's (4xx: missing access, unknown
// channel, too large...) is permanent: the same request fails the same
// way. Errors are classified with errors.As, never by their text.
func Temporary(err error) bool {
	if err == nil {
		return false
	}
	var rl *discordgo.RateLimitError
	if errors.As(err, &rl) {
		return true
	}
	var re *discordgo.RESTError
	if errors.As(err, &re) {
		if re.Response == nil {
			return true
		}
		s := re.Response.StatusCode
		return s == http.StatusTooManyRequests || s >= 500
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded)
}

// deliveryError is an error Deliver returns: it says, through Temporary,
// whether posting may succeed later, so a retry layer can decide without
// knowing Discord (errors.As with interface{ Temporary() bool }).
type deliveryError struct {
	err       error
	temporary bool
}

// Error is the failure, without the interaction token a webhook URL
// carries (a network error names the URL it failed on).
func (e *deliveryError) Error() string {
	var ue *url.Error
	if errors.As(e.err, &ue) {
		return ue.Op + " " + webhookToken.ReplaceAllString(ue.URL, "/webhooks/$1/…") + ": " + ue.Err.Error()
	}
	return e.err.Error()
}

// webhookToken finds the token in a webhook URL, for redaction.
var webhookToken = regexp.MustCompile(`/webhooks/([0-9]+)/[^/?]+`)

func (e *deliveryError) Unwrap() error   { return e.err }
func (e *deliveryError) Temporary() bool { return e.temporary }

// classify wraps a failed post's error with its classification; a
// temporary one is also marked bot.Transient, with the wait a rate limit
// asked for, so the core tries the post again in the process.
func classify(err error) error {
	if err == nil {
		return nil
	}
	de := &deliveryError{err: err, temporary: Temporary(err)}
	if !de.temporary {
		return de
	}
	after, _ := rateLimited(err)
	return bot.Transient(de, after)
}

type callerRetriesKey struct{}

// withCallerRetries marks ctx as that of a caller that retries transient
// server errors itself (the core, posting a result, with its backoff and
// a status line): calls under it return such errors at once instead of
// trying again a few times. Rate limits are still waited out as Discord
// asks.
func withCallerRetries(ctx context.Context) context.Context {
	return context.WithValue(ctx, callerRetriesKey{}, true)
}

func callerRetries(ctx context.Context) bool {
	v, _ := ctx.Value(callerRetriesKey{}).(bool)
	return v
}

// badGatewayError is a 502 from Discord's edge (Cloudflare) to a request
// that is not a GET. The transport reports it as an error, before
// discordgo sees it: discordgo would send the request again by itself
// (a message create too, with no way to tell whether the first one
// landed), then return an error no errors.As can classify.
type badGatewayError struct{ method string }

func (e *badGatewayError) Error() string {
	return "discord: " + e.method + ": 502 Bad Gateway"
}

// Temporary reports that a 502 may pass.
func (e *badGatewayError) Temporary() bool { return true }

// status is the HTTP status of a REST error, or 0.
func status(err error) int {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode
	}
	return 0
}

// code is Discord's JSON error code of a REST error, or 0.
func code(err error) int {
	var re *discordgo.RESTError
	if errors.As(err, &re) && re.Message != nil {
		return re.Message.Code
	}
	return 0
}

// Discord's JSON error codes the adapter acts on.
const (
	codeUnknownChannel     = 10003
	codeUnknownMessage     = 10008
	codeMissingAccess      = 50001
	codeMissingPermissions = 50013
	codeTooLarge           = 40005
	codeThreadArchived     = 50083 // operation cannot be performed on an archived thread
	codeThreadLocked       = 160005
)

// threadGone reports a thread the bot can no longer post in: deleted
// (Unknown Channel), or archived and locked.
func threadGone(err error) bool {
	switch code(err) {
	case codeUnknownChannel, codeThreadArchived, codeThreadLocked:
		return true
	}
	return false
}

// threadsDenied reports a thread creation refused for want of permission.
func threadsDenied(err error) bool {
	return status(err) == http.StatusForbidden && (code(err) == codeMissingPermissions || code(err) == codeMissingAccess)
}

// tooLarge reports an upload Discord refused as too large.
func tooLarge(err error) bool {
	return status(err) == http.StatusRequestEntityTooLarge || code(err) == codeTooLarge
}

// tokenGone reports an interaction token Discord no longer takes: expired
// (401 Invalid Webhook Token) or unknown.
func tokenGone(err error) bool {
	return status(err) == http.StatusUnauthorized && code(err) == 50027 ||
		status(err) == http.StatusNotFound && (code(err) == 10015 || code(err) == 10008)
}

func unknownMessage(err error) bool {
	return status(err) == http.StatusNotFound && (code(err) == 10008 || code(err) == 10003)
}

func rateLimited(err error) (time.Duration, bool) {
	var rl *discordgo.RateLimitError
	if errors.As(err, &rl) {
		return rl.RetryAfter, true
	}
	return 0, false
}

// send posts a message in a channel.
func (b *Bot) send(ctx context.Context, channelID string, m outMessage, file *outFile) (*discordgo.Message, error) {
	ep := discordgo.EndpointChannelMessages(channelID)
	var out *discordgo.Message
	idempotent := m.Nonce != "" && m.EnforceNonce
	err := b.retry(ctx, "send message", idempotent, func([]discordgo.RequestOption) error {
		var err error
		out, err = b.call(ctx, http.MethodPost, ep, ep, m, file)
		return err
	})
	if err == nil && out == nil {
		err = errors.New("discord: empty answer to a message create")
	}
	return out, err
}

// edit changes one of the bot's channel messages; retry says whether to
// wait out rate limits.
func (b *Bot) edit(ctx context.Context, channelID, messageID string, m outMessage, file *outFile, retry bool) (*discordgo.Message, error) {
	b.noteEdit(channelID)
	ep := discordgo.EndpointChannelMessage(channelID, messageID)
	bucket := discordgo.EndpointChannelMessage(channelID, "")
	if !retry {
		return b.call(ctx, http.MethodPatch, ep, bucket, m, file)
	}
	var out *discordgo.Message
	err := b.retry(ctx, "edit message", true, func([]discordgo.RequestOption) error {
		var err error
		out, err = b.call(ctx, http.MethodPatch, ep, bucket, m, file)
		return err
	})
	return out, err
}

// editOriginal changes an interaction's response through its token.
func (b *Bot) editOriginal(ctx context.Context, o origin, m outMessage, file *outFile, retry bool) (*discordgo.Message, error) {
	b.noteEdit(o.Place.Channel)
	ep := discordgo.EndpointWebhookMessage(o.App, o.Token, "@original")
	if !retry {
		return b.call(ctx, http.MethodPatch, ep, ep, m, file)
	}
	var out *discordgo.Message
	err := b.retry(ctx, "edit response", true, func([]discordgo.RequestOption) error {
		var err error
		out, err = b.call(ctx, http.MethodPatch, ep, ep, m, file)
		return err
	})
	return out, err
}

// original fetches an interaction's response message.
func (b *Bot) original(ctx context.Context, appID, token string) (*discordgo.Message, error) {
	var out *discordgo.Message
	err := b.retry(ctx, "get response", true, func(opts []discordgo.RequestOption) error {
		var err error
		out, err = b.s.WebhookMessage(appID, token, "@original", opts...)
		return err
	})
	return out, err
}

// deleteOriginal removes an interaction's response.
func (b *Bot) deleteOriginal(ctx context.Context, appID, token string) error {
	return b.retry(ctx, "delete response", true, func(opts []discordgo.RequestOption) error {
		return b.s.WebhookMessageDelete(appID, token, "@original", opts...)
	})
}

// followup sends a follow-up message to an interaction (ephemeral: only
// its user sees it).
func (b *Bot) followup(ctx context.Context, appID, token string, m outMessage, ephemeral bool) error {
	if ephemeral {
		m.Flags |= discordgo.MessageFlagsEphemeral
	}
	ep := discordgo.EndpointWebhookToken(appID, token) + "?wait=true"
	return b.retry(ctx, "follow-up", false, func([]discordgo.RequestOption) error {
		_, err := b.call(ctx, http.MethodPost, ep, ep, m, nil)
		return err
	})
}

// respond answers an interaction (the callback, within 3 s).
func (b *Bot) respond(ctx context.Context, in *discordgo.Interaction, r *discordgo.InteractionResponse) error {
	if r.Data != nil {
		r.Data.AllowedMentions = noMentions()
		if r.Data.Components == nil && r.Type != discordgo.InteractionResponseModal {
			r.Data.Components = []discordgo.MessageComponent{}
		}
	}
	defer b.answered(in.ID) // the endpoint's request may be answered now
	return b.retry(ctx, "interaction response", false, func(opts []discordgo.RequestOption) error {
		return b.s.InteractionRespond(in, r, opts...)
	})
}

// ephemeral answers an interaction with a message only its user sees.
func (b *Bot) ephemeral(ctx context.Context, in *discordgo.Interaction, msg string) error {
	return b.respond(ctx, in, &discordgo.InteractionResponse{Type: discordgo.InteractionResponseChannelMessageWithSource,
		Data: &discordgo.InteractionResponseData{Content: truncate(msg, 2000), Flags: discordgo.MessageFlagsEphemeral}})
}

// startThread opens a public thread from a message, or returns the one
// already started from it.
func (b *Bot) startThread(ctx context.Context, channelID, messageID, name string) (*discordgo.Channel, error) {
	var th *discordgo.Channel
	err := b.retry(ctx, "start thread", false, func(opts []discordgo.RequestOption) error {
		var err error
		th, err = b.s.MessageThreadStartComplex(channelID, messageID, &discordgo.ThreadStart{Name: name, AutoArchiveDuration: 1440}, opts...)
		return err
	})
	if code(err) == discordgo.ErrCodeThreadAlreadyCreatedForThisMessage {
		// Started already: by this post's earlier try whose answer was
		// lost, or by a replica that died after posting the result and
		// before recording it (its job is finished by another). A thread
		// started from a message has the message's id.
		err = b.retry(ctx, "read the thread", true, func(opts []discordgo.RequestOption) error {
			var err error
			th, err = b.s.Channel(messageID, opts...)
			return err
		})
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.remember(chanInfo{ID: th.ID, Guild: th.GuildID, Parent: channelID, Owner: b.botID, Type: th.Type})
	b.mu.Unlock()
	return th, nil
}

// deleteMessage removes one of the bot's channel messages; one already
// gone counts as removed.
func (b *Bot) deleteMessage(ctx context.Context, channelID, messageID string) error {
	err := b.retry(ctx, "delete message", true, func(opts []discordgo.RequestOption) error {
		return b.s.ChannelMessageDelete(channelID, messageID, opts...)
	})
	if unknownMessage(err) {
		return nil
	}
	return err
}

// message fetches one message.
func (b *Bot) message(ctx context.Context, channelID, messageID string) (*discordgo.Message, error) {
	var m *discordgo.Message
	err := b.retry(ctx, "get message", true, func(opts []discordgo.RequestOption) error {
		var err error
		m, err = b.s.ChannelMessage(channelID, messageID, opts...)
		return err
	})
	return m, err
}

// noteEdit and editBudget keep our own count of recent edits per channel,
// so progress updates leave room for results under Discord's limit of
// about 5 edits per 5 s per channel.
func (b *Bot) noteEdit(channelID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.edits) > 1000 {
		for id := range b.edits {
			if len(b.recentEdits(id)) == 0 {
				delete(b.edits, id)
			}
		}
	}
	b.edits[channelID] = append(b.recentEdits(channelID), b.now())
}

func (b *Bot) editBudget(channelID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.recentEdits(channelID))
	if n == 0 {
		delete(b.edits, channelID)
	}
	return n
}

// recentEdits drops edits older than 5 s; with b.mu held.
func (b *Bot) recentEdits(channelID string) []time.Time {
	now := b.now()
	kept := b.edits[channelID][:0]
	for _, t := range b.edits[channelID] {
		if now.Sub(t) < 5*time.Second {
			kept = append(kept, t)
		}
	}
	return kept
}

// Places: where a message or interaction happened.

type placeKind int

const (
	kindText   placeKind = iota // a guild channel where results open threads
	kindThread                  // a thread: results stay in it
	kindDM                      // a DM: the conversation is the DM
	kindOther                   // any other channel (voice text chat...): no threads
)

// place is where something happened, and so where to answer.
type place struct {
	Guild   string
	Channel string // where to post: the channel, thread or DM
	Parent  string // a thread's parent channel
	Kind    placeKind
	// Ours is set for a thread the bot opened (for a result).
	Ours bool
}

// key is the conversation of a place: a thread is its own conversation,
// keyed under its parent channel.
func (p place) key() bot.ConvKey {
	if p.Kind == kindThread {
		return bot.ConvKey{Platform: Platform, Workspace: p.Guild, Channel: p.Parent, Thread: p.Channel}
	}
	return bot.ConvKey{Platform: Platform, Workspace: p.Guild, Channel: p.Channel}
}

// placeOf is the place where the conversation at key is shown.
func placeOf(key bot.ConvKey) place {
	switch {
	case key.Thread != "":
		return place{Guild: key.Workspace, Channel: key.Thread, Parent: key.Channel, Kind: kindThread}
	case key.Workspace == "":
		return place{Channel: key.Channel, Kind: kindDM}
	}
	return place{Guild: key.Workspace, Channel: key.Channel, Kind: kindText}
}

type chanInfo struct {
	ID, Guild, Parent, Owner string
	Type                     discordgo.ChannelType
}

// remember caches a channel's type; with b.mu held. Types and parents
// never change, so the cache is only bounded, never refreshed.
func (b *Bot) remember(c chanInfo) {
	if len(b.channels) >= 10000 {
		clear(b.channels)
	}
	b.channels[c.ID] = c
}

// placeFor finds out what kind of channel channelID is (one lookup per
// channel, then cached).
func (b *Bot) placeFor(ctx context.Context, guildID, channelID string) place {
	if guildID == "" {
		return place{Channel: channelID, Kind: kindDM}
	}
	b.mu.Lock()
	c, ok := b.channels[channelID]
	b.mu.Unlock()
	if !ok {
		var ch *discordgo.Channel
		err := b.retry(ctx, "get channel", true, func(opts []discordgo.RequestOption) error {
			var err error
			ch, err = b.s.Channel(channelID, opts...)
			return err
		})
		if err != nil {
			b.log.Warn("discord: channel lookup failed; treating it as a text channel", "channel", channelID, "err", err)
			return place{Guild: guildID, Channel: channelID, Kind: kindText}
		}
		c = chanInfo{ID: ch.ID, Guild: guildID, Parent: ch.ParentID, Owner: ch.OwnerID, Type: ch.Type}
		b.mu.Lock()
		b.remember(c)
		b.mu.Unlock()
	}
	p := place{Guild: guildID, Channel: channelID}
	switch c.Type {
	case discordgo.ChannelTypeGuildText, discordgo.ChannelTypeGuildNews:
		p.Kind = kindText
	case discordgo.ChannelTypeGuildPublicThread, discordgo.ChannelTypeGuildPrivateThread, discordgo.ChannelTypeGuildNewsThread:
		_, botID := b.ids()
		p.Kind, p.Parent, p.Ours = kindThread, c.Parent, c.Owner != "" && c.Owner == botID
	case discordgo.ChannelTypeDM, discordgo.ChannelTypeGroupDM:
		p.Kind = kindDM
	default:
		p.Kind = kindOther
	}
	return p
}

// origin is the adapter's note, stored with a job, of where to answer.
type origin struct {
	// Mode "i": the job answers an interaction by editing its response
	// (App, Token; At is when it arrived, for the 15-minute token).
	// Mode "c": it edits a status message the bot posted (Msg).
	Mode  string
	App   string
	Token string
	At    time.Time
	Place place
	// Msg is the interaction's response message (mode i) or the status
	// message (mode c).
	Msg string
	// Ref is the person's message to reply to when posting afresh.
	Ref string
	// Lim is the upload limit the interaction reported (0: unknown).
	Lim int
}

func (o origin) encode() map[string]string {
	m := map[string]string{"v": "1", "mode": o.Mode, "ch": o.Place.Channel, "kind": strconv.Itoa(int(o.Place.Kind))}
	set := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	set("guild", o.Place.Guild)
	set("parent", o.Place.Parent)
	set("app", o.App)
	set("token", o.Token)
	set("msg", o.Msg)
	set("ref", o.Ref)
	if !o.At.IsZero() {
		m["at"] = strconv.FormatInt(o.At.UnixMilli(), 10)
	}
	if o.Lim > 0 {
		m["lim"] = strconv.Itoa(o.Lim)
	}
	return m
}

func parseOrigin(m map[string]string) (origin, bool) {
	if m["v"] != "1" || m["ch"] == "" {
		return origin{}, false
	}
	kind, err := strconv.Atoi(m["kind"])
	if err != nil || kind < int(kindText) || kind > int(kindOther) {
		return origin{}, false
	}
	o := origin{Mode: m["mode"], App: m["app"], Token: m["token"], Msg: m["msg"], Ref: m["ref"],
		Place: place{Guild: m["guild"], Channel: m["ch"], Parent: m["parent"], Kind: placeKind(kind)}}
	if ms, err := strconv.ParseInt(m["at"], 10, 64); err == nil {
		o.At = time.UnixMilli(ms)
	}
	if n, err := strconv.Atoi(m["lim"]); err == nil && n > 0 {
		o.Lim = n
	}
	switch {
	case o.Mode == "i" && (o.App == "" || o.Token == ""):
		return origin{}, false
	case o.Mode != "i" && o.Mode != "c":
		return origin{}, false
	}
	return o, true
}

// tokenLife is how long the bot trusts an interaction token: Discord's 15
// minutes, less a margin for the time a post takes.
const tokenLife = 15*time.Minute - 30*time.Second

// tokenValid reports whether o's interaction token can still be used.
func (b *Bot) tokenValid(o origin) bool {
	return o.Mode == "i" && b.now().Sub(o.At) < tokenLife
}
