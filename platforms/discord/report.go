package discord

import (
	"context"
	"fmt"
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
		_, err = b.editOriginal(ctx, o, text(txt, comps...), nil, false)
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
// says through Temporary() whether trying again later may help.
func (r *reporter) Deliver(ctx context.Context, job *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	release := r.b.finish(r.job)
	defer release()
	if !r.ok {
		// Nowhere to post (a damaged record): the image stays the
		// conversation's head; retrying at every start would not help.
		r.b.log.Error("discord: a finished job has no usable origin; its image is not posted", "job", r.job)
		return bot.Posted{}, nil
	}
	m, file := result(d, "")
	m, file, err := r.b.fitResult(m, file, r.o.Place.Guild, r.o.Lim)
	if err != nil {
		return bot.Posted{}, err
	}
	posted, p, err := r.post(ctx, "r", m, file)
	if err != nil {
		return bot.Posted{}, classify(err)
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
	if _, _, err := r.post(ctx, "f", text(msg), nil); err != nil {
		r.b.log.Warn("discord: could not report a failed job", "job", r.job, "err", err)
	}
}

// post writes the job's final message: over its status (the interaction
// response, or the status message), else as a new reply; in the parent
// channel when the job's thread is gone. It returns the place it posted in.
// A new message is created once per job and kind ("r" result, "f"
// failure): posting again after an unknown outcome returns the first.
func (r *reporter) post(ctx context.Context, kind string, m outMessage, file *outFile) (*discordgo.Message, place, error) {
	b, o := r.b, r.o
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
	msg, p, err := b.sendIn(ctx, o.Place, once(m, kind, r.job), file)
	if err != nil {
		return nil, p, err
	}
	if o.Mode == "i" && o.Msg != "" && p == o.Place {
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

// resultButtons are the buttons under an image: Reroll (not for an
// upload), Edit, and Undo (when there is an image before it).
func resultButtons(t bot.Turn) []discordgo.MessageComponent {
	var bs []discordgo.MessageComponent
	if t.Kind != bot.KindUpload {
		bs = append(bs, discordgo.Button{Label: "Reroll", Style: discordgo.SecondaryButton, CustomID: customID(actReroll, t.ID)})
	}
	bs = append(bs, discordgo.Button{Label: "Edit", Style: discordgo.PrimaryButton, CustomID: customID(actEdit, t.ID)})
	if t.Parent != "" {
		bs = append(bs, discordgo.Button{Label: "Undo", Style: discordgo.SecondaryButton, CustomID: customID(actUndo, t.ID)})
	}
	return []discordgo.MessageComponent{discordgo.ActionsRow{Components: bs}}
}
