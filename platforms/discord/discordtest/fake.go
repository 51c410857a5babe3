// Package discordtest is a fake Discord for tests: a real HTTP server for
// the REST API (v9 and v10) and a real websocket gateway, both on
// 127.0.0.1, as strict as Discord about what a bot may send.
//
// What it enforces, each the way Discord answers it:
//
//   - Authorization: Bot <token> on every REST call (401 otherwise); the
//     token is never needed by the CDN route, and a CDN request carrying
//     one is counted (a bot must not send its token there).
//   - The gateway handshake: op 10 Hello, op 2 Identify (token and
//     intents checked: close 4004, 4013, 4014), op 0 READY, op 1 answered
//     with op 11. MESSAGE_CREATE is delivered only for subscribed intents,
//     and without MESSAGE_CONTENT a guild message's content and
//     attachments are blanked unless it mentions the bot.
//   - Interactions: an interaction not answered within 3 s fails (it is
//     recorded, and a late answer gets 404 Unknown interaction); the token
//     expires 15 minutes after creation on the fake's clock (Advance), and
//     webhook calls then answer 401 Invalid Webhook Token (50027).
//   - Messages: content at most 2000 characters, components checked
//     (custom ids at most 100 characters, unique), multipart bodies parsed
//     (payload_json + files[n]) with the files kept and a request body
//     over the server's upload limit refused (413, code 40005): 10 MiB, or
//     what SetUploadLimit gives a boosted server, which interactions carry
//     as attachment_size_limit; allowed_mentions is recorded on every
//     write and anything but an empty one is a violation; more than 5
//     edits per 5 s in one channel answer 429 with retry_after and the
//     X-RateLimit headers, and HoldRateLimit answers every message write
//     429 until a long retry_after has passed on the fake's clock.
//   - Threads from messages (the thread's id is the message's, its name at
//     most 100 characters; 403 Missing Permissions where DenyThreads says
//     so), deleted channels (404 Unknown Channel, 10003), archived threads
//     (a post unarchives them; locked ones answer 400, 50083), replies
//     (message_reference, referenced_message; a reply pings the replied-to
//     author, who is then in mentions) and the history of every channel,
//     so a test reads what a user sees. A create with enforce_nonce
//     returns the bot's earlier message with the same nonce (at most 25
//     characters) from the past few minutes instead of posting again.
//   - Unknown routes answer 404 JSON, so missing coverage shows up.
package discordtest

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limits and flags, as Discord has them.
const (
	DefaultToken = "fake-discord-bot-token"

	// Application flags (READY application.flags, GET /applications/@me).
	FlagGatewayMessageContent        = 1 << 18
	FlagGatewayMessageContentLimited = 1 << 19

	// Gateway intents the fake looks at.
	IntentGuilds         = 1 << 0
	IntentGuildMessages  = 1 << 9
	IntentDirectMessages = 1 << 12
	IntentMessageContent = 1 << 15

	InteractionDeadline = 3 * time.Second
	TokenLifetime       = 15 * time.Minute
	MaxUploadBytes      = 10 << 20
	EditLimit           = 5
	EditWindow          = 5 * time.Second
	MaxContent          = 2000
	MaxCustomID         = 100
	MaxSelectOptions    = 25
	MaxThreadName       = 100
	// NonceWindow is how long a create with enforce_nonce returns the
	// earlier message with the same nonce ("the past few minutes").
	NonceWindow = 5 * time.Minute

	// Message flags.
	FlagEphemeral = 1 << 6
	FlagLoading   = 1 << 7

	discordEpoch = 1420070400000
)

// Options configures a Server. The zero value works.
type Options struct {
	// Token is the bot token the fake accepts; default DefaultToken.
	Token string
	// NoMessageContent leaves the MESSAGE_CONTENT intent disabled for the
	// application: identifying with it closes the gateway with 4014.
	NoMessageContent bool
	// HeartbeatInterval is sent in Hello; default 41.25 s.
	HeartbeatInterval time.Duration
	// Logger receives the fake's logs; nil discards.
	Logger *slog.Logger
}

// User is a Discord user as tests name them.
type User struct {
	ID   string
	Name string
	Bot  bool
	// Permissions are the member's computed permissions in guild
	// channels (interaction member.permissions); DefaultPermissions
	// unless SetPermissions changed them.
	Permissions uint64
}

// Permission bits (Discord's permissions bitfield).
const (
	PermAdministrator uint64 = 1 << 3
	PermManageGuild   uint64 = 1 << 5
	// PermManageMessages lets a member delete other members' messages.
	PermManageMessages uint64 = 1 << 13
	// DefaultPermissions are an ordinary member's: no Administrator,
	// no Manage Server.
	DefaultPermissions uint64 = 2248473465835073
)

// Channel is a channel, thread or DM.
type Channel struct {
	ID       string
	GuildID  string
	ParentID string
	Name     string
	Type     int
	OwnerID  string
	// Recipient is the other user of a DM.
	Recipient string
	// Archived and Locked are a thread's thread_metadata.
	Archived, Locked bool
	// NoThreads: the bot may not create threads here (403, 50013).
	NoThreads bool
}

// Channel types.
const (
	ChannelText         = 0
	ChannelDM           = 1
	ChannelNews         = 5
	ChannelNewsThread   = 10
	ChannelPublicThread = 11
)

// Attachment is a file on a message (or uploaded for one), with its bytes.
type Attachment struct {
	ID          string
	Filename    string
	ContentType string
	Description string
	URL         string
	Size        int
	Data        []byte
}

// Button is one button of a message.
type Button struct {
	Label    string
	CustomID string
	Style    int
	Disabled bool
}

// Select is one string select menu (component type 3) of a message.
type Select struct {
	CustomID             string
	Placeholder          string
	MinValues, MaxValues int
	Options              []SelectOption
	Disabled             bool
}

// SelectOption is one choice of a Select.
type SelectOption struct {
	Label, Value, Description string
}

// Message is a message as a test sees it: a copy, safe to keep.
type Message struct {
	ID        string
	ChannelID string
	GuildID   string
	Author    User
	Content   string
	// History is every content the message showed, oldest first.
	History     []string
	Attachments []Attachment
	Buttons     []Button
	Selects     []Select
	Type        int
	Flags       int
	// ReplyTo is the message this one replies to (message_reference).
	ReplyTo string
	// Interaction is the interaction this message answers, if any.
	Interaction string
	// Thread is the thread started from this message, if any.
	Thread          string
	MentionEveryone bool
	Deleted         bool
	Edits           int
	Created         time.Time
	EditedAt        time.Time
}

// Ephemeral reports whether only the interaction's user sees the message.
func (m Message) Ephemeral() bool { return m.Flags&FlagEphemeral != 0 }

// Button returns the button labelled label, or false.
func (m Message) Button(label string) (Button, bool) {
	for _, b := range m.Buttons {
		if b.Label == label {
			return b, true
		}
	}
	return Button{}, false
}

// Interaction is an injected interaction, as a test sees it.
type Interaction struct {
	ID        string
	Token     string
	Type      int
	ChannelID string
	GuildID   string
	User      string
	// Ack is the callback type the bot answered with (0: none yet).
	Ack int
	// Failed is set when the bot did not answer within 3 s.
	Failed bool
	// Original is the id of the response message (for 4/5), or of the
	// message the component is on (6/7).
	Original string
	// Followups are the follow-up message ids, in order.
	Followups []string
	// Modal is the modal the bot opened (callback type 9), if any.
	Modal *Modal
	// Message is the message a component or modal submit came from.
	Message string
	// Injected is when the test injected the interaction (just before it
	// was sent on the gateway), and Answered when the fake accepted the
	// bot's callback (zero until then); both by the wall clock, not the
	// fake's Advance clock. AckLatency is their difference.
	Injected time.Time
	Answered time.Time
}

// AckLatency is how long the bot took to answer the interaction: from its
// injection to the fake accepting the callback; 0 while unanswered.
func (in Interaction) AckLatency() time.Duration {
	if in.Answered.IsZero() || in.Injected.IsZero() {
		return 0
	}
	return in.Answered.Sub(in.Injected)
}

// Modal is a modal a bot opened.
type Modal struct {
	CustomID string
	Title    string
	// Inputs are the text inputs' custom ids, in order.
	Inputs []string
	// Values are the text inputs' pre-filled values (their "value"), by
	// custom id; an input without one is absent.
	Values map[string]string
	// Optional are the inputs sent with "required": false: a person may
	// leave them empty (Discord then submits ""). Inputs default to
	// required, as on Discord.
	Optional []string
}

// Identify is what a client identified with.
type Identify struct {
	Token   string
	Intents int
	// Shard is the identify's shard [shard_id, num_shards]; nil when it
	// sent none (one shard).
	Shard []int
}

// Session is an identified gateway connection.
type Session struct {
	Shard, Shards int
}

// Command is one registered application command.
type Command struct {
	ID          string          `json:"id"`
	Type        int             `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description"`
	Options     []CommandOption `json:"options"`
	// DefaultMemberPermissions is the permission bitfield (a string in
	// JSON) a member needs to see and use the command; nil: everyone.
	DefaultMemberPermissions *uint64 `json:"-"`
	// RawPermissions is default_member_permissions as sent.
	RawPermissions json.RawMessage `json:"default_member_permissions"`
}

// CommandOption is an option of a registered command.
type CommandOption struct {
	Type        int      `json:"type"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Required    bool     `json:"required"`
	Choices     []Choice `json:"choices"`
	MinValue    *float64 `json:"min_value"`
	MaxValue    *float64 `json:"max_value"`
	MaxLength   int      `json:"max_length"`
	// ChannelTypes limits a channel option (type 7) to these channel types.
	ChannelTypes []int `json:"channel_types"`
	// Options are a subcommand's options or a group's subcommands.
	Options []CommandOption `json:"options"`
}

// Choice is a fixed choice of an option.
type Choice struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// Server is the fake Discord. Create it with New, release it with Close.
type Server struct {
	// URL is the base URL: use it as DISCORD_API_URL.
	URL string

	opts  Options
	token string
	flags int
	appID string
	botID string
	log   *slog.Logger
	hs    *httptest.Server
	done  chan struct{}

	mu           sync.Mutex
	closed       bool
	notify       chan struct{}
	offset       time.Duration
	lastID       uint64
	users        map[string]*User
	channels     map[string]*Channel
	history      map[string][]string // channel id -> message ids, oldest first
	messages     map[string]*message
	interactions map[string]*interaction
	byToken      map[string]*interaction
	files        map[string]*Attachment // CDN path -> file
	commands     map[string][]Command   // "" global, else guild id
	overridden   map[string]bool        // commands every member may use (OverrideCommandPermissions)
	conns        map[*gwConn]bool
	session      *gwConn          // the latest identified connection
	live         map[*gwConn]bool // identified connections
	overlaps     int              // identifies while another session of the same shard was live
	gatewayDown  bool             // refuse gateway connections (SetGatewayDown)
	identifies   []Identify
	failed       []string
	violations   []string
	rateLimited  int
	expired      int
	forced       int
	forcedAfter  time.Duration
	edits        map[string][]time.Time
	cdnAuth      int
	cdnHits      map[string]int
	requests     []string
	timers       map[*time.Timer]bool
	uploadLimits map[string]int // guild id -> upload limit in bytes
	holdUntil    time.Time      // fake clock: message writes answer 429 until then
	holdNext     time.Duration  // the next message write starts a hold this long
	lostAnswers  int            // message creates to answer 500 after creating them
	nonceHits    int            // creates answered with an earlier message (enforce_nonce)
	faults       map[Route][]Fault
	faulted      int
	// Interactions over HTTP (endpoint.go): the app's signing key, its
	// Interactions Endpoint URL ("": interactions go to the gateway),
	// the interactions the endpoint did not take, and the POSTs under way.
	signer           ed25519.PrivateKey
	endpoint         string
	endpointFailures []string
	posts            sync.WaitGroup
}

type message struct {
	Message
	components json.RawMessage
	refChannel string
	// replyPing: a reply that pings its author (Discord's default), who
	// is then in the message's mentions.
	replyPing bool
	nonce     string
}

type interaction struct {
	Interaction
	created  time.Time // fake clock
	deadline bool      // the 3 s window has passed
	data     map[string]any
	modals   map[string]*Modal
}

// New starts a fake Discord on 127.0.0.1.
func New(opts Options) *Server {
	if opts.Token == "" {
		opts.Token = DefaultToken
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 41250 * time.Millisecond
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, token: opts.Token, log: log, done: make(chan struct{}),
		notify: make(chan struct{}), users: map[string]*User{}, channels: map[string]*Channel{},
		history: map[string][]string{}, messages: map[string]*message{}, interactions: map[string]*interaction{},
		byToken: map[string]*interaction{}, files: map[string]*Attachment{}, commands: map[string][]Command{}, overridden: map[string]bool{},
		conns: map[*gwConn]bool{}, live: map[*gwConn]bool{}, edits: map[string][]time.Time{}, cdnHits: map[string]int{}, timers: map[*time.Timer]bool{},
		uploadLimits: map[string]int{}, faults: map[Route][]Fault{}}
	if !opts.NoMessageContent {
		s.flags = FlagGatewayMessageContent
	}
	s.appID = s.newID()
	s.botID = s.appID
	s.users[s.botID] = &User{ID: s.botID, Name: "Kontext", Bot: true}
	s.hs = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	s.URL = s.hs.URL
	return s
}

// Close disconnects every client and stops the server.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	conns := make([]*gwConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	for t := range s.timers {
		t.Stop()
	}
	s.timers = nil
	s.mu.Unlock()
	for _, c := range conns {
		c.close(1001, "fake discord closing")
	}
	s.posts.Wait()
	s.hs.Close()
}

// Token is the bot token the fake accepts.
func (s *Server) Token() string { return s.token }

// AppID is the application's id (also the bot user's id).
func (s *Server) AppID() string { return s.appID }

// BotID is the bot user's id.
func (s *Server) BotID() string { return s.botID }

// Now is the fake's clock: real time plus everything Advance added.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

func (s *Server) now() time.Time { return time.Now().Add(s.offset) }

// Advance moves the fake's clock forward (interaction tokens expire on it).
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
	s.changed()
}

// newID returns a snowflake from the fake's clock. Call with s.mu held or
// before the server is shared.
func (s *Server) newID() string {
	ms := uint64(s.now().UnixMilli() - discordEpoch)
	id := ms << 22
	if id <= s.lastID {
		id = s.lastID + 1
	}
	s.lastID = id
	return strconv.FormatUint(id, 10)
}

// changed wakes every Wait. Call with s.mu held.
func (s *Server) changed() {
	close(s.notify)
	s.notify = make(chan struct{})
}

// Wait calls cond until it returns true, after every change in the fake
// (and every 20 ms, for conditions on other things), or until timeout; it
// reports whether cond became true. cond may call any method of s.
func (s *Server) Wait(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		ch := s.notify
		s.mu.Unlock()
		if cond() {
			return true
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
}

// AddUser names a user; users a test does not add are named after their id.
func (s *Server) AddUser(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = &User{ID: id, Name: name, Permissions: DefaultPermissions}
}

// SetPermissions sets a member's computed permissions, e.g. with
// PermManageGuild for a server manager.
func (s *Server) SetPermissions(userID string, perms uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user(userID).Permissions = perms
}

// OverrideCommandPermissions lets every member use the command name, as a
// server admin can in Server Settings → Integrations, whatever its
// default_member_permissions.
func (s *Server) OverrideCommandPermissions(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.overridden[name] = true
}

func (s *Server) user(id string) *User {
	u := s.users[id]
	if u == nil {
		u = &User{ID: id, Name: "user" + id, Permissions: DefaultPermissions}
		s.users[id] = u
	}
	return u
}

// AddTextChannel creates a guild text channel.
func (s *Server) AddTextChannel(guildID, channelID, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[channelID] = &Channel{ID: channelID, GuildID: guildID, Name: name, Type: ChannelText}
}

// AddDM creates the DM channel between the bot and user.
func (s *Server) AddDM(channelID, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user(userID)
	s.channels[channelID] = &Channel{ID: channelID, Type: ChannelDM, Recipient: userID}
}

// Channel returns a channel, thread or DM.
func (s *Server) Channel(id string) (Channel, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[id]
	if c == nil {
		return Channel{}, false
	}
	return *c, true
}

// Messages returns what a user sees in a channel: its messages oldest
// first, without deleted or ephemeral ones.
func (s *Server) Messages(channelID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, id := range s.history[channelID] {
		m := s.messages[id]
		if m.Deleted || m.Flags&FlagEphemeral != 0 {
			continue
		}
		out = append(out, m.copy())
	}
	return out
}

// Message returns one message (deleted and ephemeral ones too).
func (s *Server) Message(id string) (Message, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.messages[id]
	if m == nil {
		return Message{}, false
	}
	return m.copy(), true
}

func (m *message) copy() Message {
	c := m.Message
	c.History = slices.Clone(m.History)
	c.Buttons = slices.Clone(m.Buttons)
	c.Selects = slices.Clone(m.Selects)
	c.Attachments = slices.Clone(m.Attachments)
	return c
}

// Interaction returns the state of an injected interaction.
func (s *Server) Interaction(id string) Interaction {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.interactions[id]
	if in == nil {
		return Interaction{}
	}
	c := in.Interaction
	c.Followups = slices.Clone(in.Followups)
	if in.Modal != nil {
		m := *in.Modal
		c.Modal = &m
	}
	return c
}

// Original returns an interaction's response message, if it has one.
func (s *Server) Original(interactionID string) (Message, bool) {
	s.mu.Lock()
	in := s.interactions[interactionID]
	var id string
	if in != nil {
		id = in.Original
	}
	s.mu.Unlock()
	if id == "" {
		return Message{}, false
	}
	return s.Message(id)
}

// Followups returns an interaction's follow-up messages, oldest first.
func (s *Server) Followups(interactionID string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.interactions[interactionID]
	if in == nil {
		return nil
	}
	var out []Message
	for _, id := range in.Followups {
		out = append(out, s.messages[id].copy())
	}
	return out
}

// Failed returns the ids of interactions the bot did not answer in time.
func (s *Server) Failed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.failed)
}

// Violations lists everything the bot sent that Discord would have taken
// badly or that would have pinged someone: missing or non-empty
// allowed_mentions, answers to expired interactions, edits of others'
// messages...
func (s *Server) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.violations)
}

func (s *Server) violation(format string, args ...any) {
	v := fmt.Sprintf(format, args...)
	s.log.Warn("discordtest: violation", "what", v)
	s.violations = append(s.violations, v)
}

// RateLimited is how many 429s the fake answered.
func (s *Server) RateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rateLimited
}

// ExpiredTokenCalls is how many webhook calls came with an expired
// interaction token (answered 401 Invalid Webhook Token).
func (s *Server) ExpiredTokenCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired
}

// ForceRateLimit answers the next n message edits (channel or webhook)
// 429, with retry_after set to after.
func (s *Server) ForceRateLimit(n int, after time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forced, s.forcedAfter = n, after
}

// HoldRateLimit makes the next message write (a create or an edit, in a
// channel or through a webhook) start a rate limit of d on the fake's
// clock: it and every message write until d has passed are answered 429
// with the retry_after that remains, as Discord does. A client that
// retries before retry_after earns another 429.
func (s *Server) HoldRateLimit(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdNext = d
}

// LoseCreateAnswers makes the next n channel message creates happen, but
// answer 500 Internal Server Error: the client cannot tell whether its
// message was posted (a timeout after sending is the same to it).
func (s *Server) LoseCreateAnswers(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lostAnswers = n
}

// NonceHits counts message creates answered with the earlier message of
// the same nonce (enforce_nonce) instead of a new one.
func (s *Server) NonceHits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nonceHits
}

// SetUploadLimit sets a server's upload limit (boosted servers have more
// than the default 10 MiB): interactions there carry it as
// attachment_size_limit, and bigger request bodies are refused (413,
// code 40005).
func (s *Server) SetUploadLimit(guildID string, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uploadLimits[guildID] = bytes
}

// uploadLimit is the upload limit of a channel's server; with s.mu held.
func (s *Server) uploadLimit(ch *Channel) int {
	if ch != nil {
		if l := s.uploadLimits[ch.GuildID]; l > 0 {
			return l
		}
	}
	return MaxUploadBytes
}

// DeleteChannel deletes a channel or thread: its messages go with it, and
// every call on it answers 404 Unknown Channel (10003).
func (s *Server) DeleteChannel(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.channels, id)
	for _, mid := range s.history[id] {
		s.messages[mid].Deleted = true
	}
	s.changed()
}

// ArchiveThread archives a thread, locked or not. Posting in an archived
// thread unarchives it, unless it is locked: then Discord answers 400,
// code 50083 (operation on an archived thread).
func (s *Server) ArchiveThread(id string, locked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.channels[id]; c != nil {
		c.Archived, c.Locked = true, locked
	}
	s.changed()
}

// DenyThreads refuses the bot the right to create threads in a channel:
// POST .../threads answers 403 Missing Permissions (50013).
func (s *Server) DenyThreads(channelID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.channels[channelID]; c != nil {
		c.NoThreads = true
	}
}

// Identifies lists every Identify the gateway received.
func (s *Server) Identifies() []Identify {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.identifies)
}

// SetGatewayDown(true) drops every gateway connection (close code 1001,
// as when Discord restarts a gateway node) and refuses new ones with 503
// until SetGatewayDown(false): an outage, for health checks.
func (s *Server) SetGatewayDown(down bool) {
	s.mu.Lock()
	s.gatewayDown = down
	conns := make([]*gwConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if down {
		for _, c := range conns {
			c.close(1001, "going away")
		}
	}
}

// Sessions lists the identified gateway connections, each with its shard.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Session
	for c := range s.live {
		out = append(out, Session{Shard: c.shard, Shards: c.shards})
	}
	slices.SortFunc(out, func(a, b Session) int { return a.Shard - b.Shard })
	return out
}

// Overlaps counts the Identifies made while another session of the same
// shard was connected. Discord accepts them and sends each event of the
// shard to every such session, so a bot would handle it twice.
func (s *Server) Overlaps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.overlaps
}

// Ready reports whether a client is identified on the gateway.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.session != nil
}

// Commands returns the commands registered globally (guild "") or in a guild.
func (s *Server) Commands(guildID string) []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.commands[guildID])
}

// CDNRequestsWithAuth counts attachment downloads that carried an
// Authorization header: a bot must never send its token to the CDN.
func (s *Server) CDNRequestsWithAuth() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cdnAuth
}

// CDNHits counts the downloads of one attachment.
func (s *Server) CDNHits(a Attachment) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cdnHits[cdnPath(a.URL)]
}

// Requests lists "METHOD /path" of every REST request, in order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Upload puts a file on the fake CDN, as a person's client does before
// sending a message or a command with it, and returns its attachment.
func (s *Server) Upload(channelID, filename, contentType string, data []byte) Attachment {
	return s.UploadSized(channelID, filename, contentType, data, len(data))
}

// UploadSized is Upload with the size the attachment claims (a test of a
// client that trusts it).
func (s *Server) UploadSized(channelID, filename, contentType string, data []byte, size int) Attachment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.storeFile(channelID, filename, contentType, "", data, size)
}

func (s *Server) storeFile(channelID, filename, contentType, description string, data []byte, size int) Attachment {
	id := s.newID()
	a := &Attachment{ID: id, Filename: filename, ContentType: contentType, Description: description,
		URL: s.URL + "/attachments/" + channelID + "/" + id + "/" + filename, Size: size, Data: data}
	s.files[cdnPath(a.URL)] = a
	return *a
}

func cdnPath(u string) string {
	if i := strings.Index(u, "/attachments/"); i >= 0 {
		return u[i:]
	}
	return u
}

func (s *Server) timer(d time.Duration, f func()) {
	if s.closed {
		return
	}
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		if s.timers != nil {
			delete(s.timers, t)
		}
		s.mu.Unlock()
		f()
	})
	s.timers[t] = true
}
