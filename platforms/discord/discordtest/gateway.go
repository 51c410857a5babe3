package discordtest

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// gwConn is one gateway connection.
type gwConn struct {
	s       *Server
	ws      *websocket.Conn
	wmu     sync.Mutex // serialises writes; guards seq
	seq     int64
	intents int
	closed  bool
	// shard and shards are the identify's shard pair (0 of 1 without one).
	shard, shards int
	// host is the Host the connection was opened on.
	host string
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

type gwFrame struct {
	Op int             `json:"op"`
	D  json.RawMessage `json:"d"`
	S  *int64          `json:"s,omitempty"`
	T  string          `json:"t,omitempty"`
}

func (c *gwConn) send(op int, t string, d any) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return errors.New("discordtest: gateway connection closed")
	}
	frame := map[string]any{"op": op, "d": d}
	if op == 0 {
		c.seq++
		frame["s"], frame["t"] = c.seq, t
	} else {
		frame["s"], frame["t"] = nil, nil
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.ws.WriteJSON(frame)
}

// close sends a close frame with code and closes the connection.
func (c *gwConn) close(code int, reason string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = c.ws.Close()
}

// serveGateway runs one gateway connection: hello, identify, ready, then
// heartbeats, until either side closes.
func (s *Server) serveGateway(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if v := q.Get("v"); v != "" && v != "9" && v != "10" {
		http.Error(w, "unsupported gateway version", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	down := s.gatewayDown
	s.mu.Unlock()
	if down {
		http.Error(w, "gateway unavailable", http.StatusServiceUnavailable)
		return
	}
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &gwConn{s: s, ws: ws, host: r.Host}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.Close()
		return
	}
	s.conns[c] = true
	s.mu.Unlock()
	defer func() {
		c.close(1000, "")
		s.mu.Lock()
		delete(s.conns, c)
		if s.live[c] {
			delete(s.live, c)
			s.changed()
		}
		if s.session == c {
			s.session = nil
			for o := range s.live {
				s.session = o
			}
			s.changed()
		}
		s.mu.Unlock()
	}()
	if q.Get("encoding") != "" && q.Get("encoding") != "json" {
		c.close(4002, "Decode error: only json encoding")
		return
	}
	if err := c.send(10, "", map[string]any{"heartbeat_interval": s.opts.HeartbeatInterval.Milliseconds()}); err != nil {
		return
	}
	identified := false
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var f gwFrame
		if err := json.Unmarshal(data, &f); err != nil {
			c.close(4002, "Decode error")
			return
		}
		switch f.Op {
		case 1: // heartbeat
			if err := c.send(11, "", nil); err != nil {
				return
			}
		case 2: // identify
			if identified {
				c.close(4005, "Already authenticated")
				return
			}
			if !s.identify(c, f.D) {
				return
			}
			identified = true
		case 6: // resume: this fake keeps no sessions
			if err := c.send(9, "", false); err != nil {
				return
			}
		case 3, 4, 8:
			if !identified {
				c.close(4003, "Not authenticated")
				return
			}
		default:
			c.close(4001, "Unknown opcode")
			return
		}
	}
}

// identify checks an Identify and answers READY, or closes the connection
// with Discord's code.
func (s *Server) identify(c *gwConn, raw json.RawMessage) bool {
	var id struct {
		Token   string `json:"token"`
		Intents *int   `json:"intents"`
		Shard   []int  `json:"shard"`
	}
	if err := json.Unmarshal(raw, &id); err != nil {
		c.close(4002, "Decode error")
		return false
	}
	s.mu.Lock()
	intents := -1
	if id.Intents != nil {
		intents = *id.Intents
	}
	s.identifies = append(s.identifies, Identify{Token: id.Token, Intents: intents, Shard: slices.Clone(id.Shard)})
	s.changed()
	s.mu.Unlock()
	switch {
	case strings.TrimPrefix(id.Token, "Bot ") != s.token:
		c.close(4004, "Authentication failed.")
		return false
	case id.Intents == nil || intents < 0 || intents >= 1<<26:
		c.close(4013, "Invalid intent(s).")
		return false
	case intents&IntentMessageContent != 0 && s.flags&(FlagGatewayMessageContent|FlagGatewayMessageContentLimited) == 0:
		c.close(4014, "Disallowed intent(s).")
		return false
	case id.Shard != nil && (len(id.Shard) != 2 || id.Shard[1] < 1 || id.Shard[0] < 0 || id.Shard[0] >= id.Shard[1]):
		c.close(4010, "Invalid shard.")
		return false
	}
	s.mu.Lock()
	c.intents = intents
	c.shard, c.shards = 0, 1
	if id.Shard != nil {
		c.shard, c.shards = id.Shard[0], id.Shard[1]
	}
	// Discord keeps every session: a second one of the same shard gets
	// the shard's events too.
	for o := range s.live {
		if o.shard == c.shard && o.shards == c.shards {
			s.overlaps++
		}
	}
	s.live[c] = true
	s.session = c
	bot := s.userJSON(s.users[s.botID])
	session := s.newID()
	s.mu.Unlock()
	err := c.send(0, "READY", map[string]any{
		"v": 9, "session_id": session, "resume_gateway_url": s.wsURL(c.host),
		"user": bot, "guilds": []any{}, "private_channels": []any{},
		"application": map[string]any{"id": s.appID, "flags": s.flags},
	})
	s.mu.Lock()
	s.changed()
	s.mu.Unlock()
	return err == nil
}

// wsURL is the gateway's address on host, the Host a client reached the
// fake on (as Discord answers with its own host), or on s.URL without one:
// a client that reaches the fake through a proxy is sent to the proxy.
func (s *Server) wsURL(host string) string {
	if host == "" {
		return "ws" + strings.TrimPrefix(s.URL, "http") + "/ws"
	}
	return "ws://" + host + "/ws"
}

// shardOf is the shard a guild's events go to, as Discord computes it:
// (guild_id >> 22) % num_shards; direct messages go to shard 0.
func shardOf(guildID string, shards int) int {
	id, err := strconv.ParseUint(guildID, 10, 64)
	if guildID == "" || err != nil || shards <= 1 {
		return 0
	}
	return int((id >> 22) % uint64(shards))
}

// dispatch sends an event of guildID ("" for a DM) to every identified
// session of its shard, as Discord does. need is the intent the event
// requires (0: none); d builds the payload with s.mu held.
func (s *Server) dispatch(t, guildID string, need int, d func(intents int) any) error {
	type out struct {
		c       *gwConn
		payload any
	}
	var outs []out
	s.mu.Lock()
	found := false
	for c := range s.live {
		if shardOf(guildID, c.shards) != c.shard {
			continue
		}
		found = true
		if need != 0 && c.intents&need == 0 {
			continue
		}
		outs = append(outs, out{c, d(c.intents)})
	}
	s.mu.Unlock()
	if !found {
		return errors.New("discordtest: no bot is connected to the gateway for this event's shard")
	}
	var errs []error
	for _, o := range outs {
		errs = append(errs, o.c.send(0, t, o.payload))
	}
	return errors.Join(errs...)
}
