package slackfake

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// params are a Web API call's arguments, from a form or a JSON body.
type params map[string]string

func (p params) get(k string) string { return p[k] }

func readParams(r *http.Request) (params, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	p := params{}
	for k, v := range r.URL.Query() {
		p[k] = v[0]
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case len(body) == 0:
	case mt == "application/json":
		var m map[string]json.RawMessage
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("invalid JSON body: %w", err)
		}
		for k, v := range m {
			var s string
			if json.Unmarshal(v, &s) == nil {
				p[k] = s
			} else {
				p[k] = string(v)
			}
		}
	default:
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, err
		}
		for k, v := range vals {
			p[k] = v[0]
		}
	}
	return p, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func slackErr(w http.ResponseWriter, code string) {
	writeJSON(w, map[string]any{"ok": false, "error": code})
}

// serveAPI is every Web API method: auth first, then the method.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	method := r.PathValue("method")
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p, err := readParams(r)
	if err != nil {
		s.problem("%s: unreadable request: %v", method, err)
		slackErr(w, "invalid_form_data")
		return
	}
	want := s.opts.BotToken
	if method == "apps.connections.open" {
		want = s.opts.AppToken
	}
	auth := r.Header.Get("Authorization")
	authed := auth == "Bearer "+want
	s.mu.Lock()
	recorded := params{}
	for k, v := range p {
		if k != "token" {
			recorded[k] = v
		}
	}
	s.calls = append(s.calls, Call{Method: method, At: time.Now(), Authed: authed, Params: recorded, ContentType: r.Header.Get("Content-Type")})
	if _, inBody := p["token"]; inBody {
		s.problemLocked("%s: the token was sent in the request body; send it as Authorization: Bearer", method)
	}
	s.mu.Unlock()
	if !authed {
		if auth == "" {
			s.problem("%s: no Authorization header", method)
			slackErr(w, "not_authed")
		} else {
			s.problem("%s: wrong token in the Authorization header", method)
			slackErr(w, "invalid_auth")
		}
		return
	}
	h, ok := map[string]func(http.ResponseWriter, params){
		"auth.test":                    s.authTest,
		"apps.connections.open":        s.connectionsOpen,
		"chat.postMessage":             s.postMessage,
		"chat.update":                  s.update,
		"chat.delete":                  s.delete,
		"chat.postEphemeral":           s.postEphemeral,
		"chat.getPermalink":            s.getPermalink,
		"conversations.replies":        s.replies,
		"conversations.history":        s.history,
		"files.getUploadURLExternal":   s.getUploadURL,
		"files.completeUploadExternal": s.completeUpload,
		"files.info":                   s.fileInfo,
		"views.open":                   s.viewsOpen,
		"users.info":                   s.usersInfo,
	}[method]
	if !ok {
		s.problem("unknown or unexpected Web API method %s", method)
		w.WriteHeader(http.StatusNotFound)
		slackErr(w, "unknown_method")
		return
	}
	// A JSON body without a charset is read, with a warning (Slack's
	// missing_charset).
	if mt, ps, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" && !strings.EqualFold(ps["charset"], "utf-8") {
		s.problem("%s: JSON body posted without charset=utf-8 (Content-Type %q): Slack warns missing_charset", method, r.Header.Get("Content-Type"))
		w = &warnWriter{ResponseWriter: w, warning: "missing_charset"}
	}
	if f, ok := s.nextFault(method); ok {
		s.serveFault(w, f, func(w http.ResponseWriter) { h(w, p) })
		return
	}
	h(w, p)
}

// warnWriter adds Slack's warning fields to a JSON answer.
type warnWriter struct {
	http.ResponseWriter
	warning string
}

func (w *warnWriter) Write(b []byte) (int, error) {
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return w.ResponseWriter.Write(b)
	}
	m["warning"] = w.warning
	m["response_metadata"] = map[string]any{"warnings": []string{w.warning}}
	out, _ := json.Marshal(m)
	if _, err := w.ResponseWriter.Write(append(out, '\n')); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (s *Server) authTest(w http.ResponseWriter, _ params) {
	writeJSON(w, map[string]any{"ok": true, "url": "https://" + s.opts.TeamDomain + ".slack.com/", "team": s.opts.TeamDomain,
		"user": s.opts.BotName, "team_id": s.opts.TeamID, "user_id": s.opts.BotUserID, "bot_id": s.opts.BotID, "is_enterprise_install": false})
}

func (s *Server) connectionsOpen(w http.ResponseWriter, _ params) {
	s.mu.Lock()
	ticket := s.newID("ticket-")
	s.mu.Unlock()
	writeJSON(w, map[string]any{"ok": true, "url": "ws" + strings.TrimPrefix(s.URL, "http") + "/socket?ticket=" + ticket})
}

// channelFor finds a channel the bot may post in.
func (s *Server) channelFor(id string) (*channel, string) {
	c := s.channels[id]
	switch {
	case c == nil:
		return nil, "channel_not_found"
	case !c.botMember:
		return nil, "not_in_channel"
	}
	return c, ""
}

func validBlocks(raw string) (json.RawMessage, bool) {
	if raw == "" {
		return nil, true
	}
	var blocks []struct {
		Type     *string `json:"type"`
		BlockID  string  `json:"block_id"`
		Elements []struct {
			ActionID string `json:"action_id"`
		} `json:"elements"`
	}
	if json.Unmarshal([]byte(raw), &blocks) != nil || len(blocks) > 50 {
		return nil, false
	}
	// Block Kit: block ids unique in the message, action ids unique in
	// their block, both at most 255 characters; an actions block holds at
	// most 25 elements.
	ids := map[string]bool{}
	for _, b := range blocks {
		if b.Type == nil || len(b.BlockID) > maxBlockID || b.BlockID != "" && ids[b.BlockID] {
			return nil, false
		}
		ids[b.BlockID] = true
		if *b.Type == "actions" && len(b.Elements) > 25 {
			return nil, false
		}
		actions := map[string]bool{}
		for _, e := range b.Elements {
			if len(e.ActionID) > maxActionID || e.ActionID != "" && actions[e.ActionID] {
				return nil, false
			}
			actions[e.ActionID] = true
		}
	}
	if checkMessageBlocks(json.RawMessage(raw)) != nil {
		return nil, false
	}
	return json.RawMessage(raw), true
}

// addBotMessage posts a message as the bot. Called with s.mu held.
func (s *Server) addBotMessage(c *channel, thread, text string, blocks json.RawMessage, files []*File) (*Message, string) {
	if thread != "" {
		root := s.findMsg(c.id, thread)
		if root == nil || root.InThread() {
			return nil, "thread_not_found"
		}
		if root.ThreadTS == "" {
			root.ThreadTS = root.TS
		}
	}
	m := &Message{Channel: c.id, TS: s.newTS(), ThreadTS: thread, User: s.opts.BotUserID, BotID: s.opts.BotID,
		Text: text, Blocks: blocks, Files: files, Posted: time.Now()}
	if len(files) > 0 {
		m.SubType = "file_share"
	}
	c.msgs = append(c.msgs, m)
	s.notify()
	return m, ""
}

func (s *Server) postMessage(w http.ResponseWriter, p params) {
	blocks, ok := validBlocks(p.get("blocks"))
	if !ok {
		s.problem("chat.postMessage: invalid blocks %s", p.get("blocks"))
		slackErr(w, "invalid_blocks")
		return
	}
	if p.get("text") == "" && blocks == nil {
		slackErr(w, "no_text")
		return
	}
	s.mu.Lock()
	c, code := s.channelFor(p.get("channel"))
	var m *Message
	if code == "" {
		m, code = s.addBotMessage(c, p.get("thread_ts"), p.get("text"), blocks, nil)
	}
	if code == "" {
		s.emitLocked(s.messageEvent(c, m))
	}
	s.mu.Unlock()
	s.wake()
	if code != "" {
		slackErr(w, code)
		return
	}
	writeJSON(w, map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS, "message": s.messageJSONUnlocked(m)})
}

func (s *Server) update(w http.ResponseWriter, p params) {
	blocks, ok := validBlocks(p.get("blocks"))
	if !ok {
		s.problem("chat.update: invalid blocks %s", p.get("blocks"))
		slackErr(w, "invalid_blocks")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.ownMessage(w, p, "cant_update_message")
	if m == nil {
		return
	}
	m.Edits = append(m.Edits, Edit{At: time.Now(), Text: p.get("text"), Blocks: blocks})
	if p.get("text") != "" {
		m.Text = p.get("text")
	}
	if blocks != nil {
		m.Blocks = blocks
	}
	s.notify()
	writeJSON(w, map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS, "text": m.Text})
}

// ownMessage finds the live bot message that p's channel and ts name, as
// chat.update and chat.delete do; otherwise it answers Slack's error
// (message_not_found, or notOwn for someone else's message) and returns
// nil. The caller holds s.mu.
func (s *Server) ownMessage(w http.ResponseWriter, p params, notOwn string) *Message {
	m := s.findMsg(p.get("channel"), p.get("ts"))
	switch {
	case m == nil || m.Deleted:
		slackErr(w, "message_not_found")
		return nil
	case m.User != s.opts.BotUserID:
		slackErr(w, notOwn)
		return nil
	}
	return m
}

func (s *Server) delete(w http.ResponseWriter, p params) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.ownMessage(w, p, "cant_delete_message")
	if m == nil {
		return
	}
	m.Deleted = true
	s.notify()
	writeJSON(w, map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS})
}

func (s *Server) postEphemeral(w http.ResponseWriter, p params) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, code := s.channelFor(p.get("channel")); code != "" {
		slackErr(w, code)
		return
	}
	if p.get("user") == "" {
		slackErr(w, "user_not_in_channel")
		return
	}
	text := p.get("text")
	if text == "" && p.get("blocks") == "" {
		slackErr(w, "no_text")
		return
	}
	blocks, ok := validBlocks(p.get("blocks"))
	if !ok {
		s.problemLocked("chat.postEphemeral: invalid blocks %s", p.get("blocks"))
		slackErr(w, "invalid_blocks")
		return
	}
	ts := s.newTS()
	s.ephemerals = append(s.ephemerals, Ephemeral{Channel: p.get("channel"), User: p.get("user"), ThreadTS: p.get("thread_ts"),
		Text: text, TS: ts, Blocks: blocks, Via: "chat.postEphemeral", At: time.Now()})
	s.notify()
	writeJSON(w, map[string]any{"ok": true, "message_ts": ts})
}

// getPermalink is chat.getPermalink: a link to a message, with thread_ts
// and cid for a reply in a thread, as Slack answers; channel_not_found or
// message_not_found otherwise (a deleted message has no link).
func (s *Server) getPermalink(w http.ResponseWriter, p params) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[p.get("channel")]
	if c == nil {
		slackErr(w, "channel_not_found")
		return
	}
	m := s.findMsg(c.id, p.get("message_ts"))
	if m == nil || m.Deleted {
		slackErr(w, "message_not_found")
		return
	}
	link := "https://" + s.opts.TeamDomain + ".slack.com/archives/" + c.id + "/p" + strings.ReplaceAll(m.TS, ".", "")
	if m.InThread() {
		link += "?thread_ts=" + m.ThreadTS + "&cid=" + c.id
	}
	writeJSON(w, map[string]any{"ok": true, "channel": c.id, "permalink": link})
}

func (s *Server) replies(w http.ResponseWriter, p params) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.channels[p.get("channel")]
	if c == nil {
		slackErr(w, "channel_not_found")
		return
	}
	m := s.findMsg(c.id, p.get("ts"))
	if m == nil {
		slackErr(w, "thread_not_found")
		return
	}
	root := m.TS
	if m.InThread() {
		root = m.ThreadTS
	}
	var out []map[string]any
	for _, mm := range s.thread(c.id, root, false) {
		out = append(out, s.messageJSON(&mm))
	}
	writeJSON(w, map[string]any{"ok": true, "messages": out, "has_more": false,
		"response_metadata": map[string]any{"next_cursor": ""}})
}

func (s *Server) getUploadURL(w http.ResponseWriter, p params) {
	n, err := strconv.Atoi(p.get("length"))
	if err != nil || n <= 0 || p.get("filename") == "" {
		s.problem("files.getUploadURLExternal: filename %q, length %q", p.get("filename"), p.get("length"))
		slackErr(w, "invalid_arguments")
		return
	}
	s.mu.Lock()
	id := s.newID("F")
	s.files[id] = &File{ID: id, Name: p.get("filename"), Title: p.get("filename"), User: s.opts.BotUserID, declared: n}
	s.mu.Unlock()
	writeJSON(w, map[string]any{"ok": true, "upload_url": s.URL + "/upload/v1/" + id, "file_id": id})
}

// serveUpload is the upload URL: the file's bytes, raw or as the "file"
// part of a multipart form.
func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request) {
	if f, ok := s.nextFault(Upload); ok {
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		s.serveFault(w, f, func(http.ResponseWriter) {})
		return
	}
	id := r.PathValue("id")
	var data []byte
	var err error
	if mt, ps, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); strings.HasPrefix(mt, "multipart/") {
		mr := multipart.NewReader(r.Body, ps["boundary"])
		for {
			part, perr := mr.NextPart()
			if perr != nil {
				err = perr
				break
			}
			if part.FormName() == "file" {
				data, err = io.ReadAll(io.LimitReader(part, 64<<20))
				break
			}
		}
	} else {
		data, err = io.ReadAll(io.LimitReader(r.Body, 64<<20))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[id]
	switch {
	case f == nil:
		s.problemLocked("upload to an unknown file %s", id)
		http.Error(w, "unknown file", http.StatusNotFound)
		return
	case err != nil:
		s.problemLocked("upload %s: %v", id, err)
		http.Error(w, "bad upload", http.StatusBadRequest)
		return
	case len(data) != f.declared:
		s.problemLocked("upload %s: %d bytes, but files.getUploadURLExternal said %d", id, len(data), f.declared)
	}
	f.Data, f.Size, f.uploaded = data, len(data), true
	f.Mimetype = http.DetectContentType(data)
	f.Filetype = strings.TrimPrefix(path.Ext(f.Name), ".")
	f.URLPrivate = s.URL + "/files-pri/" + s.opts.TeamID + "-" + id + "/" + url.PathEscape(f.Name)
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "OK - "+strconv.Itoa(len(data)))
}

func (s *Server) completeUpload(w http.ResponseWriter, p params) {
	var list []struct {
		ID    string `json:"id"`
		Title string `json:"title"`
	}
	if err := json.Unmarshal([]byte(p.get("files")), &list); err != nil || len(list) == 0 {
		s.problem("files.completeUploadExternal: files %q", p.get("files"))
		slackErr(w, "invalid_arguments")
		return
	}
	// One message shares at most MaxFilesPerMessage files, each named once.
	if len(list) > MaxFilesPerMessage {
		s.problem("files.completeUploadExternal: %d files, at most %d", len(list), MaxFilesPerMessage)
		slackErr(w, "invalid_arguments")
		return
	}
	seen := map[string]bool{}
	for _, l := range list {
		if seen[l.ID] {
			s.problem("files.completeUploadExternal: file %s listed twice", l.ID)
			slackErr(w, "invalid_arguments")
			return
		}
		seen[l.ID] = true
	}
	blocks, ok := validBlocks(p.get("blocks"))
	if !ok {
		s.problem("files.completeUploadExternal: invalid blocks %s", p.get("blocks"))
		slackErr(w, "invalid_blocks")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var files []*File
	for _, l := range list {
		f := s.files[l.ID]
		if f == nil || !f.uploaded {
			slackErr(w, "file_not_found")
			return
		}
		if f.completed {
			// "This method can only be called once" per upload.
			s.problemLocked("files.completeUploadExternal: file %s completed twice", l.ID)
			slackErr(w, "file_not_found")
			return
		}
		if l.Title != "" {
			f.Title = l.Title
		}
		files = append(files, f)
	}
	channelID := p.get("channel_id")
	if channelID == "" {
		channelID, _, _ = strings.Cut(p.get("channels"), ",")
	}
	var c *channel
	if channelID != "" {
		var code string
		if c, code = s.channelFor(channelID); code != "" {
			slackErr(w, code)
			return
		}
		if thread := p.get("thread_ts"); thread != "" {
			if root := s.findMsg(c.id, thread); root == nil || root.InThread() {
				slackErr(w, "invalid_thread_ts")
				return
			}
		}
	}
	var out []map[string]any
	for _, f := range files {
		f.completed = true
		out = append(out, map[string]any{"id": f.ID, "title": f.Title})
	}
	writeJSON(w, map[string]any{"ok": true, "files": out})
	if c == nil {
		return
	}
	// Slack shares the file a moment later, in a message of its own.
	thread, text := p.get("thread_ts"), p.get("initial_comment")
	s.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(s.opts.ShareDelay, func() {
		defer s.wg.Done()
		s.mu.Lock()
		for i, tt := range s.timers {
			if tt == t {
				s.timers = append(s.timers[:i], s.timers[i+1:]...)
				break
			}
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		m, code := s.addBotMessage(c, thread, text, blocks, files)
		if code == "" {
			for _, f := range files {
				f.Shares = append(f.Shares, Share{Channel: c.id, TS: m.TS, ThreadTS: thread})
			}
			s.emitLocked(s.messageEvent(c, m))
		}
		s.mu.Unlock()
		s.wake()
	})
	s.timers = append(s.timers, t)
}

func (s *Server) fileInfo(w http.ResponseWriter, p params) {
	// count and page (of the file's comments) default to 100 and 1.
	for _, k := range []string{"count", "page"} {
		if v, ok := p[k]; ok {
			if n, err := strconv.Atoi(v); err != nil || n < 1 {
				s.problem("files.info: %s=%q; it counts from 1 (default %s): leave it out or send a sane value", k, v, map[string]string{"count": "100", "page": "1"}[k])
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.files[p.get("file")]
	if f == nil || !f.uploaded {
		slackErr(w, "file_not_found")
		return
	}
	if f.InfoError != "" {
		slackErr(w, f.InfoError)
		return
	}
	writeJSON(w, map[string]any{"ok": true, "file": s.fileJSON(f), "comments": []any{}, "paging": map[string]any{"count": 0, "total": 0, "page": 1, "pages": 0}})
}

func (s *Server) viewsOpen(w http.ResponseWriter, p params) {
	var view struct {
		Type            string          `json:"type"`
		CallbackID      string          `json:"callback_id"`
		PrivateMetadata string          `json:"private_metadata"`
		Title           json.RawMessage `json:"title"`
		Submit          json.RawMessage `json:"submit"`
		Close           json.RawMessage `json:"close"`
		Blocks          json.RawMessage `json:"blocks"`
	}
	if err := json.Unmarshal([]byte(p.get("view")), &view); err != nil || view.Type != "modal" {
		s.problem("views.open: invalid view %s", p.get("view"))
		slackErr(w, "invalid_arguments")
		return
	}
	if len(view.PrivateMetadata) > 3000 {
		s.problem("views.open: private_metadata is %d characters (max 3000)", len(view.PrivateMetadata))
		slackErr(w, "invalid_arguments")
		return
	}
	var title struct {
		Text string `json:"text"`
	}
	_ = json.Unmarshal(view.Title, &title)
	if n := len([]rune(title.Text)); n == 0 || n > 24 {
		s.problem("views.open: title %q must have 1 to 24 characters", title.Text)
		slackErr(w, "invalid_arguments")
		return
	}
	if len(view.CallbackID) > 255 {
		s.problem("views.open: callback_id is %d characters (max 255)", len(view.CallbackID))
		slackErr(w, "invalid_arguments")
		return
	}
	if err := checkModal(view.Blocks, view.Submit, view.Close); err != nil {
		s.problem("views.open: %v", err)
		slackErr(w, "invalid_arguments")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tr, ok := s.triggers[p.get("trigger_id")]
	switch {
	case !ok:
		s.problemLocked("views.open: unknown trigger_id %q", p.get("trigger_id"))
		slackErr(w, "invalid_trigger_id")
		return
	case tr.used || time.Since(tr.at) > 3*time.Second:
		s.problemLocked("views.open: trigger_id used after %s or twice", time.Since(tr.at).Round(time.Millisecond))
		slackErr(w, "expired_trigger_id")
		return
	}
	tr.used = true
	s.triggers[p.get("trigger_id")] = tr
	v := &View{ID: s.newID("V"), User: tr.user, Channel: tr.channel, CallbackID: view.CallbackID, PrivateMetadata: view.PrivateMetadata,
		Title: title.Text, Blocks: view.Blocks, Opened: time.Now()}
	s.views = append(s.views, v)
	s.notify()
	writeJSON(w, map[string]any{"ok": true, "view": map[string]any{"id": v.ID, "team_id": s.opts.TeamID, "type": "modal",
		"callback_id": v.CallbackID, "private_metadata": v.PrivateMetadata, "blocks": v.Blocks}})
}

// serveResponse is a response_url: an ephemeral answer to whoever ran the
// command or shortcut.
func (s *Server) serveResponse(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text         string `json:"text"`
		ResponseType string `json:"response_type"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
		s.problem("response_url: invalid JSON: %v", err)
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	if r.Header.Get("Authorization") != "" {
		s.problem("response_url: the request carried an Authorization header; response URLs need no token")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tr, ok := s.responses[r.PathValue("id")]
	if !ok {
		http.Error(w, "no such response_url", http.StatusNotFound)
		return
	}
	if body.ResponseType == "in_channel" {
		s.problemLocked("response_url: in_channel answer %q; the bot only answers ephemerally there", body.Text)
	}
	s.ephemerals = append(s.ephemerals, Ephemeral{Channel: tr.channel, User: tr.user, Text: body.Text, Via: "response_url", At: time.Now()})
	s.notify()
	_, _ = io.WriteString(w, "ok")
}

// loginPage is what Slack answers for a file the token cannot read.
const loginPage = `<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to kontext-test</body></html>`

// serveFile is url_private: the bytes with the bot token, Slack's sign-in
// page without it (or without files:read).
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	_, id, _ := strings.Cut(r.PathValue("key"), "-")
	auth := r.Header.Get("Authorization")
	s.mu.Lock()
	s.downloads = append(s.downloads, Download{FileID: id, Auth: auth, At: time.Now()})
	s.notify()
	f := s.files[id]
	ok := f != nil && f.uploaded && !f.External && auth == "Bearer "+s.opts.BotToken && !s.noFiles
	var data []byte
	var mt string
	if ok {
		data, mt = f.Data, f.Mimetype
	}
	s.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = io.WriteString(w, loginPage)
		return
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	_, _ = w.Write(data)
}
