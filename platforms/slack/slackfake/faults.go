package slackfake

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Upload is the target of faults on the upload URL that
// files.getUploadURLExternal hands out (not a Web API method).
const Upload = "upload"

// Fault is one failure the fake answers instead of a call's real answer,
// as Slack and its load balancers do.
type Fault struct {
	// Status is the HTTP status to answer (500, 502, 503, 429...). Slack
	// sends an HTML page with a 5xx; a 429 carries Retry-After.
	Status int
	// Error, with Status 0, answers HTTP 200 {"ok":false,"error":Error}.
	Error string
	// RetryAfter is the Retry-After of a 429 (whole seconds; at least 1).
	RetryAfter time.Duration
	// Applied makes the call take effect before the failure is answered:
	// the bot cannot tell whether it worked (a timeout or 5xx after the
	// request was handled).
	Applied bool
	// Reset closes the connection without an answer.
	Reset bool
}

// Inject queues faults for target, a Web API method ("chat.delete") or
// Upload: each of its next calls gets the next fault instead of its
// answer.
func (s *Server) Inject(target string, faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults == nil {
		s.faults = map[string][]Fault{}
	}
	s.faults[target] = append(s.faults[target], faults...)
}

// nextFault takes the next fault queued for target.
func (s *Server) nextFault(target string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.faults[target]
	if len(q) == 0 {
		return Fault{}, false
	}
	s.faults[target] = q[1:]
	return q[0], true
}

// serveFault runs the call (when the fault is Applied) and answers the
// fault instead of its answer.
func (s *Server) serveFault(w http.ResponseWriter, f Fault, call func(http.ResponseWriter)) {
	if f.Applied {
		call(httptest.NewRecorder())
	}
	switch {
	case f.Reset:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		w.WriteHeader(http.StatusBadGateway)
	case f.Status == http.StatusTooManyRequests:
		secs := max(1, int(f.RetryAfter.Round(time.Second)/time.Second))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"ok":false,"error":"ratelimited"}`)
	case f.Status != 0:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(f.Status)
		_, _ = fmt.Fprintf(w, "<html><body><h1>%d %s</h1></body></html>", f.Status, http.StatusText(f.Status))
	default:
		slackErr(w, f.Error)
	}
}

// Deletes counts the chat.delete calls for the message at ts in channel,
// whatever they answered.
func (s *Server) Deletes(channelID, ts string) int {
	n := 0
	for _, c := range s.Calls() {
		if c.Method == "chat.delete" && c.Params["channel"] == channelID && c.Params["ts"] == ts {
			n++
		}
	}
	return n
}

// history is conversations.history: the channel's top-level messages,
// newest first, between oldest and latest (exclusive unless inclusive),
// at most limit (default 100, at most 999) per page, with a cursor.
func (s *Server) history(w http.ResponseWriter, p params) {
	oldest, ok := tsParam(p.get("oldest"), "0")
	if !ok {
		slackErr(w, "invalid_ts_oldest")
		return
	}
	latest, ok := tsParam(p.get("latest"), "")
	if !ok {
		slackErr(w, "invalid_ts_latest")
		return
	}
	limit := 100
	if v := p.get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.problem("conversations.history: limit %q", v)
			slackErr(w, "invalid_limit")
			return
		}
		limit = min(n, 999)
	}
	inclusive := p.get("inclusive") == "true" || p.get("inclusive") == "1"
	s.mu.Lock()
	defer s.mu.Unlock()
	c, code := s.channelFor(p.get("channel"))
	if code != "" {
		slackErr(w, code)
		return
	}
	var msgs []*Message
	for _, m := range c.msgs {
		if m.Deleted || m.InThread() && m.SubType != "thread_broadcast" {
			continue
		}
		if lo := tsCompare(m.TS, oldest); lo < 0 || lo == 0 && !inclusive && oldest != "0" {
			continue
		}
		if latest != "" {
			if hi := tsCompare(m.TS, latest); hi > 0 || hi == 0 && !inclusive {
				continue
			}
		}
		msgs = append(msgs, m)
	}
	sort.SliceStable(msgs, func(i, j int) bool { return tsCompare(msgs[i].TS, msgs[j].TS) > 0 })
	start := 0
	if cur := p.get("cursor"); cur != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(cur, "bmV4dF90czo"))
		if err != nil || n < 0 || n > len(msgs) {
			slackErr(w, "invalid_cursor")
			return
		}
		start = n
	}
	end := min(start+limit, len(msgs))
	out := []map[string]any{}
	for _, m := range msgs[start:end] {
		out = append(out, s.messageJSON(m))
	}
	next := ""
	if end < len(msgs) {
		next = "bmV4dF90czo" + strconv.Itoa(end)
	}
	writeJSON(w, map[string]any{"ok": true, "messages": out, "has_more": next != "", "pin_count": 0,
		"response_metadata": map[string]any{"next_cursor": next}})
}

// tsParam reads a timestamp argument ("" gives def).
func tsParam(v, def string) (string, bool) {
	if v == "" {
		return def, true
	}
	if _, err := strconv.ParseFloat(v, 64); err != nil {
		return "", false
	}
	return v, true
}

// tsCompare orders Slack timestamps numerically.
func tsCompare(a, b string) int {
	as, af, _ := strings.Cut(a, ".")
	bs, bf, _ := strings.Cut(b, ".")
	ai, _ := strconv.ParseInt(as, 10, 64)
	bi, _ := strconv.ParseInt(bs, 10, 64)
	if ai != bi {
		if ai < bi {
			return -1
		}
		return 1
	}
	af = (af + "000000")[:6]
	bf = (bf + "000000")[:6]
	return strings.Compare(af, bf)
}

// StubFile adds a file a person in another organization posted in a
// Slack Connect channel: events carry it as a stub ({"id", "file_access":
// "check_file_info"}, no name, mimetype or URL) and only files.info tells
// the rest. infoError, when not "", is what files.info answers the bot
// instead ("file_not_found": not shared with it; "no_permission").
func (s *Server) StubFile(user, name, mimetype string, data []byte, infoError string) *File {
	f := s.UploadFile(user, name, mimetype, data)
	s.mu.Lock()
	defer s.mu.Unlock()
	f.Stub, f.InfoError = true, infoError
	return f
}

// stubJSON is a file as Slack Connect events carry it. Called with s.mu
// held.
func stubJSON(f *File) map[string]any {
	return map[string]any{"id": f.ID, "mode": "file_access", "file_access": "check_file_info", "created": 0, "timestamp": 0, "user": ""}
}

// SSLCheck sends Slack's ssl_check to the bot's command URL (HTTP mode):
// a form post with ssl_check=1 and a token field, unsigned, as Slack
// sends it when the command URL is saved or checked. It returns the
// bot's status.
func (s *Server) SSLCheck(base string) (int, error) {
	body := url.Values{"ssl_check": {"1"}, "token": {"fake-verification-token"}}.Encode()
	status, _, err := s.SignedRequest(strings.TrimRight(base, "/")+"/slack/commands", "application/x-www-form-urlencoded", []byte(body), time.Now(), "-")
	return status, err
}

// Resend delivers an envelope's payload again, as a new envelope: the
// same slash command, interaction or event (same trigger_id or event_id)
// reaching the bot twice. Events carry retry_attempt 1 (Socket Mode) or
// X-Slack-Retry-Num: 1 (HTTP mode), as Slack's retries do.
func (s *Server) Resend(e *Envelope) *Envelope {
	var payload any = json.RawMessage(slices.Clone(e.Payload))
	if e.Type == "slash_commands" {
		var fields map[string]string
		_ = json.Unmarshal(e.Payload, &fields)
		payload = fields
	}
	return s.sendRetry(e.Type, payload, e.Type == "events_api")
}

// ClearFaults drops every fault not yet served.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}
