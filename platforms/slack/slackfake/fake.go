// Package slackfake is a strict fake Slack for tests: the Web API methods
// kontextbot calls, the file upload URL and file downloads, a Socket Mode
// websocket that delivers envelopes and checks they are acknowledged in
// time, and a driver that posts signed HTTP requests to a bot in HTTP mode.
//
// It keeps channels, threads, messages (with every edit), ephemeral
// messages, files and modals, so a test reads what a person in the
// workspace would see. Every Web API call must carry "Authorization:
// Bearer" with the right token (the bot token; the app-level token for
// apps.connections.open); anything else is answered as Slack does and
// recorded as a problem, and Problems() lists them all.
//
// github.com/slack-go/slack/slacktest was the starting point, but it is
// built for RTM: its chat.postMessage pushes onto an unbuffered channel
// (leaking a goroutine when no RTM client listens), its timestamps are
// whole seconds (not unique), it checks no token and lacks the file, view,
// thread and Socket Mode parts. So this fake is written on net/http and
// gorilla/websocket, following the JSON shapes of Slack's documentation
// and of slack-go's own types.
package slackfake

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Options configures a fake. Zero fields take the defaults in comments.
type Options struct {
	BotToken      string // "xoxb-fake-bot-token"
	AppToken      string // "xapp-fake-app-token"
	SigningSecret string // "fake-signing-secret"
	TeamID        string // "T0KONTEXT"
	TeamDomain    string // "kontext-test"
	BotUserID     string // "U0KBOT"
	BotID         string // "B0KBOT"
	BotName       string // "kontextbot"
	AppID         string // "A0KONTEXT"
	// ShareDelay is how long after files.completeUploadExternal the
	// message sharing the file appears (Slack posts it asynchronously).
	// Default 60ms.
	ShareDelay time.Duration
	// PingInterval is how often the Socket Mode websocket is pinged.
	// Default 2s.
	PingInterval time.Duration
	// AckTimeout is how long the bot has to acknowledge an envelope or
	// answer an HTTP request. Default 3s, as Slack.
	AckTimeout time.Duration
	// NoFilesRead makes url_private answer Slack's HTML sign-in page even
	// with the right token, as when the app lacks the files:read scope.
	NoFilesRead bool
	// NoUsersRead is an app installed without the users:read scope:
	// users.info answers missing_scope.
	NoUsersRead bool
}

func (o *Options) defaults() {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.BotToken, "xoxb-fake-bot-token")
	def(&o.AppToken, "xapp-fake-app-token")
	def(&o.SigningSecret, "fake-signing-secret")
	def(&o.TeamID, "T0KONTEXT")
	def(&o.TeamDomain, "kontext-test")
	def(&o.BotUserID, "U0KBOT")
	def(&o.BotID, "B0KBOT")
	def(&o.BotName, "kontextbot")
	def(&o.AppID, "A0KONTEXT")
	if o.ShareDelay == 0 {
		o.ShareDelay = 60 * time.Millisecond
	}
	if o.PingInterval == 0 {
		o.PingInterval = 2 * time.Second
	}
	if o.AckTimeout == 0 {
		o.AckTimeout = 3 * time.Second
	}
}

// Server is a running fake Slack.
type Server struct {
	opts Options
	srv  *httptest.Server
	// URL is the fake's base URL, http://127.0.0.1:port.
	URL string

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every change
	closed     bool
	seq        int64 // for ids and timestamps
	channels   map[string]*channel
	order      []string // channel ids in creation order
	users      map[string]string
	roles      map[string]Role // users.info is_admin / is_owner
	files      map[string]*File
	triggers   map[string]trigger
	responses  map[string]trigger // response_url id -> who asked
	views      []*View
	ephemerals []Ephemeral
	calls      []Call
	downloads  []Download
	problems   []string
	envelopes  []*Envelope
	noFiles    bool
	faults     map[string][]Fault // by method, or Upload
	lastTS     int64              // microseconds of the last ts handed out

	// Delivery to the bot.
	httpTarget string    // HTTP mode: the bot's base URL; "" for Socket Mode
	socks      []*wsConn // open Socket Mode connections, oldest first
	next       int       // round-robin over socks
	conns      int       // connections opened so far
	queue      []*Envelope
	queueWake  chan struct{}
	httpc      *http.Client

	wg     sync.WaitGroup
	timers []*time.Timer
	stop   chan struct{}
}

type channel struct {
	id, name, kind string // kind: channel, group, im
	botMember      bool
	msgs           []*Message
}

type trigger struct {
	user, channel string
	at            time.Time
	used          bool
}

// Message is a message as people see it.
type Message struct {
	Channel  string
	TS       string
	ThreadTS string // "" for a top-level message without replies; the root's ts in a thread
	User     string
	BotID    string
	SubType  string
	Text     string
	Blocks   json.RawMessage
	Files    []*File
	Posted   time.Time
	Deleted  bool
	// Edits are the message's earlier and later versions: every chat.update.
	Edits []Edit
}

// Edit is one chat.update of a message.
type Edit struct {
	At     time.Time
	Text   string
	Blocks json.RawMessage
}

// InThread reports whether the message is a reply in a thread.
func (m Message) InThread() bool { return m.ThreadTS != "" && m.ThreadTS != m.TS }

// File is a file in the workspace.
type File struct {
	ID       string
	Name     string
	Title    string
	Mimetype string
	Filetype string
	User     string
	Size     int
	Data     []byte
	// URLPrivate is where it downloads from, with the bot token.
	URLPrivate string
	// External files live elsewhere (their URLPrivate is another host).
	External bool
	Shares   []Share
	// Stub files reach the bot in events as {"id", "file_access":
	// "check_file_info"} only (Slack Connect); files.info has the rest.
	Stub bool
	// InfoError, when set, is files.info's answer to the bot for this
	// file ("file_not_found", "no_permission").
	InfoError string
	uploaded  bool
	completed bool // files.completeUploadExternal was called for it (only once is allowed)
	declared  int
}

// Share is a message a file was shared in.
type Share struct {
	Channel, TS, ThreadTS string
}

// View is a modal the bot opened.
type View struct {
	ID              string
	User            string // who pressed the button or shortcut
	Channel         string
	CallbackID      string
	PrivateMetadata string
	Title           string
	Blocks          json.RawMessage
	Opened          time.Time
}

// Ephemeral is a message only one person sees.
type Ephemeral struct {
	Channel, User, ThreadTS, Text string
	// TS is the message_ts chat.postEphemeral answered ("" for a
	// response_url answer); Blocks are its blocks, if any.
	TS     string
	Blocks json.RawMessage
	// Via is "chat.postEphemeral" or "response_url".
	Via string
	At  time.Time
}

// Call is one Web API call.
type Call struct {
	Method string
	At     time.Time
	Authed bool
	// Params are its arguments (the token left out).
	Params map[string]string
	// ContentType is the request's Content-Type.
	ContentType string
}

// Download is one request for a file's url_private.
type Download struct {
	FileID string
	Auth   string // the Authorization header it carried
	At     time.Time
}

// New starts a fake Slack.
func New(opts Options) *Server {
	opts.defaults()
	s := &Server{opts: opts, changed: make(chan struct{}), channels: map[string]*channel{}, users: map[string]string{}, roles: map[string]Role{},
		files: map[string]*File{}, triggers: map[string]trigger{}, responses: map[string]trigger{},
		noFiles: opts.NoFilesRead, queueWake: make(chan struct{}, 1), stop: make(chan struct{}),
		httpc: &http.Client{Timeout: opts.AckTimeout, Transport: &http.Transport{}}}
	mux := http.NewServeMux()
	mux.HandleFunc("/api/{method}", s.serveAPI)
	mux.HandleFunc("POST /upload/v1/{id}", s.serveUpload)
	mux.HandleFunc("GET /files-pri/{key}/{name}", s.serveFile)
	mux.HandleFunc("POST /response/{id}", s.serveResponse)
	mux.HandleFunc("GET /socket", s.serveSocket)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.problem("request to an unknown path: %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
	})
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	s.wg.Add(1)
	go s.sender()
	return s
}

// Options returns the fake's options, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// APIURL is the Web API base to give the bot (SLACK_API_URL).
func (s *Server) APIURL() string { return s.URL + "/api/" }

// Close stops the fake: the websocket, pending shares, the server.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.stop)
	for _, t := range s.timers {
		if t.Stop() {
			s.wg.Done()
		}
	}
	socks := s.socks
	s.socks = nil
	s.mu.Unlock()
	for _, c := range socks {
		c.close()
	}
	s.srv.CloseClientConnections()
	s.srv.Close()
	s.wg.Wait()
	s.httpc.CloseIdleConnections()
}

// SetHTTPTarget switches delivery to HTTP mode: envelopes become signed
// requests to base + /slack/events, /slack/commands, /slack/interactive.
func (s *Server) SetHTTPTarget(base string) {
	s.mu.Lock()
	s.httpTarget = strings.TrimRight(base, "/")
	s.mu.Unlock()
}

// SetFilesRead grants or takes away the files:read scope.
func (s *Server) SetFilesRead(ok bool) {
	s.mu.Lock()
	s.noFiles = !ok
	s.mu.Unlock()
}

// notify wakes everyone waiting for a change. Called with s.mu held.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Wait waits until cond holds (it is checked after every change) or
// timeout passes, and reports whether it holds. cond may call the
// fake's accessors.
func (s *Server) Wait(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return cond()
		}
	}
}

func (s *Server) problem(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.problemLocked(format, args...)
}

func (s *Server) problemLocked(format string, args ...any) {
	s.problems = append(s.problems, fmt.Sprintf(format, args...))
	s.notify()
}

// Problems lists everything the bot did that Slack would refuse or that
// breaks its rules: calls without the right token, unknown methods, late
// or missing acknowledgements, uploads of the wrong size...
func (s *Server) Problems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.problems)
}

// newID returns a fresh id with a prefix.
func (s *Server) newID(prefix string) string {
	s.seq++
	return fmt.Sprintf("%s%08X", prefix, s.seq)
}

// newTS returns a fresh message timestamp: the time now, made unique
// and increasing (as Slack's are within a channel).
func (s *Server) newTS() string {
	us := max(time.Now().UnixMicro(), s.lastTS+1)
	s.lastTS = us
	return fmt.Sprintf("%d.%06d", us/1e6, us%1e6)
}

// CreateChannel adds a public channel; member says whether the bot was
// invited to it.
func (s *Server) CreateChannel(name string, member bool) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("C")
	s.channels[id] = &channel{id: id, name: name, kind: "channel", botMember: member}
	s.order = append(s.order, id)
	s.notify()
	return id
}

// OpenDM opens a direct message between user and the bot.
func (s *Server) OpenDM(user string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("D")
	s.channels[id] = &channel{id: id, name: user, kind: "im", botMember: true}
	s.order = append(s.order, id)
	return id
}

// Invite adds the bot to a channel.
func (s *Server) Invite(channelID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.channels[channelID]; c != nil {
		c.botMember = true
	}
}

// AddUser names a person.
func (s *Server) AddUser(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = name
}

// Role is what users.info says of a person's place in the workspace.
type Role struct {
	Admin, Owner, PrimaryOwner bool
}

// SetRole makes a person a workspace admin or owner (users.info
// is_admin, is_owner, is_primary_owner). An owner is an admin too, as
// Slack reports it.
func (s *Server) SetRole(id string, r Role) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Owner || r.PrimaryOwner {
		r.Admin, r.Owner = true, true
	}
	s.roles[id] = r
}

func (s *Server) userName(id string) string {
	if n := s.users[id]; n != "" {
		return n
	}
	return strings.ToLower(id)
}

func copyMessage(m *Message) Message {
	c := *m
	c.Files = slices.Clone(m.Files)
	c.Edits = slices.Clone(m.Edits)
	return c
}

// Message returns the message at ts in a channel.
func (s *Server) Message(channelID, ts string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.findMsg(channelID, ts); m != nil {
		return copyMessage(m), true
	}
	return Message{}, false
}

func (s *Server) findMsg(channelID, ts string) *Message {
	c := s.channels[channelID]
	if c == nil {
		return nil
	}
	for _, m := range c.msgs {
		if m.TS == ts {
			return m
		}
	}
	return nil
}

// TopLevel returns a channel's top-level messages, oldest first, without
// deleted ones.
func (s *Server) TopLevel(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	if c := s.channels[channelID]; c != nil {
		for _, m := range c.msgs {
			if !m.Deleted && !m.InThread() {
				out = append(out, copyMessage(m))
			}
		}
	}
	return out
}

// Thread returns a thread: its root, then its replies, without deleted
// ones.
func (s *Server) Thread(channelID, rootTS string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.thread(channelID, rootTS, false)
}

func (s *Server) thread(channelID, rootTS string, withDeleted bool) []Message {
	var out []Message
	if c := s.channels[channelID]; c != nil {
		for _, m := range c.msgs {
			if (m.TS == rootTS || m.ThreadTS == rootTS) && (withDeleted || !m.Deleted) {
				out = append(out, copyMessage(m))
			}
		}
	}
	return out
}

// AllMessages returns every message of a channel, deleted ones included,
// in the order they were posted.
func (s *Server) AllMessages(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	if c := s.channels[channelID]; c != nil {
		for _, m := range c.msgs {
			out = append(out, copyMessage(m))
		}
	}
	return out
}

// Ephemerals returns the ephemeral messages shown to user.
func (s *Server) Ephemerals(user string) []Ephemeral {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Ephemeral
	for _, e := range s.ephemerals {
		if e.User == user {
			out = append(out, e)
		}
	}
	return out
}

// Views returns the modals opened so far.
func (s *Server) Views() []View {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []View
	for _, v := range s.views {
		out = append(out, *v)
	}
	return out
}

// Calls returns the Web API calls so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// CallCount counts the calls of one method.
func (s *Server) CallCount(method string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == method {
			n++
		}
	}
	return n
}

// Downloads returns the url_private requests so far.
func (s *Server) Downloads() []Download {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.downloads)
}

// FileData returns the bytes of a file.
func (s *Server) FileData(id string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[id]; f != nil {
		return slices.Clone(f.Data)
	}
	return nil
}

// Connections counts the Socket Mode connections opened so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Connected reports whether a Socket Mode client is connected.
func (s *Server) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.socks) > 0
}

// OpenConnections is the number of Socket Mode connections open now.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.socks)
}
