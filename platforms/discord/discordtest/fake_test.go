package discordtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client is a minimal bot for testing the fake: raw HTTP and websocket.
type client struct {
	t    *testing.T
	s    *Server
	auth string
	ws   *websocket.Conn
	hc   *http.Client
}

func newClient(t *testing.T, s *Server) *client {
	c := &client{t: t, s: s, auth: "Bot " + s.Token(), hc: &http.Client{}}
	t.Cleanup(c.hc.CloseIdleConnections)
	return c
}

func (c *client) do(method, path string, body any) (int, map[string]any, http.Header) {
	c.t.Helper()
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case *bytes.Buffer:
		r, ct = b, "" // multipart: caller sets below
	default:
		data, _ := json.Marshal(b)
		r, ct = bytes.NewReader(data), "application/json"
	}
	req, _ := http.NewRequest(method, c.s.URL+"/api/v10"+path, r)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", c.auth)
	}
	return c.send(req)
}

func (c *client) send(req *http.Request) (int, map[string]any, http.Header) {
	c.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &out)
	return resp.StatusCode, out, resp.Header
}

// connect runs the gateway handshake with intents and returns READY's data.
func (c *client) connect(token string, intents int) (map[string]any, int) {
	c.t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(c.s.URL, "http", "ws", 1)+"/ws/?v=9&encoding=json", nil)
	if err != nil {
		c.t.Fatal(err)
	}
	c.ws = ws
	c.t.Cleanup(func() { ws.Close() })
	var hello struct {
		Op int `json:"op"`
		D  struct {
			HeartbeatInterval int `json:"heartbeat_interval"`
		} `json:"d"`
	}
	if err := ws.ReadJSON(&hello); err != nil || hello.Op != 10 || hello.D.HeartbeatInterval <= 0 {
		c.t.Fatalf("hello: %+v %v", hello, err)
	}
	ws.WriteJSON(map[string]any{"op": 2, "d": map[string]any{"token": token, "intents": intents, "properties": map[string]string{}}})
	var ready struct {
		Op int            `json:"op"`
		T  string         `json:"t"`
		D  map[string]any `json:"d"`
	}
	if err := ws.ReadJSON(&ready); err != nil {
		var ce *websocket.CloseError
		if ok := asClose(err, &ce); ok {
			return nil, ce.Code
		}
		c.t.Fatal(err)
	}
	if ready.Op != 0 || ready.T != "READY" {
		c.t.Fatalf("got %+v, want READY", ready)
	}
	return ready.D, 0
}

func asClose(err error, ce **websocket.CloseError) bool {
	e, ok := err.(*websocket.CloseError)
	if ok {
		*ce = e
	}
	return ok
}

// next reads the next dispatch of type t, skipping others.
func (c *client) next(t string) map[string]any {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		var f struct {
			Op int            `json:"op"`
			T  string         `json:"t"`
			D  map[string]any `json:"d"`
		}
		if err := c.ws.ReadJSON(&f); err != nil {
			c.t.Fatalf("waiting for %s: %v", t, err)
		}
		if f.Op == 0 && f.T == t {
			return f.D
		}
	}
}

func register(t *testing.T, c *client, guild string) {
	t.Helper()
	cmds := []map[string]any{{"name": "imagine", "description": "make", "type": 1, "options": []map[string]any{
		{"type": 3, "name": "prompt", "description": "p", "required": true},
		{"type": 3, "name": "aspect_ratio", "description": "a", "choices": []map[string]any{{"name": "1:1", "value": "1:1"}}},
		{"type": 11, "name": "image", "description": "i"},
	}}, {"name": "Edit image", "type": 3}}
	if code, body, _ := c.do("PUT", "/applications/"+c.s.AppID()+"/guilds/"+guild+"/commands", cmds); code != 200 {
		t.Fatalf("register: %d %v", code, body)
	}
}

func TestAuthAndUnknownRoutes(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	c := newClient(t, s)
	if code, body, _ := c.do("GET", "/users/@me", nil); code != 200 || body["id"] != s.BotID() {
		t.Errorf("users/@me: %d %v", code, body)
	}
	c.auth = "Bot wrong"
	if code, _, _ := c.do("GET", "/users/@me", nil); code != 401 {
		t.Errorf("a wrong token got %d", code)
	}
	c.auth = ""
	if code, _, _ := c.do("GET", "/gateway", nil); code != 401 {
		t.Errorf("no token got %d", code)
	}
	c.auth = "Bot " + s.Token()
	if code, body, _ := c.do("GET", "/guilds/1/emojis", nil); code != 404 || body["message"] == nil {
		t.Errorf("an unknown route got %d %v, want a JSON 404", code, body)
	}
}

// TestGatewayURLFollowsHost: GET /gateway answers the gateway on the host
// the client asked, as Discord answers with its own, so a client reaching
// the fake through a proxy (another address, a container network) is sent
// to the proxy too.
func TestGatewayURLFollowsHost(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	c := newClient(t, s)
	for _, path := range []string{"/gateway", "/gateway/bot"} {
		req, _ := http.NewRequest("GET", s.URL+"/api/v10"+path, nil)
		req.Header.Set("Authorization", "Bot "+s.Token())
		req.Host = "proxy.example:7777"
		if code, body, _ := c.send(req); code != 200 || body["url"] != "ws://proxy.example:7777/ws" {
			t.Errorf("%s: got %d %v, want ws://proxy.example:7777/ws", path, code, body["url"])
		}
	}
}

func TestGatewayHandshake(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	c := newClient(t, s)
	if _, code := c.connect("Bot nope", IntentGuildMessages); code != 4004 {
		t.Errorf("a bad token closed with %d, want 4004", code)
	}
	ready, code := c.connect("Bot "+s.Token(), IntentGuildMessages|IntentMessageContent)
	if code != 0 || ready["session_id"] == "" || ready["application"].(map[string]any)["id"] != s.AppID() {
		t.Fatalf("ready %v (%d)", ready, code)
	}
	c.ws.WriteJSON(map[string]any{"op": 1, "d": nil})
	var ack struct{ Op int }
	if err := c.ws.ReadJSON(&ack); err != nil || ack.Op != 11 {
		t.Errorf("heartbeat answered %+v %v", ack, err)
	}
	if !s.Ready() {
		t.Error("not ready after READY")
	}

	closed := New(Options{NoMessageContent: true})
	defer closed.Close()
	c2 := newClient(t, closed)
	if _, code := c2.connect(closed.Token(), IntentGuildMessages|IntentMessageContent); code != 4014 {
		t.Errorf("Message Content without the flag closed with %d, want 4014", code)
	}
	if ready, code := c2.connect(closed.Token(), IntentGuildMessages); code != 0 || ready["application"].(map[string]any)["flags"].(float64) != 0 {
		t.Errorf("without the intent: %v %d", ready, code)
	}
}

func TestInteractionRules(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages)
	register(t, c, "1")

	if _, err := s.Slash("10", "5", "imagine", String("aspect_ratio", "1:1")); err == nil {
		t.Error("a slash command without its required option was injected")
	}
	if _, err := s.Slash("10", "5", "imagine", String("prompt", "x"), String("aspect_ratio", "7:1")); err == nil {
		t.Error("a value outside the choices was injected")
	}
	if _, err := s.Slash("10", "5", "paint", String("prompt", "x")); err == nil {
		t.Error("an unregistered command was injected")
	}

	// Not answered in 3 s: failed.
	late, err := s.Slash("10", "5", "imagine", String("prompt", "late"))
	if err != nil {
		t.Fatal(err)
	}
	ev := c.next("INTERACTION_CREATE")
	if ev["id"] != late.ID || ev["data"].(map[string]any)["options"] == nil || ev["member"] == nil {
		t.Errorf("event %v", ev)
	}
	if !s.Wait(5*time.Second, func() bool { return s.Interaction(late.ID).Failed }) {
		t.Fatal("an unanswered interaction did not fail")
	}
	if code, body, _ := c.do("POST", "/interactions/"+late.ID+"/"+late.Token+"/callback", map[string]any{"type": 5}); code != 404 || body["code"].(float64) != 10062 {
		t.Errorf("a late answer got %d %v", code, body)
	}

	// Answered: deferred, edited, then the token expires.
	in, _ := s.Slash("10", "5", "imagine", String("prompt", "on time"))
	if code, _, _ := c.do("POST", "/interactions/"+in.ID+"/"+in.Token+"/callback", map[string]any{"type": 5}); code != 204 {
		t.Fatalf("defer: %d", code)
	}
	if code, _, _ := c.do("POST", "/interactions/"+in.ID+"/"+in.Token+"/callback", map[string]any{"type": 5}); code != 400 {
		t.Errorf("a second answer got %d", code)
	}
	edit := map[string]any{"content": "hi", "allowed_mentions": map[string]any{"parse": []string{}}}
	if code, _, _ := c.do("PATCH", "/webhooks/"+s.AppID()+"/"+in.Token+"/messages/@original", edit); code != 200 {
		t.Errorf("edit: %d", code)
	}
	s.Advance(TokenLifetime + time.Second)
	code, body, _ := c.do("PATCH", "/webhooks/"+s.AppID()+"/"+in.Token+"/messages/@original", edit)
	if code != 401 || body["code"].(float64) != 50027 {
		t.Errorf("an expired token got %d %v, want 401 / 50027", code, body)
	}
	if len(s.Violations()) != 2 { // not answered in time, then answered late
		t.Errorf("violations %v", s.Violations())
	}
}

func TestMessagesAndLimits(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages)
	quiet := map[string]any{"parse": []string{}}

	// allowed_mentions: missing is a violation, and @everyone then pings.
	code, m, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "hello @everyone"})
	if code != 200 || m["mention_everyone"] != true || len(s.Violations()) != 2 {
		t.Errorf("no allowed_mentions: %d %v %v", code, m["mention_everyone"], s.Violations())
	}
	code, m, _ = c.do("POST", "/channels/10/messages", map[string]any{"content": "hello @everyone", "allowed_mentions": quiet})
	if code != 200 || m["mention_everyone"] != false || len(s.Violations()) != 2 {
		t.Errorf("empty allowed_mentions: %d %v %v", code, m["mention_everyone"], s.Violations())
	}
	id := m["id"].(string)
	if code, _, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": strings.Repeat("x", 2001), "allowed_mentions": quiet}); code != 400 {
		t.Errorf("2001 characters got %d", code)
	}
	if code, _, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "x", "allowed_mentions": quiet,
		"components": []any{map[string]any{"type": 1, "components": []any{map[string]any{"type": 2, "style": 1, "label": "a", "custom_id": strings.Repeat("c", 101)}}}}}); code != 400 {
		t.Errorf("a 101-character custom id got %d", code)
	}

	// Six edits in 5 s: the sixth is 429 with retry_after and headers.
	var h http.Header
	for i := range 6 {
		code, m, h = c.do("PATCH", "/channels/10/messages/"+id, map[string]any{"content": fmt.Sprint(i), "allowed_mentions": quiet})
	}
	if code != 429 || m["retry_after"].(float64) <= 0 || h.Get("X-RateLimit-Remaining") != "0" || h.Get("X-RateLimit-Reset-After") == "" {
		t.Errorf("sixth edit: %d %v %v", code, m, h)
	}

	// Multipart: files kept with their alt text; over 10 MiB refused.
	post := func(size int) (int, map[string]any) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		p, _ := w.CreateFormField("payload_json")
		json.NewEncoder(p).Encode(map[string]any{"content": "file", "allowed_mentions": quiet,
			"attachments": []any{map[string]any{"id": 0, "filename": "a.png", "description": "alt"}}})
		f, _ := w.CreateFormFile("files[0]", "a.png")
		f.Write(make([]byte, size))
		w.Close()
		req, _ := http.NewRequest("POST", s.URL+"/api/v9/channels/10/messages", &buf)
		req.Header.Set("Content-Type", w.FormDataContentType())
		req.Header.Set("Authorization", c.auth)
		code, body, _ := c.send(req)
		return code, body
	}
	code, m = post(1000)
	if code != 200 {
		t.Fatalf("upload: %d %v", code, m)
	}
	atts := m["attachments"].([]any)
	if len(atts) != 1 || atts[0].(map[string]any)["description"] != "alt" {
		t.Errorf("attachments %v", atts)
	}
	if code, m = post(MaxUploadBytes + 1); code != 413 || m["code"].(float64) != 40005 {
		t.Errorf("an 10 MiB + 1 upload got %d %v", code, m)
	}

	// Threads: the id is the message's, the name at most 100 characters.
	if code, _, _ := c.do("POST", "/channels/10/messages/"+id+"/threads", map[string]any{"name": strings.Repeat("n", 101)}); code != 400 {
		t.Errorf("a 101-character thread name got %d", code)
	}
	code, th, _ := c.do("POST", "/channels/10/messages/"+id+"/threads", map[string]any{"name": "pictures"})
	if code != 201 || th["id"] != id || th["parent_id"] != "10" || th["type"].(float64) != ChannelPublicThread {
		t.Errorf("thread: %d %v", code, th)
	}
	if code, _, _ := c.do("POST", "/channels/10/messages/"+id+"/threads", map[string]any{"name": "again"}); code != 400 {
		t.Errorf("a second thread on one message got %d", code)
	}
	if code, ch, _ := c.do("GET", "/channels/"+id, nil); code != 200 || ch["parent_id"] != "10" {
		t.Errorf("GET thread: %d %v", code, ch)
	}
}

func TestMessageContentIntent(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages) // without Message Content
	img := s.Upload("10", "a.png", "image/png", []byte("png"))
	s.Say(Say{ChannelID: "10", UserID: "5", Content: "secret", Attachments: []Attachment{img}})
	ev := c.next("MESSAGE_CREATE")
	if ev["content"] != "" || len(ev["attachments"].([]any)) != 0 {
		t.Errorf("without the intent the bot read %v", ev)
	}
	s.Say(Say{ChannelID: "10", UserID: "5", Content: "<@" + s.BotID() + "> hi"})
	if ev := c.next("MESSAGE_CREATE"); ev["content"] != "<@"+s.BotID()+"> hi" {
		t.Errorf("a mention should be readable: %v", ev["content"])
	}
	// The CDN counts a download carrying the token.
	req, _ := http.NewRequest("GET", img.URL, nil)
	req.Header.Set("Authorization", c.auth)
	c.send(req)
	if s.CDNRequestsWithAuth() != 1 || s.CDNHits(img) != 1 {
		t.Errorf("CDN: %d with auth, %d hits", s.CDNRequestsWithAuth(), s.CDNHits(img))
	}
}

// TestIssue11Rules: the behaviours of real servers the fake gained for
// issue 11, each as Discord answers it.
func TestIssue11Rules(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	s.AddTextChannel("2", "20", "boosted")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages|IntentMessageContent)
	quiet := map[string]any{"parse": []string{}}
	post := func(channel string, size int) (int, map[string]any) {
		t.Helper()
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		p, _ := w.CreateFormField("payload_json")
		json.NewEncoder(p).Encode(map[string]any{"content": "file", "allowed_mentions": quiet})
		f, _ := w.CreateFormFile("files[0]", "a.png")
		f.Write(make([]byte, size))
		w.Close()
		req, _ := http.NewRequest("POST", s.URL+"/api/v10/channels/"+channel+"/messages", &buf)
		req.Header.Set("Content-Type", w.FormDataContentType())
		req.Header.Set("Authorization", c.auth)
		code, body, _ := c.send(req)
		return code, body
	}

	t.Run("UploadLimitPerServer", func(t *testing.T) {
		// The limit holds for the whole body: the file alone fits 10 MiB,
		// with its payload_json it does not.
		if code, m := post("10", MaxUploadBytes-10); code != 413 || m["code"].(float64) != 40005 {
			t.Errorf("10 MiB of body in a plain server: %d %v", code, m)
		}
		s.SetUploadLimit("2", 50<<20)
		if code, m := post("20", 12<<20); code != 200 {
			t.Errorf("12 MiB in a boosted server: %d %v", code, m)
		}
	})

	t.Run("ThreadsDenied", func(t *testing.T) {
		_, m, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "x", "allowed_mentions": quiet})
		s.DenyThreads("10")
		code, body, _ := c.do("POST", "/channels/10/messages/"+m["id"].(string)+"/threads", map[string]any{"name": "t"})
		if code != 403 || body["code"].(float64) != 50013 {
			t.Errorf("thread in a denied channel: %d %v", code, body)
		}
	})

	t.Run("ArchivedAndDeletedThreads", func(t *testing.T) {
		_, m, _ := c.do("POST", "/channels/20/messages", map[string]any{"content": "x", "allowed_mentions": quiet})
		_, th, _ := c.do("POST", "/channels/20/messages/"+m["id"].(string)+"/threads", map[string]any{"name": "t"})
		id := th["id"].(string)
		s.ArchiveThread(id, false)
		if code, _, _ := c.do("POST", "/channels/"+id+"/messages", map[string]any{"content": "y", "allowed_mentions": quiet}); code != 200 {
			t.Errorf("posting in an archived thread: %d, want 200 (it unarchives)", code)
		}
		if ch, _ := s.Channel(id); ch.Archived {
			t.Error("the thread is still archived")
		}
		s.ArchiveThread(id, true)
		if code, body, _ := c.do("POST", "/channels/"+id+"/messages", map[string]any{"content": "y", "allowed_mentions": quiet}); code != 400 || body["code"].(float64) != 50083 {
			t.Errorf("posting in a locked archived thread: %d %v", code, body)
		}
		s.DeleteChannel(id)
		if code, body, _ := c.do("POST", "/channels/"+id+"/messages", map[string]any{"content": "y", "allowed_mentions": quiet}); code != 404 || body["code"].(float64) != 10003 {
			t.Errorf("posting in a deleted thread: %d %v", code, body)
		}
	})

	t.Run("RateLimitHold", func(t *testing.T) {
		s.HoldRateLimit(400 * time.Second)
		for i, wait := range []time.Duration{0, 100 * time.Second} {
			s.Advance(wait)
			code, body, h := c.do("POST", "/channels/10/messages", map[string]any{"content": "z", "allowed_mentions": quiet})
			if code != 429 || body["retry_after"].(float64) < 299 || h.Get("Retry-After") == "" {
				t.Errorf("write %d during the hold: %d %v", i, code, body)
			}
		}
		s.Advance(300 * time.Second)
		if code, body, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "z", "allowed_mentions": quiet}); code != 200 {
			t.Errorf("after retry_after: %d %v", code, body)
		}
	})

	t.Run("Nonce", func(t *testing.T) {
		create := func(nonce any, enforce bool) (int, string) {
			code, m, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "once", "allowed_mentions": quiet,
				"nonce": nonce, "enforce_nonce": enforce})
			id, _ := m["id"].(string)
			return code, id
		}
		_, first := create("r-job-1", true)
		if code, again := create("r-job-1", true); code != 200 || again != first || s.NonceHits() != 1 {
			t.Errorf("the same nonce enforced: %d %s, want the first message %s", code, again, first)
		}
		if _, other := create("r-job-1", false); other == first {
			t.Error("without enforce_nonce a nonce made no new message")
		}
		s.Advance(NonceWindow)
		if _, later := create("r-job-1", true); later == first {
			t.Error("the nonce still held after the window")
		}
		if code, _ := create(strings.Repeat("n", 26), true); code != 400 {
			t.Errorf("a 26-character nonce got %d", code)
		}
		s.LoseCreateAnswers(1)
		code, _, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "lost", "allowed_mentions": quiet})
		if last := s.Messages("10"); code != 500 || last[len(last)-1].Content != "lost" {
			t.Errorf("a lost answer: %d, and the message was not posted", code)
		}
	})

	t.Run("ReplyPing", func(t *testing.T) {
		_, bm, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": "status", "allowed_mentions": quiet})
		for _, tc := range []struct {
			name   string
			noPing bool
		}{{"Ping", false}, {"NoPing", true}} {
			if _, err := s.Say(Say{ChannelID: "10", UserID: "5", Content: "ok, thanks!", ReplyTo: bm["id"].(string), NoReplyPing: tc.noPing}); err != nil {
				t.Fatal(err)
			}
			m := c.next("MESSAGE_CREATE")
			for m["content"] != "ok, thanks!" {
				m = c.next("MESSAGE_CREATE")
			}
			mentions := m["mentions"].([]any)
			pinged := len(mentions) == 1 && mentions[0].(map[string]any)["id"] == s.BotID()
			if pinged == tc.noPing {
				t.Errorf("%s: mentions %v", tc.name, mentions)
			}
		}
	})
}

// TestSeveralFiles: a message carries up to 10 files (files[0..9]), each
// described by the attachments entry with its index; more files, or an
// entry naming no file, are refused as Discord refuses them.
func TestSeveralFiles(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages)
	post := func(files int, ids []int) (int, map[string]any) {
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		var atts []any
		for _, id := range ids {
			atts = append(atts, map[string]any{"id": id, "filename": fmt.Sprintf("f%d.png", id), "description": fmt.Sprintf("image %d", id)})
		}
		p, _ := w.CreateFormField("payload_json")
		json.NewEncoder(p).Encode(map[string]any{"content": "files", "allowed_mentions": map[string]any{"parse": []string{}}, "attachments": atts})
		for i := range files {
			f, _ := w.CreateFormFile(fmt.Sprintf("files[%d]", i), fmt.Sprintf("f%d.png", i))
			f.Write([]byte{byte(i), 1, 2, 3})
		}
		w.Close()
		req, _ := http.NewRequest("POST", s.URL+"/api/v9/channels/10/messages", &buf)
		req.Header.Set("Content-Type", w.FormDataContentType())
		req.Header.Set("Authorization", c.auth)
		code, body, _ := c.send(req)
		return code, body
	}
	for _, tc := range []struct {
		name  string
		files int
		ids   []int
		want  int
	}{
		{"Four", 4, []int{0, 1, 2, 3}, 200},
		{"Ten", 10, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 200},
		{"Eleven", 11, []int{0}, 400},
		{"IDNamesNoFile", 2, []int{0, 2}, 400},
		{"NegativeID", 1, []int{-1}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := post(tc.files, tc.ids)
			if code != tc.want {
				t.Fatalf("got %d %v, want %d", code, m, tc.want)
			}
			if code != 200 {
				return
			}
			atts := m["attachments"].([]any)
			if len(atts) != tc.files {
				t.Fatalf("attachments: got %d, want %d", len(atts), tc.files)
			}
			for i, a := range atts {
				if got := a.(map[string]any)["description"]; got != fmt.Sprintf("image %d", i) {
					t.Errorf("attachment %d: description %v", i, got)
				}
			}
		})
	}
}

// TestSeveralAttachments: a message carries up to 10 files, in order,
// and the bot sees them all; an 11th is refused as Discord's client does.
func TestSeveralAttachments(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages|IntentMessageContent)
	var atts []Attachment
	for i := range MaxAttachments + 1 {
		atts = append(atts, s.Upload("10", fmt.Sprintf("%d.png", i), "image/png", []byte{byte(i)}))
	}
	if _, err := s.Say(Say{ChannelID: "10", UserID: "5", Content: "many", Attachments: atts}); err == nil {
		t.Errorf("%d attachments: got no error", len(atts))
	}
	if _, err := s.Say(Say{ChannelID: "10", UserID: "5", Content: "four", Attachments: atts[:4]}); err != nil {
		t.Fatal(err)
	}
	ev := c.next("MESSAGE_CREATE")
	got, _ := ev["attachments"].([]any)
	if len(got) != 4 {
		t.Fatalf("attachments: got %d, want 4", len(got))
	}
	for i, a := range got {
		if id := a.(map[string]any)["id"]; id != atts[i].ID {
			t.Errorf("attachment %d: got id %v, want %s (in order)", i, id, atts[i].ID)
		}
	}
}
