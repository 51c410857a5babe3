package console_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/console"
	"kontextbot/store"
)

// harness is a real core (store, client, queue) over the fake provider.
type harness struct {
	t    *testing.T
	fake *kontexttest.Server
	core *bot.Core
	dir  string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	fake := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Latency: 20 * time.Millisecond, Pixels: 64 * 64})
	db, err := store.Open(filepath.Join(t.TempDir(), "k.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client, err := kontext.NewClient(kontext.Config{BaseURL: fake.URL, APIKey: "k", Wait: -1,
		PollInterval: 10 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	queue := kontext.NewQueue(kontext.QueueOptions{Slots: 6, UserRunning: 6})
	core := bot.New(bot.Config{Prices: map[string]float64{kontext.ModelMax: 0.08, kontext.ModelPro: 0.04}}, db, client, bot.NewLocalScheduler(queue))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		core.Close(ctx)
		client.Close()
		db.Close()
		fake.Close()
	})
	return &harness{t: t, fake: fake, core: core, dir: t.TempDir()}
}

// screen collects what the chat writes to the terminal.
type screen struct {
	mu   sync.Mutex
	text strings.Builder
	more chan struct{}
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.text.String()
}

// waitFor waits until the screen matches re at least n times.
func (s *screen) waitFor(t *testing.T, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(20 * time.Second)
	for {
		if len(rx.FindAllString(s.String(), -1)) >= n {
			return
		}
		select {
		case <-s.more:
		case <-timeout:
			t.Fatalf("the screen never showed %q %d times:\n%s", re, n, s.String())
		}
	}
}

// session is a chat running on the slave side of a pseudo-terminal; the
// test types on the master side, as a terminal emulator does.
type session struct {
	h      *harness
	ptmx   *os.File
	screen *screen
	done   chan struct{} // closed when Run has returned, with err set
	err    error
}

func startSession(t *testing.T, h *harness) *session {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	ptmx, tty = pollable(t, ptmx), pollable(t, tty)
	if err := pty.Setsize(tty, &pty.Winsize{Rows: 40, Cols: 200}); err != nil {
		t.Fatal(err)
	}
	chat, err := console.New(h.core, tty, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	h.core.Register(chat)
	s := &session{h: h, ptmx: ptmx, screen: &screen{more: make(chan struct{}, 1)}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		s.err = chat.Run(ctx, tty)
		close(s.done)
	}()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			s.screen.mu.Lock()
			s.screen.text.Write(buf[:n])
			s.screen.mu.Unlock()
			select {
			case s.screen.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		tty.Close()
		ptmx.Close()
		<-copied
	})
	t.Cleanup(func() { // runs first: the chat ends before its terminal closes
		cancel()
		select {
		case <-s.done:
		case <-time.After(20 * time.Second):
			t.Error("the chat did not end when its context did")
		}
	})
	s.screen.waitFor(t, `/help for commands`, 1)
	return s
}

// pollable returns a non-blocking copy of f (and closes f), so that
// closing it interrupts a read in progress, as the test's cleanup needs.
func pollable(t *testing.T, f *os.File) *os.File {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var dup int
	var derr error
	rc.Control(func(fd uintptr) { dup, derr = syscall.Dup(int(fd)) })
	if derr != nil {
		t.Fatal(derr)
	}
	f.Close()
	if err := syscall.SetNonblock(dup, true); err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(dup), f.Name())
}

func (s *session) typeKeys(t *testing.T, keys string) {
	t.Helper()
	if _, err := io.WriteString(s.ptmx, keys); err != nil {
		t.Fatal(err)
	}
}

// end waits for Run to return.
func (s *session) end(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(20 * time.Second):
		t.Fatalf("the chat did not end:\n%s", s.screen.String())
		return nil
	}
}

const (
	up, down, right, left = "\x1b[A", "\x1b[B", "\x1b[C", "\x1b[D"
	pasteStart, pasteEnd  = "\x1b[200~", "\x1b[201~"
	enter, ctrlC, ctrlD   = "\r", "\x03", "\x04"
	jobLine               = `→ [a-z0-9]+: `
)

func TestTerminalArrowKeysMakeNoJob(t *testing.T) {
	h := newHarness(t)
	s := startSession(t, h)
	// Arrows on an empty history, then Enter.
	s.typeKeys(t, up+enter+down+enter+left+right+enter)
	s.typeKeys(t, "/history"+enter)
	s.screen.waitFor(t, `no images yet`, 1)
	// With an image to edit, where "[A" would have become a paid edit:
	// arrows, Ctrl-arrows and application-mode arrows, then Enter.
	s.typeKeys(t, "/imagine a lighthouse"+enter)
	s.screen.waitFor(t, `✓ `, 1)
	s.typeKeys(t, "\x1b[1;5C"+"\x1bOA"+down+down+enter+left+right+enter)
	s.typeKeys(t, "/history"+enter)
	s.screen.waitFor(t, `→ +1 imagine`, 1)
	if got := h.fake.Stats().Creates; got != 1 {
		t.Errorf("arrow keys made %d provider calls, want 0", got-1)
	}
	if got := regexp.MustCompile(jobLine).FindAllString(s.screen.String(), -1); len(got) != 1 {
		t.Errorf("arrow keys submitted jobs:\n%s", s.screen.String())
	}
	s.typeKeys(t, "/quit"+enter)
	if err := s.end(t); err != nil {
		t.Errorf("Run after /quit: got %v, want nil", err)
	}
}

func TestTerminalHistoryRecall(t *testing.T) {
	h := newHarness(t)
	s := startSession(t, h)
	s.typeKeys(t, "/imagine a red fox --seed 1"+enter)
	s.screen.waitFor(t, `✓ `, 1)
	// Up recalls the last line; Enter sends it again.
	s.typeKeys(t, up+enter)
	s.screen.waitFor(t, `✓ `, 2)
	if got := regexp.MustCompile(jobLine+`imagine "a red fox" \(seed 1\)`).FindAllString(s.screen.String(), -1); len(got) != 2 {
		t.Errorf("got %d jobs for the fox, want 2 (typed, then recalled):\n%s", len(got), s.screen.String())
	}
	// Up twice then down comes back to the last line; left and typing edit it in place.
	s.typeKeys(t, "make it blue"+enter)
	s.screen.waitFor(t, `✓ `, 3)
	s.typeKeys(t, up+up+down+strings.Repeat(left, 4)+"dark "+enter)
	s.screen.waitFor(t, `✓ `, 4)
	if !strings.Contains(s.screen.String(), `edit "make it dark blue"`) {
		t.Errorf("the edited recall was not sent as \"make it dark blue\":\n%s", s.screen.String())
	}
	if got := h.fake.Stats().Creates; got != 4 {
		t.Errorf("creates: got %d, want 4", got)
	}
	s.typeKeys(t, ctrlD)
	if err := s.end(t); err != nil {
		t.Errorf("Run after Ctrl-D: got %v, want nil", err)
	}
}

func TestTerminalCtrlCEnds(t *testing.T) {
	h := newHarness(t)
	s := startSession(t, h)
	s.typeKeys(t, "half a prompt"+ctrlC)
	if err := s.end(t); !errors.Is(err, console.ErrInterrupted) {
		t.Errorf("Run after Ctrl-C: got %v, want ErrInterrupted", err)
	}
	if got := h.fake.Stats().Creates; got != 0 {
		t.Errorf("Ctrl-C sent the half-typed prompt: %d creates", got)
	}
}

func TestTerminalPasteIsOnePrompt(t *testing.T) {
	tests := []struct {
		name  string
		keys  string
		want  string
		lines int // pasted lines a line-by-line reader would have sent
	}{
		{name: "EndsWithNewline", keys: pasteStart + "make the sky\rgreen and\radd a moon\r" + pasteEnd + enter,
			want: `edit "make the sky green and add a moon"`},
		{name: "EndsMidLine", keys: pasteStart + "make the sky\ngreen and\nadd a moon" + pasteEnd + enter,
			want: `edit "make the sky green and add a moon"`},
		{name: "CommandFirst", keys: pasteStart + "/imagine a castle\ron a hill" + pasteEnd + enter,
			want: `imagine "a castle on a hill"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			s := startSession(t, h)
			if !strings.HasPrefix(tt.want, "imagine") {
				s.typeKeys(t, "/imagine a field"+enter)
				s.screen.waitFor(t, `✓ `, 1)
			}
			before := h.fake.Stats().Creates
			s.typeKeys(t, tt.keys)
			s.screen.waitFor(t, regexp.QuoteMeta(tt.want), 1)
			s.typeKeys(t, "/history"+enter)
			s.screen.waitFor(t, `→ +\d`, 1)
			if got := h.fake.Stats().Creates - before; got != 1 {
				t.Errorf("the paste made %d provider calls, want 1:\n%s", got, s.screen.String())
			}
			s.typeKeys(t, "/quit"+enter)
			if err := s.end(t); err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

// TestNewIsUnique: many /new in a row, as fast as lines arrive, each open
// a conversation of their own.
func TestNewIsUnique(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Run(context.Background(), strings.NewReader(strings.Repeat("/new\n", 24))); err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`new conversation "([^"]+)"`).FindAllStringSubmatch(out.String(), -1)
	seen := map[string]bool{}
	for _, m := range names {
		seen[m[1]] = true
	}
	if len(names) != 24 || len(seen) != 24 {
		t.Errorf("24 /new gave %d lines and %d distinct conversations, want 24 and 24:\n%s", len(names), len(seen), out.String())
	}
}

// TestPipedEscapesMakeNoJob: escape sequences in piped input (arrow keys
// typed into a script) are dropped whole, never sent as a prompt.
func TestPipedEscapesMakeNoJob(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	h.core.Register(chat)
	script := "/imagine a boat\n" + up + "\n" + up + up + down + "\n\x1bOA\n/quit\n"
	if err := chat.Run(context.Background(), strings.NewReader(script)); err != nil {
		t.Fatal(err)
	}
	if got := h.fake.Stats().Creates; got != 1 {
		t.Errorf("creates: got %d, want 1 (the boat only):\n%s", got, out.String())
	}
	if strings.Contains(out.String(), "[A") {
		t.Errorf("an escape sequence reached the chat:\n%s", out.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestHelpCommand: /help gives the help every platform gives.
func TestHelpCommand(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	if err := chat.Run(context.Background(), strings.NewReader("/help\n")); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"/imagine PROMPT", "/reroll", "/undo", "/usage", "a lighthouse on a cliff at dusk", "/history", "Ctrl-C"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("/help lacks %q:\n%s", w, out.String())
		}
	}
}

// TestRecoveredJobPostedBeforeExpect: after a restart the core may post a
// recovered job before the chat is told to wait for it (Expect). The chat
// must not wait for it then: with nothing left to do, Run returns.
func TestRecoveredJobPostedBeforeExpect(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	job := &bot.Job{ID: "j-recovered", Kind: bot.KindImagine, Prompt: "a castle"}
	d := &bot.Delivery{Job: job, Turn: bot.Turn{ID: "i1", Kind: bot.KindImagine, Prompt: "a castle", Format: "png", Width: 1, Height: 1},
		Image: onePixelPNG(t)}
	if _, err := chat.Deliver(context.Background(), job, d); err != nil {
		t.Fatal(err)
	}
	chat.Expect(job.ID)
	done := make(chan error, 1)
	go func() { done <- chat.Run(context.Background(), strings.NewReader("")) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Run still waits for a job that was already posted:\n%s", out.String())
	}
	if strings.Contains(out.String(), "h47m") {
		t.Errorf("a recovered job was shown with a made-up duration:\n%s", out.String())
	}
}

func onePixelPNG(t *testing.T) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestVariationsAndUse: /imagine --n 3 writes three files, printed with
// their numbers in /history (1 to 3 in a new conversation); /use 2 makes
// image 2 current, so the next prompt edits it; /use before any image
// says there is none yet, and /use 3 after the edit goes back to image 3.
func TestVariationsAndUse(t *testing.T) {
	h := newHarness(t)
	var out strings.Builder
	chat, err := console.New(h.core, &syncWriter{w: &out}, h.dir, "ada", "t")
	if err != nil {
		t.Fatal(err)
	}
	h.core.Register(chat)
	script := "/use 1\n/imagine --n 3 a red fox\n/use 2\nmake it snow\n/use 3\n/quit\n"
	if err := chat.Run(context.Background(), strings.NewReader(script)); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	if !strings.Contains(text, "There is no history here yet") {
		t.Errorf("/use before any image: want that there is none yet:\n%s", text)
	}
	m := regexp.MustCompile(`\n  2\. (\S+) · `).FindStringSubmatch(text)
	if m == nil || !strings.Contains(text, "✓ 3 variations · a red fox") || !strings.Contains(text, "\n  3. ") {
		t.Fatalf("the variations were not printed numbered:\n%s", text)
	}
	two, err := os.ReadFile(m[1])
	if err != nil {
		t.Fatal(err)
	}
	edits, _ := filepath.Glob(filepath.Join(h.dir, "*-edit-*"))
	if len(edits) != 1 {
		t.Fatalf("edit files: %v, want 1:\n%s", edits, text)
	}
	edit, _ := os.ReadFile(edits[0])
	p, err := kontexttest.ReadProvenance(edit)
	if err != nil {
		t.Fatal(err)
	}
	if p.Prompt != "make it snow" || p.InputSHA256 != digest(two) {
		t.Errorf("the edit after /use 2: %q from %s, want image 2 %s", p.Prompt, p.InputSHA256, digest(two))
	}
	// /use takes /history's numbers: after the edit (image 4), /use 3
	// is the third variation again.
	m3 := regexp.MustCompile(`\n  3\. (\S+) · `).FindStringSubmatch(text)
	if m3 == nil || !strings.Contains(text, "● image 3 is current: "+m3[1]) {
		t.Errorf("/use 3 after the edit: want image 3 (%v) current:\n%s", m3, text)
	}
	if got := h.fake.Stats().Creates; got != 4 {
		t.Errorf("creates: %d, want 4", got)
	}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
