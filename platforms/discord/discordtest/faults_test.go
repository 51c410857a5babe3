package discordtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestFaults(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages|IntentMessageContent)
	quiet := map[string]any{"parse": []string{}}
	msg := func(content string) map[string]any {
		return map[string]any{"content": content, "allowed_mentions": quiet}
	}
	count := func() int { return len(s.Messages("10")) }

	t.Run("StatusBeforeServing", func(t *testing.T) {
		s.Inject(RouteMessageCreate, Fault{Status: 503, HTML: true}, Fault{Status: 500})
		before := count()
		req, _ := http.NewRequest("POST", s.URL+"/api/v10/channels/10/messages", strings.NewReader(`{"content":"x","allowed_mentions":{"parse":[]}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", c.auth)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "cloudflare") {
			t.Errorf("got %d %q %q, want Cloudflare's 503 page", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		code, m, _ := c.do("POST", "/channels/10/messages", msg("y"))
		if code != 500 || m["message"] != "500: Internal Server Error" || m["code"] != 0.0 {
			t.Errorf("got %d %v, want Discord's JSON 500", code, m)
		}
		if got := count(); got != before {
			t.Errorf("%d messages made by failed creates", got-before)
		}
		if code, _, _ := c.do("POST", "/channels/10/messages", msg("z")); code != 200 {
			t.Errorf("after the faults: %d", code)
		}
	})

	t.Run("After", func(t *testing.T) {
		s.Inject(RouteMessageCreate, Fault{Status: 500, After: true})
		before := count()
		if code, _, _ := c.do("POST", "/channels/10/messages", msg("landed")); code != 500 {
			t.Errorf("got %d, want 500", code)
		}
		if ms := s.Messages("10"); len(ms) != before+1 || ms[len(ms)-1].Content != "landed" {
			t.Error("a fault After did not serve the request first")
		}
	})

	t.Run("Reset", func(t *testing.T) {
		s.Inject(RouteMessageCreate, Fault{Reset: true})
		before := count()
		data, _ := json.Marshal(msg("reset"))
		req, _ := http.NewRequest("POST", s.URL+"/api/v10/channels/10/messages", strings.NewReader(string(data)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", c.auth)
		if resp, err := c.hc.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("got %d, want a broken connection", resp.StatusCode)
		}
		if count() != before {
			t.Error("a reset before serving made a message")
		}
	})

	t.Run("FilesOnly", func(t *testing.T) {
		s.Inject(RouteMessageCreate, Fault{Status: 500, Files: true})
		if code, _, _ := c.do("POST", "/channels/10/messages", msg("no file")); code != 200 {
			t.Errorf("a create without a file met a Files fault: %d", code)
		}
		s.ClearFaults()
		if code, _, _ := c.do("POST", "/channels/10/messages", msg("cleared")); code != 200 {
			t.Errorf("after ClearFaults: %d", code)
		}
	})

	t.Run("OtherRoutes", func(t *testing.T) {
		_, m, _ := c.do("POST", "/channels/10/messages", msg("to edit"))
		id := m["id"].(string)
		s.Inject(RouteMessageEdit, Fault{Status: 502, HTML: true})
		if code, _, _ := c.do("PATCH", "/channels/10/messages/"+id, msg("edited")); code != 502 {
			t.Errorf("edit: %d, want 502", code)
		}
		s.Inject(RouteMessageList, Fault{Status: 500})
		if code, _, _ := c.do("GET", "/channels/10/messages", nil); code != 500 {
			t.Errorf("list: %d, want 500", code)
		}
	})
	if got := s.Faulted(); got != 6 {
		t.Errorf("%d faults applied, want 6", got)
	}
}

func TestListMessages(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("1", "10", "art")
	c := newClient(t, s)
	c.connect(s.Token(), IntentGuildMessages|IntentMessageContent)
	quiet := map[string]any{"parse": []string{}}
	var ids []string
	for i := range 5 {
		code, m, _ := c.do("POST", "/channels/10/messages", map[string]any{"content": fmt.Sprint(i), "allowed_mentions": quiet,
			"nonce": fmt.Sprint("n", i), "enforce_nonce": true})
		if code != 200 || m["nonce"] != fmt.Sprint("n", i) {
			t.Fatalf("create: %d %v (a create's answer carries its nonce)", code, m)
		}
		ids = append(ids, m["id"].(string))
	}
	list := func(query string) (int, []map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL+"/api/v10/channels/10/messages"+query, nil)
		req.Header.Set("Authorization", c.auth)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out []map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	contents := func(ms []map[string]any) string {
		var b []string
		for _, m := range ms {
			b = append(b, m["content"].(string))
			if _, ok := m["nonce"]; ok {
				t.Errorf("message %v lists its nonce", m["id"])
			}
		}
		return strings.Join(b, ",")
	}
	for _, tc := range []struct {
		name, query string
		code        int
		want        string
	}{
		{"Newest", "", 200, "4,3,2,1,0"},
		{"Limit", "?limit=2", 200, "4,3"},
		{"Before", "?before=" + ids[3], 200, "2,1,0"},
		{"AfterOldestFirst", "?after=" + ids[0] + "&limit=2", 200, "2,1"},
		{"AfterNewest", "?after=" + ids[4], 200, ""},
		{"LimitZero", "?limit=0", 400, ""},
		{"LimitTooBig", "?limit=101", 400, ""},
		{"TwoAnchors", "?after=" + ids[0] + "&before=" + ids[4], 400, ""},
		{"NotASnowflake", "?after=soon", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ms := list(tc.query)
			if code != tc.code || code == 200 && contents(ms) != tc.want {
				t.Errorf("got %d %q, want %d %q", code, contents(ms), tc.code, tc.want)
			}
		})
	}
}
