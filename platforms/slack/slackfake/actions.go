package slackfake

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// fileJSON is a file object as Slack's events and files.info show it.
// Called with s.mu held.
func (s *Server) fileJSON(f *File) map[string]any {
	now := time.Now().Unix()
	j := map[string]any{"id": f.ID, "created": now, "timestamp": now, "name": f.Name, "title": f.Title,
		"mimetype": f.Mimetype, "filetype": f.Filetype, "pretty_type": strings.ToUpper(f.Filetype), "user": f.User,
		"user_team": s.opts.TeamID, "editable": false, "size": f.Size, "mode": "hosted", "is_external": f.External,
		"external_type": "", "is_public": true, "public_url_shared": false, "display_as_bot": false, "username": "",
		"url_private": f.URLPrivate, "url_private_download": f.URLPrivate + "?download=1",
		"permalink":   "https://" + s.opts.TeamDomain + ".slack.com/files/" + f.User + "/" + f.ID + "/" + url.PathEscape(f.Name),
		"file_access": "visible", "has_rich_preview": false}
	if f.External {
		j["mode"], j["external_type"] = "external", "gdrive"
		j["url_private_download"] = f.URLPrivate
	}
	if len(f.Shares) > 0 {
		public, private := map[string][]map[string]any{}, map[string][]map[string]any{}
		for _, sh := range f.Shares {
			entry := map[string]any{"reply_users": []string{}, "reply_users_count": 0, "reply_count": 0, "ts": sh.TS,
				"channel_name": "", "team_id": s.opts.TeamID, "share_user_id": f.User, "source": "UNKNOWN", "is_silent_share": false}
			if sh.ThreadTS != "" {
				entry["thread_ts"] = sh.ThreadTS
			}
			target := public
			if c := s.channels[sh.Channel]; c != nil {
				entry["channel_name"] = c.name
				if c.kind != "channel" {
					target = private
				}
			}
			target[sh.Channel] = append(target[sh.Channel], entry)
		}
		shares := map[string]any{}
		if len(public) > 0 {
			shares["public"] = public
		}
		if len(private) > 0 {
			shares["private"] = private
		}
		j["shares"] = shares
		j["channels"] = []string{}
	}
	return j
}

// messageJSON is a message as Slack's events and conversations.replies
// show it. Called with s.mu held.
func (s *Server) messageJSON(m *Message) map[string]any {
	j := map[string]any{"type": "message", "ts": m.TS, "text": m.Text, "team": s.opts.TeamID}
	if m.User != "" {
		j["user"] = m.User
	}
	if m.BotID != "" {
		j["bot_id"] = m.BotID
		j["app_id"] = s.opts.AppID
		j["bot_profile"] = map[string]any{"id": m.BotID, "app_id": s.opts.AppID, "name": s.opts.BotName, "team_id": s.opts.TeamID, "deleted": false}
	} else {
		j["client_msg_id"] = fmt.Sprintf("%08x-0000-4000-8000-%012x", len(m.TS), time.Now().UnixNano()&0xffffffffffff)
	}
	if m.SubType != "" {
		j["subtype"] = m.SubType
	}
	if m.ThreadTS != "" {
		j["thread_ts"] = m.ThreadTS
		if m.InThread() {
			if root := s.findMsg(m.Channel, m.ThreadTS); root != nil {
				j["parent_user_id"] = root.User
			}
		}
	}
	if len(m.Blocks) > 0 {
		j["blocks"] = m.Blocks
	}
	if len(m.Files) > 0 {
		var files []map[string]any
		for _, f := range m.Files {
			if f.Stub {
				files = append(files, stubJSON(f))
				continue
			}
			files = append(files, s.fileJSON(f))
		}
		j["files"] = files
		j["upload"] = m.BotID == ""
		j["display_as_bot"] = false
	}
	return j
}

func (s *Server) messageJSONUnlocked(m *Message) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.messageJSON(m)
}

// messageEvent is the event_callback for a new message, or nil when the
// bot would not receive it (not in the channel). Called with s.mu held.
func (s *Server) messageEvent(c *channel, m *Message) map[string]any {
	if !c.botMember {
		return nil
	}
	ev := s.messageJSON(m)
	ev["channel"] = c.id
	ev["event_ts"] = m.TS
	ev["channel_type"] = c.kind
	return s.callback(ev)
}

// callback wraps an inner event as Slack's event_callback. Called with
// s.mu held.
func (s *Server) callback(ev map[string]any) map[string]any {
	return map[string]any{"token": "fake-verification-token", "team_id": s.opts.TeamID, "context_team_id": s.opts.TeamID,
		"api_app_id": s.opts.AppID, "event": ev, "type": "event_callback", "event_id": s.newID("Ev"),
		"event_time": time.Now().Unix(), "event_context": "4-" + s.newID("ctx"), "is_ext_shared_channel": false,
		"authorizations": []map[string]any{{"enterprise_id": nil, "team_id": s.opts.TeamID, "user_id": s.opts.BotUserID,
			"is_bot": true, "is_enterprise_install": false}}}
}

// emit delivers an event_callback (nil: nothing).
func (s *Server) emit(ev map[string]any) *Envelope {
	if ev == nil {
		return nil
	}
	return s.send("events_api", ev)
}

// Event delivers any Events API inner event, as is.
func (s *Server) Event(inner map[string]any) *Envelope {
	s.mu.Lock()
	ev := s.callback(inner)
	s.mu.Unlock()
	return s.emit(ev)
}

// newTrigger issues a trigger_id, valid for views.open within 3 s.
// Called with s.mu held.
func (s *Server) newTrigger(user, channel string) string {
	id := fmt.Sprintf("%d.%d.%s", time.Now().Unix(), s.seq, s.newID("trig"))
	s.triggers[id] = trigger{user: user, channel: channel, at: time.Now()}
	return id
}

// newResponseURL issues a response_url. Called with s.mu held.
func (s *Server) newResponseURL(user, channel string) string {
	id := s.newID("R")
	s.responses[id] = trigger{user: user, channel: channel, at: time.Now()}
	return s.URL + "/response/" + id
}

func (s *Server) teamJSON() map[string]any {
	return map[string]any{"id": s.opts.TeamID, "domain": s.opts.TeamDomain}
}

func (s *Server) userJSON(user string) map[string]any {
	return map[string]any{"id": user, "username": s.userName(user), "name": s.userName(user), "team_id": s.opts.TeamID}
}

// Slash runs a slash command, as user types it in a channel.
func (s *Server) Slash(user, channelID, command, text string) *Envelope {
	s.mu.Lock()
	c := s.channels[channelID]
	name := ""
	if c != nil {
		name = c.name
	}
	payload := map[string]string{"token": "fake-verification-token", "team_id": s.opts.TeamID, "team_domain": s.opts.TeamDomain,
		"channel_id": channelID, "channel_name": name, "user_id": user, "user_name": s.userName(user), "command": command,
		"text": escapeText(text), "api_app_id": s.opts.AppID, "is_enterprise_install": "false",
		"response_url": s.newResponseURL(user, channelID), "trigger_id": s.newTrigger(user, channelID)}
	s.mu.Unlock()
	return s.send("slash_commands", payload)
}

// escapeText escapes text as Slack does in message and command text.
func escapeText(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// UploadFile adds a file a person uploaded (not yet shared: Say shares it).
func (s *Server) UploadFile(user, name, mimetype string, data []byte) *File {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("F")
	f := &File{ID: id, Name: name, Title: name, Mimetype: mimetype, Filetype: strings.TrimPrefix(path.Ext(name), "."),
		User: user, Size: len(data), Data: data, uploaded: true,
		URLPrivate: s.URL + "/files-pri/" + s.opts.TeamID + "-" + id + "/" + url.PathEscape(name)}
	s.files[id] = f
	return f
}

// ExternalFile adds a file stored elsewhere (Google Drive and the like):
// its url_private is rawURL, on another host.
func (s *Server) ExternalFile(user, name, mimetype, rawURL string, size int) *File {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.newID("F")
	f := &File{ID: id, Name: name, Title: name, Mimetype: mimetype, Filetype: strings.TrimPrefix(path.Ext(name), "."),
		User: user, Size: size, URLPrivate: rawURL, External: true, uploaded: true}
	s.files[id] = f
	return f
}

// Say posts a message as a person: in a channel, or in a thread when
// thread is a root's ts, with files attached. text is in Slack's markup,
// as events carry it (Mention makes a mention of the bot). The bot receives it as a
// message event, and as an app_mention too when text mentions it.
func (s *Server) Say(user, channelID, thread, text string, files ...*File) Message {
	if len(files) > MaxFilesPerMessage {
		panic(fmt.Sprintf("slackfake: Slack shares at most %d files in one message, not %d", MaxFilesPerMessage, len(files)))
	}
	s.mu.Lock()
	c := s.channels[channelID]
	if c == nil {
		s.mu.Unlock()
		panic("slackfake: no channel " + channelID)
	}
	if thread != "" {
		if root := s.findMsg(channelID, thread); root != nil && root.ThreadTS == "" {
			root.ThreadTS = root.TS
		}
	}
	m := &Message{Channel: channelID, TS: s.newTS(), ThreadTS: thread, User: user, Text: text, Files: files, Posted: time.Now()}
	if len(files) > 0 {
		m.SubType = "file_share"
	}
	for _, f := range files {
		f.Shares = append(f.Shares, Share{Channel: channelID, TS: m.TS, ThreadTS: thread})
	}
	c.msgs = append(c.msgs, m)
	s.notify()
	ev := s.messageEvent(c, m)
	var mention map[string]any
	if strings.Contains(m.Text, "<@"+s.opts.BotUserID+">") && c.botMember {
		inner := map[string]any{"type": "app_mention", "user": user, "text": m.Text, "ts": m.TS, "channel": channelID,
			"event_ts": m.TS, "team": s.opts.TeamID, "client_msg_id": "00000000-0000-4000-8000-" + strings.ReplaceAll(m.TS, ".", "")[:12]}
		if thread != "" {
			inner["thread_ts"] = thread
		}
		if fj, ok := s.messageJSON(m)["files"]; ok {
			inner["files"], inner["upload"] = fj, false
		}
		mention = s.callback(inner)
	}
	out := copyMessage(m)
	s.emitLocked(ev)
	s.emitLocked(mention)
	s.mu.Unlock()
	s.wake()
	return out
}

// MaxFilesPerMessage is how many files Slack lets a person share in one
// message, and the most one files.completeUploadExternal shares.
const MaxFilesPerMessage = 10

// Mention is text that mentions the bot.
func (s *Server) Mention(text string) string { return "<@" + s.opts.BotUserID + "> " + text }

// interactionBase is what every interactive payload carries. Called with
// s.mu held.
func (s *Server) interactionBase(typ, user, channelID string) map[string]any {
	p := map[string]any{"type": typ, "token": "fake-verification-token", "api_app_id": s.opts.AppID, "team": s.teamJSON(),
		"user": s.userJSON(user), "is_enterprise_install": false, "enterprise": nil,
		"trigger_id": s.newTrigger(user, channelID)}
	if channelID != "" {
		name := ""
		if c := s.channels[channelID]; c != nil {
			name = c.name
		}
		p["channel"] = map[string]any{"id": channelID, "name": name}
		p["response_url"] = s.newResponseURL(user, channelID)
	}
	return p
}

// Click presses the button with actionID on a message, as user.
func (s *Server) Click(user string, msg Message, actionID string) (*Envelope, error) {
	return s.ClickIn(user, msg, "", actionID)
}

// ClickIn presses the button with actionID in the block with blockID
// ("": any block) on a message, as user: a message with one actions
// block per image has the same action ids in each.
func (s *Server) ClickIn(user string, msg Message, blockID, actionID string) (*Envelope, error) {
	s.mu.Lock()
	m := s.findMsg(msg.Channel, msg.TS)
	if m == nil || m.Deleted {
		s.mu.Unlock()
		return nil, fmt.Errorf("slackfake: no message %s in %s", msg.TS, msg.Channel)
	}
	action := button(m.Blocks, blockID, actionID)
	if action == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("slackfake: message %s has no button %s", msg.TS, actionID)
	}
	p := s.blockAction(user, m, action)
	s.mu.Unlock()
	return s.send("interactive", p), nil
}

// button is the block_actions action of the first button with actionID
// in blocks (in the block blockID unless it is ""), or nil.
func button(blocks json.RawMessage, blockID, actionID string) map[string]any {
	var bs []struct {
		BlockID  string `json:"block_id"`
		Elements []struct {
			Type     string          `json:"type"`
			ActionID string          `json:"action_id"`
			Value    string          `json:"value"`
			Text     json.RawMessage `json:"text"`
		} `json:"elements"`
	}
	_ = json.Unmarshal(blocks, &bs)
	for _, b := range bs {
		for _, e := range b.Elements {
			if e.ActionID == actionID && e.Type == "button" && (blockID == "" || b.BlockID == blockID) {
				return map[string]any{"action_id": e.ActionID, "block_id": b.BlockID, "text": e.Text, "value": e.Value,
					"type": "button", "action_ts": actionTS()}
			}
		}
	}
	return nil
}

// actionTS is an action_ts as Slack writes it: seconds with microseconds.
func actionTS() string {
	return strconv.FormatFloat(float64(time.Now().UnixMicro())/1e6, 'f', 6, 64)
}

// blockAction is the block_actions payload of action on message m, as
// user; with s.mu held.
func (s *Server) blockAction(user string, m *Message, action map[string]any) map[string]any {
	p := s.interactionBase("block_actions", user, m.Channel)
	container := map[string]any{"type": "message", "message_ts": m.TS, "channel_id": m.Channel, "is_ephemeral": false}
	if m.InThread() {
		container["thread_ts"] = m.ThreadTS
	}
	p["container"] = container
	p["message"] = s.messageJSON(m)
	p["state"] = map[string]any{"values": map[string]any{}}
	p["actions"] = []any{action}
	return p
}

// ClickEphemeral presses the button with actionID on an ephemeral
// message (one chat.postEphemeral posted), as its user: the payload has
// an ephemeral container and no message, as Slack sends.
func (s *Server) ClickEphemeral(e Ephemeral, actionID string) (*Envelope, error) {
	if e.TS == "" || !json.Valid(e.Blocks) {
		return nil, fmt.Errorf("slackfake: ephemeral %q has no blocks", e.Text)
	}
	action := button(e.Blocks, "", actionID)
	if action == nil {
		return nil, fmt.Errorf("slackfake: ephemeral %s has no button %s", e.TS, actionID)
	}
	s.mu.Lock()
	p := s.interactionBase("block_actions", e.User, e.Channel)
	container := map[string]any{"type": "message", "message_ts": e.TS, "channel_id": e.Channel, "is_ephemeral": true}
	if e.ThreadTS != "" {
		container["thread_ts"] = e.ThreadTS
	}
	p["container"] = container
	p["state"] = map[string]any{"values": map[string]any{}}
	p["actions"] = []any{action}
	s.mu.Unlock()
	return s.send("interactive", p), nil
}

// Shortcut runs a message shortcut (callbackID) on a message, as user.
func (s *Server) Shortcut(user string, msg Message, callbackID string) (*Envelope, error) {
	s.mu.Lock()
	m := s.findMsg(msg.Channel, msg.TS)
	if m == nil || m.Deleted {
		s.mu.Unlock()
		return nil, fmt.Errorf("slackfake: no message %s in %s", msg.TS, msg.Channel)
	}
	p := s.interactionBase("message_action", user, m.Channel)
	p["callback_id"] = callbackID
	p["action_ts"] = actionTS()
	p["message_ts"] = m.TS
	p["message"] = s.messageJSON(m)
	s.mu.Unlock()
	return s.send("interactive", p), nil
}

// Submit submits a modal the bot opened, as its user, with values by
// block id and action id (plain text inputs).
func (s *Server) Submit(v View, values map[string]map[string]string) *Envelope {
	state := map[string]any{}
	for block, actions := range values {
		m := map[string]any{}
		for action, value := range actions {
			m[action] = map[string]any{"type": "plain_text_input", "value": value}
		}
		state[block] = m
	}
	s.mu.Lock()
	p := s.interactionBase("view_submission", v.User, "")
	p["view"] = map[string]any{"id": v.ID, "team_id": s.opts.TeamID, "type": "modal", "blocks": v.Blocks,
		"private_metadata": v.PrivateMetadata, "callback_id": v.CallbackID, "state": map[string]any{"values": state},
		"hash": "1712345678.abcdef", "title": map[string]any{"type": "plain_text", "text": v.Title},
		"clear_on_close": false, "notify_on_close": false, "root_view_id": v.ID, "previous_view_id": nil,
		"app_id": s.opts.AppID, "external_id": "", "app_installed_team_id": s.opts.TeamID, "bot_id": s.opts.BotID}
	p["response_urls"] = []any{}
	s.mu.Unlock()
	return s.send("interactive", p)
}

// URLVerification posts Slack's url_verification challenge to the bot's
// events URL (HTTP mode) and returns its answer.
func (s *Server) URLVerification(base, challenge string) (int, []byte, error) {
	body, _ := json.Marshal(map[string]string{"token": "fake-verification-token", "challenge": challenge, "type": "url_verification"})
	return s.SignedRequest(strings.TrimRight(base, "/")+"/slack/events", "application/json", body, time.Now(), "")
}

// Choose picks the option with value in the static_select with actionID
// on a message, as user: a block_actions payload whose action carries
// selected_option, as Slack sends it. Only a value the menu offers can
// be picked.
func (s *Server) Choose(user string, msg Message, actionID, value string) (*Envelope, error) {
	var blocks []struct {
		Type     string `json:"type"`
		BlockID  string `json:"block_id"`
		Elements []struct {
			Type        string            `json:"type"`
			ActionID    string            `json:"action_id"`
			Placeholder json.RawMessage   `json:"placeholder"`
			Options     []json.RawMessage `json:"options"`
		} `json:"elements"`
	}
	s.mu.Lock()
	m := s.findMsg(msg.Channel, msg.TS)
	if m == nil || m.Deleted {
		s.mu.Unlock()
		return nil, fmt.Errorf("slackfake: no message %s in %s", msg.TS, msg.Channel)
	}
	_ = json.Unmarshal(m.Blocks, &blocks)
	var action map[string]any
	for _, b := range blocks {
		for _, e := range b.Elements {
			if e.ActionID != actionID || e.Type != "static_select" {
				continue
			}
			for _, raw := range e.Options {
				var o option
				if json.Unmarshal(raw, &o) == nil && o.Value == value {
					action = map[string]any{"action_id": e.ActionID, "block_id": b.BlockID, "type": "static_select",
						"selected_option": json.RawMessage(raw), "placeholder": e.Placeholder,
						"action_ts": actionTS()}
				}
			}
		}
	}
	if action == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("slackfake: message %s has no menu %s with option %q", msg.TS, actionID, value)
	}
	p := s.blockAction(user, m, action)
	s.mu.Unlock()
	return s.send("interactive", p), nil
}
