package slackfake

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Envelope is one delivery to the bot: a Socket Mode envelope, or in HTTP
// mode a signed request.
type Envelope struct {
	ID      string
	Type    string // events_api, slash_commands, interactive
	Payload json.RawMessage

	mu     sync.Mutex
	conn   int // Socket Mode: the number of the connection it went out on
	retry  int // retry_attempt
	avoid  int // a redelivery: the connection the first delivery used
	sent   time.Time
	acked  time.Time
	status int // HTTP mode: the bot's answer
	body   []byte
	done   chan struct{}
}

// Acked waits up to timeout for the bot's acknowledgement and reports
// whether it came.
func (e *Envelope) Acked(timeout time.Duration) bool {
	select {
	case <-e.done:
		return true
	default:
	}
	if timeout <= 0 {
		return false
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.done:
		return true
	case <-t.C:
		return false
	}
}

// Latency is the time from sending to the acknowledgement (0 if none yet).
func (e *Envelope) Latency() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.acked.IsZero() || e.sent.IsZero() {
		return 0
	}
	return e.acked.Sub(e.sent)
}

// Connection is the number (1 for the first opened, and so on) of the
// Socket Mode connection the envelope went out on; 0 before it is sent.
func (e *Envelope) Connection() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conn
}

// Status is the HTTP status the bot answered (HTTP mode).
func (e *Envelope) Status() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.status
}

// Body is the body the bot answered (HTTP mode).
func (e *Envelope) Body() []byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.body
}

func (e *Envelope) ack(status int, body []byte) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.acked.IsZero() {
		return false
	}
	e.acked, e.status, e.body = time.Now(), status, body
	close(e.done)
	return true
}

// MaxConnections is how many Socket Mode connections Slack keeps open for
// one app at once ("up to 10"); envelopes are spread over them, each going
// out on one connection only.
const MaxConnections = 10

// wsConn is one Socket Mode connection.
type wsConn struct {
	n    int // its number, from 1
	ws   *websocket.Conn
	wmu  sync.Mutex
	once sync.Once
	gone chan struct{}
}

func (c *wsConn) write(v any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteJSON(v)
}

func (c *wsConn) close() {
	c.once.Do(func() {
		close(c.gone)
		c.wmu.Lock()
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
		c.wmu.Unlock()
		_ = c.ws.Close()
	})
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

// serveSocket is the Socket Mode websocket: hello, pings, envelopes out,
// acknowledgements in.
func (s *Server) serveSocket(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("ticket") == "" {
		s.problem("Socket Mode: connection without a ticket from apps.connections.open")
		http.Error(w, "no ticket", http.StatusUnauthorized)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &wsConn{ws: ws, gone: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	if len(s.socks) >= MaxConnections {
		s.mu.Unlock()
		s.problem("Socket Mode: more than %d connections open at once", MaxConnections)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "too many connections"), time.Now().Add(time.Second))
		ws.Close()
		return
	}
	s.conns++
	n := s.conns
	c.n = n
	s.socks = append(s.socks, c)
	open := len(s.socks)
	s.notify()
	s.mu.Unlock()
	_ = c.write(map[string]any{"type": "hello", "num_connections": open,
		"debug_info":      map[string]any{"host": "applink-fake-" + strconv.Itoa(n), "build_number": 1, "approximate_connection_time": 18060},
		"connection_info": map[string]any{"app_id": s.opts.AppID}})
	s.wake()
	s.wg.Add(1)
	go s.pinger(c)
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			break
		}
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(data, &ack); err != nil || ack.EnvelopeID == "" {
			s.problem("Socket Mode: unexpected message from the bot: %s", data)
			continue
		}
		s.acked(ack.EnvelopeID, http.StatusOK, ack.Payload)
	}
	c.close()
	s.mu.Lock()
	if i := slices.Index(s.socks, c); i >= 0 {
		s.socks = slices.Delete(s.socks, i, i+1)
		s.notify()
	}
	s.mu.Unlock()
}

// pinger pings the connection as Slack does; the client counts on it.
func (s *Server) pinger(c *wsConn) {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.gone:
			return
		case <-s.stop:
			return
		case <-t.C:
			c.wmu.Lock()
			err := c.ws.WriteControl(websocket.PingMessage, []byte("ping"), time.Now().Add(time.Second))
			c.wmu.Unlock()
			if err != nil {
				return
			}
		}
	}
}

// Disconnect asks every Socket Mode client to reconnect, as Slack does
// every few hours.
func (s *Server) Disconnect() {
	s.mu.Lock()
	socks := slices.Clone(s.socks)
	s.mu.Unlock()
	for _, c := range socks {
		_ = c.write(map[string]any{"type": "disconnect", "reason": "refresh_requested",
			"debug_info": map[string]any{"host": "applink-fake"}})
	}
}

// Redeliver sends an Events API envelope's event again as a new envelope
// with the next retry_attempt (reason "timeout"), as Slack retries events.
// Slack may send a retry on any of the app's connections; this one goes
// out on another connection than e did when there is one (another
// replica: the case de-duplication must handle). The event (and its
// event_id) is the same.
func (s *Server) Redeliver(e *Envelope) *Envelope {
	e.mu.Lock()
	retry, avoid := e.retry+1, e.conn
	e.mu.Unlock()
	if e.Type != "events_api" {
		s.problem("Redeliver: Slack retries Events API envelopes only, not %s", e.Type)
	}
	s.mu.Lock()
	r := &Envelope{ID: s.newID("env-"), Type: e.Type, Payload: e.Payload, retry: retry, avoid: avoid, done: make(chan struct{})}
	s.envelopes = append(s.envelopes, r)
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.wake()
	return r
}

func (s *Server) acked(id string, status int, body []byte) {
	s.mu.Lock()
	var e *Envelope
	for _, x := range s.envelopes {
		if x.ID == id {
			e = x
			break
		}
	}
	s.mu.Unlock()
	if e == nil {
		s.problem("acknowledgement of an unknown envelope %s", id)
		return
	}
	if !e.ack(status, body) {
		s.problem("envelope %s acknowledged twice", id)
		return
	}
	if lat := e.Latency(); lat > s.opts.AckTimeout {
		s.problem("%s envelope %s acknowledged after %s (Slack allows %s)", e.Type, id, lat.Round(time.Millisecond), s.opts.AckTimeout)
	}
	s.mu.Lock()
	s.notify()
	s.mu.Unlock()
}

// send queues an envelope for the bot.
func (s *Server) send(typ string, payload any) *Envelope { return s.sendRetry(typ, payload, false) }

// sendRetry queues an envelope, marked as a retry of an earlier one when
// retry is set.
func (s *Server) sendRetry(typ string, payload any, retry bool) *Envelope {
	s.mu.Lock()
	e := s.queueLocked(typ, payload, retry)
	s.mu.Unlock()
	s.wake()
	return e
}

// queueLocked queues an envelope; the caller holds s.mu and calls wake
// after releasing it. A message and its event so appear together.
func (s *Server) queueLocked(typ string, payload any, retry bool) *Envelope {
	raw, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	e := &Envelope{ID: s.newID("env-"), Type: typ, Payload: raw, done: make(chan struct{})}
	if retry {
		e.retry = 1
	}
	s.envelopes = append(s.envelopes, e)
	s.queue = append(s.queue, e)
	return e
}

// emitLocked queues an event_callback (nil: nothing) with s.mu held; call
// wake after releasing it.
func (s *Server) emitLocked(ev map[string]any) {
	if ev != nil {
		s.queueLocked("events_api", ev, false)
	}
}

func (s *Server) wake() {
	select {
	case s.queueWake <- struct{}{}:
	default:
	}
}

// sender delivers queued envelopes in order: over the websocket, or as
// signed HTTP requests.
func (s *Server) sender() {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		var e *Envelope
		var c *wsConn
		target := s.httpTarget
		if len(s.queue) > 0 && (target != "" || len(s.socks) > 0) {
			e = s.queue[0]
			s.queue = s.queue[1:]
			if target == "" {
				// Slack sends each envelope on one of the app's
				// connections; round-robin here, so tests can tell.
				c = s.socks[s.next%len(s.socks)]
				s.next++
				for i := 0; c.n == e.avoid && i < len(s.socks); i++ {
					c = s.socks[(s.next+i)%len(s.socks)]
				}
			}
		}
		s.mu.Unlock()
		if e == nil {
			select {
			case <-s.stop:
				return
			case <-s.queueWake:
			}
			continue
		}
		if target != "" {
			s.post(target, e)
			continue
		}
		e.mu.Lock()
		e.conn = c.n
		retry := e.retry
		e.mu.Unlock()
		s.markSent(e)
		env := map[string]any{"envelope_id": e.ID, "type": e.Type, "payload": e.Payload,
			"accepts_response_payload": e.Type != "events_api"}
		if e.Type == "events_api" {
			env["retry_attempt"], env["retry_reason"] = retry, ""
			if retry > 0 {
				env["retry_reason"] = "timeout"
			}
		}
		if err := c.write(env); err != nil {
			s.problem("Socket Mode: could not send envelope %s: %v", e.ID, err)
		}
	}
}

func (s *Server) markSent(e *Envelope) {
	e.mu.Lock()
	e.sent = time.Now()
	e.mu.Unlock()
	s.mu.Lock()
	s.notify()
	s.mu.Unlock()
}

// post delivers an envelope as Slack's HTTP request, signed.
func (s *Server) post(target string, e *Envelope) {
	var path, ctype string
	var body []byte
	switch e.Type {
	case "events_api":
		path, ctype, body = "/slack/events", "application/json", e.Payload
	case "slash_commands":
		var fields map[string]string
		_ = json.Unmarshal(e.Payload, &fields)
		form := url.Values{}
		for k, v := range fields {
			form.Set(k, v)
		}
		path, ctype, body = "/slack/commands", "application/x-www-form-urlencoded", []byte(form.Encode())
	case "interactive":
		path, ctype = "/slack/interactive", "application/x-www-form-urlencoded"
		body = []byte(url.Values{"payload": {string(e.Payload)}}.Encode())
	}
	s.markSent(e)
	var headers http.Header
	e.mu.Lock()
	retry := e.retry
	e.mu.Unlock()
	if retry > 0 {
		headers = http.Header{"X-Slack-Retry-Num": {strconv.Itoa(retry)}, "X-Slack-Retry-Reason": {"timeout"}}
	}
	status, answer, err := s.signedRequest(target+path, ctype, body, time.Now(), "", headers)
	if err != nil {
		s.problem("HTTP mode: %s to %s: %v", e.Type, path, err)
		return
	}
	if status != http.StatusOK {
		// Not an acknowledgement: Slack fails the command or retries the
		// event. The answer is kept for Status and Body.
		s.problem("HTTP mode: %s to %s answered %d: %s", e.Type, path, status, answer)
		e.mu.Lock()
		e.status, e.body = status, answer
		e.mu.Unlock()
		return
	}
	s.acked(e.ID, status, answer)
}

// Sign computes Slack's request signature: v0= and the hex HMAC-SHA256 of
// "v0:{timestamp}:{body}" with the signing secret.
func Sign(secret string, ts time.Time, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%d:", ts.Unix())
	mac.Write(body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

// SignedRequest posts body to u as Slack does, signed for time ts with
// the fake's signing secret, or with signature when it is not "" ("-"
// sends no signature headers at all). It returns the bot's status and
// body; the request must be answered within the ack timeout.
func (s *Server) SignedRequest(u, contentType string, body []byte, ts time.Time, signature string) (int, []byte, error) {
	return s.signedRequest(u, contentType, body, ts, signature, nil)
}

func (s *Server) signedRequest(u, contentType string, body []byte, ts time.Time, signature string, headers http.Header) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
	switch signature {
	case "-":
	case "":
		req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts.Unix(), 10))
		req.Header.Set("X-Slack-Signature", Sign(s.opts.SigningSecret, ts, body))
	default:
		req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts.Unix(), 10))
		req.Header.Set("X-Slack-Signature", signature)
	}
	resp, err := s.httpc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, answer, nil
}

// CheckAcks waits until every envelope sent so far is acknowledged or
// overdue, and returns the problems: envelopes never acknowledged in
// time, and everything else Problems lists.
func (s *Server) CheckAcks() []string {
	s.mu.Lock()
	envs := append([]*Envelope(nil), s.envelopes...)
	s.mu.Unlock()
	sentAt := func(e *Envelope) time.Time {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.sent
	}
	for _, e := range envs {
		// One still in the queue gets a moment to go out.
		s.Wait(s.opts.AckTimeout, func() bool { return !sentAt(e).IsZero() })
		sent := sentAt(e)
		if sent.IsZero() {
			s.problem("%s envelope %s was never delivered", e.Type, e.ID)
			continue
		}
		if !e.Acked(time.Until(sent.Add(s.opts.AckTimeout))) {
			s.problem("%s envelope %s was not acknowledged within %s", e.Type, e.ID, s.opts.AckTimeout)
		}
	}
	return s.Problems()
}

// Envelopes lists every envelope sent so far, oldest first.
func (s *Server) Envelopes() []*Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.envelopes)
}
