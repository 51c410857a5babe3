package discordtest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// connectShard runs the gateway handshake with a shard pair and returns
// the connection, or the close code the gateway answered.
func connectShard(t *testing.T, s *Server, shard []int) (*websocket.Conn, int) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(strings.Replace(s.URL, "http", "ws", 1)+"/ws/?v=9&encoding=json", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	var hello map[string]any
	if err := ws.ReadJSON(&hello); err != nil {
		t.Fatal(err)
	}
	d := map[string]any{"token": "Bot " + s.Token(), "intents": IntentGuildMessages | IntentMessageContent, "properties": map[string]string{}}
	if shard != nil {
		d["shard"] = shard
	}
	_ = ws.WriteJSON(map[string]any{"op": 2, "d": d})
	var ready struct {
		T string `json:"t"`
	}
	if err := ws.ReadJSON(&ready); err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, ce.Code
		}
		t.Fatal(err)
	}
	if ready.T != "READY" {
		t.Fatalf("got %s, want READY", ready.T)
	}
	return ws, 0
}

// listen reads MESSAGE_CREATE dispatches on ws until it closes and sends
// their contents on the returned channel.
func listen(ws *websocket.Conn) <-chan string {
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		for {
			var f struct {
				Op int    `json:"op"`
				T  string `json:"t"`
				D  struct {
					Content string `json:"content"`
				} `json:"d"`
			}
			if err := ws.ReadJSON(&f); err != nil {
				return
			}
			if f.Op == 0 && f.T == "MESSAGE_CREATE" {
				ch <- f.D.Content
			}
		}
	}()
	return ch
}

// contents collects what ch brings for a moment (an event for another
// shard would have arrived by then).
func contents(ch <-chan string, wait time.Duration) []string {
	var out []string
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case c, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, c)
		case <-t.C:
			return out
		}
	}
}

// TestGatewayShards: events of a guild go to the sessions of its shard,
// (guild_id >> 22) % num_shards; a bad shard pair is closed with 4010; a
// second session of one shard is kept, gets the shard's events too, as on
// Discord, and is counted in Overlaps.
func TestGatewayShards(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	const guild0, guild1 = "1", "4194304" // 1>>22 = 0; 4194304>>22 = 1
	s.AddTextChannel(guild0, "10", "zero")
	s.AddTextChannel(guild1, "11", "one")
	s.AddUser("5", "ada")

	for _, bad := range [][]int{{2, 2}, {-1, 2}, {0, 0}, {1}} {
		if _, code := connectShard(t, s, bad); code != 4010 {
			t.Errorf("shard %v closed with %d, want 4010", bad, code)
		}
	}
	zeroWS, _ := connectShard(t, s, []int{0, 2})
	oneWS, _ := connectShard(t, s, []int{1, 2})
	zero, one := listen(zeroWS), listen(oneWS)
	if got := s.Sessions(); len(got) != 2 || got[0] != (Session{0, 2}) || got[1] != (Session{1, 2}) {
		t.Fatalf("sessions %v", got)
	}
	if _, err := s.Say(Say{ChannelID: "10", UserID: "5", Content: "to zero"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Say(Say{ChannelID: "11", UserID: "5", Content: "to one"}); err != nil {
		t.Fatal(err)
	}
	if got := contents(zero, 300*time.Millisecond); len(got) != 1 || got[0] != "to zero" {
		t.Errorf("shard 0 got %q, want only guild %s's message", got, guild0)
	}
	if got := contents(one, 300*time.Millisecond); len(got) != 1 || got[0] != "to one" {
		t.Errorf("shard 1 got %q, want only guild %s's message", got, guild1)
	}
	if n := s.Overlaps(); n != 0 {
		t.Errorf("overlaps %d, want 0", n)
	}

	againWS, _ := connectShard(t, s, []int{0, 2})
	again := listen(againWS)
	if n := s.Overlaps(); n != 1 {
		t.Errorf("overlaps %d after a second session of shard 0, want 1", n)
	}
	if _, err := s.Say(Say{ChannelID: "10", UserID: "5", Content: "twice"}); err != nil {
		t.Fatal(err)
	}
	a, b := contents(zero, 300*time.Millisecond), contents(again, 300*time.Millisecond)
	if len(a) != 1 || len(b) != 1 {
		t.Errorf("both sessions of shard 0 should get the event: %q and %q", a, b)
	}
	for _, ws := range []*websocket.Conn{zeroWS, oneWS, againWS} {
		ws.Close()
	}
	for _, ch := range []<-chan string{zero, one, again} {
		for range ch { // the readers end
		}
	}
}
