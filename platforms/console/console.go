// Package console is the terminal chat: one conversation with the bot,
// typed (or piped) line by line, with every image written to a folder. It
// runs on the same core and store as the chat platforms, so it exercises
// the whole flow and lets a new user try the bot before setting up Discord
// or Slack.
package console

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/term"

	"kontextbot/bot"
)

// Platform is the name the console's conversations and jobs carry.
const Platform = "console"

// Help lists the lines the chat understands.
const Help = `Type a prompt to edit the current image, or:
  /imagine PROMPT [--ar 16:9] [--seed N] [--model pro] [--enhance]   make a new image
  /imagine --n 4 PROMPT                                  4 variations (different seeds)
  /edit PROMPT [--enhance]                               edit the current image
  /edit --image PATH PROMPT                              edit a local image
  /edit --image A --image B PROMPT                       edit A using B too (up to 4 images)
  /edit --with B PROMPT                                  edit the current image using B too
  /reroll        same prompt and parent, new seed
  /undo          go back to the previous image
  /history       this conversation's images, as a list and a picture
  /use N         make image N of /history the current image
  /details [N]   prompt, seed, model, parent, cost of the current image (or image N of /history)
  /delete [N]    delete the current image (or image N of /history)
  /new           start a new conversation
  /usage         images today and spend this month
  /quit          wait for running jobs, then leave`

// help is the answer to /help: the help every platform gives, then what
// only the terminal has.
var help = bot.Help(bot.HelpStyle{Imagine: "/imagine PROMPT", Edit: "/edit PROMPT", Usage: "/usage", Help: "/help",
	Options: "Options: --ar 16:9, --seed N (same seed + same prompt = same image), --model pro, --enhance (the model enhances your prompt).",
	Details: "/details [N]", Delete: "/delete [N]",
	Thread: "this conversation", History: "/history", Use: "/use N", Variations: "--n 4"}) + `

Only here:
  /edit --image PATH PROMPT   edit a local image; --image A --image B PROMPT uses both (up to 4);
                              --with B PROMPT edits the current image using B too
  /history   this conversation's images as a list, and as a picture in the folder
  /use N     make image N of /history the current one    /new   start a new conversation
  /quit or Ctrl-D   wait for running jobs, then leave; Ctrl-C leaves at once
  Up and down recall earlier lines; a pasted block of lines is one prompt.`

// Core is what the console needs of the bot core.
type Core interface {
	Submit(ctx context.Context, req *bot.Request) (*bot.Job, error)
	Undo(ctx context.Context, req *bot.Request) (*bot.Delivery, error)
	Details(ctx context.Context, req *bot.Request) (*bot.Details, error)
	Delete(ctx context.Context, req *bot.Request) (*bot.Deleted, error)
	Usage(ctx context.Context, req *bot.Request) (bot.UsageReport, error)
	History(ctx context.Context, req *bot.Request) (*bot.HistorySheet, error)
	Use(ctx context.Context, req *bot.Request) (*bot.Delivery, error)
	Store() bot.Store
}

var _ Core = (*bot.Core)(nil)

// Chat is one terminal conversation. It is also the console's platform
// adapter: the core reports every console job to it.
type Chat struct {
	core Core
	dir  string
	user string

	mu      sync.Mutex
	out     io.Writer
	key     bot.ConvKey
	files   map[string]string // turn id -> file written for it
	next    int               // number of the next file
	pending map[string]bool   // jobs this chat waits for
	ended   map[string]bool   // jobs that ended before anyone waited for them
	started map[string]time.Time
	idle    chan struct{} // closed and replaced when pending empties
	lastPos map[string]int
}

var _ bot.Platform = (*Chat)(nil)
var _ bot.Reporter = (*Chat)(nil)

// New returns a chat that writes images to dir and text to out, as user,
// in the conversation named conv.
func New(core Core, out io.Writer, dir, user, conv string) (*Chat, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	c := &Chat{core: core, dir: dir, user: user, out: out,
		key:   bot.ConvKey{Platform: Platform, Workspace: "local", Channel: "terminal", Thread: conv},
		files: map[string]string{}, next: nextNumber(dir),
		pending: map[string]bool{}, ended: map[string]bool{}, started: map[string]time.Time{}, idle: make(chan struct{}), lastPos: map[string]int{}}
	close(c.idle)
	return c, nil
}

var numbered = regexp.MustCompile(`^(\d+)-`)

// nextNumber continues the numbering of images already in dir.
func nextNumber(dir string) int {
	entries, _ := os.ReadDir(dir)
	n := 0
	for _, e := range entries {
		if m := numbered.FindStringSubmatch(e.Name()); m != nil {
			if v, err := strconv.Atoi(m[1]); err == nil && v > n {
				n = v
			}
		}
	}
	return n + 1
}

// Name is the platform name.
func (c *Chat) Name() string { return Platform }

// Reporter returns the chat itself: every console job reports here.
func (c *Chat) Reporter(*bot.Job) bot.Reporter { return c }

// Expect makes the chat wait for job ids it did not submit itself, such as
// jobs recovered from before a restart. A job that already ended (a
// recovered job can be posted before Expect is called) is not waited for.
func (c *Chat) Expect(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if c.ended[id] {
			delete(c.ended, id)
			continue
		}
		c.track(id)
	}
}

func (c *Chat) track(id string) {
	if len(c.pending) == 0 {
		c.idle = make(chan struct{})
	}
	c.pending[id] = true
}

func (c *Chat) untrack(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending[id] {
		c.ended[id] = true
		return
	}
	delete(c.pending, id)
	delete(c.lastPos, id)
	if len(c.pending) == 0 {
		close(c.idle)
	}
}

func (c *Chat) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fmt.Fprintf(c.out, format+"\n", args...)
}

// Queued prints the job's place in line when it changes.
func (c *Chat) Queued(job *bot.Job, pos int) {
	c.mu.Lock()
	changed := c.lastPos[job.ID] != pos
	c.lastPos[job.ID] = pos
	c.mu.Unlock()
	if changed {
		c.printf("… %s: queued · %s", job.ID, bot.InLine(pos))
	}
}

// Running prints that the provider is at work.
func (c *Chat) Running(job *bot.Job) {
	c.mu.Lock()
	c.started[job.ID] = time.Now()
	c.mu.Unlock()
	c.printf("… %s: generating", job.ID)
}

// Deliver writes the image to the chat's folder and prints where; a
// variations group's images are written one file each and printed
// numbered, for /use N.
func (c *Chat) Deliver(ctx context.Context, job *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	if len(d.Group) > 0 {
		return c.deliverGroup(ctx, job, d)
	}
	path, err := c.write(job, d)
	if err != nil {
		return bot.Posted{}, err
	}
	c.mu.Lock()
	began, timed := c.started[job.ID]
	delete(c.started, job.ID)
	c.mu.Unlock()
	line := fmt.Sprintf("✓ %s · %d×%d · %s", path, d.Turn.Width, d.Turn.Height, d.Caption())
	if timed { // a job recovered from before a restart has no start here
		line += " · " + time.Since(began).Round(100*time.Millisecond).String()
	}
	c.printf("%s", line)
	c.untrack(job.ID)
	return bot.Posted{}, nil
}

// Fail prints why a job ended without an image.
func (c *Chat) Fail(_ context.Context, job *bot.Job, msg string) {
	c.printf("✗ %s: %s", job.ID, msg)
	c.untrack(job.ID)
	c.untrackGroup(job)
}

// deliverGroup writes each image of a variations group and prints them
// with their numbers in /history, the numbers /use N takes.
func (c *Chat) deliverGroup(ctx context.Context, job *bot.Job, d *bot.Delivery) (bot.Posted, error) {
	numbers := map[string]int{}
	if conv, err := c.core.Store().Conversation(ctx, d.Conv); err == nil {
		for i, t := range conv.Numbered() {
			numbers[t.ID] = i + 1
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "✓ %d variations · %s", max(d.Count, len(d.Group)), d.Turn.Prompt)
	if d.Turn.Model != "" {
		b.WriteString(" · " + d.Turn.Model)
	}
	for _, v := range d.Group {
		path, err := c.write(job, &bot.Delivery{Turn: v.Turn, Image: v.Image})
		if err != nil {
			return bot.Posted{}, err
		}
		n := numbers[v.Turn.ID]
		fmt.Fprintf(&b, "\n  %d. %s · %d×%d", n, path, v.Turn.Width, v.Turn.Height)
		if n != v.N {
			fmt.Fprintf(&b, " · variation %d", v.N)
		}
		if v.Turn.Seed != nil {
			fmt.Fprintf(&b, " · seed %d", *v.Turn.Seed)
		}
	}
	if d.Note != "" {
		b.WriteString("\n  " + d.Note)
	}
	if len(d.Group) > 1 {
		fmt.Fprintf(&b, "\n  Follow-ups edit image %d; /use N goes on from image N instead.", numbers[d.Group[0].Turn.ID])
	}
	c.printf("%s", b.String())
	c.mu.Lock()
	delete(c.started, job.ID)
	c.mu.Unlock()
	c.untrack(job.ID)
	c.untrackGroup(job)
	return bot.Posted{}, nil
}

// untrackGroup stops waiting for the other jobs of job's variations
// group: the group is told once, through its first job (a restart's
// Recover may have handed the chat every job of the group).
func (c *Chat) untrackGroup(job *bot.Job) {
	if job.Group == "" {
		return
	}
	for n := 1; n <= job.Count; n++ {
		if id := bot.GroupJobID(job.Group, n); id != job.ID {
			c.mu.Lock()
			pending := c.pending[id]
			c.mu.Unlock()
			if pending {
				c.untrack(id)
			}
		}
	}
}

// originDir is the Origin key of the folder of the chat a job was asked in.
const originDir = "dir"

// origin is the Origin of this chat's requests: its folder, so that the
// image of a job another process runs (several chats sharing a database
// share the queue) lands where its person looks.
func (c *Chat) origin() map[string]string {
	dir, err := filepath.Abs(c.dir)
	if err != nil {
		return nil
	}
	return map[string]string{originDir: dir}
}

// write saves d's image as the next numbered file of the folder of the
// chat job was asked in (this chat's when job is nil, or that folder is
// not known or gone), once per turn: a file of the turn already there, written by a
// process that stopped before it recorded the delivery, is the delivery.
func (c *Chat) write(job *bot.Job, d *bot.Delivery) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.files[d.Turn.ID]; ok {
		return p, nil
	}
	ext := d.Turn.Format
	if ext == "jpeg" {
		ext = "jpg"
	}
	dir := c.dir
	if job != nil {
		if o := job.Origin[originDir]; filepath.IsAbs(o) {
			if fi, err := os.Stat(o); err == nil && fi.IsDir() {
				dir = o
			}
		}
	}
	suffix := fmt.Sprintf("-%s-%s.%s", d.Turn.Kind, d.Turn.ID, ext)
	if earlier, _ := filepath.Glob(filepath.Join(dir, "*"+suffix)); len(earlier) > 0 {
		c.files[d.Turn.ID] = earlier[0]
		return earlier[0], nil
	}
	next := c.next
	if dir != c.dir {
		next = nextNumber(dir)
	}
	p := filepath.Join(dir, fmt.Sprintf("%03d%s", next, suffix))
	if err := os.WriteFile(p, d.Image, 0o644); err != nil {
		return "", fmt.Errorf("console: write image: %w", err)
	}
	if dir == c.dir {
		c.next++
	}
	c.files[d.Turn.ID] = p
	return p, nil
}

// ErrInterrupted is what Run returns when the person pressed Ctrl-C at
// the prompt: the chat ends at once, and jobs still running resume at the
// next start.
var ErrInterrupted = errors.New("console: interrupted")

// Run reads lines from in until it ends or /quit, then waits for the jobs
// the chat is waiting for (or for ctx to end). When in is a terminal the
// chat edits lines in place, with history (up and down arrows), and a
// pasted block of several lines becomes one prompt; otherwise in is read
// line by line (a script).
func (c *Chat) Run(ctx context.Context, in io.Reader) error {
	if f, ok := in.(*os.File); ok && term.IsTerminal(fdOf(f)) {
		if err := c.runTerminal(ctx, f); !errors.Is(err, errNotRaw) {
			return err
		}
	}
	return c.runLines(ctx, in)
}

func (c *Chat) banner() {
	c.printf("kontextbot chat · conversation %q · images go to %s · /help for commands", c.key.Thread, c.dir)
}

// runLines reads in line by line.
func (c *Chat) runLines(ctx context.Context, in io.Reader) error {
	c.banner()
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
		close(lines)
	}()
	for quit := false; !quit; {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case line, ok := <-lines:
			if !ok {
				quit = true
				if err := <-readErr; err != nil {
					return fmt.Errorf("console: read: %w", err)
				}
				break
			}
			quit = c.Line(ctx, line)
		}
	}
	return c.settle(ctx)
}

var errNotRaw = errors.New("console: the terminal cannot be put in raw mode")

// fdOf is f's descriptor, read without f.Fd, which would put f in
// blocking mode (and a blocked read could then never be interrupted).
func fdOf(f *os.File) int {
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	return fd
}

// keyReader is the terminal's input on its way to the line editor. It
// notes whether the last read carried Ctrl-C, which term.Terminal reports
// as the end of input like Ctrl-D, and it turns the arrow keys of a
// terminal in application cursor mode (ESC O A) into the form the editor
// knows (ESC [ A): the editor would otherwise take the "A" as typed text.
type keyReader struct {
	r     io.Reader
	ctrlC atomic.Bool
	carry []byte // the start of a sequence split across reads
}

func (k *keyReader) Read(p []byte) (int, error) {
	if len(p) < 3 {
		return k.r.Read(p)
	}
	m := copy(p, k.carry)
	k.carry = k.carry[:0]
	n, err := k.r.Read(p[m:])
	k.ctrlC.Store(bytes.IndexByte(p[m:m+n], 3) >= 0)
	n += m
	b := p[:n]
	for i := 0; i+2 < n; i++ {
		if b[i] == 0x1b && b[i+1] == 'O' && strings.IndexByte("ABCDHF", b[i+2]) >= 0 {
			b[i+1] = '['
		}
	}
	if err == nil {
		switch {
		case n >= 2 && b[n-2] == 0x1b && b[n-1] == 'O':
			k.carry, n = append(k.carry, b[n-2:]...), n-2
		case n >= 1 && b[n-1] == 0x1b:
			k.carry, n = append(k.carry, 0x1b), n-1
		}
	}
	return n, err
}

// termInput is one line read from the terminal.
type termInput struct {
	line   string
	pasted bool
}

const (
	promptMain  = "> "
	promptPaste = "… "
)

// runTerminal reads f through a line editor in raw mode. Output (the
// chat's and the jobs' lines) goes through the editor too, so a job that
// ends while someone types is printed above the line being typed.
func (c *Chat) runTerminal(ctx context.Context, f *os.File) error {
	fd := fdOf(f)
	state, err := term.MakeRaw(fd)
	if err != nil {
		return errNotRaw
	}
	restore := sync.OnceFunc(func() { term.Restore(fd, state) })
	defer restore()
	src := &keyReader{r: f}
	c.mu.Lock()
	out := c.out
	t := term.NewTerminal(struct {
		io.Reader
		io.Writer
	}{src, out}, promptMain)
	if w, h, err := term.GetSize(fd); err == nil {
		t.SetSize(w, h)
	}
	t.SetBracketedPasteMode(true)
	c.out = t
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		t.SetBracketedPasteMode(false)
		c.out = out
		c.mu.Unlock()
	}()
	c.banner()

	ictx, interrupt := context.WithCancelCause(ctx)
	defer interrupt(nil)
	lines := make(chan termInput)
	done := make(chan struct{})
	defer close(done)
	go func() {
		defer close(lines)
		for {
			line, err := t.ReadLine()
			pasted := errors.Is(err, term.ErrPasteIndicator)
			if err != nil && !pasted {
				if errors.Is(err, io.EOF) && src.ctrlC.Load() {
					interrupt(ErrInterrupted)
				}
				return
			}
			select {
			case lines <- termInput{line, pasted}:
			case <-done:
				return
			}
		}
	}()
	var paste []string
	for {
		var in termInput
		var ok bool
		select {
		case <-ictx.Done():
		case in, ok = <-lines:
		}
		if errors.Is(context.Cause(ictx), ErrInterrupted) {
			c.printf("interrupted: jobs still running resume at the next start")
			return ErrInterrupted
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !ok { // Ctrl-D
			break
		}
		if in.pasted {
			// A pasted block arrives line by line: gather it, and send it
			// as one prompt when Enter is pressed after the paste.
			if s := strings.TrimSpace(in.line); s != "" {
				paste = append(paste, s)
			}
			if len(paste) == 1 {
				c.printf("(pasted text: press Enter to send it as one prompt)")
			}
			t.SetPrompt(promptPaste)
			continue
		}
		line := in.line
		if len(paste) > 0 {
			line = strings.Join(append(paste, strings.TrimSpace(line)), " ")
			paste = nil
			t.SetPrompt(promptMain)
		}
		if c.Line(ictx, line) {
			break
		}
	}
	// Waiting for the last jobs: Ctrl-C interrupts as usual from here.
	restore()
	return c.settle(ctx)
}

// settle waits until every job the chat follows has ended, so commands
// that read the current image (/undo, /reroll, /history, the end of input)
// see the result of everything typed before them.
func (c *Chat) settle(ctx context.Context) error {
	c.mu.Lock()
	idle, n := c.idle, len(c.pending)
	c.mu.Unlock()
	if n == 0 {
		return nil
	}
	c.printf("waiting for %d job(s)…", n)
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newThread names a new conversation: the time, for people, and 40
// random bits, so two /new in the same instant never share one.
func newThread() string {
	var b [5]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// escapes matches terminal escape sequences: CSI (ESC [ ... final, the
// arrow keys), SS3 (ESC O x), OSC (ESC ] ... BEL or ST) and two-byte ones.
var escapes = regexp.MustCompile("\x1b(?:\\[[0-?]*[ -/]*[@-~]|O.|\\][^\x07\x1b]*(?:\x07|\x1b\\\\)|.)?|\u009b[0-?]*[ -/]*[@-~]")

// clean removes escape sequences whole (never leaving "[A" of an arrow key
// behind) and the remaining control characters but tabs.
func clean(line string) string {
	line = escapes.ReplaceAllString(line, "")
	return strings.Map(func(r rune) rune {
		if r == '\t' {
			return ' '
		}
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, line)
}

// Line handles one line of input; it reports whether the chat should end.
// Escape sequences (arrow keys typed into a pipe, for instance) are
// dropped whole, so they never become a prompt.
func (c *Chat) Line(ctx context.Context, line string) (quit bool) {
	line = strings.TrimSpace(clean(line))
	if line == "" || strings.HasPrefix(line, "#") {
		return false
	}
	cmd, rest := "", line
	if strings.HasPrefix(line, "/") {
		cmd, rest, _ = strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
	}
	c.mu.Lock()
	req := &bot.Request{Conv: c.key, User: c.user, UserName: c.user, Origin: c.origin()}
	c.mu.Unlock()
	var err error
	switch cmd {
	case "":
		req.Kind, req.Prompt = bot.KindEdit, rest
		err = c.submit(ctx, req)
	case "/imagine", "/edit":
		req.Kind = bot.KindImagine
		if cmd == "/edit" {
			req.Kind = bot.KindEdit
		}
		err = c.submitWithOptions(ctx, req, rest)
	case "/reroll":
		req.Kind = bot.KindReroll
		if err = c.settle(ctx); err == nil {
			err = c.submit(ctx, req)
		}
	case "/undo":
		if err = c.settle(ctx); err == nil {
			err = c.undo(ctx, req)
		}
	case "/history":
		if err = c.settle(ctx); err == nil {
			err = c.history(ctx, req)
		}
	case "/use":
		if err = c.settle(ctx); err == nil {
			err = c.use(ctx, req, rest)
		}
	case "/details":
		if err = c.settle(ctx); err == nil {
			err = c.details(ctx, req, rest)
		}
	case "/delete":
		if err = c.settle(ctx); err == nil {
			err = c.delete(ctx, req, rest)
		}
	case "/new":
		thread := newThread()
		c.mu.Lock()
		c.key.Thread = thread
		c.mu.Unlock()
		c.printf("new conversation %q", thread)
	case "/usage":
		var r bot.UsageReport
		if r, err = c.core.Usage(ctx, req); err == nil {
			c.printf("%s", r.Text())
		}
	case "/help":
		c.printf("%s", help)
	case "/quit", "/exit":
		return true
	default:
		c.printf("✗ unknown command %s\n%s", cmd, Help)
	}
	if err != nil && ctx.Err() == nil {
		c.printf("✗ %s", bot.Explain(err))
		var ue *bot.UserError
		if !errors.As(err, &ue) {
			c.printf("  (%v)", err)
		}
	}
	return false
}

func (c *Chat) submitWithOptions(ctx context.Context, req *bot.Request, text string) error {
	prompt, opts, err := bot.ParseOptions(text)
	if err != nil {
		return err
	}
	req.Prompt, req.Aspect, req.Seed, req.Model, req.Enhance, req.Count = prompt, opts.Aspect, opts.Seed, opts.Model, opts.Enhance, opts.Count
	if opts.Image != "" || len(opts.With) > 0 {
		if req.Kind != bot.KindEdit {
			return bot.Userf("--image and --with go with an edit.")
		}
		// The base: the first --image, else the current image; then the
		// other --image files and the --with files, in order.
		paths := append(slices.Clone(opts.Images), opts.With...)
		base := 0
		if opts.Image == "" {
			base = 1 // the current image
		}
		if base+len(paths) > bot.MaxImages {
			return bot.ErrTooManyImages
		}
		for i, path := range paths {
			img, err := os.ReadFile(path)
			if err != nil {
				return &bot.UserError{Msg: fmt.Sprintf("I cannot read %s.", path), Err: err}
			}
			if i == 0 && opts.Image != "" {
				req.Image = img
			} else {
				req.Refs = append(req.Refs, bot.Ref{Image: img})
			}
		}
	}
	return c.submit(ctx, req)
}

func (c *Chat) submit(ctx context.Context, req *bot.Request) error {
	// Hold the lock across Submit so a fast job cannot report before it is
	// tracked.
	c.mu.Lock()
	defer c.mu.Unlock()
	job, err := c.core.Submit(ctx, req)
	if err != nil {
		return err
	}
	c.track(job.ID)
	fmt.Fprintf(c.out, "→ %s: %s %q (seed %d)\n", job.ID, job.Kind, job.Prompt, job.Seed)
	return nil
}

func (c *Chat) undo(ctx context.Context, req *bot.Request) error {
	d, err := c.core.Undo(ctx, req)
	if err != nil {
		return err
	}
	path, err := c.write(nil, d)
	if err != nil {
		return err
	}
	c.printf("↶ back to %s · %s", path, d.Caption())
	return nil
}

// use makes image n (as /history numbers them) the current image.
func (c *Chat) use(ctx context.Context, req *bot.Request, n string) error {
	if _, err := strconv.Atoi(n); err != nil {
		return bot.Userf("Say which image: /use N, with N a number from /history.")
	}
	req.Kind, req.Turn = bot.KindUse, n
	d, err := c.core.Use(ctx, req)
	if err != nil {
		return err
	}
	path, err := c.write(nil, d)
	if err != nil {
		return err
	}
	c.printf("● image %s is current: %s · %s", n, path, d.Caption())
	return nil
}

// history lists the conversation's images, numbered as /use takes them,
// and writes the contact sheet (history-….png) into the folder.
func (c *Chat) history(ctx context.Context, req *bot.Request) error {
	key := req.Conv
	conv, err := c.core.Store().Conversation(ctx, key)
	if errors.Is(err, bot.ErrNotFound) || (err == nil && len(conv.Turns) == 0) {
		c.printf("no images yet: /imagine something")
		return nil
	}
	if err != nil {
		return err
	}
	var b strings.Builder
	turns := conv.Numbered()
	for i, t := range turns {
		mark := "  "
		if t.ID == conv.Head {
			mark = "→ "
		}
		seed := ""
		if t.Seed != nil {
			seed = " · seed " + strconv.FormatInt(*t.Seed, 10)
		}
		fmt.Fprintf(&b, "%s%2d %-7s %s %q%s", mark, i+1, t.Kind, t.ID, t.Prompt, seed)
		if t.Parent != "" {
			fmt.Fprintf(&b, " (from %s)", strings.Join(append([]string{t.Parent}, t.Refs...), " + "))
		}
		if i < len(turns)-1 {
			b.WriteByte('\n')
		}
	}
	c.printf("%s", b.String())
	req.Kind = bot.KindHistory
	hs, err := c.core.History(ctx, req)
	if err != nil {
		return err
	}
	path, err := c.writeSheet(hs.PNG)
	if err != nil {
		return err
	}
	c.printf("▦ %s: the picture of this history (the current image is framed; /use N picks another)", path)
	return nil
}

// numbered resolves "" (the current image) or N, an image's number in
// /history, to a turn id of the conversation at req.Conv.
func (c *Chat) numbered(ctx context.Context, req *bot.Request, arg string) (string, error) {
	if arg == "" {
		return "", nil
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 {
		return "", bot.Userf("Give the image's number from /history, as in /details 2, or nothing for the current image.")
	}
	conv, err := c.core.Store().Conversation(ctx, req.Conv)
	if errors.Is(err, bot.ErrNotFound) {
		return "", bot.ErrNoImage
	}
	if err != nil {
		return "", err
	}
	if n > len(conv.Turns) {
		return "", bot.Userf("There is no image %d here: /history lists %d.", n, len(conv.Turns))
	}
	return conv.Numbered()[n-1].ID, nil
}

// details prints the details of the current image or of image arg.
func (c *Chat) details(ctx context.Context, req *bot.Request, arg string) error {
	id, err := c.numbered(ctx, req, arg)
	if err != nil {
		return err
	}
	req.Turn = id
	d, err := c.core.Details(ctx, req)
	if err != nil {
		return err
	}
	c.mu.Lock()
	files := make(map[string]string, len(c.files))
	for k, v := range c.files {
		files[k] = v
	}
	c.mu.Unlock()
	style := bot.DetailsStyle{
		Mention: func(user string) string { return user },
		Link: func(_ bot.ConvKey, t *bot.Turn, label string) string {
			if p, ok := files[t.ID]; ok {
				return label + " (" + p + ")"
			}
			return ""
		},
	}
	c.printf("%s\nSettings: %s", d.Text(style), d.Settings())
	return nil
}

// delete deletes the current image or image arg of the conversation.
func (c *Chat) delete(ctx context.Context, req *bot.Request, arg string) error {
	id, err := c.numbered(ctx, req, arg)
	if err != nil {
		return err
	}
	req.Turn = id
	del, err := c.core.Delete(ctx, req)
	if err != nil {
		return err
	}
	msg := "deleted " + del.Turn.ID
	if del.Kept {
		msg += " (a later image was made from it: it stays hidden, for /undo)"
	}
	if cur := del.Conv.Current(); cur != nil {
		msg += "; the current image is " + cur.ID
		c.mu.Lock()
		p, ok := c.files[cur.ID]
		c.mu.Unlock()
		if ok {
			msg += " (" + p + ")"
		}
	} else {
		msg += "; no image is left here"
	}
	c.printf("🗑 %s", msg)
	return nil
}

// writeSheet saves a contact sheet as history-<time>.png in the folder,
// never over an earlier one.
func (c *Chat) writeSheet(data []byte) (string, error) {
	base := "history-" + time.Now().UTC().Format("20060102-150405")
	for i := 1; ; i++ {
		name := base + ".png"
		if i > 1 {
			name = fmt.Sprintf("%s-%d.png", base, i)
		}
		p := filepath.Join(c.dir, name)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("console: write history: %w", err)
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("console: write history: %w", err)
		}
		return p, nil
	}
}
