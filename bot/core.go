package bot

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"kontextbot/bot/sheet"
	"kontextbot/kontext"
)

// Generator makes images: text to image, or an edit of InputImage. Resume
// follows a prediction accepted before a restart. *kontext.Client is one.
type Generator interface {
	Run(ctx context.Context, req kontext.Request) (*kontext.Result, error)
	Resume(ctx context.Context, predictionID string) (*kontext.Result, error)
}

// Reporter tells people how one job is going, on the platform it came
// from. Queued and Running must not block: adapters throttle and post in
// the background.
type Reporter interface {
	// Queued says the job waits, pos-th in line (1 is next). Places are
	// exact up to kontext.ExactPositions; further back pos is
	// kontext.PositionBeyond, which InLine and QueuedText render as "over
	// 50 in line".
	Queued(job *Job, pos int)
	// Running says the provider is making the image.
	Running(job *Job)
	// Deliver posts the finished image where the job was asked for.
	Deliver(ctx context.Context, job *Job, d *Delivery) (Posted, error)
	// Fail tells the requester, in msg, that the job ended without an image.
	Fail(ctx context.Context, job *Job, msg string)
}

// DelayReporter is an optional extension of a Reporter: one that has it
// (checked with a type assertion) is told when posting a finished image
// is delayed. A Reporter without it shows nothing while the core retries,
// and is told with Fail(PostHeldText) when the image is held for the
// next start, as before.
type DelayReporter interface {
	// Delayed says a post failed and is being retried in the process
	// (the image is made and stored): one status line, such as
	// PostDelayedText. Called at most once per job and process, before
	// the first retry. It must not block for long.
	Delayed(ctx context.Context, job *Job)
	// Held says posting keeps failing: the image waits on disk and is
	// posted at the next start; msg is the sentence for the requester.
	// Unlike Fail the job has not ended: a Deliver follows, in this
	// process or the next, so anything the adapter still needs for it
	// (a status message to remove) should stay.
	Held(ctx context.Context, job *Job, msg string)
}

// Posted is where a delivered image landed.
type Posted struct {
	// MessageID is the platform message carrying the image; a reply to it
	// edits that image.
	MessageID string
	// Thread, when set, is the conversation that continues from this image
	// (a thread the adapter opened for it); the image becomes its head.
	Thread *ConvKey
}

// Platform is a chat platform adapter as the core sees it: something that
// can report on any job of its own, including jobs accepted by an earlier
// process, from what the job's Origin says.
type Platform interface {
	Name() string
	Reporter(job *Job) Reporter
}

// Delivery is an image ready to post.
type Delivery struct {
	// Job is the job that made it; nil when an undo shows an older image.
	Job   *Job
	Conv  ConvKey
	Turn  Turn
	Image []byte
	// Record, set by the core, records at once where the image was posted,
	// so that a reply, a button or a follow-up in a new thread that comes
	// right after finds it. An adapter calls it as soon as the post's place
	// is settled: when it opens a thread for the image, after opening it
	// and with both the message and the thread (a message recorded alone
	// belongs to the conversation it was posted in). What Deliver returns
	// is recorded too; recording the same post twice is harmless.
	Record func(ctx context.Context, p Posted) error
	// Sources name the images an edit with further references was made
	// from, in order (the base first), as the caption shows them; empty
	// for a one-image edit.
	Sources []string
	// Repost is set when an earlier attempt to post this image, in this
	// process or in one before a restart, may have succeeded although it
	// did not report so (a timeout or 5xx after the request was sent, a
	// crash before the post was recorded). The adapter then looks for
	// that post first and returns it instead of posting the image twice.
	Repost bool
	// Group, when not empty, holds the images of a variations group, in
	// their order, to post together as one message (Turn and Image are
	// then the first of them); Count is how many were asked for and Note
	// says in one sentence what became of those that were not made ("" when
	// all were). Job is the group's job that posts it.
	Group []Variation
	Count int
	Note  string
}

// Variation is one image of a variations group.
type Variation struct {
	// N is the image's 1-based number in the group ("Use 3").
	N     int
	Job   *Job
	Turn  Turn
	Image []byte
}

// Caption is the short line posted with an image: prompt, seed and model;
// for a variations group, the prompt, each image's number and seed, the
// model, what became of the images not made, and how to go on.
func (d *Delivery) Caption() string {
	if len(d.Group) > 0 {
		return d.groupCaption()
	}
	var b strings.Builder
	if d.Turn.Kind == KindUpload {
		b.WriteString("Uploaded image")
	} else {
		b.WriteString(d.Turn.Prompt)
	}
	if len(d.Sources) > 0 {
		b.WriteString(" · from " + strings.Join(d.Sources, " + "))
	}
	if d.Turn.Seed != nil {
		fmt.Fprintf(&b, " · seed %d", *d.Turn.Seed)
	}
	if d.Turn.Model != "" {
		b.WriteString(" · " + d.Turn.Model)
	}
	return b.String()
}

// Request is one thing a person asked the bot for, as an adapter saw it.
type Request struct {
	Kind Kind
	// Conv is the conversation the request was made in.
	Conv     ConvKey
	User     string
	UserName string
	Prompt   string
	// Aspect, Seed and Model are options; empty means the defaults.
	Aspect string
	Seed   *int64
	Model  string
	// Enhance asks the model to enhance the prompt (prompt_upsampling)
	// for an imagine or edit; a reroll keeps its image's setting.
	Enhance bool
	// Image is an image attached to the request itself: the base of an edit.
	Image []byte
	// ReplyTo is the platform message the request replies to or targets.
	// When it is one of the bot's results, its image is the base.
	ReplyTo string
	// ReplyImage is the image of that message when it is a person's.
	ReplyImage []byte
	// Turn is the image a button was pressed on (reroll, undo, edit, use).
	Turn string
	// Count asks an imagine for that many variations (1 to
	// MaxVariations; 0 means 1), each with its own seed, posted together.
	Count int
	// Refs are further images an edit uses after its base, in order: at
	// most MaxImages-1 of them. The base (resolved as without Refs) is
	// the first reference.
	Refs []Ref
	// Origin is the adapter's note of where to answer; stored with the job.
	Origin map[string]string
	// Admin is set by the adapter when the platform says the user
	// administers the workspace (Discord Manage Server, Slack admin or
	// owner): they may change its settings. For a Delete it says the user
	// may delete others' messages there (Discord Manage Messages, Slack
	// admin or owner). Limits still apply to them; only KONTEXT_ADMINS are
	// exempt.
	Admin bool

	// checked are the images Check accepted, so Submit with the same
	// request does not decode them again.
	checked [][]byte
}

// Ref is one further reference image of an edit: a person's image
// (Image), or one of the bot's images, by the platform message it was
// posted in (Message) or by its turn in the request's conversation
// (Turn). Exactly one is set.
type Ref struct {
	Image   []byte
	Message string
	Turn    string
}

// MaxImages is how many images one edit may use in all: the base and
// MaxImages-1 further references (FLUX.1 Kontext's input_image to
// input_image_4).
const MaxImages = 4

// ErrTooManyImages refuses an edit with more than MaxImages images.
var ErrTooManyImages = &UserError{Msg: fmt.Sprintf("One edit can use at most %d images (the image to edit and %d more): send fewer images and try again.", MaxImages, MaxImages-1)}

// Config is the core's configuration.
type Config struct {
	// Model is the default model; Prices maps a model to its USD price per image.
	Model  string
	Prices map[string]float64
	// UserDaily caps each user's images per UTC day; 0 means no cap.
	UserDaily int
	// WorkspaceBudget caps each workspace's spend per UTC month in USD; 0 means none.
	WorkspaceBudget float64
	// Channels, when not empty, are the only channels the bot answers in.
	Channels []string
	// Admins are user ids exempt from the limits above.
	Admins []string
	// Logger receives one line per job; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnJobEnd, when set, is told of every job's end (for metrics). It
	// must not block.
	OnJobEnd func(JobEnd)
	// PostRetry is how long posting a finished image is retried in the
	// process after transient failures (see TransientError), before the
	// image is held for the next start. 0 means DefaultPostRetry; a
	// negative value disables retries.
	PostRetry time.Duration
	// PostRetryBase is the first wait between two posting attempts; it
	// doubles up to MaxPostBackoff, with jitter. 0 means one second.
	PostRetryBase time.Duration
	// ImageBudget, shared with the provider client, bounds the memory the
	// checks of people's images take at once (see CheckImageWithin); nil
	// means no bound.
	ImageBudget *kontext.Budget
	// UserWaiting is the queue's cap on one user's waiting jobs (0: not
	// known); a variations request that would pass it is refused up
	// front, before any of its jobs is queued.
	UserWaiting int
}

// DefaultPostRetry is how long posting a finished image is retried in
// the process by default.
const DefaultPostRetry = 5 * time.Minute

// MaxPostBackoff bounds the wait between two posting attempts (a rate
// limit that asks for longer is still honoured).
const MaxPostBackoff = 30 * time.Second

// JobEnd describes how a job ended.
type JobEnd struct {
	Kind     Kind
	Platform string
	Model    string
	// Outcome is "delivered", "failed", "refused" (moderation), "canceled"
	// or "kept" (left for the next start at shutdown).
	Outcome string
	// Wait is the time in the queue, Provider the time making the image.
	Wait, Provider time.Duration
	// USD is what the job cost: the model's price when delivered, else 0.
	USD float64
}

// User errors the core returns; each carries its sentence.
var (
	ErrNoImage       = &UserError{Msg: "There is no image to edit here. Reply to an image, attach one, or /imagine first."}
	ErrNothingToUndo = &UserError{Msg: "Nothing to undo: this is the first image of this conversation that I still have."}
	ErrNoReroll      = &UserError{Msg: "That image was uploaded, not generated, so there is nothing to reroll."}
	ErrChannel       = &UserError{Msg: "I'm not enabled in this channel. Ask an admin to allow it (/kontext settings on Discord, /imagine settings on Slack, or KONTEXT_CHANNELS)."}
	ErrDailyLimit    = &UserError{Msg: "You have reached your daily image limit. It resets at midnight UTC."}
	ErrBudget        = &UserError{Msg: "This workspace has spent its image budget for the month."}
	ErrNotYours      = &UserError{Msg: "Only the person who asked for that image (or an admin) can cancel it."}
	ErrJobGone       = &UserError{Msg: "That job has already started or finished, so it can no longer be cancelled."}
	// ErrEmptyUndo answers an undo before any image; errors.Is also
	// matches ErrNoImage.
	ErrEmptyUndo = &UserError{Msg: "There is nothing to undo here: no image has been made in this conversation yet.", Err: ErrNoImage}
	// ErrCreateUnsure ends a job whose create was sent by a process that
	// stopped before it learned the prediction's id: the prediction may
	// exist and be paid for, and a create is never sent twice.
	ErrCreateUnsure = &UserError{Msg: "The server making this image stopped just as it asked for it, so I cannot tell whether it was made, and I won't pay for it twice. Nothing was charged to you: please ask again."}
)

// Core is the platform-free bot: it turns requests into jobs, runs them
// through the scheduler, keeps conversations, and reports back through the
// platform each job came from.
type Core struct {
	cfg   Config
	store Store
	gen   Generator
	queue Scheduler
	log   *slog.Logger
	now   func() time.Time

	mu        sync.Mutex
	platforms map[string]Platform
	closing   bool
	// groups serialises, per variations group, the check "has every job
	// of the group ended?" and the group's post.
	groups map[string]*groupLock
	// heldMu serialises releasing follow-ups held behind groups.
	heldMu    sync.Mutex
	recovered bool // Recover has run: the platforms are registered

	// stop is closed when Close begins: posting retries stop waiting.
	stop     chan struct{}
	stopOnce sync.Once
	// halt ends when Close's ctx does: posting attempts still in flight
	// are cut short (the image is posted at the next start).
	halt       context.Context
	haltCancel context.CancelCauseFunc
	started    sync.Once // the scheduler's Start
	// thumbs keeps the history sheets' thumbnails, by image digest.
	thumbs *sheet.Cache
}

// New returns a core over st, gen and q.
func New(cfg Config, st Store, gen Generator, q Scheduler) *Core {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	if cfg.Model == "" {
		cfg.Model = kontext.ModelMax
	}
	if cfg.PostRetry == 0 {
		cfg.PostRetry = DefaultPostRetry
	}
	if cfg.PostRetryBase <= 0 {
		cfg.PostRetryBase = time.Second
	}
	halt, haltCancel := context.WithCancelCause(context.Background())
	return &Core{cfg: cfg, store: st, gen: gen, queue: q, log: log, now: now,
		platforms: map[string]Platform{}, thumbs: sheet.NewCache(ThumbnailCache), groups: map[string]*groupLock{},
		stop: make(chan struct{}), halt: halt, haltCancel: haltCancel}
}

// Register adds a platform. Register every platform before Recover.
func (c *Core) Register(p Platform) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.platforms[p.Name()] = p
}

// Store returns the core's store, for adapters that look up conversations.
func (c *Core) Store() Store { return c.store }

func (c *Core) reporter(j *Job) Reporter {
	c.mu.Lock()
	p := c.platforms[j.Conv.Platform]
	c.mu.Unlock()
	if p == nil {
		return nopReporter{}
	}
	if j.Index > 1 {
		return quietReporter{p.Reporter(j)}
	}
	return p.Reporter(j)
}

func (c *Core) isAdmin(user string) bool { return slices.Contains(c.cfg.Admins, user) }

// Submit accepts an imagine, edit or reroll: it checks the input and the
// limits before anything is charged or sent, persists the job and queues
// it. The returned job is a copy for the caller.
//
// With req.Count above 1 it accepts a variations group (see
// submitGroup) and returns the group's first job. A follow-up that edits
// the conversation's current image while a variations group of the
// conversation is still live is held until the group is posted (see
// holdBehindGroup).
func (c *Core) Submit(ctx context.Context, req *Request) (*Job, error) {
	if req.Count > 1 {
		return c.submitGroup(ctx, req)
	}
	job, p, err := c.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	if upload := p.base; upload != nil {
		t := Turn{ID: newID("i"), Kind: KindUpload, Requester: req.User, Created: job.Created}
		if err := describe(&t, upload); err != nil {
			return nil, err
		}
		if _, err := c.store.AddTurn(ctx, job.Conv, t, upload, nil, nil); err != nil {
			return nil, fmt.Errorf("bot: submit: store upload: %w", err)
		}
		job.Base = t.ID
	}
	for i, r := range p.refs {
		if r.data == nil {
			job.Refs = append(job.Refs, r.id)
			continue
		}
		t := r.turn
		if t.ID == "" {
			t = Turn{ID: newID("i"), Kind: KindUpload, Requester: req.User, Created: job.Created}
		}
		if err := describe(&t, r.data); err != nil {
			return nil, err
		}
		if _, err := c.store.AddReference(ctx, job.Conv, t, r.data); err != nil {
			return nil, fmt.Errorf("bot: submit: store reference %d: %w", i+2, err)
		}
		job.Refs = append(job.Refs, t.ID)
	}
	if job.FollowHead {
		held, err := c.holdBehindGroup(ctx, job)
		if err != nil {
			return nil, fmt.Errorf("bot: submit: %w", err)
		}
		if held {
			c.markStored(ctx, job)
			cp := *job
			return &cp, nil
		}
	}
	if err := c.store.PutJob(ctx, job); err != nil {
		return nil, fmt.Errorf("bot: submit: %w", err)
	}
	c.markStored(ctx, job) // the platform may acknowledge now: Adopt queues a stored job whose replica died
	cp := *job             // the caller's copy: once queued, job belongs to its run
	// ErrQueued: another process's Recover queued the stored job first.
	if err := c.enqueue(ctx, job); err != nil && !errors.Is(err, ErrQueued) {
		job.State, job.Error, job.Updated = JobFailed, err.Error(), c.now()
		if perr := c.store.PutJob(context.WithoutCancel(ctx), job); perr != nil {
			c.log.Error("bot: submit: mark refused job", "job", job.ID, "err", perr)
		}
		return nil, err
	}
	return &cp, nil
}

// Check runs every check Submit runs before it persists anything (input,
// base image, channel, limits) and returns the error Submit would, so an
// adapter can refuse a request before it posts a status message. It
// changes nothing. The queue's own limits are only known at Submit.
func (c *Core) Check(ctx context.Context, req *Request) error {
	_, _, err := c.prepare(ctx, req)
	return err
}

// pending is what Submit stores for a prepared job: a person's image as
// its base, and its further references.
type pending struct {
	base []byte
	refs []pendingRef
}

// pendingRef is one further reference: a turn of the job's conversation
// (id), or an image to store there (data, as turn when it is a copy of
// another conversation's turn, else as a new upload turn).
type pendingRef struct {
	id   string
	turn Turn
	data []byte
}

// prepare turns a request into a job without persisting anything. It
// returns what Submit must store first: a person's image as the job's
// base, and the further references.
func (c *Core) prepare(ctx context.Context, req *Request) (*Job, *pending, error) {
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	if sh, ok := c.queue.(Shared); closing && (!ok || !sh.QueuesAfterClose()) {
		return nil, nil, kontext.ErrShutdown
	}
	n := max(req.Count, 1)
	switch {
	case n > MaxVariations:
		return nil, nil, Userf("I can make at most %d variations at once.", MaxVariations)
	case n > 1 && req.Kind != KindImagine:
		return nil, nil, Userf("Variations (count) are for /imagine only.")
	}
	if !req.Conv.Valid() {
		return nil, nil, fmt.Errorf("bot: submit: invalid conversation key %q", req.Conv)
	}
	if len(req.Refs) > 0 && req.Kind != KindEdit {
		return nil, nil, fmt.Errorf("bot: submit: a %s takes no further references", req.Kind)
	}
	if 1+len(req.Refs) > MaxImages {
		return nil, nil, ErrTooManyImages
	}
	admin := c.isAdmin(req.User)
	eff, err := c.effective(ctx, req.Conv.Platform, req.Conv.Workspace)
	if err != nil {
		return nil, nil, err
	}
	if !admin && !eff.allowedIn(req.Conv.Channel) {
		return nil, nil, ErrChannel
	}
	now := c.now()
	job := &Job{
		ID: newID("j"), Kind: req.Kind, Conv: req.Conv, User: req.User, UserName: req.UserName,
		Model: req.Model, Aspect: req.Aspect, Enhance: req.Enhance, Origin: req.Origin,
		State: JobWaiting, Created: now, Updated: now,
	}
	if job.Model == "" {
		job.Model = eff.Model
	}
	if !kontext.ValidModel(job.Model) {
		return nil, nil, UnknownModel(job.Model)
	}
	if job.Aspect != "" && !kontext.ValidAspect(job.Aspect) {
		return nil, nil, Userf("Unknown aspect ratio %q: use one of %s.", job.Aspect, strings.Join(kontext.AspectRatios[1:], ", "))
	}
	if m, ok := kontext.LookupModel(job.Model); ok && m.MaxRefs > 0 && 1+len(req.Refs) > m.MaxRefs {
		return nil, nil, Userf("%s takes at most %d images in one edit: send fewer images and try again.", m.Name, m.MaxRefs)
	}
	p := &pending{}
	switch req.Kind {
	case KindImagine, KindEdit:
		prompt, err := CleanPrompt(req.Prompt)
		if err != nil {
			return nil, nil, err
		}
		job.Prompt = prompt
		if req.Kind == KindEdit {
			if p.base, err = c.resolveBase(ctx, req, job); err != nil {
				return nil, nil, err
			}
			if p.refs, err = c.resolveRefs(ctx, req, job); err != nil {
				return nil, nil, err
			}
		}
	case KindReroll:
		if err := c.resolveReroll(ctx, req, job, eff.Model); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("bot: submit: kind %q is not a job", req.Kind)
	}
	if req.Seed != nil {
		job.Seed = *req.Seed
	} else {
		job.Seed = mrand.Int64N(1 << 32)
	}
	if !admin {
		if err := c.checkLimits(ctx, job, n, now, eff); err != nil {
			return nil, nil, err
		}
	}
	return job, p, nil
}

// checkImage checks a person's image within the image budget, once per
// request: a Submit after a Check of the same request and image does not
// decode it again.
func (c *Core) checkImage(ctx context.Context, req *Request, img []byte) error {
	if len(img) > 0 && slices.ContainsFunc(req.checked, func(b []byte) bool { return len(b) == len(img) && &b[0] == &img[0] }) {
		return nil
	}
	if err := CheckImageWithin(ctx, img, c.cfg.ImageBudget); err != nil {
		return err
	}
	req.checked = append(req.checked, img)
	return nil
}

// resolveRefs checks an edit's further references, in order, after its
// base (which may have moved the job to the conversation of the message
// it replies to): a person's image is checked like a base; one of the
// bot's images must still be kept. A turn of another conversation is
// copied into the job's, so every reference is a turn of it.
func (c *Core) resolveRefs(ctx context.Context, req *Request, job *Job) ([]pendingRef, error) {
	if len(req.Refs) == 0 {
		return nil, nil
	}
	conv, err := c.conversation(ctx, job.Conv)
	if err != nil {
		return nil, fmt.Errorf("bot: resolve references: %w", err)
	}
	gone := func(n int) error {
		return Userf("I no longer have image %d of this edit: only the last images of a conversation are kept.", n)
	}
	var out []pendingRef
	for i, r := range req.Refs {
		n := i + 2 // the base is image 1
		switch {
		case r.Image != nil:
			if err := c.checkImage(ctx, req, r.Image); err != nil {
				return nil, &UserError{Msg: fmt.Sprintf("Image %d: %s", n, Explain(err)), Err: err}
			}
			out = append(out, pendingRef{data: r.Image})
		case r.Turn != "":
			if conv.Turn(r.Turn) == nil {
				return nil, gone(n)
			}
			out = append(out, pendingRef{id: r.Turn})
		case r.Message != "":
			key, id, err := c.store.Message(ctx, job.Conv, r.Message)
			switch {
			case errors.Is(err, ErrNotFound):
				return nil, gone(n)
			case err != nil:
				return nil, fmt.Errorf("bot: resolve reference %d: %w", n, err)
			case key == job.Conv || conv.Turn(id) != nil:
				out = append(out, pendingRef{id: id})
				continue
			}
			src, err := c.conversation(ctx, key)
			if err != nil {
				return nil, fmt.Errorf("bot: resolve reference %d: %w", n, err)
			}
			t := src.Turn(id)
			if t == nil {
				return nil, gone(n)
			}
			data, err := c.store.Image(ctx, t.SHA256)
			if err != nil {
				return nil, fmt.Errorf("bot: resolve reference %d: %w", n, err)
			}
			cp := *t
			cp.Messages, cp.Refs = nil, nil
			out = append(out, pendingRef{turn: cp, data: data})
		default:
			return nil, fmt.Errorf("bot: submit: reference %d is empty", n)
		}
	}
	return out, nil
}

// resolveBase finds the image an edit starts from: an image attached to
// the request, else the image of the message replied to or targeted, else
// the conversation's current image. It returns bytes to store as an upload
// turn when the base is a person's image.
func (c *Core) resolveBase(ctx context.Context, req *Request, job *Job) ([]byte, error) {
	if req.Image != nil {
		return req.Image, c.checkImage(ctx, req, req.Image)
	}
	if req.Turn != "" {
		conv, err := c.conversation(ctx, req.Conv)
		if err != nil {
			return nil, fmt.Errorf("bot: resolve base: %w", err)
		}
		if conv.Turn(req.Turn) == nil {
			return nil, Userf("I no longer have that image: only the last images of a conversation are kept.")
		}
		job.Base = req.Turn
		return nil, nil
	}
	if req.ReplyTo != "" {
		key, turn, err := c.store.Message(ctx, req.Conv, req.ReplyTo)
		switch {
		case err == nil:
			job.Conv, job.Base = key, turn
			return nil, nil
		case !errors.Is(err, ErrNotFound):
			return nil, fmt.Errorf("bot: resolve base: %w", err)
		}
	}
	if req.ReplyImage != nil {
		return req.ReplyImage, c.checkImage(ctx, req, req.ReplyImage)
	}
	conv, err := c.conversation(ctx, req.Conv)
	if err != nil {
		return nil, fmt.Errorf("bot: resolve base: %w", err)
	}
	if conv.Current() == nil && !c.hasLiveJob(ctx, req.Conv) {
		return nil, ErrNoImage
	}
	job.FollowHead = true
	return nil, nil
}

// resolveReroll makes job repeat a turn: same prompt, parent, model and
// aspect, new seed.
func (c *Core) resolveReroll(ctx context.Context, req *Request, job *Job, model string) error {
	conv, err := c.conversation(ctx, req.Conv)
	if err != nil {
		return fmt.Errorf("bot: reroll: %w", err)
	}
	t := conv.Current()
	if req.Turn != "" {
		t = conv.Turn(req.Turn)
	}
	switch {
	case t == nil:
		return ErrNoImage
	case t.Kind == KindUpload:
		return ErrNoReroll
	}
	job.Prompt, job.Base, job.Model, job.Aspect, job.Enhance = t.Prompt, t.Parent, t.Model, t.Aspect, t.Enhance
	if job.Model == "" {
		job.Model = c.cfg.Model
	}
	if t.Parent != "" && conv.Turn(t.Parent) == nil {
		return Userf("I no longer have the image that one was made from, so I cannot reroll it.")
	}
	for _, r := range t.Refs {
		if conv.Turn(r) == nil {
			return Userf("I no longer have one of the images that one was made from, so I cannot reroll it.")
		}
	}
	job.Refs = slices.Clone(t.Refs)
	return nil
}

// hasLiveJob reports whether a job of the conversation at key is live,
// accepted by any process on the store.
func (c *Core) hasLiveJob(ctx context.Context, key ConvKey) bool {
	live, err := c.store.LiveJobs(ctx)
	if err != nil {
		c.log.Error("bot: live jobs", "err", err)
		return false
	}
	return slices.ContainsFunc(live, func(j *Job) bool { return j.Conv == key })
}

// checkLimits refuses n images like job (a variations group is n jobs)
// past the user's daily cap or the workspace's monthly budget, counting
// jobs still in flight as if they were delivered (a posting job is
// charged already, so it counts through the usage), and a group of n
// past the user's waiting cap.
func (c *Core) checkLimits(ctx context.Context, job *Job, n int, now time.Time, eff Effective) error {
	if n > 1 && c.cfg.UserWaiting > 0 {
		if err := c.checkWaiting(ctx, job, n); err != nil {
			return err
		}
	}
	if eff.DailyLimit <= 0 && eff.Budget <= 0 {
		return nil
	}
	day, month, err := c.store.Usage(ctx, job.Conv.Platform, job.Conv.Workspace, job.User, now)
	if err != nil {
		return fmt.Errorf("bot: limits: %w", err)
	}
	live, err := c.store.LiveJobs(ctx)
	if err != nil {
		return fmt.Errorf("bot: limits: %w", err)
	}
	for _, l := range live {
		if l.Conv.Platform != job.Conv.Platform || l.Conv.Workspace != job.Conv.Workspace || l.State == JobPosting {
			continue
		}
		if l.User == job.User && sameDay(l.Created, now) {
			day.Images++
		}
		if sameMonth(l.Created, now) {
			month.Spend += c.cfg.Prices[l.Model]
		}
	}
	if eff.DailyLimit > 0 && day.Images >= eff.DailyLimit {
		return &UserError{Msg: fmt.Sprintf("You have used your %d images for today. The limit resets at midnight UTC.", eff.DailyLimit), Err: ErrDailyLimit}
	}
	if left := eff.DailyLimit - day.Images; eff.DailyLimit > 0 && n > left {
		return &UserError{Msg: fmt.Sprintf("You asked for %d images but have %d left today (limit %d): ask for fewer. The limit resets at midnight UTC.", n, left, eff.DailyLimit), Err: ErrDailyLimit}
	}
	if price := c.cfg.Prices[job.Model] * float64(n); eff.Budget > 0 && month.Spend+price > eff.Budget+1e-9 {
		return &UserError{Msg: fmt.Sprintf("This workspace has spent its $%.2f image budget for %s.", eff.Budget, now.UTC().Format("January")), Err: ErrBudget}
	}
	return nil
}

func sameDay(a, b time.Time) bool {
	return a.UTC().Format(time.DateOnly) == b.UTC().Format(time.DateOnly)
}

func sameMonth(a, b time.Time) bool {
	return a.UTC().Format("2006-01") == b.UTC().Format("2006-01")
}

// enqueue hands job, stored, to the scheduler, which runs it by id (on
// this process or, with a shared queue, on any other).
func (c *Core) enqueue(ctx context.Context, job *Job) error {
	c.started.Do(func() { c.queue.Start(c.run) })
	rep := c.reporter(job)
	serial := job.Conv.String()
	if job.Kind == KindImagine && job.Conv.Thread == "" || job.Group != "" {
		// A new picture in a channel waits for no one; variations run
		// side by side (a follow-up after them is held until they are
		// posted: see holdBehindGroup).
		serial = ""
	}
	return c.queue.Submit(ctx, Slot{
		ID:     job.ID,
		User:   job.Conv.Platform + "/" + job.Conv.Workspace + "/" + job.User,
		Serial: serial,
		Pool:   kontext.PoolOf(job.Model),
		Position: func(pos int) {
			if pos > 0 {
				rep.Queued(job, pos)
			}
		},
	})
}

// run is the scheduler's RunFunc: it loads the job from the store and
// continues it from its state (waiting: create; submitted: follow the
// prediction; posting: post the stored image). A job that ended
// meanwhile (on another process, or cancelled) is left alone.
func (c *Core) run(ctx context.Context, id string) error {
	job, err := c.store.Job(ctx, id)
	switch {
	case errors.Is(err, ErrNotFound):
		c.log.Error("bot: run: job not in the store", "job", id)
		return nil
	case err != nil:
		// Leave it to whoever runs it next.
		return fmt.Errorf("bot: run: %w: %w", kontext.ErrShutdown, err)
	case !job.State.Live():
		return nil
	}
	c.mu.Lock()
	_, known := c.platforms[job.Conv.Platform]
	c.mu.Unlock()
	if !known {
		// Its platform is not configured in this process: the job stays
		// live on disk for a process that has it (its Recover).
		c.log.Warn("bot: run: job of a platform not configured here", "job", id, "platform", job.Conv.Platform)
		return nil
	}
	err = c.execute(ctx, job, c.reporter(job), job.Created)
	if err != nil && ctx.Err() != nil && errors.Is(context.Cause(ctx), kontext.ErrShutdown) {
		return context.Cause(ctx)
	}
	return err
}

// create makes the job's prediction and follows it. A create request that
// may have made a prediction is never cut short: until the provider has
// answered it (and OnCreated has stored the prediction id), the call does
// not end with ctx; after that it does, and whoever runs the job next
// follows the stored prediction instead of paying for another. (A stop or
// a handover thus waits for creates in flight, never for predictions.)
func (c *Core) create(ctx context.Context, req kontext.Request) (*kontext.Result, error) {
	gctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	var mu sync.Mutex
	created := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if created {
			cancel(context.Cause(ctx))
		}
	})
	defer stop()
	onCreated := req.OnCreated
	req.OnCreated = func(id string) {
		if onCreated != nil {
			onCreated(id)
		}
		mu.Lock()
		created = true
		mu.Unlock()
		if ctx.Err() != nil {
			cancel(context.Cause(ctx))
		}
	}
	return c.gen.Run(gctx, req)
}

// hold asks the scheduler, right before something that must happen once,
// whether this process still runs job. Its error wraps kontext.ErrShutdown
// (stop, leaving the job as stored) or kontext.ErrCanceled.
func (c *Core) hold(ctx context.Context, job *Job) error {
	err := c.queue.Hold(ctx, job.ID)
	if err == nil || errors.Is(err, kontext.ErrCanceled) || errors.Is(err, kontext.ErrShutdown) {
		return err
	}
	return fmt.Errorf("bot: hold job %s: %w: %w", job.ID, kontext.ErrShutdown, err)
}

// Cancel cancels a waiting job of user's (or anyone's, for an admin),
// whichever process accepted it.
func (c *Core) Cancel(ctx context.Context, jobID, user string) error {
	j, err := c.store.Job(ctx, jobID)
	switch {
	case errors.Is(err, ErrNotFound):
		return ErrJobGone
	case err != nil:
		return fmt.Errorf("bot: cancel: %w", err)
	case j.State != JobWaiting:
		return ErrJobGone
	case j.User != user && !c.isAdmin(user):
		return ErrNotYours
	case j.Group != "":
		return c.cancelGroup(ctx, j)
	}
	if err := c.queue.Cancel(ctx, jobID); err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	j.State, j.Updated = JobCanceled, c.now()
	if err := c.store.PutJob(ctx, j); err != nil {
		c.log.Error("bot: settle cancelled job", "job", j.ID, "err", err)
	}
	c.logEnd(j, c.now().Sub(j.Created), 0, kontext.ErrCanceled)
	c.reporter(j).Fail(ctx, j, Explain(kontext.ErrCanceled))
	return nil
}

// execute runs one job in a slot: resolve the base image, call the
// provider (or follow a prediction accepted before a restart), store the
// image with the charge, then post it.
func (c *Core) execute(ctx context.Context, job *Job, rep Reporter, queued time.Time) error {
	started := c.now()
	wait := started.Sub(queued)
	if job.State == JobPosting {
		if job.Group != "" {
			// Stored before a restart: post the group if this was its last.
			return c.finishGroup(context.WithoutCancel(ctx), job, true)
		}
		return c.post(context.WithoutCancel(ctx), job, rep, wait, 0)
	}
	rep.Running(job)
	req := kontext.Request{Prompt: job.Prompt, Model: job.Model, AspectRatio: job.Aspect, Seed: &job.Seed,
		PromptUpsampling: job.Enhance}
	if job.FollowHead && job.Base == "" {
		conv, err := c.conversation(ctx, job.Conv)
		if err != nil {
			return c.fail(ctx, job, rep, wait, 0, fmt.Errorf("bot: load conversation: %w", err))
		}
		cur := conv.Current()
		if cur == nil {
			return c.fail(ctx, job, rep, wait, 0, ErrNoImage)
		}
		job.Base = cur.ID
	}
	if job.Base != "" {
		img, err := c.baseImage(ctx, job.Conv, job.Base)
		if err != nil {
			return c.fail(ctx, job, rep, wait, 0, err)
		}
		req.InputImage = img
	}
	if len(job.Refs) > 0 && job.Base == "" {
		return c.fail(ctx, job, rep, wait, 0, fmt.Errorf("bot: job %s has references but no base", job.ID))
	}
	for i, id := range job.Refs {
		img, err := c.baseImage(ctx, job.Conv, id)
		var ue *UserError
		if errors.As(err, &ue) {
			err = &UserError{Msg: fmt.Sprintf("I no longer have image %d of this edit: only the last images of a conversation are kept.", i+2), Err: err}
		}
		if err != nil {
			return c.fail(ctx, job, rep, wait, 0, err)
		}
		req.References = append(req.References, img)
	}
	req.OnCreated = func(id string) {
		job.PredictionID, job.State, job.Updated = id, JobSubmitted, c.now()
		if err := c.store.PutJob(context.WithoutCancel(ctx), job); err != nil {
			c.log.Error("bot: record prediction", "job", job.ID, "err", err)
		}
	}
	req.BeforeCreate = func(ctx context.Context) error {
		// From here a prediction may exist: a process that runs this job
		// after this one stopped must not send the create again.
		now := c.now()
		job.CreateSent, job.Updated = now, now
		if err := c.store.PutJob(context.WithoutCancel(ctx), job); err != nil {
			return fmt.Errorf("bot: record the create of job %s: %w", job.ID, err)
		}
		return nil
	}
	var res *kontext.Result
	var err error
	resumed := job.PredictionID != ""
	switch {
	case resumed:
		res, err = c.gen.Resume(ctx, job.PredictionID)
	case !job.CreateSent.IsZero():
		if err = c.hold(ctx, job); err == nil { // only the job's owner tells
			c.log.Warn("bot: a stopped process sent this job's create without recording its prediction; not sent again (a prediction nobody receives may have been paid for)",
				"job", job.ID, "create_sent", job.CreateSent)
			err = ErrCreateUnsure
		}
	default:
		if err = c.hold(ctx, job); err == nil { // the create is paid: only by the job's owner
			res, err = c.create(ctx, req)
		}
	}
	provider := c.now().Sub(started)
	if err == nil {
		err = c.hold(context.WithoutCancel(ctx), job) // the result is charged: only by the job's owner
	}
	if err != nil {
		if errors.Is(err, kontext.ErrShutdown) || ctx.Err() != nil && errors.Is(context.Cause(ctx), kontext.ErrShutdown) {
			// Shutting down: the job stays live on disk and runs on after
			// the restart, from its prediction when it has one.
			c.logEnd(job, wait, provider, kontext.ErrShutdown)
			return err
		}
		return c.fail(ctx, job, rep, wait, provider, err)
	}
	t := Turn{ID: newID("i"), Parent: job.Base, Refs: slices.Clone(job.Refs), Kind: job.Kind, Prompt: job.Prompt, Model: res.Model,
		Aspect: job.Aspect, Seed: res.Seed, Requester: job.User, Created: c.now(), Enhance: job.Enhance,
		Group: job.Group, Variation: job.Index}
	if t.Model == "" {
		t.Model = job.Model
	}
	if t.Seed == nil && resumed {
		// A poll need not say the seed (CometAPI's logs may be empty), but
		// the prediction was created with the job's seed: keep it across
		// the restart.
		seed := job.Seed
		t.Seed = &seed
	}
	if err := describe(&t, res.Data); err != nil {
		return c.fail(ctx, job, rep, wait, provider, err)
	}
	job.State, job.Result, job.Updated = JobPosting, t.ID, c.now()
	charge := &Charge{Platform: job.Conv.Platform, Workspace: job.Conv.Workspace, User: job.User,
		Model: job.Model, USD: c.cfg.Prices[job.Model], At: t.Created}
	if _, err := c.store.AddTurn(context.WithoutCancel(ctx), job.Conv, t, res.Data, job, charge); err != nil {
		return c.fail(ctx, job, rep, wait, provider, fmt.Errorf("bot: store result: %w", err))
	}
	if job.Group != "" {
		// Stored and charged: the group is posted once its last job ends.
		c.logEnd(job, wait, provider, nil)
		return c.finishGroup(context.WithoutCancel(ctx), job, false)
	}
	return c.deliver(context.WithoutCancel(ctx), job, rep, t, res.Data, wait, provider, false)
}

// conversation reads the conversation at key; one that does not exist yet
// is nil with no error (a nil *Conversation has no turns and no head).
func (c *Core) conversation(ctx context.Context, key ConvKey) (*Conversation, error) {
	conv, err := c.store.Conversation(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	return conv, err
}

// baseImage loads the bytes of turn id in the conversation at key.
func (c *Core) baseImage(ctx context.Context, key ConvKey, id string) ([]byte, error) {
	conv, err := c.conversation(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("bot: load base: %w", err)
	}
	t := conv.Turn(id)
	if t == nil {
		return nil, Userf("I no longer have the image to edit: only the last images of a conversation are kept.")
	}
	img, err := c.store.Image(ctx, t.SHA256)
	if err != nil {
		return nil, fmt.Errorf("bot: load base %s: %w", t.SHA256, err)
	}
	return img, nil
}

// post delivers a result stored by an earlier process (its job was left
// posting), reading it back from the store. That process may have posted
// it already, so the adapter looks for that post first.
func (c *Core) post(ctx context.Context, job *Job, rep Reporter, wait, provider time.Duration) error {
	conv, err := c.store.Conversation(ctx, job.Conv)
	if err != nil {
		return c.fail(ctx, job, rep, wait, provider, fmt.Errorf("bot: post: %w", err))
	}
	t := conv.Turn(job.Result)
	if t == nil {
		return c.fail(ctx, job, rep, wait, provider, fmt.Errorf("bot: post: turn %s is gone", job.Result))
	}
	img, err := c.store.Image(ctx, t.SHA256)
	if err != nil {
		return c.fail(ctx, job, rep, wait, provider, fmt.Errorf("bot: post: %w", err))
	}
	return c.deliver(ctx, job, rep, *t, img, wait, provider, true)
}

// deliver posts turn t (with its image img, already stored) and records
// where it was posted. A post that fails with a transient error is tried
// again with backoff and jitter for cfg.PostRetry (the requester sees one
// "delayed" line through a DelayReporter); after that, after any other
// failure, or when Close begins, the job stays posting on disk and the
// next start posts it. Every attempt after a failure is a Repost, so an
// earlier attempt that did land is found rather than posted twice.
func (c *Core) deliver(ctx context.Context, job *Job, rep Reporter, t Turn, img []byte, wait, provider time.Duration, repost bool) error {
	d := &Delivery{Job: job, Conv: job.Conv, Turn: t, Image: img, Repost: repost, Sources: c.sources(ctx, job.Conv, t, job.User)}
	d.Record = func(ctx context.Context, p Posted) error { return c.recordPost(ctx, job.Conv, t, img, p) }
	if err := c.postRetrying(ctx, job, rep, d); err != nil {
		return err
	}
	c.thumbnail(ctx, job, t, img)
	job.State, job.Updated = JobDelivered, c.now()
	if err := c.store.PutJob(ctx, job); err != nil {
		c.log.Error("bot: mark delivered", "job", job.ID, "err", err)
	}
	c.logEnd(job, wait, provider, nil)
	return nil
}

// postRetrying posts d through rep, retrying as deliver describes, and
// records where it landed.
func (c *Core) postRetrying(ctx context.Context, job *Job, rep Reporter, d *Delivery) error {
	deadline := time.Now().Add(c.cfg.PostRetry)
	backoff := c.cfg.PostRetryBase
	delayed := false
	var posted Posted
	for attempt := 1; ; attempt++ {
		var err error
		posted, err = c.attempt(ctx, rep, job, d)
		if err == nil {
			break
		}
		transient, after := IsTransient(err)
		pause := min(backoff/2+mrand.N(backoff+1), MaxPostBackoff)
		pause = max(pause, after)
		if c.stopping() {
			// Shutting down: the next start posts it.
			c.log.Warn("bot: post interrupted by shutdown; the next start posts it", "job", job.ID, "attempt", attempt, "err", err)
			return err
		}
		if !transient || time.Now().Add(pause).After(deadline) {
			c.holdPost(ctx, job, rep, attempt, err)
			return err
		}
		c.log.Warn("bot: post failed; retrying", "job", job.ID, "attempt", attempt, "in", pause.Round(time.Millisecond), "err", err)
		if !delayed {
			delayed = true
			if dr, ok := rep.(DelayReporter); ok {
				dr.Delayed(ctx, job)
			}
		}
		d.Repost = true
		timer := time.NewTimer(pause)
		select {
		case <-timer.C:
		case <-c.stop:
			timer.Stop()
			c.log.Warn("bot: post retry stopped by shutdown; the next start posts it", "job", job.ID)
			return err
		}
		backoff = min(backoff*2, MaxPostBackoff)
	}
	if err := d.Record(ctx, posted); err != nil {
		c.log.Error("bot: record post", "job", job.ID, "err", err)
	}
	return nil
}

// thumbnail keeps the image's thumbnail for history sheets, now that it
// is posted, in memory and in the store: a sheet then decodes none of
// the images delivered, whichever process draws it and after a restart.
// It never waits for the image budget (the sheet makes what is missing).
func (c *Core) thumbnail(ctx context.Context, job *Job, t Turn, img []byte) {
	c.storeThumbnail(ctx, job, t.SHA256, img)
}

// storeThumbnail makes the thumbnail of img (digest sha) for history
// sheets, keeps it in memory and stores it.
func (c *Core) storeThumbnail(ctx context.Context, job *Job, sha string, img []byte) {
	enc, err := c.thumbs.Add(ctx, sha, img, c.cfg.ImageBudget)
	if err != nil || enc == nil {
		c.log.Debug("bot: thumbnail not made", "job", job.ID, "err", err)
		return
	}
	if err := c.store.PutThumbnail(ctx, sha, enc); err != nil {
		c.log.Warn("bot: store thumbnail", "job", job.ID, "sha256", sha, "err", err)
	}
}

// attempt is one Deliver, cut short once Close's deadline passes.
func (c *Core) attempt(ctx context.Context, rep Reporter, job *Job, d *Delivery) (Posted, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(c.halt, func() { cancel(context.Cause(c.halt)) })
	defer stop()
	return rep.Deliver(ctx, job, d)
}

// holdPost leaves a stored but unposted image for the next start, and
// tells the requester.
func (c *Core) holdPost(ctx context.Context, job *Job, rep Reporter, attempts int, err error) {
	// The image is stored and is the conversation's head; only the post
	// failed. The job stays live so a restart posts it.
	c.log.Error("bot: post failed; the next start posts it", "job", job.ID, "attempts", attempts, "err", err)
	if dr, ok := rep.(DelayReporter); ok {
		dr.Held(ctx, job, PostHeldText)
		return
	}
	rep.Fail(ctx, job, PostHeldText)
}

// stopping reports whether Close has begun.
func (c *Core) stopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// recordPost remembers the message an image was posted in and, when the
// adapter opened a thread for it, starts that conversation from it, with
// the image's ancestors so undo and reroll work there too. Recording the
// same post again changes nothing.
func (c *Core) recordPost(ctx context.Context, key ConvKey, t Turn, img []byte, posted Posted) error {
	if posted.Thread != nil && *posted.Thread != key {
		if err := c.openThread(ctx, key, *posted.Thread, t, img); err != nil {
			return err
		}
		key = *posted.Thread
	}
	if posted.MessageID == "" {
		return nil
	}
	return c.store.AddMessage(ctx, key, t.ID, posted.MessageID)
}

// openThread starts the conversation at thread from turn t of the
// conversation at from: t's ancestors (oldest first) and then t, which
// becomes the head. A thread that already holds t is left as it is.
func (c *Core) openThread(ctx context.Context, from, thread ConvKey, t Turn, img []byte) error {
	existing, err := c.conversation(ctx, thread)
	switch {
	case err != nil:
		return err
	case existing.Turn(t.ID) != nil:
		return nil
	}
	src, err := c.conversation(ctx, from)
	if err != nil {
		return err
	}
	var chain []Turn
	for p := src.Turn(t.Parent); p != nil && len(chain) < MaxThreadAncestors; p = src.Turn(p.Parent) {
		chain = append(chain, *p)
	}
	slices.Reverse(chain)
	// refs copies a turn's further references first, so reroll works in
	// the thread too.
	refs := func(t Turn) error {
		for _, id := range t.Refs {
			r := src.Turn(id)
			if r == nil || existing.Turn(id) != nil {
				continue
			}
			data, err := c.store.Image(ctx, r.SHA256)
			if err != nil {
				return err
			}
			cp := *r
			cp.Messages = nil
			if existing, err = c.store.AddReference(ctx, thread, cp, data); err != nil {
				return err
			}
		}
		return nil
	}
	for _, a := range chain {
		if existing.Turn(a.ID) != nil {
			continue
		}
		data, err := c.store.Image(ctx, a.SHA256)
		if err != nil {
			return err
		}
		if err := refs(a); err != nil {
			return err
		}
		a.Messages = nil
		if existing, err = c.store.AddTurn(ctx, thread, a, data, nil, nil); err != nil {
			return err
		}
	}
	if err := refs(t); err != nil {
		return err
	}
	t.Messages = nil
	_, err = c.store.AddTurn(ctx, thread, t, img, nil, nil)
	return err
}

// MaxThreadAncestors bounds how many of an image's ancestors a new thread
// starts with.
const MaxThreadAncestors = 19

// RecordPost remembers that the image of turn id in the conversation at
// key was posted as msgID (for adapters that post images themselves, as
// after an undo).
func (c *Core) RecordPost(ctx context.Context, key ConvKey, id string, posted Posted) error {
	conv, err := c.store.Conversation(ctx, key)
	if err != nil {
		return fmt.Errorf("bot: record post: %w", err)
	}
	t := conv.Turn(id)
	if t == nil {
		return fmt.Errorf("bot: record post: turn %s: %w", id, ErrNotFound)
	}
	img, err := c.store.Image(ctx, t.SHA256)
	if err != nil {
		return fmt.Errorf("bot: record post: %w", err)
	}
	return c.recordPost(ctx, key, *t, img, posted)
}

// fail ends job without an image: nothing is charged.
func (c *Core) fail(ctx context.Context, job *Job, rep Reporter, wait, provider time.Duration, err error) error {
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), kontext.ErrShutdown) {
		// Cut short by a stop or a handover, not failed: the job stays
		// live for whoever runs it next.
		c.logEnd(job, wait, provider, kontext.ErrShutdown)
		return context.Cause(ctx)
	}
	ctx = context.WithoutCancel(ctx)
	job.State, job.Error, job.Updated = JobFailed, err.Error(), c.now()
	job.Refused = errors.Is(err, kontext.ErrContentRefused)
	if perr := c.store.PutJob(ctx, job); perr != nil {
		c.log.Error("bot: mark failed", "job", job.ID, "err", perr)
	}
	var ue *UserError
	if !errors.As(err, &ue) {
		c.log.Error("bot: job failed", "job", job.ID, "err", err)
	}
	c.logEnd(job, wait, provider, err)
	if job.Group != "" {
		// Not told on its own: the group's message says how many were made.
		if gerr := c.finishGroup(ctx, job, false); gerr != nil {
			c.log.Error("bot: post variations", "job", job.ID, "err", gerr)
		}
		return err
	}
	rep.Fail(ctx, job, Explain(err))
	return err
}

func (c *Core) logEnd(job *Job, wait, provider time.Duration, err error) {
	outcome := "delivered"
	switch {
	case errors.Is(err, kontext.ErrShutdown):
		outcome = "kept"
	case errors.Is(err, kontext.ErrCanceled):
		outcome = "canceled"
	case errors.Is(err, kontext.ErrContentRefused):
		outcome = "refused"
	case err != nil:
		outcome = "failed"
	}
	c.log.Info("job", "id", job.ID, "kind", job.Kind, "platform", job.Conv.Platform,
		"queue_wait", wait.Round(time.Millisecond), "provider", provider.Round(time.Millisecond), "outcome", outcome)
	if c.cfg.OnJobEnd != nil {
		end := JobEnd{Kind: job.Kind, Platform: job.Conv.Platform, Model: job.Model, Outcome: outcome, Wait: wait, Provider: provider}
		if err == nil {
			end.USD = c.cfg.Prices[job.Model]
		}
		c.cfg.OnJobEnd(end)
	}
}

// Undo moves the conversation's head back to the parent of the current
// image (or of req.Turn) and returns that image to show again. No provider
// call, no charge.
func (c *Core) Undo(ctx context.Context, req *Request) (*Delivery, error) {
	conv, err := c.conversation(ctx, req.Conv)
	if err != nil {
		return nil, fmt.Errorf("bot: undo: %w", err)
	}
	t := conv.Current()
	if req.Turn != "" {
		t = conv.Turn(req.Turn)
	}
	if t == nil && req.Turn == "" {
		return nil, ErrEmptyUndo
	}
	if t == nil {
		return nil, ErrNoImage
	}
	parent := conv.Turn(t.Parent)
	if parent == nil {
		return nil, ErrNothingToUndo
	}
	if _, err := c.store.SetHead(ctx, req.Conv, parent.ID); err != nil {
		return nil, fmt.Errorf("bot: undo: %w", err)
	}
	img, err := c.store.Image(ctx, parent.SHA256)
	if err != nil {
		return nil, fmt.Errorf("bot: undo: %w", err)
	}
	d := &Delivery{Conv: req.Conv, Turn: *parent, Image: img, Sources: c.sources(ctx, req.Conv, *parent, req.User)}
	d.Record = func(ctx context.Context, p Posted) error { return c.recordPost(ctx, req.Conv, *parent, img, p) }
	return d, nil
}

// UsageReport is what /usage shows a person.
type UsageReport struct {
	Today, Month Usage
	// DailyLimit and Budget are the configured caps (0: none); Admin is
	// exempt from both.
	DailyLimit int
	Budget     float64
	Admin      bool
	At         time.Time
	// Settings are the workspace's effective settings.
	Settings Effective
}

// Text is the report as one short message.
func (u UsageReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "You have made %d image%s today", u.Today.Images, plural(u.Today.Images))
	if u.DailyLimit > 0 && !u.Admin {
		fmt.Fprintf(&b, " (limit %d)", u.DailyLimit)
	}
	fmt.Fprintf(&b, ". This workspace has made %d image%s in %s, costing $%.2f", u.Month.Images, plural(u.Month.Images), u.At.UTC().Format("January"), u.Month.Spend)
	if u.Budget > 0 {
		fmt.Fprintf(&b, " of its $%.2f budget", u.Budget)
	}
	b.WriteString(".")
	if u.Admin {
		b.WriteString(" You are an admin: limits do not apply to you.")
	}
	if u.Settings.Model != "" {
		b.WriteString("\n\nSettings here:\n" + u.Settings.Text())
	}
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// Usage reports the requester's images today and the workspace's spend
// this month.
func (c *Core) Usage(ctx context.Context, req *Request) (UsageReport, error) {
	now := c.now()
	day, month, err := c.store.Usage(ctx, req.Conv.Platform, req.Conv.Workspace, req.User, now)
	if err != nil {
		return UsageReport{}, fmt.Errorf("bot: usage: %w", err)
	}
	eff, err := c.effective(ctx, req.Conv.Platform, req.Conv.Workspace)
	if err != nil {
		return UsageReport{}, fmt.Errorf("bot: usage: %w", err)
	}
	return UsageReport{Today: day, Month: month, DailyLimit: eff.DailyLimit, Budget: eff.Budget, Admin: c.isAdmin(req.User), At: now, Settings: eff}, nil
}

// Recover queues again every live job that no scheduler holds: jobs an
// earlier process left (waiting ones run, submitted ones follow their
// prediction, stored-but-unposted ones are posted). With a shared queue,
// jobs still queued or running on other processes are left to them (and
// a dead process's running jobs come back through the scheduler's
// takeover, not here). It starts the scheduler; register platforms first.
// It returns the ids of the jobs it queued.
func (c *Core) Recover(ctx context.Context) ([]string, error) {
	c.started.Do(func() { c.queue.Start(c.run) })
	ids, err := c.requeue(ctx, func(*Job) bool { return true })
	if err != nil {
		return nil, fmt.Errorf("bot: recover: %w", err)
	}
	c.mu.Lock()
	c.recovered = true
	c.mu.Unlock()
	return ids, nil
}

// Adopt queues the live jobs that no scheduler holds and that have not
// changed for olderThan: with a shared queue, jobs a process stored and
// then died before it queued them (killed inside Submit), which no
// takeover finds, since the queue never held them. Every replica calls it
// now and then; a job queued meanwhile, by its own Submit or another
// replica, is skipped. olderThan must exceed the time a Submit takes
// between storing a job and queueing it; a Submit that is slower still
// finds the job queued and goes on (ErrQueued). It does nothing before
// Recover has run. It returns the ids of the jobs it queued.
func (c *Core) Adopt(ctx context.Context, olderThan time.Duration) ([]string, error) {
	c.mu.Lock()
	closing, recovered := c.closing, c.recovered
	c.mu.Unlock()
	if closing || !recovered {
		// Stopping: the jobs are the other replicas' now. Not started
		// yet: queueing would start the scheduler before the platforms
		// are registered.
		return nil, nil
	}
	before := c.now().Add(-olderThan)
	ids, err := c.requeue(ctx, func(j *Job) bool { return j.Updated.Before(before) })
	if err != nil {
		return nil, fmt.Errorf("bot: adopt: %w", err)
	}
	for _, id := range ids {
		c.log.Warn("bot: adopted a job that was stored but never queued (its process died while submitting it)", "job", id)
	}
	return ids, nil
}

// requeue queues the live jobs of registered platforms that want selects
// and that no scheduler holds, and returns their ids.
func (c *Core) requeue(ctx context.Context, want func(*Job) bool) ([]string, error) {
	jobs, err := c.store.LiveJobs(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, j := range jobs {
		c.mu.Lock()
		_, known := c.platforms[j.Conv.Platform]
		c.mu.Unlock()
		if !known || !want(j) {
			continue // its platform is not configured in this run: it waits on disk
		}
		if j.After != "" {
			// A follow-up held behind a variations group: queued when the
			// group is posted, or now if that happened already.
			held, err := c.recoverHeld(ctx, j)
			if err != nil {
				c.log.Error("bot: recover: held job", "job", j.ID, "err", err)
				continue
			}
			if held {
				continue
			}
		}
		err := c.enqueue(ctx, j)
		switch {
		case errors.Is(err, ErrQueued):
			continue
		case err != nil:
			c.log.Error("bot: requeue", "job", j.ID, "err", err)
			continue
		}
		ids = append(ids, j.ID)
	}
	return ids, nil
}

// Close stops taking requests and stops the scheduler: waiting jobs stay
// queued for the next start (or for the other processes), running jobs
// finish until ctx ends or, with a shared queue, are handed over at once.
func (c *Core) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.stopOnce.Do(func() { close(c.stop) })
	// Once ctx ends, posts still in flight are cut short too.
	unhalt := context.AfterFunc(ctx, func() { c.haltCancel(kontext.ErrShutdown) })
	defer unhalt()
	return c.queue.Close(ctx)
}

// describe fills a turn's digest, format and size from the image bytes.
func describe(t *Turn, data []byte) error {
	res, err := kontext.Describe(data)
	if err != nil {
		return fmt.Errorf("bot: describe image: %w", err)
	}
	sum := sha256.Sum256(data)
	t.SHA256 = hex.EncodeToString(sum[:])
	t.Format, t.Width, t.Height, t.Bytes = res.Format, res.Width, res.Height, len(data)
	return nil
}

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// newID returns a short random id with a one-letter prefix.
func newID(prefix string) string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return prefix + idEncoding.EncodeToString(b[:])
}

// nopReporter reports nowhere: for jobs of a platform that is gone.
type nopReporter struct{}

func (nopReporter) Queued(*Job, int)                                         {}
func (nopReporter) Running(*Job)                                             {}
func (nopReporter) Deliver(context.Context, *Job, *Delivery) (Posted, error) { return Posted{}, nil }
func (nopReporter) Fail(context.Context, *Job, string)                       {}

// sources names the images turn t of the conversation at key was made
// from when it had further references: its parent first, then its Refs.
// An image the bot made is named by its prompt, a person's by whose it
// is ("your image" for user's own); uploads are numbered when there are
// several. It is empty for a turn without Refs.
func (c *Core) sources(ctx context.Context, key ConvKey, t Turn, user string) []string {
	if len(t.Refs) == 0 {
		return nil
	}
	conv, err := c.conversation(ctx, key)
	if err != nil {
		c.log.Warn("bot: name the references", "conv", key.String(), "err", err)
	}
	ids := append([]string{t.Parent}, t.Refs...)
	uploads := 0
	for _, id := range ids {
		if r := conv.Turn(id); r != nil && r.Kind == KindUpload {
			uploads++
		}
	}
	out := make([]string, 0, len(ids))
	n := 0
	for _, id := range ids {
		r := conv.Turn(id)
		switch {
		case r == nil:
			out = append(out, "an earlier image")
		case r.Kind != KindUpload:
			out = append(out, "“"+clip(r.Prompt, 40)+"”")
		default:
			n++
			name := "an uploaded image"
			if r.Requester == user {
				name = "your image"
			}
			if uploads > 1 {
				name = fmt.Sprintf("%s %d", strings.TrimPrefix(name, "an "), n)
			}
			out = append(out, name)
		}
	}
	return out
}

// clip shortens s to at most n runes, ending with "…" when cut.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return strings.TrimSpace(string(r[:n-1])) + "…"
}
