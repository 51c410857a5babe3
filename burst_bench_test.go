package main

// The end-to-end figures of issue 7: a burst of /imagine requests from many
// users on both platforms at once, against the real binary.
//
// The bot runs as a separate process (this test binary re-executed as
// kontextbot by TestMain, running `serve` with Discord and Slack Socket
// Mode both configured), so its CPU time and memory are its own; the fake
// Discord, the fake Slack and the fake provider run in this process.
//
// Every figure is computed here from what the fakes recorded or the bot
// exported; see buResult. Helpers are prefixed bu so they never clash with
// the other end-to-end files.

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
	"kontextbot/platforms/slack/slackfake"
)

const (
	buGuild  = "810000000000000001"
	buSlots  = 6   // KONTEXT_SLOTS of every burst
	buUserHZ = 100 // clock ticks per second in /proc/PID/stat (USER_HZ, 100 on Linux)
)

// buOptions is one burst: who asks, how much, against what provider, with
// what extra bot configuration.
type buOptions struct {
	// discordUsers and slackUsers each have a channel of their own, where
	// they fire perUser /imagine requests back to back.
	discordUsers, slackUsers, perUser int
	// latency, jitter and pixels configure the fake provider: each
	// prediction takes latency plus a uniform [0, jitter), and makes a real
	// PNG of about pixels pixels.
	latency, jitter time.Duration
	pixels          int
	// env is added to the bot's environment (queue caps).
	env map[string]string
	// settle is the failure guard: how long every request has to end.
	settle time.Duration
}

// buRaised are the queue caps raised so a whole burst fits.
var buRaised = map[string]string{"KONTEXT_USER_WAITING": "20", "KONTEXT_QUEUE_MAX": "1000"}

// buReq is one /imagine request and what became of it.
type buReq struct {
	platform              string // "discord" or "slack"
	user, channel, prompt string
	fired                 time.Time
	fireErr               error
	interaction           string              // Discord: the interaction's id
	envelope              *slackfake.Envelope // Slack: the slash command's envelope

	outcome string    // "delivered", "refused" or "" (neither yet)
	text    string    // what a refused request told its user
	via     string    // how: "ephemeral follow-up", "response edited", "chat.postEphemeral", "response_url"
	at      time.Time // when the outcome became visible
	queued  int       // the worst place in line it showed (0: never queued)
}

// buResult is what a burst measured.
type buResult struct {
	requests, delivered, refused, lost int
	// window is from the first request fired to the last image delivered;
	// firing is how long firing every request took.
	window, firing time.Duration
	// ackDiscord is interaction injected → deferred callback accepted by the
	// fake (Interaction.AckLatency); ackSlack is envelope written on the
	// Socket Mode websocket → ack read back (Envelope.Latency).
	ackDiscord, ackSlack []time.Duration
	unacked              int
	// utilization is the fake provider's busy-slot integral over the window
	// ÷ (6 × window): every successful create (held with Prefer: wait
	// until its prediction is final) counts from its arrival to its answer.
	utilization float64
	predictions int
	meanPredict time.Duration
	// cpuBurst is the bot's user+sys CPU from just before the first request
	// to the end of its visible work (/proc/PID/stat); cpuTotal comes from
	// its rusage after it exited (startup and shutdown included).
	cpuBurst, cpuTotal time.Duration
	cpuUser, cpuSys    time.Duration // cpuBurst's split
	// maxRSS is the bot's peak RSS: VmHWM of /proc/PID/status, read just
	// before it is stopped. Not rusage's ru_maxrss: os/exec starts the
	// child with CLONE_VM|CLONE_VFORK and the kernel folds the high-water
	// mark of the mm it leaves at exec (this test process's) into the
	// child's maxrss, so ru_maxrss reports max(test process, bot).
	// rusageMaxRSS is kept for the log.
	maxRSS, rusageMaxRSS int64 // bytes
	// peakHeapInuse and peakHeapAlloc are the highest
	// go_memstats_heap_{inuse,alloc}_bytes scraped from /metrics every
	// 100 ms during the burst; peakRSS the highest process_resident_memory_bytes.
	peakHeapInuse, peakHeapAlloc, peakRSS float64
	scrapes                               int
	// Oddities, for the log.
	refusals        map[string]int // refusal texts, by count
	outcomes        map[string]int // "platform outcome [via]", by count
	maxQueued       map[string]int // worst place in line shown, by platform
	everQueued      map[string]int // requests that showed a place in line, by platform
	discord429      int            // 429s the fake Discord answered
	botRetries      int            // "rate limited; retrying" lines in the bot's log
	provider429     int            // create answers 429 from the provider
	providerRetries float64        // kontextbot_provider_retries_total
	mismatched      []string       // images whose provenance did not match the request
	extraEphemerals int
	violations      []string // the fake Discord's violations and the fake Slack's problems
	jobs            map[string]float64
}

// buProvider is the fake provider behind a recorder of create requests:
// with Prefer: wait a create is answered when its prediction is final, so
// its span is the time the prediction held one of the provider's slots.
type buProvider struct {
	fake *kontexttest.Fake
	srv  *httptest.Server

	mu    sync.Mutex
	spans [][2]time.Time // successful creates: arrival, answer
	other map[int]int    // other create answers, by status
}

func buNewProvider(tb testing.TB, opts kontexttest.Options) *buProvider {
	p := &buProvider{fake: kontexttest.New(opts), other: map[int]int{}}
	p.srv = httptest.NewServer(p)
	tb.Cleanup(func() {
		p.fake.Close()
		p.srv.Close()
	})
	return p
}

// buStatus remembers the status a handler answered.
type buStatus struct {
	http.ResponseWriter
	code int
}

func (w *buStatus) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *buStatus) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (p *buProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/predictions") {
		p.fake.ServeHTTP(w, r)
		return
	}
	sw := &buStatus{ResponseWriter: w}
	start := time.Now()
	p.fake.ServeHTTP(sw, r)
	end := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if sw.code == http.StatusCreated {
		p.spans = append(p.spans, [2]time.Time{start, end})
	} else {
		p.other[sw.code]++
	}
}

// busy returns the busy-slot integral within [from, to], the number of
// predictions and their mean time.
func (p *buProvider) busy(from, to time.Time) (time.Duration, int, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var in, all time.Duration
	for _, s := range p.spans {
		all += s[1].Sub(s[0])
		a, b := s[0], s[1]
		if a.Before(from) {
			a = from
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			in += b.Sub(a)
		}
	}
	if len(p.spans) == 0 {
		return 0, 0, 0
	}
	return in, len(p.spans), all / time.Duration(len(p.spans))
}

// buHarness is the three fakes and the bot process.
type buHarness struct {
	tb   testing.TB
	o    buOptions
	prov *buProvider
	dc   *discordtest.Server
	sl   *slackfake.Server
	env  map[string]string
	addr string

	cmd            *exec.Cmd
	stdout, stderr *dcBuffer
	done           chan error
	exitErr        error
	exited         bool

	reqs      []*buReq
	users     [][]*buReq // the requests of each user, in firing order
	provCache map[string]string
}

// buFreeAddr returns a free local address for HTTP_ADDR.
func buFreeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// buStart starts the fakes, with a channel and a name for every user, and
// the bot process, and returns once the bot is connected to both
// platforms with its commands registered.
func buStart(tb testing.TB, o buOptions) *buHarness {
	tb.Helper()
	h := &buHarness{tb: tb, o: o, stdout: &dcBuffer{}, stderr: &dcBuffer{}, done: make(chan error, 1), provCache: map[string]string{}}
	h.prov = buNewProvider(tb, kontexttest.Options{APIKey: "test", Latency: o.latency, Jitter: o.jitter, Pixels: o.pixels})
	h.dc = discordtest.New(discordtest.Options{})
	tb.Cleanup(h.dc.Close)
	h.sl = slackfake.New(slackfake.Options{})
	tb.Cleanup(h.sl.Close)

	for i := range o.discordUsers {
		user, ch := fmt.Sprintf("71%016d", i+1), fmt.Sprintf("82%016d", i+1)
		h.dc.AddUser(user, fmt.Sprintf("dc%02d", i+1))
		h.dc.AddTextChannel(buGuild, ch, fmt.Sprintf("burst-%02d", i+1))
		h.addUser("discord", user, ch, fmt.Sprintf("d%02d", i+1))
	}
	for i := range o.slackUsers {
		user := fmt.Sprintf("U0BU%03d", i+1)
		h.sl.AddUser(user, fmt.Sprintf("sl%02d", i+1))
		ch := h.sl.CreateChannel(fmt.Sprintf("burst-%02d", i+1), true)
		h.addUser("slack", user, ch, fmt.Sprintf("s%02d", i+1))
	}

	dir := tb.TempDir()
	envFile := filepath.Join(dir, "none.env") // never read a developer's .env
	if err := os.WriteFile(envFile, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
	so := h.sl.Options()
	h.addr = buFreeAddr(tb)
	h.env = map[string]string{
		"COMETAPI_BASE_URL": h.prov.srv.URL, "COMETAPI_API_KEY": "test",
		"KONTEXT_WAIT":     "60", // Prefer: wait, the default, which the utilization figure relies on
		"KONTEXT_ENV_FILE": envFile, "KONTEXT_DB": filepath.Join(dir, "k.db"),
		"HTTP_ADDR": h.addr, "KONTEXT_SLOTS": strconv.Itoa(buSlots), "SHUTDOWN_TIMEOUT": "5s",
		"DISCORD_BOT_TOKEN": h.dc.Token(), "DISCORD_API_URL": h.dc.URL, "DISCORD_GUILD_ID": buGuild,
		"SLACK_BOT_TOKEN": so.BotToken, "SLACK_APP_TOKEN": so.AppToken, "SLACK_API_URL": h.sl.APIURL(),
	}
	for k, v := range o.env {
		h.env[k] = v
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	tb.Cleanup(cancel)
	h.cmd = binary(ctx, h.env, "serve")
	h.cmd.Stdout, h.cmd.Stderr = h.stdout, h.stderr
	if err := h.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { h.done <- h.cmd.Wait() }()
	tb.Cleanup(func() {
		if !h.exited {
			_ = h.cmd.Process.Kill()
			h.exitErr, h.exited = <-h.done, true
		}
		if tb.Failed() {
			tb.Logf("bot stdout:\n%s\nbot log (last 60 lines):\n%s", h.stdout.String(), buTail(h.stderr.String(), 60))
		}
	})
	h.waitFor(30*time.Second, "the bot to connect to both platforms", func() bool {
		return strings.Contains(h.stderr.String(), "kontextbot ready") && h.dc.Ready() &&
			len(h.dc.Commands(buGuild)) == 7 && h.sl.Connected()
	})
	return h
}

func (h *buHarness) addUser(platform, user, ch, tag string) {
	var mine []*buReq
	for k := range h.o.perUser {
		r := &buReq{platform: platform, user: user, channel: ch, prompt: fmt.Sprintf("burst %s-%02d a lighthouse at dusk", tag, k+1)}
		mine = append(mine, r)
		h.reqs = append(h.reqs, r)
	}
	h.users = append(h.users, mine)
}

// alive fails the test if the bot exited.
func (h *buHarness) alive(what string) {
	h.tb.Helper()
	select {
	case err := <-h.done:
		h.exitErr, h.exited = err, true
		h.tb.Fatalf("the bot exited (%v) while waiting for %s", err, what)
	default:
	}
}

func (h *buHarness) waitFor(d time.Duration, what string, cond func() bool) {
	h.tb.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(20 * time.Millisecond) {
		h.alive(what)
		if time.Now().After(deadline) {
			h.tb.Fatalf("timed out waiting for %s", what)
		}
	}
}

// fire sends every request: each user from a goroutine of their own,
// back to back, all users at once.
func (h *buHarness) fire() {
	h.tb.Helper()
	var wg sync.WaitGroup
	for _, mine := range h.users {
		wg.Go(func() {
			for _, r := range mine {
				r.fired = time.Now()
				switch r.platform {
				case "discord":
					in, err := h.dc.Slash(r.channel, r.user, "imagine", discordtest.String("prompt", r.prompt))
					r.interaction, r.fireErr = in.ID, err
				case "slack":
					r.envelope = h.sl.Slash(r.user, r.channel, "/imagine", r.prompt)
				}
			}
		})
	}
	wg.Wait()
	for _, r := range h.reqs {
		if r.fireErr != nil {
			h.tb.Fatalf("firing %q: %v", r.prompt, r.fireErr)
		}
	}
}

var buQueuedRE = regexp.MustCompile(`Queued · (\d+)`)

// buQueued returns the worst place in line among texts.
func buQueued(texts ...string) int {
	worst := 0
	for _, t := range texts {
		if m := buQueuedRE.FindStringSubmatch(t); m != nil {
			n, _ := strconv.Atoi(m[1])
			worst = max(worst, n)
		}
	}
	return worst
}

// prompt returns the prompt an image was made from, by its provenance
// (cached by key).
func (h *buHarness) prompt(key string, data func() []byte) string {
	if p, ok := h.provCache[key]; ok {
		return p
	}
	p, err := kontexttest.ReadProvenance(data())
	if err != nil {
		return ""
	}
	h.provCache[key] = p.Prompt
	return p.Prompt
}

// evaluate looks at what every user sees and sets each request's outcome;
// it returns how many have none yet. It keeps no state between calls but
// the provenance cache: a request counts as refused only for a message its
// user can read.
//
// Discord: delivered when the interaction's response shows the image made
// from its prompt; refused when it has an ephemeral follow-up (the queue's
// refusal, after the public response is deleted) or its response ended on
// a message that is not progress. Slack: per user (each has a channel of
// their own), the images in the channel are matched to requests by the
// prompt in their provenance, and every ephemeral message to the user in
// that channel counts as one refused request.
func (h *buHarness) evaluate() (pending int, mismatched []string, extraEph int) {
	for _, mine := range h.users {
		for _, r := range mine {
			r.outcome, r.text, r.via, r.at = "", "", "", time.Time{}
		}
		switch mine[0].platform {
		case "discord":
			for _, r := range mine {
				h.evalDiscord(r, &mismatched)
			}
		case "slack":
			extraEph += h.evalSlack(mine, &mismatched)
		}
		for _, r := range mine {
			if r.outcome == "" {
				pending++
			}
		}
	}
	return pending, mismatched, extraEph
}

func (h *buHarness) evalDiscord(r *buReq, mismatched *[]string) {
	in := h.dc.Interaction(r.interaction)
	if in.Original != "" {
		if m, ok := h.dc.Message(in.Original); ok {
			r.queued = max(r.queued, buQueued(m.History...))
			switch {
			case m.Deleted:
			case len(m.Attachments) > 0:
				got := h.prompt("dc:"+m.ID, func() []byte { return m.Attachments[0].Data })
				if got != r.prompt {
					*mismatched = append(*mismatched, fmt.Sprintf("discord %s: image of %q for %q", m.ID, got, r.prompt))
				}
				r.outcome, r.at = "delivered", m.EditedAt
				return
			case m.Content != "" && !strings.HasPrefix(m.Content, "Queued") && !strings.HasPrefix(m.Content, "Generating"):
				r.outcome, r.text, r.via, r.at = "refused", m.Content, "response edited", m.EditedAt
				return
			}
		}
	}
	for _, f := range h.dc.Followups(r.interaction) {
		if f.Ephemeral() && f.Content != "" {
			r.outcome, r.text, r.via, r.at = "refused", f.Content, "ephemeral follow-up", f.Created
			return
		}
	}
}

func (h *buHarness) evalSlack(mine []*buReq, mismatched *[]string) (extra int) {
	ch, user := mine[0].channel, mine[0].user
	byPrompt := map[string]*buReq{}
	for _, r := range mine {
		byPrompt[r.prompt] = r
	}
	bot := h.sl.Options().BotID
	for _, m := range h.sl.AllMessages(ch) {
		if m.BotID != bot {
			continue
		}
		if len(m.Files) == 0 { // a status message: its places in line
			texts := []string{m.Text}
			for _, e := range m.Edits {
				texts = append(texts, e.Text)
			}
			if q := buQueued(texts...); q > 0 {
				for _, r := range mine {
					if strings.Contains(string(m.Blocks), r.prompt) || slices.ContainsFunc(m.Edits, func(e slackfake.Edit) bool {
						return strings.Contains(string(e.Blocks), r.prompt)
					}) {
						r.queued = max(r.queued, q)
					}
				}
			}
			continue
		}
		if m.Deleted {
			continue
		}
		id := m.Files[0].ID
		got := h.prompt("sl:"+id, func() []byte { return h.sl.FileData(id) })
		r := byPrompt[got]
		if r == nil || r.outcome != "" {
			*mismatched = append(*mismatched, fmt.Sprintf("slack %s/%s: image of %q (no request, or delivered twice)", ch, m.TS, got))
			continue
		}
		r.outcome, r.at = "delivered", m.Posted
	}
	var eph []slackfake.Ephemeral
	for _, e := range h.sl.Ephemerals(user) {
		if e.Channel == ch {
			eph = append(eph, e)
		}
	}
	for _, r := range mine {
		if r.outcome == "" && len(eph) > 0 {
			r.outcome, r.text, r.via, r.at = "refused", eph[0].Text, eph[0].Via, eph[0].At
			eph = eph[1:]
		}
	}
	return len(eph)
}

// buCPU reads a process's user and sys CPU time from /proc/PID/stat
// (all its threads), to a clock tick.
func buCPU(pid int) (user, sys time.Duration, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state): utime is field 14, stime 15
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("unexpected /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(ut) * time.Second / buUserHZ, time.Duration(st) * time.Second / buUserHZ, nil
}

// buHWM reads a process's peak RSS (VmHWM) from /proc/PID/status, in bytes.
func buHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// buScrape reads the bot's /metrics into series → value.
func buScrape(c *http.Client, url string) (map[string]float64, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// buSum adds up every series of a metric.
func buSum(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// buScraper keeps the peaks of the bot's heap and RSS while it runs.
type buScraper struct {
	stop, done                            chan struct{}
	peakHeapInuse, peakHeapAlloc, peakRSS float64
	samples, errors                       int
}

func buScrapeEvery(url string, every time.Duration) *buScraper {
	s := &buScraper{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		c := &http.Client{Timeout: 2 * time.Second}
		defer c.CloseIdleConnections()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := buScrape(c, url); err == nil {
				s.samples++
				s.peakHeapInuse = max(s.peakHeapInuse, m["go_memstats_heap_inuse_bytes"])
				s.peakHeapAlloc = max(s.peakHeapAlloc, m["go_memstats_heap_alloc_bytes"])
				s.peakRSS = max(s.peakRSS, m["process_resident_memory_bytes"])
			} else {
				s.errors++
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops the scraper and returns it, its fields safe to read.
func (s *buScraper) finish() *buScraper {
	close(s.stop)
	<-s.done
	return s
}

// buPercentile is the nearest-rank percentile p (0..1) of ds.
func buPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func buMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func buTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// buRun runs one burst and returns what it measured. It fails tb when a
// request is lost, an image went to the wrong request, or the bot exited.
func buRun(tb testing.TB, o buOptions) *buResult {
	tb.Helper()
	h := buStart(tb, o)
	pid := h.cmd.Process.Pid
	metricsURL := "http://" + h.addr + "/metrics"

	user0, sys0, err := buCPU(pid)
	if err != nil {
		tb.Fatal(err)
	}
	scraper := buScrapeEvery(metricsURL, 100*time.Millisecond)
	t0 := time.Now()
	h.fire()

	// Settle: every request delivered or refused with a message.
	var mismatched []string
	var extraEph int
	deadline := time.Now().Add(o.settle)
	for {
		var pending int
		pending, mismatched, extraEph = h.evaluate()
		if pending == 0 || time.Now().After(deadline) {
			break
		}
		h.alive("the burst to settle")
		time.Sleep(100 * time.Millisecond)
	}
	// The end of the bot's visible work: every Discord result has its
	// thread, every Slack status message is gone. Only then read its CPU.
	tailDone := buWaitSoft(10*time.Second, func() bool {
		for _, r := range h.reqs {
			if r.platform == "discord" && r.outcome == "delivered" {
				in := h.dc.Interaction(r.interaction)
				if m, _ := h.dc.Message(in.Original); m.Thread == "" {
					return false
				}
			}
		}
		for _, mine := range h.users {
			if mine[0].platform != "slack" {
				continue
			}
			for _, m := range h.sl.TopLevel(mine[0].channel) {
				if m.BotID != "" && len(m.Files) == 0 {
					return false
				}
			}
		}
		return true
	})
	user1, sys1, err := buCPU(pid)
	if err != nil {
		tb.Fatal(err)
	}
	sc := scraper.finish()

	res := &buResult{requests: len(h.reqs), refusals: map[string]int{}, outcomes: map[string]int{}, maxQueued: map[string]int{}, everQueued: map[string]int{},
		mismatched: mismatched, extraEphemerals: extraEph, jobs: map[string]float64{}}
	var last time.Time
	for _, r := range h.reqs {
		res.firing = max(res.firing, r.fired.Sub(t0))
		switch r.outcome {
		case "delivered":
			res.outcomes[r.platform+" delivered"]++
		case "refused":
			res.outcomes[r.platform+" refused by "+r.via]++
		default:
			res.outcomes[r.platform+" lost"]++
		}
		switch r.outcome {
		case "delivered":
			res.delivered++
			if r.at.After(last) {
				last = r.at
			}
		case "refused":
			res.refused++
			res.refusals[r.text]++
		default:
			res.lost++
		}
		if r.queued > 0 {
			res.everQueued[r.platform]++
			res.maxQueued[r.platform] = max(res.maxQueued[r.platform], r.queued)
		}
		switch r.platform {
		case "discord":
			if lat := h.dc.Interaction(r.interaction).AckLatency(); lat > 0 {
				res.ackDiscord = append(res.ackDiscord, lat)
			} else {
				res.unacked++
			}
		case "slack":
			if r.envelope.Acked(0) {
				res.ackSlack = append(res.ackSlack, r.envelope.Latency())
			} else {
				res.unacked++
			}
		}
	}
	if last.IsZero() { // nothing delivered: the window ends at the last refusal
		for _, r := range h.reqs {
			if r.at.After(last) {
				last = r.at
			}
		}
	}
	res.window = last.Sub(t0)
	var busy time.Duration
	busy, res.predictions, res.meanPredict = h.prov.busy(t0, last)
	if res.window > 0 {
		res.utilization = float64(busy) / (float64(buSlots) * float64(res.window))
	}
	res.cpuUser, res.cpuSys = user1-user0, sys1-sys0
	res.cpuBurst = res.cpuUser + res.cpuSys
	res.peakHeapInuse, res.peakHeapAlloc, res.peakRSS, res.scrapes = sc.peakHeapInuse, sc.peakHeapAlloc, sc.peakRSS, sc.samples

	c := &http.Client{Timeout: 5 * time.Second}
	final, err := buScrape(c, metricsURL)
	c.CloseIdleConnections()
	if err != nil {
		tb.Errorf("final /metrics: %v", err)
	}
	res.providerRetries = buSum(final, "kontextbot_provider_retries_total")
	for k, v := range final {
		if strings.HasPrefix(k, "kontextbot_jobs_total{") {
			res.jobs[strings.TrimPrefix(k, "kontextbot_jobs_total")] = v
		}
	}
	res.discord429 = h.dc.RateLimited()
	res.botRetries = strings.Count(h.stderr.String(), "rate limited; retrying")
	h.prov.mu.Lock()
	res.provider429 = h.prov.other[http.StatusTooManyRequests]
	h.prov.mu.Unlock()

	if res.maxRSS, err = buHWM(pid); err != nil {
		tb.Fatal(err)
	}
	// A graceful stop, then the bot's own rusage.
	if err := h.cmd.Process.Signal(os.Interrupt); err != nil {
		tb.Fatal(err)
	}
	select {
	case h.exitErr = <-h.done:
	case <-time.After(30 * time.Second):
		_ = h.cmd.Process.Kill()
		h.exitErr = <-h.done
		tb.Errorf("the bot did not stop within 30 s of SIGINT")
	}
	h.exited = true
	if h.exitErr != nil {
		tb.Errorf("the bot exited with %v", h.exitErr)
	}
	if ru, ok := h.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.cpuTotal = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		res.rusageMaxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	res.violations = append(h.dc.Violations(), h.sl.CheckAcks()...)
	if !tailDone {
		res.violations = append(res.violations, "the bot's work after delivery (Discord threads, Slack status removal) did not end within 10 s")
	}

	buLog(tb, o, res)
	if res.lost > 0 {
		var lost []string
		for _, r := range h.reqs {
			if r.outcome == "" {
				lost = append(lost, r.platform+" "+r.prompt)
			}
		}
		tb.Fatalf("%d of %d requests lost (neither delivered nor refused with a message): %q", res.lost, res.requests, lost)
	}
	if len(res.mismatched) > 0 {
		tb.Fatalf("images did not match their requests: %q", res.mismatched)
	}
	return res
}

// buWaitSoft waits up to d for cond and reports whether it came.
func buWaitSoft(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// buLog writes what a burst saw beyond the figures, in at most 10 lines
// (the testing package trims a benchmark's log to 10).
func buLog(tb testing.TB, o buOptions, r *buResult) {
	tb.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "burst: %d requests (%d Discord + %d Slack users × %d), provider %s + [0,%s) at %d px, env %v\n",
		r.requests, o.discordUsers, o.slackUsers, o.perUser, o.latency, o.jitter, o.pixels, o.env)
	texts := make([]string, 0, len(r.refusals))
	for t, n := range r.refusals {
		texts = append(texts, fmt.Sprintf("%d× %q", n, t))
	}
	sort.Strings(texts)
	if len(texts) == 0 {
		texts = []string{"none"}
	}
	fmt.Fprintf(&b, "  fired in %s; delivered %d, refused %d, lost %d; window %s (%.1f images/s); refusals: %s\n",
		r.firing.Round(time.Millisecond), r.delivered, r.refused, r.lost, r.window.Round(time.Millisecond),
		float64(r.delivered)/r.window.Seconds(), strings.Join(texts, ", "))
	outcomes := make([]string, 0, len(r.outcomes))
	for k, n := range r.outcomes {
		outcomes = append(outcomes, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(outcomes)
	fmt.Fprintf(&b, "  by platform: %s\n", strings.Join(outcomes, ", "))
	fmt.Fprintf(&b, "  ack Discord p50 %s p99 %s max %s (n=%d); Slack p50 %s p99 %s max %s (n=%d); unacknowledged %d\n",
		buPercentile(r.ackDiscord, .5).Round(time.Microsecond), buPercentile(r.ackDiscord, .99).Round(time.Microsecond),
		buPercentile(r.ackDiscord, 1).Round(time.Microsecond), len(r.ackDiscord),
		buPercentile(r.ackSlack, .5).Round(time.Microsecond), buPercentile(r.ackSlack, .99).Round(time.Microsecond),
		buPercentile(r.ackSlack, 1).Round(time.Microsecond), len(r.ackSlack), r.unacked)
	fmt.Fprintf(&b, "  provider: %d predictions held %s each on average; busy-slot integral ÷ (6 × window) = %.3f; create 429s %d\n",
		r.predictions, r.meanPredict.Round(100*time.Microsecond), r.utilization, r.provider429)
	fmt.Fprintf(&b, "  bot: CPU %s in the burst (user %s, sys %s), %s in all (rusage); VmHWM %.1f MiB (rusage maxrss %.1f MiB, see buResult); peak heap inuse %.1f MiB, alloc %.1f MiB, RSS %.1f MiB over %d scrapes\n",
		r.cpuBurst, r.cpuUser, r.cpuSys, r.cpuTotal.Round(time.Millisecond), float64(r.maxRSS)/(1<<20), float64(r.rusageMaxRSS)/(1<<20),
		r.peakHeapInuse/(1<<20), r.peakHeapAlloc/(1<<20), r.peakRSS/(1<<20), r.scrapes)
	jobs := make([]string, 0, len(r.jobs))
	for k, v := range r.jobs {
		jobs = append(jobs, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(jobs)
	fmt.Fprintf(&b, "  queued: Discord %d requests (worst place %d), Slack %d (worst %d); Discord 429s %d, bot rate-limit retries %d, provider retries %v; jobs_total %s\n",
		r.everQueued["discord"], r.maxQueued["discord"], r.everQueued["slack"], r.maxQueued["slack"],
		r.discord429, r.botRetries, r.providerRetries, strings.Join(jobs, " "))
	if r.extraEphemerals > 0 {
		fmt.Fprintf(&b, "  %d Slack ephemeral messages beyond the undelivered requests\n", r.extraEphemerals)
	}
	if n := len(r.violations); n > 0 {
		fmt.Fprintf(&b, "  the fakes reported %d problems, first: %q\n", n, r.violations[:min(n, 3)])
	}
	tb.Log(strings.TrimRight(b.String(), "\n"))
}

// report publishes a burst's figures on b.
func (r *buResult) report(b *testing.B) {
	all := append(slices.Clone(r.ackDiscord), r.ackSlack...)
	b.ReportMetric(buMS(buPercentile(all, .5)), "ack_p50_ms")
	b.ReportMetric(buMS(buPercentile(all, .99)), "ack_p99_ms")
	b.ReportMetric(buMS(buPercentile(r.ackDiscord, .5)), "discord_ack_p50_ms")
	b.ReportMetric(buMS(buPercentile(r.ackDiscord, .99)), "discord_ack_p99_ms")
	b.ReportMetric(buMS(buPercentile(r.ackSlack, .5)), "slack_ack_p50_ms")
	b.ReportMetric(buMS(buPercentile(r.ackSlack, .99)), "slack_ack_p99_ms")
	b.ReportMetric(r.utilization, "utilization")
	if r.delivered > 0 {
		b.ReportMetric(buMS(r.cpuBurst)/float64(r.delivered), "cpu_ms_per_image")
	}
	b.ReportMetric(r.peakHeapInuse/(1<<20), "peak_heap_mb")
	b.ReportMetric(float64(r.maxRSS)/(1<<20), "maxrss_mb")
	b.ReportMetric(float64(r.delivered), "delivered")
	b.ReportMetric(float64(r.refused), "refused")
	b.ReportMetric(float64(r.lost), "lost")
	b.ReportMetric(r.window.Seconds(), "window_s")
}

// BenchmarkBurst fires 500 /imagine requests from 50 users (25 on Discord,
// 25 on Slack in Socket Mode, 10 each, each user in a channel of their
// own) at once, at the bot running as a separate process with 6 slots,
// against a provider taking 150 ms + [0,100) ms per 256×256 image.
// "raised" lifts the queue caps so the whole burst is accepted; "defaults"
// keeps them (5 waiting per user, 200 in all), so part of the burst is
// refused, each refusal told to its user. Each sub-benchmark does its fixed
// work once, whatever b.N: run it with -benchtime 1x.
func BenchmarkBurst(b *testing.B) {
	base := buOptions{discordUsers: 25, slackUsers: 25, perUser: 10,
		latency: 150 * time.Millisecond, jitter: 100 * time.Millisecond, pixels: 256 * 256, settle: 75 * time.Second}
	for _, v := range []struct {
		name string
		env  map[string]string
	}{{"raised", buRaised}, {"defaults", nil}} {
		b.Run(v.name, func(b *testing.B) {
			o := base
			o.env = v.env
			buRun(b, o).report(b)
		})
	}
}

// TestBurstSmall runs the burst harness small (20 requests from 2 Discord
// and 2 Slack users): none may be lost, every one is acknowledged within
// Discord's and Slack's 3 seconds, and the fakes saw nothing wrong.
func TestBurstSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	r := buRun(t, buOptions{discordUsers: 2, slackUsers: 2, perUser: 5,
		latency: 50 * time.Millisecond, jitter: 50 * time.Millisecond, pixels: 64 * 64, env: buRaised, settle: 30 * time.Second})
	if r.delivered != r.requests || r.refused != 0 {
		t.Errorf("delivered %d, refused %d of %d: with the caps raised, every request should be delivered", r.delivered, r.refused, r.requests)
	}
	if len(r.ackDiscord)+len(r.ackSlack) != r.requests {
		t.Errorf("%d Discord and %d Slack acknowledgements for %d requests", len(r.ackDiscord), len(r.ackSlack), r.requests)
	}
	if worst := max(buPercentile(r.ackDiscord, 1), buPercentile(r.ackSlack, 1)); worst >= 3*time.Second {
		t.Errorf("an acknowledgement took %s; both platforms allow 3 s", worst)
	}
	if r.predictions < r.delivered || r.utilization <= 0 || r.utilization > 1.0001 {
		t.Errorf("%d predictions for %d images, utilization %.3f", r.predictions, r.delivered, r.utilization)
	}
	if r.cpuTotal <= 0 || r.cpuBurst <= 0 || r.maxRSS <= 0 || r.peakHeapInuse <= 0 {
		t.Errorf("bot resources not measured: cpu %s, maxrss %d, heap %.0f", r.cpuTotal, r.maxRSS, r.peakHeapInuse)
	}
	for _, v := range r.violations {
		t.Errorf("fake platform: %s", v)
	}
}
