package slack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
)

// Origin keys: where a job answers. They are stored with the job, so a
// job accepted by an earlier process reports to the same place.
const (
	originChannel = "channel"
	originThread  = "thread" // "" for a channel's top level
	originStatus  = "status" // ts of the status message, posted before Submit
	originUser    = "user"
)

// reporter is the bot.Reporter of one job. It holds nothing: everything
// comes from the job (its Origin and Conv) and the adapter.
type reporter struct{ b *Bot }

// Queued updates the job's status message: its place in line.
func (r reporter) Queued(job *bot.Job, pos int) { r.b.statusOf(job).queued(pos) }

// Running updates the job's status message: generating.
func (r reporter) Running(job *bot.Job) { r.b.statusOf(job).running() }

// Deliver posts the image where the job belongs, then removes the status
// message. An image made in a channel (not a thread) opens its own
// thread: its message becomes the thread's root and the conversation.
// When d.Repost is set, an earlier attempt may have posted the image: it
// is looked up first (the share of the file an ambiguous attempt
// uploaded, then the channel or thread for the image's file name) and
// returned instead of being posted twice. Errors Slack or the network may
// not repeat are bot.Transient, so the core retries them.
func (r reporter) Deliver(ctx context.Context, job *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	b := r.b
	st := b.statusOf(job)
	st.finish()
	key := job.Conv
	ts := ""
	if d.Repost {
		var err error
		if ts, err = b.findEarlierPost(ctx, job, key.Channel, key.Thread, d); err != nil {
			return bot.Posted{}, err
		}
	}
	if ts == "" {
		var err error
		if ts, err = b.postImage(ctx, key.Channel, key.Thread, d, job.ID); err != nil {
			return bot.Posted{}, err
		}
	}
	b.forgetPending(job.ID)
	// The status message now: Delayed may have posted one.
	if statusTS := st.finish(); statusTS != "" {
		b.deleteMessage(ctx, st.channel, statusTS)
		st.forget()
	}
	posted := bot.Posted{}
	if ts != "" {
		posted.MessageID = messageID(key.Channel, ts)
		if key.Thread == "" {
			thread := key
			thread.Thread = ts
			posted.Thread = &thread
		}
	}
	return posted, nil
}

// Delayed shows bot.PostDelayedText on the job's status message (posting
// one if it has none).
func (r reporter) Delayed(ctx context.Context, job *bot.Job) {
	st := r.b.statusOf(job)
	st.finish()
	st.push(context.WithoutCancel(ctx), "📤 "+bot.PostDelayedText, "")
}

// Held shows msg on the job's status message, which stays until the
// image is posted at the next start (so it is removed once, then); with
// no status message, msg goes to the requester alone.
func (r reporter) Held(ctx context.Context, job *bot.Job, msg string) {
	b := r.b
	st := b.statusOf(job)
	st.finish()
	if st.push(context.WithoutCancel(ctx), "⚠️ "+msg, "") {
		return
	}
	b.ephemeral(ctx, place{team: job.Conv.Workspace, channel: st.channel, thread: st.thread, user: st.user}, msg)
}

var _ bot.DelayReporter = reporter{}

// Fail removes the status message and tells the requester, only them, why
// there is no image.
func (r reporter) Fail(ctx context.Context, job *bot.Job, msg string) {
	b := r.b
	st := b.statusOf(job)
	if ts := st.finish(); ts != "" {
		b.deleteMessage(ctx, st.channel, ts)
		st.forget()
	}
	b.ephemeral(ctx, place{team: job.Conv.Workspace, channel: st.channel, thread: st.thread, user: st.user}, msg)
}

// messageID is a Slack message's id for the core: a ts is unique only
// within its channel.
func messageID(channel, ts string) string { return channel + ":" + ts }

// imageName is the file name an image is posted under: it carries the
// turn id, so a post can be found again by name.
func imageName(d *bot.Delivery) string {
	ext := "png"
	switch d.Turn.Format {
	case "jpeg", "jpg":
		ext = "jpg"
	case "gif", "webp":
		ext = d.Turn.Format
	}
	return "kontext-" + d.Turn.ID + "." + ext
}

// postImage uploads an image into channel (and thread), with its caption
// and buttons, and returns the ts of the message that shares it ("" when
// it is posted but its message was not found). It runs the three steps
// of Slack's upload itself: once files.completeUploadExternal is sent the
// image may be posted whatever the answer, so for a job (job != "") the
// file id is remembered until the job is delivered, for
// findEarlierPost.
func (b *Bot) postImage(ctx context.Context, channel, thread string, d *bot.Delivery, job string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	title := truncate(d.Turn.Prompt, 200)
	if d.Turn.Kind == bot.KindUpload || title == "" {
		title = "Uploaded image"
	}
	// One file, or a variations group's files, shared by one
	// files.completeUploadExternal: one message.
	images := []*bot.Delivery{d}
	blocks := imageBlocks(d, thread)
	if len(d.Group) > 0 {
		images = images[:0]
		for _, v := range d.Group {
			images = append(images, &bot.Delivery{Turn: v.Turn, Image: v.Image})
		}
		blocks = groupBlocks(d, thread)
	}
	var files []slackgo.FileSummary
	for i, one := range images {
		name := imageName(one)
		alt := one.Turn.Prompt
		ftitle := title
		if len(d.Group) > 0 {
			alt = fmt.Sprintf("Image %d: %s", d.Group[i].N, alt)
			ftitle = truncate(fmt.Sprintf("%d · %s", d.Group[i].N, title), 200)
		}
		u, err := b.api.GetUploadURLExternalContext(ctx, slackgo.GetUploadURLExternalParameters{
			FileName: name, FileSize: len(one.Image), AltTxt: truncate(alt, 1000)})
		if err != nil {
			return "", fmt.Errorf("slack: upload image: files.getUploadURLExternal: %w", transient(err))
		}
		if err := b.api.UploadToURL(ctx, slackgo.UploadToURLParameters{UploadURL: u.UploadURL, Reader: bytes.NewReader(one.Image), Filename: name}); err != nil {
			return "", fmt.Errorf("slack: upload image: upload URL: %w", transient(err))
		}
		files = append(files, slackgo.FileSummary{ID: u.FileID, Title: ftitle})
	}
	first := files[0].ID
	if job != "" {
		b.setPending(job, first)
	}
	_, err := b.api.CompleteUploadExternalContext(ctx, slackgo.CompleteUploadExternalParameters{
		Files: files, Channel: channel, ThreadTimestamp: thread, Blocks: blocks})
	if err != nil {
		var se slackgo.SlackErrorResponse
		if job != "" && errors.As(err, &se) {
			b.forgetPending(job) // Slack answered: nothing was shared
		}
		return "", fmt.Errorf("slack: upload image: files.completeUploadExternal: %w", transient(err))
	}
	ts, err := b.findShare(ctx, first, channel, thread, shareTimeout)
	if err != nil {
		// The image is posted; only its message id is unknown, so a reply
		// to it cannot be traced. Not worth posting it twice.
		b.log.Warn("slack: uploaded image's message not found", "file", first, "channel", channel, "err", err)
		return "", nil
	}
	return ts, nil
}

// findEarlierPost looks for a post of d's image by an earlier attempt:
// the share of a file whose files.completeUploadExternal got no clear
// answer in this process (given pendingWait to appear), then a message
// of the bot's in the channel (or thread) carrying a file of the image's
// name, from around the job's creation on. "" means none was found; an
// error means the lookup failed and posting now could post twice.
func (b *Bot) findEarlierPost(ctx context.Context, job *bot.Job, channel, thread string, d *bot.Delivery) (string, error) {
	if fileID := b.pending(job.ID); fileID != "" {
		if ts, err := b.findShare(ctx, fileID, channel, thread, pendingWait); err == nil {
			b.log.Info("slack: an earlier attempt had posted the image", "job", job.ID, "file", fileID)
			return ts, nil
		}
	}
	ts, err := b.findByName(ctx, channel, thread, imageName(d), job.Created.Add(-10*time.Minute))
	switch {
	case err != nil && isTransient(err):
		return "", err
	case err != nil:
		b.log.Warn("slack: could not look for an earlier post of the image; posting it", "job", job.ID, "err", err)
		return "", nil
	case ts != "":
		b.log.Info("slack: an earlier attempt had posted the image", "job", job.ID, "ts", ts)
	}
	return ts, nil
}

// findByName returns the ts of the bot's newest message in channel (at
// the top level, or in thread) since oldest that carries a file named
// name; "" when there is none.
func (b *Bot) findByName(ctx context.Context, channel, thread, name string, oldest time.Time) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	since := fmt.Sprintf("%d.%06d", oldest.Unix(), oldest.Nanosecond()/1000)
	found := ""
	match := func(msgs []slackgo.Message) {
		for _, m := range msgs {
			if !b.ownMessage(m.User, m.BotID) {
				continue
			}
			for _, f := range m.Files {
				if f.Name == name && (found == "" || tsLess(found, m.Timestamp)) {
					found = m.Timestamp
				}
			}
		}
	}
	cursor := ""
	for range 20 {
		var msgs []slackgo.Message
		var next string
		if thread == "" {
			res, err := b.api.GetConversationHistoryContext(ctx, &slackgo.GetConversationHistoryParameters{
				ChannelID: channel, Oldest: since, Limit: 200, Cursor: cursor})
			if err != nil {
				return "", fmt.Errorf("slack: conversations.history: %w", transient(err))
			}
			msgs, next = res.Messages, res.ResponseMetaData.NextCursor
			if !res.HasMore {
				next = ""
			}
		} else {
			var more bool
			var err error
			msgs, more, next, err = b.api.GetConversationRepliesContext(ctx, &slackgo.GetConversationRepliesParameters{
				ChannelID: channel, Timestamp: thread, Cursor: cursor, Limit: 200})
			if err != nil {
				return "", fmt.Errorf("slack: conversations.replies: %w", transient(err))
			}
			if !more {
				next = ""
			}
		}
		match(msgs)
		if next == "" {
			break
		}
		cursor = next
	}
	return found, nil
}

// ownMessage reports whether a message is the bot's own.
func (b *Bot) ownMessage(user, botID string) bool {
	return botID != "" && botID == b.botID || user != "" && user == b.botUser
}

// pendingWait is how long findEarlierPost waits for the share of a file
// whose completion got no clear answer.
var pendingWait = 5 * time.Second

func (b *Bot) setPending(job, fileID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.uploads[job] = fileID
}

func (b *Bot) pending(job string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.uploads[job]
}

func (b *Bot) forgetPending(job string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.uploads, job)
}

// findShare waits up to timeout for the message Slack posts a moment
// after files.completeUploadExternal, and returns its ts (from
// files.info).
func (b *Bot) findShare(ctx context.Context, fileID, channel, thread string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 100 * time.Millisecond
	for {
		f, err := b.fileInfo(ctx, fileID)
		if err == nil {
			if ts := shareTS(f, channel, thread); ts != "" {
				return ts, nil
			}
		} else if ctx.Err() == nil {
			b.log.Debug("slack: files.info", "file", fileID, "err", err)
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("the file was not shared")
			}
			return "", fmt.Errorf("%w (%w)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

// fileInfo calls files.info. Its count and page are of the file's
// comments; slack-go always sends them, so they get Slack's defaults.
func (b *Bot) fileInfo(ctx context.Context, fileID string) (*slackgo.File, error) {
	f, _, _, err := b.api.GetFileInfoContext(ctx, fileID, 100, 1)
	return f, err
}

// shareTS finds the message sharing f in channel (and thread).
func shareTS(f *slackgo.File, channel, thread string) string {
	var shares []slackgo.ShareFileInfo
	shares = append(shares, f.Shares.Public[channel]...)
	shares = append(shares, f.Shares.Private[channel]...)
	for _, s := range shares {
		if thread == "" && (s.ThreadTs == "" || s.ThreadTs == s.Ts) || thread != "" && s.ThreadTs == thread {
			return s.Ts
		}
	}
	return ""
}

// deleteMessage removes one of the bot's messages. A message already gone
// (message_not_found) counts as removed.
func (b *Bot) deleteMessage(ctx context.Context, channel, ts string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	_, _, err := b.api.DeleteMessageContext(ctx, channel, ts)
	var se slackgo.SlackErrorResponse
	switch {
	case err == nil:
	case errors.As(err, &se) && se.Err == "message_not_found":
		b.log.Debug("slack: status message already gone", "channel", channel, "ts", ts)
	default:
		b.log.Warn("slack: delete status message", "channel", channel, "ts", ts, "err", err)
	}
}

// phase is where a job's status message is.
type phase int

const (
	phaseNew phase = iota
	phaseQueued
	phaseRunning
	phaseDone
)

// status is one job's status message, updated in place at most once per
// statusEvery by its own goroutine, which ends when the job does (or the
// adapter closes). Queued and Running only record the state and wake it.
type status struct {
	b       *Bot
	job     string
	channel string
	thread  string
	user    string
	prompt  string

	mu       sync.Mutex
	ts       string
	phase    phase
	pos      int
	since    time.Time
	shown    string    // the line on the message now
	ended    time.Time // when the job ended
	worker   bool
	wake     chan struct{}
	stop     chan struct{}
	finished chan struct{}
}

// statusOf returns the status of job, from its Origin; a job recovered
// after a restart gets the status message its first process posted.
func (b *Bot) statusOf(job *bot.Job) *status {
	b.mu.Lock()
	defer b.mu.Unlock()
	if st := b.statuses[job.ID]; st != nil {
		return st
	}
	b.sweepStatuses()
	o := job.Origin
	st := &status{b: b, job: job.ID, channel: o[originChannel], thread: o[originThread], ts: o[originStatus],
		user: o[originUser], prompt: job.Prompt,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), finished: make(chan struct{})}
	if st.channel == "" {
		st.channel, st.thread = job.Conv.Channel, job.Conv.Thread
	}
	if st.user == "" {
		st.user = job.User
	}
	b.statuses[job.ID] = st
	return st
}

func (s *status) queued(pos int) {
	s.mu.Lock()
	if s.phase > phaseQueued || s.phase == phaseQueued && s.pos == pos {
		s.mu.Unlock()
		return
	}
	s.phase, s.pos = phaseQueued, pos
	s.kick()
	s.mu.Unlock()
}

func (s *status) running() {
	s.mu.Lock()
	if s.phase >= phaseRunning {
		s.mu.Unlock()
		return
	}
	s.phase, s.since = phaseRunning, time.Now()
	s.kick()
	s.mu.Unlock()
}

// kick starts the worker or wakes it. Called with s.mu held.
func (s *status) kick() {
	if !s.worker {
		if !s.b.spawn(s.run) {
			return
		}
		s.worker = true
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// finish stops the worker, waits for any update in flight, forgets the
// status and returns the message's ts ("" when there is none).
func (s *status) finish() string {
	s.mu.Lock()
	wasDone := s.phase == phaseDone
	s.phase = phaseDone
	worker := s.worker
	if !wasDone {
		close(s.stop)
	}
	s.mu.Unlock()
	if worker {
		<-s.finished
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended.IsZero() {
		s.ended = time.Now()
	}
	return s.ts
}

// forget records that the status message is gone.
func (s *status) forget() {
	s.mu.Lock()
	s.ts = ""
	s.mu.Unlock()
}

// sweepStatuses forgets the statuses of jobs that ended a while ago. A
// finished status is kept for a while so that a late Queued (positions
// are reported asynchronously) cannot post a new status message. Called
// with b.mu held.
func (b *Bot) sweepStatuses() {
	for id, st := range b.statuses {
		st.mu.Lock()
		old := !st.ended.IsZero() && time.Since(st.ended) > 10*time.Minute
		st.mu.Unlock()
		if old {
			delete(b.statuses, id)
		}
	}
}

// line is the status as text, and the job to offer a Cancel for.
func (s *status) line() (string, string) {
	switch s.phase {
	case phaseQueued:
		return "⏳ " + bot.QueuedText(s.pos), s.job
	case phaseRunning:
		secs := int(time.Since(s.since).Round(time.Second) / time.Second)
		if secs < 1 {
			return "🎨 Generating…", ""
		}
		return fmt.Sprintf("🎨 Generating… %d s", secs), ""
	}
	return "⏳ Working on it…", ""
}

// run keeps the status message current until the job ends.
func (s *status) run(ctx context.Context) {
	defer close(s.finished)
	var last time.Time
	s.mu.Lock()
	if s.ts != "" {
		// The message was just posted (or by an earlier process): its first
		// update waits too. A job done within statusEvery is never updated.
		last = time.Now()
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		line, cancelJob := s.line()
		changed := line != s.shown
		running := s.phase == phaseRunning
		s.mu.Unlock()
		if changed {
			if wait := s.b.statusEvery - time.Since(last); !last.IsZero() && wait > 0 {
				select {
				case <-s.stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				continue // the state may have moved on meanwhile
			}
			last = time.Now()
			s.push(ctx, line, cancelJob)
		}
		var tick <-chan time.Time
		if running {
			tick = time.After(s.b.elapsedEvery)
		}
		select {
		case <-s.stop:
			return
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-tick:
		}
	}
}

// push shows line on the status message, posting one if there is none,
// and reports whether it is shown.
func (s *status) push(ctx context.Context, line, cancelJob string) bool {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	blocks := slackgo.MsgOptionBlocks(statusBlocks(line, s.prompt, cancelJob)...)
	text := slackgo.MsgOptionText(escape(line), false)
	s.mu.Lock()
	ts := s.ts
	s.mu.Unlock()
	var err error
	if ts == "" {
		opts := []slackgo.MsgOption{text, blocks}
		if s.thread != "" {
			opts = append(opts, slackgo.MsgOptionTS(s.thread))
		}
		_, ts, err = s.b.api.PostMessageContext(ctx, s.channel, opts...)
	} else {
		_, _, _, err = s.b.api.UpdateMessageContext(ctx, s.channel, ts, text, blocks)
	}
	if err != nil {
		s.b.log.Warn("slack: status message", "job", s.job, "err", err)
		return false
	}
	s.mu.Lock()
	s.ts, s.shown = ts, line
	s.mu.Unlock()
	return true
}

// postStatus posts a new status message before the job exists.
func (b *Bot) postStatus(ctx context.Context, channel, thread, prompt string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	line := "⏳ Working on it…"
	opts := []slackgo.MsgOption{slackgo.MsgOptionText(escape(line), false), slackgo.MsgOptionBlocks(statusBlocks(line, prompt, "")...)}
	if thread != "" {
		opts = append(opts, slackgo.MsgOptionTS(thread))
	}
	_, ts, err := b.api.PostMessageContext(ctx, channel, opts...)
	return ts, err
}

// place is where to answer a person: a channel, maybe a thread, and the
// person; responseURL (slash commands, shortcuts) reaches them even where
// the bot is not a member.
type place struct {
	team, channel, thread, user string
	responseURL                 string
}

func (p place) conv() bot.ConvKey {
	return bot.ConvKey{Platform: Platform, Workspace: p.team, Channel: p.channel, Thread: p.thread}
}

// ephemeral shows text to the person at p only.
func (b *Bot) ephemeral(ctx context.Context, p place, text string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), callTimeout)
	defer cancel()
	opts := []slackgo.MsgOption{slackgo.MsgOptionText(escapeLinks(text), false)}
	if p.thread != "" {
		opts = append(opts, slackgo.MsgOptionTS(p.thread))
	}
	_, err := b.api.PostEphemeralContext(ctx, p.channel, p.user, opts...)
	if err == nil {
		return
	}
	if p.responseURL != "" {
		if u, perr := parseURL(p.responseURL); perr == nil && b.mayReceiveToken(u) {
			_, _, rerr := b.api.PostMessageContext(ctx, p.channel, slackgo.MsgOptionText(escapeLinks(text), false),
				slackgo.MsgOptionResponseURL(p.responseURL, slackgo.ResponseTypeEphemeral))
			if rerr == nil {
				return
			}
			err = errors.Join(err, rerr)
		}
	}
	b.log.Warn("slack: ephemeral message", "channel", p.channel, "user", p.user, "err", err, "text", text)
}

// reply tells the person at p why their request failed: the sentence of a
// user error, or an apology with the details logged.
func (b *Bot) reply(ctx context.Context, p place, err error) {
	var ue *bot.UserError
	if !errors.As(err, &ue) {
		b.log.Warn("slack: request failed", "channel", p.channel, "user", p.user, "err", err)
	}
	b.ephemeral(ctx, p, bot.Explain(err))
}

// notInChannel reports whether err says the bot is not in the channel.
func notInChannel(err error) bool {
	var se slackgo.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "not_in_channel", "channel_not_found", "is_archived":
			return true
		}
	}
	return strings.Contains(fmt.Sprint(err), "not_in_channel")
}
