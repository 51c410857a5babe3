package bot

import (
	"context"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"time"

	"kontextbot/kontext"
)

// Variations: /imagine count:4 (Slack and the terminal: --n 4).
//
// A variations request becomes Count jobs of one group (Job.Group), each
// queued, run and charged on its own, side by side: they have no Serial,
// so they do not wait for each other the way follow-up edits of one
// conversation do. Every job stores its image (and its charge) as it
// ends, and then checks, under a per-group lock, whether every job of its
// group has ended (stored, failed or cancelled): the one that finds so
// posts the group's images as one message. A restart loses nothing: the
// jobs' states are in the store, stored-but-unposted ones are queued
// again by Recover, and whichever of them runs last posts the group.
//
// Ordering with follow-ups: a follow-up that edits the conversation's
// current image ("make it snow"), submitted while a group of that
// conversation is live, is stored but not queued (Job.After names the
// group); it is queued once the group has been posted, so it waits for
// all of the group, and Recover queues it if the group was posted before
// a restart. Edits of a named image (a button on one image, a reply to a
// message) do not wait: they do not depend on the group.
//
// Head: once the group is posted, the conversation's current image is
// image 1 (the first image made), until someone presses "Use N", which
// makes image N current and shows it again, with its own buttons (on
// Discord, in the picture's thread).

// MaxVariations is the most images one variations request may ask for.
const MaxVariations = 4

// GroupJobID is the id of job n (1-based) of variations group group.
func GroupJobID(group string, n int) string { return group + "." + strconv.Itoa(n) }

// groupLock is a per-group mutex, counted so the map forgets it.
type groupLock struct {
	ch    chan struct{}
	users int
}

// lockGroup takes group's lock and returns its unlock.
func (c *Core) lockGroup(group string) func() {
	c.mu.Lock()
	l := c.groups[group]
	if l == nil {
		l = &groupLock{ch: make(chan struct{}, 1)}
		c.groups[group] = l
	}
	l.users++
	c.mu.Unlock()
	l.ch <- struct{}{}
	return func() {
		<-l.ch
		c.mu.Lock()
		l.users--
		if l.users == 0 {
			delete(c.groups, group)
		}
		c.mu.Unlock()
	}
}

// submitGroup accepts req.Count variations of an imagine: it checks the
// whole group against the limits (a group that would pass the daily cap,
// the budget or the waiting cap is refused with one sentence, nothing
// queued), then stores every job before queueing any, each with its own
// seed. If the queue still refuses one (a race with other requests), the
// jobs queued so far are cancelled before they are charged. It returns a
// copy of the first job.
func (c *Core) submitGroup(ctx context.Context, req *Request) (*Job, error) {
	first, _, err := c.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	group := newID("g")
	n := req.Count
	jobs := make([]*Job, n)
	seeds := map[int64]bool{}
	for i := range jobs {
		j := *first
		j.Origin = maps.Clone(first.Origin)
		j.ID, j.Group, j.Index, j.Count = GroupJobID(group, i+1), group, i+1, n
		switch {
		case i == 0:
		case req.Seed != nil:
			j.Seed = first.Seed + int64(i) // a given seed starts the run: reproducible
		default:
			for seeds[j.Seed] {
				j.Seed = mrand.Int64N(1 << 32)
			}
		}
		for seeds[j.Seed] {
			j.Seed++
		}
		seeds[j.Seed] = true
		jobs[i] = &j
	}
	for _, j := range jobs {
		if err := c.store.PutJob(ctx, j); err != nil {
			c.abandonGroup(ctx, jobs, nil)
			return nil, fmt.Errorf("bot: submit variations: %w", err)
		}
	}
	c.markStored(ctx, jobs...)
	cp := *jobs[0]
	for i, j := range jobs {
		if err := c.enqueue(ctx, j); err != nil && !errors.Is(err, ErrQueued) {
			c.abandonGroup(ctx, jobs, jobs[:i])
			return nil, err
		}
	}
	return &cp, nil
}

// abandonGroup ends a group the queue refused part of: every job is
// marked cancelled in the store first (a job that starts now finds it
// ended and does nothing), then the queued ones are taken out of the
// queue.
func (c *Core) abandonGroup(ctx context.Context, jobs, queued []*Job) {
	ctx = context.WithoutCancel(ctx)
	for _, j := range jobs {
		j.State, j.Error, j.Updated = JobCanceled, "variations refused by the queue", c.now()
		if err := c.store.PutJob(ctx, j); err != nil {
			c.log.Error("bot: abandon variations", "job", j.ID, "err", err)
		}
	}
	for _, j := range queued {
		if err := c.queue.Cancel(ctx, j.ID); err != nil && !errors.Is(err, ErrJobGone) {
			c.log.Error("bot: abandon variations: cancel", "job", j.ID, "err", err)
		}
	}
}

// checkWaiting refuses a group of n that would pass the user's waiting
// cap, counting the user's stored jobs not yet started.
func (c *Core) checkWaiting(ctx context.Context, job *Job, n int) error {
	live, err := c.store.LiveJobs(ctx)
	if err != nil {
		return fmt.Errorf("bot: limits: %w", err)
	}
	waiting := 0
	for _, l := range live {
		if l.State == JobWaiting && l.User == job.User && l.Conv.Platform == job.Conv.Platform && l.Conv.Workspace == job.Conv.Workspace {
			waiting++
		}
	}
	if left := c.cfg.UserWaiting - waiting; n > left {
		if left < 0 {
			left = 0
		}
		return Userf("You asked for %d images but only %d more of yours can wait in line right now (%d at most): ask for fewer, or wait for some to finish.", n, left, c.cfg.UserWaiting)
	}
	return nil
}

// liveGroupOf returns the latest variations group of the conversation at
// key that has a live job, or "".
func (c *Core) liveGroupOf(ctx context.Context, key ConvKey) (string, error) {
	live, err := c.store.LiveJobs(ctx)
	if err != nil {
		return "", err
	}
	group := ""
	for _, l := range live { // oldest first: the last one found is the latest
		if l.Group != "" && l.Conv == key {
			group = l.Group
		}
	}
	return group, nil
}

// groupLive reports whether a job of group is still live.
func (c *Core) groupLive(ctx context.Context, group string) (bool, error) {
	live, err := c.store.LiveJobs(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range live {
		if l.Group == group {
			return true, nil
		}
	}
	return false, nil
}

// holdBehindGroup stores a follow-up job held behind the conversation's
// live variations group, if there is one, and reports whether it did. The
// group's post queues it (releaseHeld); if the group ended while the job
// was being stored, it is released here (queueing twice is harmless).
func (c *Core) holdBehindGroup(ctx context.Context, job *Job) (bool, error) {
	group, err := c.liveGroupOf(ctx, job.Conv)
	if err != nil || group == "" {
		return false, err
	}
	job.After = group
	if err := c.store.PutJob(ctx, job); err != nil {
		return false, err
	}
	// Stored before looking again: a group that ends from now on finds it.
	if live, err := c.groupLive(ctx, group); err == nil && !live {
		c.releaseHeld(ctx, group)
	}
	return true, nil
}

// releaseHeld queues the follow-ups held behind group, oldest first.
func (c *Core) releaseHeld(ctx context.Context, group string) {
	ctx = context.WithoutCancel(ctx)
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	live, err := c.store.LiveJobs(ctx)
	if err != nil {
		c.log.Error("bot: release held follow-ups", "group", group, "err", err)
		return
	}
	for _, j := range live {
		if j.After != group || j.State != JobWaiting {
			continue
		}
		j.After, j.Updated = "", c.now()
		if err := c.store.PutJob(ctx, j); err != nil {
			c.log.Error("bot: release held follow-up", "job", j.ID, "err", err)
			continue
		}
		if err := c.enqueue(ctx, j); err != nil && !errors.Is(err, ErrQueued) {
			_ = c.fail(ctx, j, c.reporter(j), 0, 0, err)
		}
	}
}

// recoverHeld decides, at a start, about a follow-up stored as held
// behind a group (stale: it may have been released since it was read):
// it reports true while the group is live (its post releases the job),
// and otherwise clears the hold, so that Recover queues the job.
func (c *Core) recoverHeld(ctx context.Context, stale *Job) (bool, error) {
	c.heldMu.Lock()
	defer c.heldMu.Unlock()
	j, err := c.store.Job(ctx, stale.ID)
	if err != nil {
		return false, err
	}
	*stale = *j
	if j.After == "" {
		return false, nil // released meanwhile: queueing it again is harmless
	}
	if live, err := c.groupLive(ctx, j.After); err != nil || live {
		return true, err
	}
	j.After, j.Updated = "", c.now()
	if err := c.store.PutJob(ctx, j); err != nil {
		return false, err
	}
	*stale = *j
	return false, nil
}

// cancelGroup cancels every job of j's variations group still waiting
// (the group's status, and its Cancel button, speak for all of them);
// those already running or made are posted as the group's message, which
// says how many were cancelled.
func (c *Core) cancelGroup(ctx context.Context, j *Job) error {
	canceled := 0
	for n := 1; n <= j.Count; n++ {
		s, err := c.store.Job(ctx, GroupJobID(j.Group, n))
		if err != nil || s.State != JobWaiting {
			continue
		}
		if err := c.queue.Cancel(ctx, s.ID); err != nil {
			continue // started meanwhile
		}
		s.State, s.Updated = JobCanceled, c.now()
		if err := c.store.PutJob(context.WithoutCancel(ctx), s); err != nil {
			c.log.Error("bot: settle cancelled job", "job", s.ID, "err", err)
		}
		c.logEnd(s, c.now().Sub(s.Created), 0, kontext.ErrCanceled)
		canceled++
	}
	if canceled == 0 {
		return ErrJobGone
	}
	if err := c.finishGroup(context.WithoutCancel(ctx), j, false); err != nil {
		c.log.Error("bot: post variations after a cancel", "group", j.Group, "err", err)
	}
	return nil
}

// finishGroup is called once a job of a variations group has ended
// (image stored, failed, cancelled), or when a stored-but-unposted one is
// run again after a restart (repost). If every job of the group has
// ended and the group is not posted yet, it posts the group's images as
// one message through the reporter of the group's first job, makes image
// 1 the conversation's current image, marks the stored jobs delivered and
// queues the follow-ups held behind the group.
func (c *Core) finishGroup(ctx context.Context, job *Job, repost bool) error {
	unlock := c.lockGroup(job.Group)
	defer unlock()
	ctx = context.WithoutCancel(ctx)
	jobs := make([]*Job, 0, job.Count)
	for n := 1; n <= job.Count; n++ {
		j, err := c.store.Job(ctx, GroupJobID(job.Group, n))
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return fmt.Errorf("bot: variations %s: %w", job.Group, err)
		}
		if j.State == JobWaiting || j.State == JobSubmitted {
			return nil // not the last: that one posts the group
		}
		jobs = append(jobs, j)
	}
	// made are the jobs with an image: posting (stored, not yet posted)
	// or delivered (a crash while marking them left some posting).
	var made, unposted []*Job
	posted := false
	for _, j := range jobs {
		switch j.State {
		case JobPosting:
			made, unposted = append(made, j), append(unposted, j)
		case JobDelivered:
			made, posted = append(made, j), true
		}
	}
	if len(unposted) == 0 {
		if !posted && len(jobs) > 0 {
			c.reportGroupFailed(ctx, jobs)
		}
		c.releaseHeld(ctx, job.Group)
		return nil
	}
	if !repost && !posted {
		// Two processes sharing the queue may end the group's last two
		// jobs at once, each then finding every job ended: one posts.
		// (After a crash the group is posted through the repost path,
		// which needs no claim: the adapter finds an earlier post.)
		first, err := c.store.Claim(ctx, "variations-post:"+job.Group, 7*24*time.Hour)
		if err != nil {
			return fmt.Errorf("bot: variations %s: claim the post: %w", job.Group, err)
		}
		if !first {
			return nil
		}
	}
	d, err := c.groupDelivery(ctx, job, jobs, made)
	if err != nil {
		// The jobs stay posting (they are charged): the next start tries again.
		return fmt.Errorf("bot: variations %s: load images: %w", job.Group, err)
	}
	d.Repost = repost || posted
	if _, err := c.store.SetHead(ctx, d.Conv, d.Turn.ID); err != nil {
		c.log.Warn("bot: variations: head to image 1", "group", job.Group, "err", err)
	}
	poster := d.Job
	if err := c.postRetrying(ctx, poster, c.reporter(poster), d); err != nil {
		return err // the jobs stay posting: the next start posts the group
	}
	for _, v := range d.Group {
		c.thumbnail(ctx, poster, v.Turn, v.Image)
	}
	for i := len(unposted) - 1; i >= 0; i-- { // the poster's own job last
		j := unposted[i]
		j.State, j.Updated = JobDelivered, c.now()
		if err := c.store.PutJob(ctx, j); err != nil {
			c.log.Error("bot: mark delivered", "job", j.ID, "err", err)
		}
	}
	c.releaseHeld(ctx, job.Group)
	return nil
}

// groupDelivery loads the images of the group's made jobs into one
// Delivery, posted by the group's first job (its status and origin).
func (c *Core) groupDelivery(ctx context.Context, job *Job, jobs, made []*Job) (*Delivery, error) {
	conv, err := c.store.Conversation(ctx, job.Conv)
	if err != nil {
		return nil, err
	}
	d := &Delivery{Conv: job.Conv, Count: job.Count, Note: groupNote(job.Count, jobs)}
	for _, j := range made {
		t := conv.Turn(j.Result)
		if t == nil {
			return nil, fmt.Errorf("turn %s of job %s is gone", j.Result, j.ID)
		}
		img, err := c.store.Image(ctx, t.SHA256)
		if err != nil {
			return nil, err
		}
		d.Group = append(d.Group, Variation{N: j.Index, Job: j, Turn: *t, Image: img})
	}
	d.Turn, d.Image = d.Group[0].Turn, d.Group[0].Image
	d.Job = jobs[0]
	if first, err := c.store.Job(ctx, GroupJobID(job.Group, 1)); err == nil {
		d.Job = first
	}
	group := append([]Variation(nil), d.Group...)
	d.Record = func(ctx context.Context, p Posted) error { return c.recordGroup(ctx, job.Conv, group, p) }
	return d, nil
}

// recordGroup records a group's post: the message maps to image 1 (a
// reply to it edits image 1), and a thread the adapter opened for it
// starts with every image of the group, image 1 last (its head).
func (c *Core) recordGroup(ctx context.Context, key ConvKey, group []Variation, p Posted) error {
	if p.Thread != nil && *p.Thread != key {
		for i := len(group) - 1; i >= 0; i-- {
			if err := c.openThread(ctx, key, *p.Thread, group[i].Turn, group[i].Image); err != nil {
				return err
			}
		}
		key = *p.Thread
	}
	if p.MessageID == "" {
		return nil
	}
	return c.store.AddMessage(ctx, key, group[0].Turn.ID, p.MessageID)
}

// reportGroupFailed tells the requester, once, that none of a group's
// images was made.
func (c *Core) reportGroupFailed(ctx context.Context, jobs []*Job) {
	first, err := c.store.Claim(ctx, "variations-failed:"+jobs[0].Group, 7*24*time.Hour)
	if err != nil || !first {
		return
	}
	msg := groupNote(jobs[0].Count, jobs)
	c.reporter(jobs[0]).Fail(ctx, jobs[0], msg)
}

// groupNote says in one sentence what became of a group's images that
// were not made: "3 of 4 made; one was refused by moderation." "" when
// all were made.
func groupNote(count int, jobs []*Job) string {
	made, refused, canceled, failed := 0, 0, 0, 0
	for _, j := range jobs {
		switch {
		case j.State == JobPosting || j.State == JobDelivered:
			made++
		case j.State == JobCanceled:
			canceled++
		case j.Refused:
			refused++
		default:
			failed++
		}
	}
	failed += count - len(jobs) // lost from the store
	if made == count {
		return ""
	}
	var why []string
	for _, p := range []struct {
		n            int
		one, several string
	}{
		{refused, "one was refused by moderation", "%d were refused by moderation"},
		{canceled, "one was cancelled", "%d were cancelled"},
		{failed, "one failed", "%d failed"},
	} {
		switch {
		case p.n == 1:
			why = append(why, p.one)
		case p.n > 1:
			why = append(why, fmt.Sprintf(p.several, p.n))
		}
	}
	if canceled == count {
		return "Cancelled."
	}
	if made == 0 {
		return fmt.Sprintf("None of the %d variations could be made: %s. Nothing was charged for them.", count, strings.Join(why, ", "))
	}
	return fmt.Sprintf("%d of %d made; %s (not charged).", made, count, strings.Join(why, ", "))
}

// groupCaption is a group's caption (see Caption).
func (d *Delivery) groupCaption() string {
	var b strings.Builder
	b.WriteString(d.Turn.Prompt)
	fmt.Fprintf(&b, " · %d variations", max(d.Count, len(d.Group)))
	var seeds []string
	for _, v := range d.Group {
		if v.Turn.Seed != nil {
			seeds = append(seeds, fmt.Sprintf("%d: seed %d", v.N, *v.Turn.Seed))
		}
	}
	if len(seeds) > 0 {
		b.WriteString(" · " + strings.Join(seeds, ", "))
	}
	if d.Turn.Model != "" {
		b.WriteString(" · " + d.Turn.Model)
	}
	if d.Note != "" {
		b.WriteString("\n" + d.Note)
	}
	if len(d.Group) > 1 {
		fmt.Fprintf(&b, "\nFollow-ups edit image %d; press Use N to go on from image N instead.", d.Group[0].N)
	}
	return b.String()
}

// ErrNotInConversation answers a Use of an image the conversation no
// longer holds.
var ErrNotInConversation = &UserError{Msg: "I no longer have that image here: only the last images of a conversation are kept.", Err: ErrNoImage}

// quietReporter is the reporter of a variations job after the first: its
// progress is not shown (the first job's status speaks for the group),
// and the group is posted through the first job's reporter.
type quietReporter struct{ Reporter }

func (quietReporter) Queued(*Job, int) {}
func (quietReporter) Running(*Job)     {}
