package discord

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// Progress pacing.
const (
	progressEvery  = 2 * time.Second // at most one progress edit per job this often
	queuedGrace    = time.Second     // a job that waits less than this never shows "Queued"
	runningGrace   = time.Second     // a job that finishes this fast never shows "Generating…"
	runningRefresh = 5 * time.Second // the elapsed time on "Generating… N s" moves this often
	progressBudget = 3               // progress edits wait while a channel had this many edits in 5 s
)

// reporter reports on one job, from its Origin alone.
type reporter struct {
	b    *Bot
	job  string
	user string
	o    origin
	ok   bool
	// notice is a message Delayed or Held posted when the job's status
	// could not be edited (the interaction's token had expired): the
	// retries of one job run in order, on one reporter, so it needs no
	// lock. A restart forgets it; the message then stays.
	notice, noticeIn string

	// mu guards response: the id of the interaction's response message,
	// learned from an edit through its token when the origin has none
	// (the job was stored before the interaction was acknowledged), so a
	// result that outlives the token still replies to it. A restart or
	// another replica forgets it; the reply then names the user.
	mu       sync.Mutex
	response string
}

// origin is the job's origin, with the response message id learned
// since, if the stored origin has none.
func (r *reporter) origin() origin {
	o := r.o
	if o.Mode == "i" && o.Msg == "" {
		r.mu.Lock()
		o.Msg = r.response
		r.mu.Unlock()
	}
	return o
}

// learn notes the response message m an edit through the token returned.
func (r *reporter) learn(m *discordgo.Message) {
	if m == nil || r.o.Mode != "i" || r.o.Msg != "" {
		return
	}
	r.mu.Lock()
	r.response = m.ID
	r.mu.Unlock()
}

// Reporter reports on job in Discord, from what job.Origin says.
func (b *Bot) Reporter(job *bot.Job) bot.Reporter {
	o, ok := parseOrigin(job.Origin)
	if !ok {
		b.log.Warn("discord: job has no usable origin; it will not be reported", "job", job.ID)
	}
	return &reporter{b: b, job: job.ID, user: job.User, o: o, ok: ok}
}

// tracker is one job's progress: what its status message should say, and
// a worker that edits it in the background, throttled.
type tracker struct {
	r *reporter

	mu        sync.Mutex
	created   time.Time
	queued    int // position in line; 0 when not waiting
	runningAt time.Time
	shown     string
	last      time.Time // last progress edit
	notBefore time.Time // after a 429
	tokenDead bool
	finished  bool
	wake      chan struct{}
	done      chan struct{}

	sendMu sync.Mutex // held by any write to the status message
}

// tracker returns the job's tracker, starting its worker; nil once closed.
func (b *Bot) tracker(r *reporter) *tracker {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.trackers[r.job]; t != nil {
		return t
	}
	if b.closed {
		return nil
	}
	t := &tracker{r: r, created: b.now(), wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.trackers[r.job] = t
	b.wg.Add(1)
	go b.work(t)
	return t
}

// finish stops a job's progress and returns with its status message free
// to write: call the returned func when done writing.
func (b *Bot) finish(job string) func() {
	b.mu.Lock()
	t := b.trackers[job]
	delete(b.trackers, job)
	b.mu.Unlock()
	if t == nil {
		return func() {}
	}
	t.mu.Lock()
	if !t.finished {
		t.finished = true
		close(t.done)
	}
	t.mu.Unlock()
	t.sendMu.Lock()
	return t.sendMu.Unlock
}

// Queued says the job waits, pos-th in line. It never blocks.
func (r *reporter) Queued(_ *bot.Job, pos int) {
	if !r.ok {
		return
	}
	if t := r.b.tracker(r); t != nil {
		t.mu.Lock()
		t.queued = pos
		t.mu.Unlock()
		t.poke()
	}
}

// Running says the provider is making the image. It never blocks.
func (r *reporter) Running(*bot.Job) {
	if !r.ok {
		return
	}
	if t := r.b.tracker(r); t != nil {
		t.mu.Lock()
		t.queued, t.runningAt = 0, r.b.now()
		t.mu.Unlock()
		t.poke()
	}
}

func (t *tracker) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// progress is what the status should say at now, and when it may be sent.
func (t *tracker) progress(now time.Time) (text string, cancel bool, at time.Time) {
	at = t.last.Add(progressEvery)
	switch {
	case !t.runningAt.IsZero():
		elapsed := now.Sub(t.runningAt)
		if elapsed < runningGrace {
			return "", false, t.runningAt.Add(runningGrace)
		}
		text = fmt.Sprintf("Generating… %d s", int(elapsed.Seconds()))
		if strings.HasPrefix(t.shown, "Generating") {
			at = t.last.Add(runningRefresh)
		}
	case t.queued > 0:
		text, cancel = bot.QueuedText(t.queued), true
		if wait := t.created.Add(queuedGrace); wait.After(at) {
			at = wait
		}
	default:
		return "", false, time.Time{}
	}
	if t.notBefore.After(at) {
		at = t.notBefore
	}
	return text, cancel, at
}

// work edits the job's status as its progress changes, at most once per
// progressEvery, until the job is finished or the adapter closes.
func (b *Bot) work(t *tracker) {
	defer b.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-t.done:
			return
		case <-t.wake:
		case <-timer.C:
		}
		now := b.now()
		t.mu.Lock()
		txt, cancel, at := t.progress(now)
		shown, dead := t.shown, t.tokenDead
		running := !t.runningAt.IsZero()
		t.mu.Unlock()
		stopTimer(timer)
		switch {
		case dead:
			continue // nothing can be edited any more; wait for the end
		case txt == "":
			if !at.IsZero() {
				timer.Reset(at.Sub(now))
			}
			continue
		case txt == shown:
			if running {
				timer.Reset(max(at.Sub(now), time.Second))
			}
			continue
		case now.Before(at):
			timer.Reset(at.Sub(now))
			continue
		case b.editBudget(t.r.o.Place.Channel) >= progressBudget:
			timer.Reset(time.Second) // leave room for results
			continue
		}
		b.sendProgress(t, txt, cancel)
		t.mu.Lock()
		next, _, at := t.progress(b.now())
		t.mu.Unlock()
		if next != "" {
			timer.Reset(max(at.Sub(b.now()), 10*time.Millisecond))
		}
	}
}

func stopTimer(t *time.Timer) bool {
	if !t.Stop() {
		select {
		case <-t.C:
		default:
		}
		return false
	}
	return true
}

// sendProgress makes one progress edit, without waiting out rate limits:
// a later edit carries newer news anyway.
func (b *Bot) sendProgress(t *tracker, txt string, cancel bool) {
	t.sendMu.Lock()
	defer t.sendMu.Unlock()
	t.mu.Lock()
	finished := t.finished
	t.mu.Unlock()
	if finished {
		return
	}
	o := t.r.o
	var comps []discordgo.MessageComponent
	if cancel {
		comps = []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
			discordgo.Button{Label: "Cancel", Style: discordgo.DangerButton, CustomID: customID(actCancel, t.r.job)},
		}}}
	}
	ctx, stop := context.WithTimeout(b.ctx, 15*time.Second)
	defer stop()
	var err error
	switch {
	case o.Mode == "i" && b.tokenValid(o):
		var m *discordgo.Message
		m, err = b.editOriginal(ctx, o, text(txt, comps...), nil, false)
		t.r.learn(m)
	case o.Mode == "c" && o.Msg != "":
		_, err = b.edit(ctx, o.Place.Channel, o.Msg, text(txt, comps...), nil, false)
	default:
		t.mu.Lock()
		t.tokenDead = true
		t.mu.Unlock()
		return
	}
	now := b.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.last = now
	switch after, limited := rateLimited(err); {
	case err == nil:
		t.shown = txt
	case limited:
		t.notBefore = now.Add(after)
	case tokenGone(err) || unknownMessage(err):
		t.tokenDead = true
	default:
		b.log.Warn("discord: progress edit failed", "job", t.r.job, "err", err)
	}
}

// Deliver posts the finished image where the job was asked for: in the
// interaction's response while its token lives, else as a reply in the
// same channel or thread. A result in a text channel opens a thread named
// after the prompt, which becomes the picture's conversation. An image
// over the channel's upload limit is posted as a smaller copy. A failure
// says through Temporary() whether trying again later may help, and a
// temporary one is bot.Transient: the core tries again (a Repost), so
// server errors are not retried here. A Repost whose post may be a new
// message looks for the message an earlier attempt may have made (see
// earlier) before posting it.
func (r *reporter) Deliver(ctx context.Context, job *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	release := r.b.finish(r.job)
	defer release()
	ctx = withCallerRetries(ctx)
	if !r.ok {
		// Nowhere to post (a damaged record): the image stays the
		// conversation's head; retrying at every start would not help.
		r.b.log.Error("discord: a finished job has no usable origin; its image is not posted", "job", r.job)
		return bot.Posted{}, nil
	}
	m, file := result(d, "")
	if len(d.Group) > 0 {
		m, file = groupResult(d)
	}
	m, file, err := r.b.fitResult(m, file, r.o.Place.Guild, r.o.Lim)
	if err != nil {
		return bot.Posted{}, err
	}
	var since time.Time
	if d.Repost {
		since = job.Created
	}
	posted, p, err := r.post(ctx, "r", m, file, since)
	if err != nil {
		return bot.Posted{}, classify(err)
	}
	if r.notice != "" && r.notice != posted.ID {
		if err := r.b.deleteMessage(ctx, r.noticeIn, r.notice); err != nil {
			r.b.log.Debug("discord: could not remove the delay notice", "job", r.job, "err", err)
		}
		r.notice = ""
	}
	out := bot.Posted{MessageID: posted.ID}
	// Record where the image lives as soon as that is settled (a reply or
	// a button may come right away): for a result in a text channel, once
	// its thread is open, so the message never maps to the channel first.
	if p.Kind == kindText && posted.ChannelID == p.Channel {
		out.Thread = r.b.openThread(ctx, p, posted, job.Prompt)
	}
	r.record(ctx, d, out)
	return out, nil
}

// threadRetry is how long the bot leaves a channel alone after Discord
// refused to let it create a thread there.
const threadRetry = time.Hour

// openThread opens the picture thread of a result posted in text channel
// p, named after its prompt, and returns its conversation; nil when the
// channel stays the conversation (no permission, or another failure).
func (b *Bot) openThread(ctx context.Context, p place, posted *discordgo.Message, prompt string) *bot.ConvKey {
	b.mu.Lock()
	until, denied := b.noThreads[posted.ChannelID]
	if denied && b.now().After(until) {
		delete(b.noThreads, posted.ChannelID)
		denied = false
	}
	b.mu.Unlock()
	if denied {
		return nil
	}
	name := truncate(strings.TrimSpace(prompt), 100)
	if name == "" {
		name = "Picture"
	}
	th, err := b.startThread(ctx, posted.ChannelID, posted.ID, name)
	switch {
	case err == nil:
		return &bot.ConvKey{Platform: Platform, Workspace: p.Guild, Channel: posted.ChannelID, Thread: th.ID}
	case threadsDenied(err):
		b.mu.Lock()
		if len(b.noThreads) >= 10000 {
			clear(b.noThreads)
		}
		b.noThreads[posted.ChannelID] = b.now().Add(threadRetry)
		b.mu.Unlock()
		b.log.Warn("discord: the bot may not create threads in this channel; results there stay in the channel, and it will not try again for a while",
			"channel", posted.ChannelID, "retry_after", threadRetry,
			"fix", "give the bot Create Public Threads and Send Messages in Threads in this channel", "err", err)
	default:
		b.log.Warn("discord: could not open a thread for a result; the channel stays its conversation",
			"channel", posted.ChannelID, "err", err)
	}
	return nil
}

// record tells the core where d was posted as soon as it is; the core
// records what Deliver returns as well, so a failure here is only logged.
func (r *reporter) record(ctx context.Context, d *bot.Delivery, p bot.Posted) {
	if d.Record == nil {
		return
	}
	if err := d.Record(ctx, p); err != nil {
		r.b.log.Warn("discord: record a posted image", "job", r.job, "err", err)
	}
}

// Fail tells the requester, in the job's status, that it ended without an
// image.
func (r *reporter) Fail(ctx context.Context, _ *bot.Job, msg string) {
	release := r.b.finish(r.job)
	defer release()
	if !r.ok {
		return
	}
	if _, _, err := r.post(ctx, "f", text(msg), nil, time.Time{}); err != nil {
		r.b.log.Warn("discord: could not report a failed job", "job", r.job, "err", err)
	}
}

// post writes the job's final message: over its status (the interaction
// response, or the status message), else as a new reply; in the parent
// channel when the job's thread is gone. It returns the place it posted in.
// A new message is created once per job and kind ("r" result, "f"
// failure): posting again after an unknown outcome returns the first
// within Discord's nonce window; past it (a retry after a restart), a
// non-zero since makes post look for a message of the bot's made since
// then with file first (see earlier).
func (r *reporter) post(ctx context.Context, kind string, m outMessage, file *outFile, since time.Time) (*discordgo.Message, place, error) {
	b, o := r.b, r.origin()
	if o.Mode == "i" && b.tokenValid(o) {
		msg, err := b.editOriginal(ctx, o, m, file, true)
		switch {
		case err == nil && msg != nil:
			return msg, o.Place, nil
		case err != nil && !tokenGone(err) && !unknownMessage(err) && !threadGone(err):
			return nil, o.Place, err
		}
		b.log.Info("discord: the interaction's response cannot be edited; replying in the channel instead", "job", r.job, "err", err)
	}
	if o.Mode == "c" && o.Msg != "" && b.live(o.Place) == o.Place {
		msg, err := b.edit(ctx, o.Place.Channel, o.Msg, m, file, true)
		switch {
		case err == nil && msg != nil:
			return msg, o.Place, nil
		case err != nil && !unknownMessage(err) && !threadGone(err):
			return nil, o.Place, err
		}
	}
	// A new message in the same channel or thread, replying to the status
	// (the interaction's response) or to the person's message.
	ref := o.Msg
	if o.Mode == "c" {
		ref = o.Ref
	}
	if ref != "" {
		f := false
		m.Reference = &discordgo.MessageReference{MessageID: ref, ChannelID: o.Place.Channel, FailIfNotExists: &f}
	} else if r.user != "" {
		m.Content = truncate("<@"+r.user+"> "+m.Content, 2000) // names them; allowed mentions keep it silent
	}
	var msg *discordgo.Message
	p := o.Place
	if !since.IsZero() && file != nil {
		var err error
		if msg, p, err = b.earlier(ctx, o.Place, since, file.Name); err != nil {
			return nil, p, err
		}
		if msg != nil {
			b.log.Info("discord: an earlier attempt posted this result; not posting it again", "job", r.job, "message", msg.ID)
		}
	}
	if msg == nil {
		var err error
		if msg, p, err = b.sendIn(ctx, o.Place, once(m, kind, r.job), file); err != nil {
			return nil, p, err
		}
	}
	if o.Mode == "i" && o.Msg != "" && p == o.Place && msg.ID != o.Msg {
		// The old response still says "Generating…": point it at the result.
		if _, err := b.edit(ctx, o.Place.Channel, o.Msg, text("Finished after Discord's 15-minute limit for updating this message: the result is in the reply below."), nil, false); err != nil {
			b.log.Debug("discord: could not update the expired response", "err", err)
		}
	}
	return msg, p, nil
}

// result is the message showing a delivered image: the picture (alt text:
// its prompt), a line with prompt, seed and model, and the buttons.
func result(d *bot.Delivery, prefix string) (outMessage, *outFile) {
	format := d.Turn.Format // png, jpeg, webp or gif
	if format == "" {
		format = "png"
	}
	ext := format
	if ext == "jpeg" {
		ext = "jpg"
	}
	name := "kontext-" + d.Turn.ID + "." + ext
	alt := d.Turn.Prompt
	if d.Turn.Kind == bot.KindUpload || alt == "" {
		alt = "Uploaded image"
	}
	m := text(prefix+d.Caption(), resultButtons(d.Turn)...)
	m.Attachments = []outAttachment{{ID: 0, Filename: name, Description: truncate(alt, 1024)}}
	return m, &outFile{Name: name, ContentType: "image/" + format, Data: d.Image}
}

// groupResult is the one message showing a variations group: every image
// as an attachment (files[0..n-1], attachments with the same ids), the
// caption, and one row of buttons per image: "Edit N", "Reroll N",
// "Use N", whose custom ids carry the image's turn id.
func groupResult(d *bot.Delivery) (outMessage, *outFile) {
	var rows []discordgo.MessageComponent
	var first *outFile
	var atts []outAttachment
	for i, v := range d.Group {
		one := &bot.Delivery{Turn: v.Turn, Image: v.Image}
		_, f := result(one, "")
		atts = append(atts, outAttachment{ID: i, Filename: f.Name, Description: truncate(fmt.Sprintf("Image %d: %s", v.N, v.Turn.Prompt), 1024)})
		if first == nil {
			first = f
		} else {
			first.More = append(first.More, f)
		}
		if len(rows) < 5 {
			n := strconv.Itoa(v.N)
			rows = append(rows, discordgo.ActionsRow{Components: []discordgo.MessageComponent{
				discordgo.Button{Label: "Edit " + n, Style: discordgo.PrimaryButton, CustomID: customID(actEdit, v.Turn.ID)},
				discordgo.Button{Label: "Reroll " + n, Style: discordgo.SecondaryButton, CustomID: customID(actReroll, v.Turn.ID)},
				discordgo.Button{Label: "Use " + n, Style: discordgo.SuccessButton, CustomID: customID(actUse, v.Turn.ID)},
			}})
		}
	}
	m := text(d.Caption(), rows...)
	m.Attachments = atts
	return m, first
}

// resultButtons are the buttons under an image: a first row of the main
// actions, Reroll (not for an upload), Edit, and Undo (when there is an
// image before it); a second row with History, Details and Delete.
func resultButtons(t bot.Turn) []discordgo.MessageComponent {
	var bs []discordgo.MessageComponent
	if t.Kind != bot.KindUpload {
		bs = append(bs, discordgo.Button{Label: "Reroll", Style: discordgo.SecondaryButton, CustomID: customID(actReroll, t.ID)})
	}
	bs = append(bs, discordgo.Button{Label: "Edit", Style: discordgo.PrimaryButton, CustomID: customID(actEdit, t.ID)})
	if t.Parent != "" {
		bs = append(bs, discordgo.Button{Label: "Undo", Style: discordgo.SecondaryButton, CustomID: customID(actUndo, t.ID)})
	}
	more := []discordgo.MessageComponent{
		discordgo.Button{Label: "History", Style: discordgo.SecondaryButton, CustomID: customID(actHistory, t.ID)},
		discordgo.Button{Label: "Details", Style: discordgo.SecondaryButton, CustomID: customID(actDetails, t.ID)},
		discordgo.Button{Label: "Delete", Style: discordgo.DangerButton, CustomID: customID(actDelete, t.ID)},
	}
	return []discordgo.MessageComponent{discordgo.ActionsRow{Components: bs}, discordgo.ActionsRow{Components: more}}
}

// Delayed shows bot.PostDelayedText on the job's status (the interaction's
// response, or the status message); when that cannot be edited any more,
// in a message of its own, removed once the result is posted.
func (r *reporter) Delayed(ctx context.Context, _ *bot.Job) {
	r.b.finish(r.job)() // progress edits stop: the status is ours now
	if r.ok {
		r.notify(ctx, "d", bot.PostDelayedText)
	}
}

// Held shows msg (the image waits for the next start) where Delayed would.
// Nothing the next Deliver needs goes: the status message stays and
// becomes the result, and a notice message stays too.
func (r *reporter) Held(ctx context.Context, _ *bot.Job, msg string) {
	r.b.finish(r.job)()
	if r.ok {
		r.notify(ctx, "h", msg)
	}
}

var _ bot.DelayReporter = (*reporter)(nil)

// notify shows txt on the job's status, once and without waiting: the
// interaction's response through its token while it lives, else the
// status message (or the expired response) through the bot's token, else
// a message of its own. A failure is only logged (posting is failing
// already).
func (r *reporter) notify(ctx context.Context, kind, txt string) {
	b, o := r.b, r.origin()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	ctx = withCallerRetries(ctx)
	m := text(txt)
	var err error
	if o.Mode == "i" && b.tokenValid(o) {
		if _, err = b.editOriginal(ctx, o, m, nil, false); err == nil || !tokenGone(err) {
			r.logNotify(err)
			return
		}
	}
	if o.Msg != "" && b.live(o.Place) == o.Place {
		if _, err = b.edit(ctx, o.Place.Channel, o.Msg, m, nil, false); err == nil || !unknownMessage(err) && !threadGone(err) {
			r.logNotify(err)
			return
		}
	}
	if r.notice != "" {
		_, err = b.edit(ctx, r.noticeIn, r.notice, m, nil, false)
		r.logNotify(err)
		return
	}
	if o.Mode == "c" && o.Ref != "" {
		f := false
		m.Reference = &discordgo.MessageReference{MessageID: o.Ref, ChannelID: o.Place.Channel, FailIfNotExists: &f}
	}
	var msg *discordgo.Message
	if msg, _, err = b.sendIn(ctx, o.Place, once(m, kind, r.job), nil); err == nil {
		r.notice, r.noticeIn = msg.ID, msg.ChannelID
	}
	r.logNotify(err)
}

func (r *reporter) logNotify(err error) {
	if err != nil {
		r.b.log.Warn("discord: could not show that posting is delayed", "job", r.job, "err", err)
	}
}

// earlier finds the message an earlier attempt at a result may have made
// in place p (its thread, or the parent channel when the thread is gone):
// the bot's message, made since (less a minute for clocks that disagree),
// that carries the file named name (the turn's id names it, so no other
// post has it). Discord returns nonces only in a create's answer, so the
// file is the mark. It returns nil when there is none. A lookup that
// fails temporarily is an error (the core tries again); one Discord
// refuses (no Read Message History) is logged, and the post goes ahead
// under its nonce.
func (b *Bot) earlier(ctx context.Context, p place, since time.Time, name string) (*discordgo.Message, place, error) {
	p = b.live(p)
	m, err := b.findPost(ctx, p.Channel, since, name)
	if err != nil && p.Kind == kindThread && p.Parent != "" && threadGone(err) {
		p = place{Guild: p.Guild, Channel: p.Parent, Kind: kindText}
		m, err = b.findPost(ctx, p.Channel, since, name)
	}
	switch {
	case err == nil:
		return m, p, nil
	case Temporary(err):
		return nil, p, err
	}
	b.log.Warn("discord: could not look for an earlier post of a result; posting it (it may show twice)", "channel", p.Channel, "err", err)
	return nil, p, nil
}

// lookupPages bounds the messages earlier reads: 100 a page.
const lookupPages = 10

// discordEpoch is the first millisecond of 2015, where snowflakes start.
const discordEpoch = 1420070400000

// idAt is the smallest snowflake Discord gives to something made at t.
func idAt(t time.Time) string {
	ms := max(t.UnixMilli()-discordEpoch, 0)
	return strconv.FormatUint(uint64(ms)<<22, 10)
}

func (b *Bot) findPost(ctx context.Context, channelID string, since time.Time, name string) (*discordgo.Message, error) {
	_, botID := b.ids()
	after := idAt(since.Add(-time.Minute))
	for range lookupPages {
		var page []*discordgo.Message
		err := b.retry(ctx, "list messages", true, func(opts []discordgo.RequestOption) error {
			var err error
			page, err = b.s.ChannelMessages(channelID, 100, "", after, "", opts...)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, m := range page {
			if m.Author == nil || m.Author.ID != botID {
				continue
			}
			for _, a := range m.Attachments {
				if a != nil && a.Filename == name {
					return m, nil
				}
			}
		}
		if len(page) < 100 {
			return nil, nil
		}
		after = page[0].ID // newest first: go on after the newest
		for _, m := range page {
			if newer(m.ID, after) {
				after = m.ID
			}
		}
	}
	b.log.Warn("discord: stopped looking for an earlier post of a result after many messages", "channel", channelID)
	return nil, nil
}

// newer reports whether snowflake a is after snowflake b.
func newer(a, b string) bool {
	x, _ := strconv.ParseUint(a, 10, 64)
	y, _ := strconv.ParseUint(b, 10, 64)
	return x > y
}
