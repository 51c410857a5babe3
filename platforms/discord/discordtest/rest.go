package discordtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// apiErr is a Discord error answer.
type apiErr struct {
	status  int
	code    int
	message string
}

func errf(status, code int, format string, args ...any) *apiErr {
	return &apiErr{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

func invalidForm(format string, args ...any) *apiErr {
	return errf(http.StatusBadRequest, 50035, "Invalid Form Body: "+format, args...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, e *apiErr) {
	writeJSON(w, e.status, map[string]any{"message": e.message, "code": e.code})
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case p == "/ws" || p == "/ws/":
		s.serveGateway(w, r)
	case strings.HasPrefix(p, "/attachments/"):
		s.serveCDN(w, r)
	case strings.HasPrefix(p, "/api/v9/"):
		s.serveAPI(w, r, strings.TrimPrefix(p, "/api/v9/"))
	case strings.HasPrefix(p, "/api/v10/"):
		s.serveAPI(w, r, strings.TrimPrefix(p, "/api/v10/"))
	default:
		writeErr(w, errf(http.StatusNotFound, 0, "404: Not Found (%s %s)", r.Method, p))
	}
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	if r.Header.Get("Authorization") != "" {
		s.cdnAuth++
		s.violation("a CDN download carried an Authorization header: %s", r.URL.Path)
	}
	f := s.files[r.URL.Path]
	if f != nil {
		s.cdnHits[r.URL.Path]++
	}
	s.changed()
	s.mu.Unlock()
	if f == nil || r.Method != http.MethodGet {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	ct := f.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(f.Data)))
	_, _ = w.Write(f.Data)
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, rest string) {
	seg := strings.Split(strings.Trim(rest, "/"), "/")
	s.mu.Lock()
	s.requests = append(s.requests, r.Method+" /"+strings.Join(seg, "/"))
	s.mu.Unlock()
	webhook := seg[0] == "webhooks" || seg[0] == "interactions"
	auth := r.Header.Get("Authorization")
	if (auth == "" && !webhook) || (auth != "" && auth != "Bot "+s.token) {
		s.mu.Lock()
		s.changed()
		s.mu.Unlock()
		writeErr(w, errf(http.StatusUnauthorized, 0, "401: Unauthorized"))
		return
	}
	serve := func(w http.ResponseWriter) {
		if e := s.route(w, r, seg); e != nil {
			writeErr(w, e)
		}
	}
	if f, ok := s.fault(routeOf(r.Method, seg), r); ok {
		serveFault(w, r, f, serve)
		return
	}
	serve(w)
}

func (s *Server) route(w http.ResponseWriter, r *http.Request, seg []string) *apiErr {
	m := r.Method
	n := len(seg)
	switch {
	case n == 1 && seg[0] == "gateway" && m == "GET":
		writeJSON(w, 200, map[string]any{"url": s.wsURL(r.Host)})
	case n == 2 && seg[0] == "gateway" && seg[1] == "bot" && m == "GET":
		writeJSON(w, 200, map[string]any{"url": s.wsURL(r.Host), "shards": 1,
			"session_start_limit": map[string]any{"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})
	case n == 2 && seg[0] == "users" && seg[1] == "@me" && m == "GET":
		s.mu.Lock()
		u := s.userJSON(s.users[s.botID])
		s.mu.Unlock()
		writeJSON(w, 200, u)
	case n == 2 && seg[0] == "applications" && seg[1] == "@me" && m == "GET":
		s.mu.Lock()
		u := s.userJSON(s.users[s.botID])
		s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"id": s.appID, "name": "Kontext", "flags": s.flags, "bot": u})
	case seg[0] == "applications" && n >= 3 && seg[n-1] == "commands" && m == "PUT":
		if seg[1] != s.appID {
			return errf(403, 50001, "Missing Access")
		}
		guild := ""
		if n == 5 && seg[2] == "guilds" {
			guild = seg[3]
		} else if n != 3 {
			return errf(404, 0, "404: Not Found")
		}
		return s.putCommands(w, r, guild)
	case n == 4 && seg[0] == "interactions" && seg[3] == "callback" && m == "POST":
		return s.callback(w, r, seg[1], seg[2])
	case seg[0] == "webhooks" && n >= 3:
		return s.webhook(w, r, seg[1:])
	case seg[0] == "channels" && n >= 2:
		return s.channelRoute(w, r, seg[1:])
	default:
		return errf(http.StatusNotFound, 0, "404: Not Found (%s /%s)", m, strings.Join(seg, "/"))
	}
	return nil
}

var (
	chatName   = regexp.MustCompile(`^[-_\p{Ll}\p{N}]{1,32}$`)
	mentionRe  = regexp.MustCompile(`<@!?(\d+)>`)
	everyoneRe = regexp.MustCompile(`@(everyone|here)`)
)

// putCommands is a bulk overwrite, checked as Discord checks it.
// limitOf is the upload limit of channel id's server.
func (s *Server) limitOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploadLimit(s.channels[id])
}

// held answers 429 while a HoldRateLimit lasts (on the fake's clock) and
// reports whether it did; with s.mu held.
func (s *Server) held(w http.ResponseWriter) bool {
	now := s.now()
	if s.holdNext > 0 {
		s.holdUntil, s.holdNext = now.Add(s.holdNext), 0
	}
	if !now.Before(s.holdUntil) {
		return false
	}
	s.rateLimited++
	s.changed()
	secs := s.holdUntil.Sub(now).Seconds()
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(EditLimit))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(secs, 'f', 3, 64))
	h.Set("X-RateLimit-Bucket", "messages")
	h.Set("X-RateLimit-Scope", "user")
	h.Set("Retry-After", strconv.Itoa(int(math.Ceil(secs))))
	writeJSON(w, http.StatusTooManyRequests, map[string]any{"message": "You are being rate limited.", "retry_after": secs, "global": false})
	return true
}

// writable checks that the bot may post in a thread: a locked archived
// thread refuses (400, 50083), an archived one is unarchived; with s.mu held.
func (s *Server) writable(ch *Channel) *apiErr {
	if ch == nil || ch.ParentID == "" || !ch.Archived {
		return nil
	}
	if ch.Locked {
		return errf(400, 50083, "Thread is archived")
	}
	ch.Archived = false
	return nil
}

func (s *Server) putCommands(w http.ResponseWriter, r *http.Request, guild string) *apiErr {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return errf(400, 0, "read: %v", err)
	}
	var cmds []Command
	if err := json.Unmarshal(body, &cmds); err != nil {
		return errf(400, 50109, "The request body contains invalid JSON.")
	}
	if len(cmds) > 100 {
		return invalidForm("too many commands")
	}
	seen := map[string]bool{}
	for i := range cmds {
		c := &cmds[i]
		if c.Type == 0 {
			c.Type = 1
		}
		key := strconv.Itoa(c.Type) + "/" + c.Name
		if seen[key] {
			return invalidForm("commands.%d.name: duplicate name %q", i, c.Name)
		}
		seen[key] = true
		switch c.Type {
		case 1:
			if !chatName.MatchString(c.Name) {
				return invalidForm("commands.%d.name: %q is not a valid slash command name", i, c.Name)
			}
			if l := utf8.RuneCountInString(c.Description); l < 1 || l > 100 {
				return invalidForm("commands.%d.description: must be 1 to 100 characters", i)
			}
		case 2, 3:
			if l := utf8.RuneCountInString(c.Name); l < 1 || l > 32 {
				return invalidForm("commands.%d.name: must be 1 to 32 characters", i)
			}
			if c.Description != "" || len(c.Options) > 0 {
				return invalidForm("commands.%d: context menu commands take no description or options", i)
			}
		default:
			return invalidForm("commands.%d.type: unknown type %d", i, c.Type)
		}
		if err := checkPermissions(c); err != nil {
			return invalidForm("commands.%d.default_member_permissions: %v", i, err)
		}
		if err := checkOptions(fmt.Sprintf("commands.%d.options", i), c.Options, 0); err != nil {
			return err
		}
	}
	s.mu.Lock()
	out := make([]map[string]any, 0, len(cmds))
	for i := range cmds {
		cmds[i].ID = s.newID()
		out = append(out, map[string]any{"id": cmds[i].ID, "application_id": s.appID, "type": cmds[i].Type,
			"name": cmds[i].Name, "description": cmds[i].Description, "version": s.newID(), "guild_id": nilIfEmpty(guild)})
	}
	s.commands[guild] = cmds
	s.changed()
	s.mu.Unlock()
	writeJSON(w, 200, out)
	return nil
}

// checkPermissions reads default_member_permissions: null or a string
// holding a decimal permission bitfield (discord-api-spec: "?string").
func checkPermissions(c *Command) error {
	raw := c.RawPermissions
	if !present(raw) {
		return nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return fmt.Errorf("must be a string bitfield, not %s", raw)
	}
	v, err := strconv.ParseUint(str, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a permission bitfield", str)
	}
	c.DefaultMemberPermissions = &v
	return nil
}

// checkOptions checks a command's options as Discord does: at most 25;
// subcommands (type 1) and groups (type 2) never mixed with other options
// at one level; a group holds only subcommands, a subcommand no
// subcommands or groups; choices, ranges, lengths and channel types only
// on the option types that take them. depth is 0 for the command's own
// options, 1 in a subcommand or group, 2 in a group's subcommand.
func checkOptions(where string, opts []CommandOption, depth int) *apiErr {
	if len(opts) > 25 {
		return invalidForm("%s: at most 25", where)
	}
	optional := false
	names := map[string]bool{}
	subs := 0
	for _, o := range opts {
		if o.Type == 1 || o.Type == 2 {
			subs++
		}
	}
	if subs > 0 && subs != len(opts) {
		return invalidForm("%s: subcommands and groups cannot be mixed with other options", where)
	}
	for j, o := range opts {
		at := fmt.Sprintf("%s.%d", where, j)
		if !chatName.MatchString(o.Name) || names[o.Name] {
			return invalidForm("%s.name: invalid or duplicate %q", at, o.Name)
		}
		names[o.Name] = true
		if l := utf8.RuneCountInString(o.Description); l < 1 || l > 100 {
			return invalidForm("%s.description: must be 1 to 100 characters", at)
		}
		if o.Type < 1 || o.Type > 11 {
			return invalidForm("%s.type: unsupported option type %d", at, o.Type)
		}
		switch o.Type {
		case 1:
			if depth > 1 {
				return invalidForm("%s.type: a subcommand cannot hold subcommands", at)
			}
			if err := checkOptions(at+".options", o.Options, 2); err != nil {
				return err
			}
		case 2:
			if depth > 0 {
				return invalidForm("%s.type: groups cannot be nested", at)
			}
			if len(o.Options) == 0 {
				return invalidForm("%s.options: a group needs subcommands", at)
			}
			for k, sub := range o.Options {
				if sub.Type != 1 {
					return invalidForm("%s.options.%d.type: a group holds only subcommands", at, k)
				}
			}
			if err := checkOptions(at+".options", o.Options, 1); err != nil {
				return err
			}
		default:
			if len(o.Options) > 0 {
				return invalidForm("%s.options: only subcommands and groups have options", at)
			}
		}
		if o.Required && optional {
			return invalidForm("%s.required: required options must be placed before non-required options", at)
		}
		optional = optional || !o.Required
		if len(o.ChannelTypes) > 0 && o.Type != 7 {
			return invalidForm("%s.channel_types: only channel options take channel types", at)
		}
		if (o.MinValue != nil || o.MaxValue != nil) && o.Type != 4 && o.Type != 10 {
			return invalidForm("%s.min_value: only integer and number options take a range", at)
		}
		if o.MaxLength != 0 && (o.Type != 3 || o.MaxLength < 1 || o.MaxLength > 6000) {
			return invalidForm("%s.max_length: only string options, 1 to 6000", at)
		}
		if len(o.Choices) > 25 || (len(o.Choices) > 0 && o.Type != 3 && o.Type != 4 && o.Type != 10) {
			return invalidForm("%s.choices: invalid", at)
		}
		for k, ch := range o.Choices {
			if l := utf8.RuneCountInString(ch.Name); l < 1 || l > 100 {
				return invalidForm("%s.choices.%d.name: must be 1 to 100 characters", at, k)
			}
			if _, isString := ch.Value.(string); isString != (o.Type == 3) {
				return invalidForm("%s.choices.%d.value: wrong type", at, k)
			}
		}
	}
	return nil
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// upload is one file of a multipart body.
type upload struct {
	name        string
	contentType string
	data        []byte
}

// msgPayload is a message create or edit body.
type msgPayload struct {
	Type            int             `json:"type"` // interaction callbacks
	Content         *string         `json:"content"`
	Components      json.RawMessage `json:"components"`
	Attachments     json.RawMessage `json:"attachments"`
	AllowedMentions json.RawMessage `json:"allowed_mentions"`
	Nonce           json.RawMessage `json:"nonce"`
	EnforceNonce    *bool           `json:"enforce_nonce"`
	Reference       *struct {
		MessageID       string `json:"message_id"`
		ChannelID       string `json:"channel_id"`
		FailIfNotExists *bool  `json:"fail_if_not_exists"`
	} `json:"message_reference"`
	Flags    *int            `json:"flags"`
	Embeds   json.RawMessage `json:"embeds"`
	Name     string          `json:"name"` // threads
	CustomID string          `json:"custom_id"`
	Title    string          `json:"title"`
	Data     json.RawMessage `json:"data"` // interaction callbacks
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// readPayload reads a JSON or multipart (payload_json + files[n]) body.
// A body whose parts add up to more than limit (the channel's upload
// limit) is refused as Discord refuses it: 413, code 40005.
func readPayload(r *http.Request, limit int) (*msgPayload, []upload, *apiErr) {
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	body := http.MaxBytesReader(nil, r.Body, 64<<20)
	var raw []byte
	var files []upload
	switch ct {
	case "application/json":
		b, err := io.ReadAll(body)
		if err != nil {
			return nil, nil, errf(413, 40005, "Request entity too large")
		}
		raw = b
	case "multipart/form-data":
		mr := multipart.NewReader(body, params["boundary"])
		total := 0
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, nil, errf(400, 50109, "bad multipart body: %v", err)
			}
			data, err := io.ReadAll(part)
			if err != nil {
				return nil, nil, errf(413, 40005, "Request entity too large")
			}
			name := part.FormName()
			total += len(data)
			switch {
			case name == "payload_json":
				raw = data
			case strings.HasPrefix(name, "files[") && strings.HasSuffix(name, "]"):
				idx, err := strconv.Atoi(name[len("files[") : len(name)-1])
				if err != nil || idx != len(files) {
					return nil, nil, invalidForm("files: expected files[%d], got %s", len(files), name)
				}
				files = append(files, upload{name: part.FileName(), contentType: part.Header.Get("Content-Type"), data: data})
			default:
				return nil, nil, invalidForm("unexpected multipart field %q", name)
			}
		}
		if total > limit {
			return nil, nil, errf(http.StatusRequestEntityTooLarge, 40005, "Request entity too large")
		}
		if len(files) > 10 {
			return nil, nil, invalidForm("files: at most 10")
		}
	case "":
		raw = nil
	default:
		return nil, nil, errf(400, 50109, "unsupported Content-Type %q", ct)
	}
	p := &msgPayload{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, p); err != nil {
			return nil, nil, errf(400, 50109, "The request body contains invalid JSON.")
		}
	}
	return p, files, nil
}

// parseButtons checks components as Discord does and returns the buttons
// and string selects. A row holds 1 to 5 buttons, or one select
// (component type 3: custom_id 1 to 100 characters, 1 to 25 options with
// a label and a value of 1 to 100 characters each, distinct values, a
// description of at most 100 and a placeholder of at most 150
// characters, 0 <= min_values <= max_values <= 25 and no more than the
// options, at most one option marked default when max_values is 1).
func parseButtons(raw json.RawMessage) ([]Button, []Select, *apiErr) {
	if !present(raw) {
		return nil, nil, nil
	}
	type option struct {
		Label       string `json:"label"`
		Value       string `json:"value"`
		Description string `json:"description"`
		Default     bool   `json:"default"`
	}
	var rows []struct {
		Type       int `json:"type"`
		Components []struct {
			Type        int      `json:"type"`
			Style       int      `json:"style"`
			Label       string   `json:"label"`
			CustomID    string   `json:"custom_id"`
			URL         string   `json:"url"`
			Disabled    bool     `json:"disabled"`
			Options     []option `json:"options"`
			Placeholder string   `json:"placeholder"`
			MinValues   *int     `json:"min_values"`
			MaxValues   *int     `json:"max_values"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, nil, invalidForm("components: %v", err)
	}
	if len(rows) > 5 {
		return nil, nil, invalidForm("components: at most 5 rows")
	}
	var out []Button
	var selects []Select
	seen := map[string]bool{}
	for i, row := range rows {
		if row.Type != 1 || len(row.Components) == 0 || len(row.Components) > 5 {
			return nil, nil, invalidForm("components.%d: an action row holds 1 to 5 components", i)
		}
		for j, c := range row.Components {
			where := fmt.Sprintf("components.%d.components.%d", i, j)
			if c.Type == 3 {
				if len(row.Components) != 1 {
					return nil, nil, invalidForm("%s: a select menu fills its action row alone", where)
				}
				if c.CustomID == "" || utf8.RuneCountInString(c.CustomID) > MaxCustomID {
					return nil, nil, invalidForm("%s.custom_id: must be 1 to %d characters", where, MaxCustomID)
				}
				if seen[c.CustomID] {
					return nil, nil, invalidForm("%s.custom_id: duplicate %q", where, c.CustomID)
				}
				seen[c.CustomID] = true
				if len(c.Options) < 1 || len(c.Options) > MaxSelectOptions {
					return nil, nil, invalidForm("%s.options: must be 1 to %d options", where, MaxSelectOptions)
				}
				if utf8.RuneCountInString(c.Placeholder) > 150 {
					return nil, nil, invalidForm("%s.placeholder: at most 150 characters", where)
				}
				minV, maxV := 1, 1
				if c.MinValues != nil {
					minV = *c.MinValues
				}
				if c.MaxValues != nil {
					maxV = *c.MaxValues
				}
				if minV < 0 || minV > 25 || maxV < 1 || maxV > 25 || minV > maxV || maxV > len(c.Options) {
					return nil, nil, invalidForm("%s: min_values %d and max_values %d out of range", where, minV, maxV)
				}
				sel := Select{CustomID: c.CustomID, Placeholder: c.Placeholder, MinValues: minV, MaxValues: maxV, Disabled: c.Disabled}
				values, defaults := map[string]bool{}, 0
				for k, o := range c.Options {
					ow := fmt.Sprintf("%s.options.%d", where, k)
					if n := utf8.RuneCountInString(o.Label); n < 1 || n > 100 {
						return nil, nil, invalidForm("%s.label: must be 1 to 100 characters", ow)
					}
					if n := utf8.RuneCountInString(o.Value); n < 1 || n > 100 {
						return nil, nil, invalidForm("%s.value: must be 1 to 100 characters", ow)
					}
					if utf8.RuneCountInString(o.Description) > 100 {
						return nil, nil, invalidForm("%s.description: at most 100 characters", ow)
					}
					if values[o.Value] {
						return nil, nil, invalidForm("%s.value: duplicate %q", ow, o.Value)
					}
					values[o.Value] = true
					if o.Default {
						defaults++
					}
					sel.Options = append(sel.Options, SelectOption{Label: o.Label, Value: o.Value, Description: o.Description})
				}
				if defaults > maxV {
					return nil, nil, invalidForm("%s.options: more defaults than max_values", where)
				}
				selects = append(selects, sel)
				continue
			}
			if c.Type != 2 {
				return nil, nil, invalidForm("%s.type: only buttons and string selects are supported here", where)
			}
			if len(c.Options) > 0 {
				return nil, nil, invalidForm("%s.options: a button has no options", where)
			}
			if utf8.RuneCountInString(c.Label) > 80 {
				return nil, nil, invalidForm("%s.label: at most 80 characters", where)
			}
			switch {
			case c.Style >= 1 && c.Style <= 4:
				if c.CustomID == "" || utf8.RuneCountInString(c.CustomID) > MaxCustomID {
					return nil, nil, invalidForm("%s.custom_id: must be 1 to %d characters", where, MaxCustomID)
				}
				if seen[c.CustomID] {
					return nil, nil, invalidForm("%s.custom_id: duplicate %q", where, c.CustomID)
				}
				seen[c.CustomID] = true
			case c.Style == 5:
				if c.URL == "" || c.CustomID != "" {
					return nil, nil, invalidForm("%s: a link button has a url and no custom_id", where)
				}
			default:
				return nil, nil, invalidForm("%s.style: invalid", where)
			}
			out = append(out, Button{Label: c.Label, CustomID: c.CustomID, Style: c.Style, Disabled: c.Disabled})
		}
	}
	return out, selects, nil
}

// checkMentions records allowed_mentions: anything but an empty one (parse
// []) is a violation. It reports whether the content pings everyone.
func (s *Server) checkMentions(where string, raw json.RawMessage, content string) bool {
	if !present(raw) {
		s.violation("%s: no allowed_mentions (content %q)", where, content)
		return everyoneRe.MatchString(content)
	}
	var am struct {
		Parse       *[]string `json:"parse"`
		Users       []string  `json:"users"`
		Roles       []string  `json:"roles"`
		RepliedUser bool      `json:"replied_user"`
	}
	if err := json.Unmarshal(raw, &am); err != nil {
		s.violation("%s: allowed_mentions is not an object: %s", where, raw)
		return false
	}
	if am.Parse == nil || len(*am.Parse) > 0 || len(am.Users) > 0 || len(am.Roles) > 0 || am.RepliedUser {
		s.violation("%s: allowed_mentions %s is not empty", where, raw)
	}
	return am.Parse != nil && slices.Contains(*am.Parse, "everyone") && everyoneRe.MatchString(content)
}

// apply writes a create or edit payload (with its files) onto m.
func (s *Server) apply(m *message, p *msgPayload, files []upload, create bool, where string) *apiErr {
	if p.Content != nil && utf8.RuneCountInString(*p.Content) > MaxContent {
		return invalidForm("content: Must be %d or fewer in length.", MaxContent)
	}
	buttons, selects, e := parseButtons(p.Components)
	if e != nil {
		return e
	}
	type meta struct {
		ID          json.RawMessage `json:"id"`
		Filename    string          `json:"filename"`
		Description string          `json:"description"`
	}
	var metas []meta
	if present(p.Attachments) {
		if err := json.Unmarshal(p.Attachments, &metas); err != nil {
			return invalidForm("attachments: %v", err)
		}
	}
	metaFor := func(i int) *meta {
		for k := range metas {
			if strings.Trim(string(metas[k].ID), `"`) == strconv.Itoa(i) {
				return &metas[k]
			}
		}
		return nil
	}
	for k, mt := range metas {
		if utf8.RuneCountInString(mt.Description) > 1024 {
			return invalidForm("attachments: description must be 1024 or fewer in length")
		}
		// An entry names a file of this request (its files[n] index) or
		// an attachment the message has; anything else Discord refuses.
		id := strings.Trim(string(mt.ID), `"`)
		n, err := strconv.Atoi(id)
		existing := slices.ContainsFunc(m.Attachments, func(a Attachment) bool { return a.ID == id })
		if err != nil || !existing && (n < 0 || n >= len(files)) {
			return invalidForm("attachments.%d.id: %s names neither a file of this request (files[0..%d]) nor an attachment of the message", k, id, len(files)-1)
		}
	}
	content := m.Content
	if p.Content != nil {
		content = *p.Content
	}
	if create && strings.TrimSpace(content) == "" && len(files) == 0 && len(buttons) == 0 && m.Flags&FlagLoading == 0 {
		return errf(400, 50006, "Cannot send an empty message")
	}
	if p.Content != nil || create || len(files) > 0 {
		m.MentionEveryone = s.checkMentions(where, p.AllowedMentions, content)
		if m.MentionEveryone {
			s.violation("%s: the message pinged everyone: %q", where, content)
		}
	} else if !present(p.AllowedMentions) && present(p.Components) {
		s.violation("%s: no allowed_mentions", where)
	}
	// Attachments: a listed "attachments" keeps only the existing ones it
	// names; new files are added either way.
	if present(p.Attachments) {
		var keep []Attachment
		for _, a := range m.Attachments {
			for _, mt := range metas {
				if strings.Trim(string(mt.ID), `"`) == a.ID {
					keep = append(keep, a)
				}
			}
		}
		m.Attachments = keep
	}
	for i, f := range files {
		name, desc := f.name, ""
		if mt := metaFor(i); mt != nil {
			if mt.Filename != "" {
				name = mt.Filename
			}
			desc = mt.Description
		}
		ct := f.contentType
		if ct == "" || ct == "application/octet-stream" {
			ct = http.DetectContentType(f.data)
		}
		a := s.storeFile(m.ChannelID, name, ct, desc, f.data, len(f.data))
		m.Attachments = append(m.Attachments, a)
	}
	if p.Content != nil || create {
		if !create && content == m.Content && len(m.History) > 0 {
			// unchanged content: no new history entry
		} else {
			m.History = append(m.History, content)
		}
		m.Content = content
	}
	if present(p.Components) || (create && p.Components != nil) {
		m.Buttons, m.Selects = buttons, selects
		m.components = p.Components
	} else if p.Components != nil && !create {
		// "components": null clears them
		m.Buttons, m.Selects, m.components = nil, nil, nil
	}
	if !create {
		m.Edits++
		m.EditedAt = s.now()
		m.Flags &^= FlagLoading
	}
	return nil
}

// allowEdit applies the per-channel edit limit; with s.mu held. It writes
// the 429 itself and reports false when the edit is refused.
func (s *Server) allowEdit(w http.ResponseWriter, channelID string) bool {
	now := time.Now()
	var recent []time.Time
	for _, t := range s.edits[channelID] {
		if now.Sub(t) < EditWindow {
			recent = append(recent, t)
		}
	}
	s.edits[channelID] = recent
	limited := len(recent) >= EditLimit
	var after time.Duration
	if limited {
		after = EditWindow - now.Sub(recent[0])
	}
	if s.forced > 0 {
		s.forced--
		limited, after = true, s.forcedAfter
	}
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(EditLimit))
	h.Set("X-RateLimit-Bucket", "edit-"+channelID)
	if limited {
		s.rateLimited++
		s.changed()
		secs := math.Max(after.Seconds(), 0.001)
		h.Set("X-RateLimit-Remaining", "0")
		h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(secs, 'f', 3, 64))
		h.Set("X-RateLimit-Scope", "user")
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(secs))))
		writeJSON(w, http.StatusTooManyRequests, map[string]any{"message": "You are being rate limited.", "retry_after": secs, "global": false})
		return false
	}
	recent = append(recent, now)
	s.edits[channelID] = recent
	reset := EditWindow - now.Sub(recent[0])
	h.Set("X-RateLimit-Remaining", strconv.Itoa(EditLimit-len(recent)))
	h.Set("X-RateLimit-Reset-After", strconv.FormatFloat(reset.Seconds(), 'f', 3, 64))
	return true
}

func (s *Server) channelRoute(w http.ResponseWriter, r *http.Request, seg []string) *apiErr {
	s.mu.Lock()
	ch := s.channels[seg[0]]
	s.mu.Unlock()
	if ch == nil {
		return errf(404, 10003, "Unknown Channel")
	}
	m := r.Method
	switch {
	case len(seg) == 1 && m == "GET":
		s.mu.Lock()
		j := s.channelJSON(ch)
		s.mu.Unlock()
		writeJSON(w, 200, j)
	case len(seg) == 2 && seg[1] == "messages" && m == "GET":
		return s.listMessages(w, r, ch)
	case len(seg) == 2 && seg[1] == "messages" && m == "POST":
		return s.postMessage(w, r, ch)
	case len(seg) == 3 && seg[1] == "messages":
		s.mu.Lock()
		msg := s.messages[seg[2]]
		s.mu.Unlock()
		if msg == nil || msg.ChannelID != ch.ID || msg.Deleted || msg.Flags&FlagEphemeral != 0 {
			return errf(404, 10008, "Unknown Message")
		}
		switch m {
		case "GET":
			s.mu.Lock()
			j := s.msgJSON(msg, true, s.contentIntent())
			s.mu.Unlock()
			writeJSON(w, 200, j)
		case "PATCH":
			if msg.Author.ID != s.botID {
				s.mu.Lock()
				s.violation("edit of another user's message %s", msg.ID)
				s.mu.Unlock()
				return errf(403, 50005, "Cannot edit a message authored by another user")
			}
			return s.editMessage(w, r, msg, ch.ID, "PATCH /channels/"+ch.ID+"/messages/"+msg.ID)
		case "DELETE":
			if msg.Author.ID != s.botID {
				return errf(403, 50013, "Missing Permissions")
			}
			s.mu.Lock()
			msg.Deleted = true
			s.changed()
			s.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		default:
			return errf(405, 0, "405: Method Not Allowed")
		}
	case len(seg) == 4 && seg[1] == "messages" && seg[3] == "threads" && m == "POST":
		return s.startThread(w, r, ch, seg[2])
	default:
		return errf(404, 0, "404: Not Found (%s /channels/%s)", m, strings.Join(seg, "/"))
	}
	return nil
}

// contentIntent reports whether the session may read message content.
func (s *Server) contentIntent() bool {
	return s.session != nil && s.session.intents&IntentMessageContent != 0
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request, ch *Channel) *apiErr {
	p, files, e := readPayload(r, s.limitOf(ch.ID))
	if e != nil {
		return e
	}
	s.mu.Lock()
	if s.held(w) {
		s.mu.Unlock()
		return nil
	}
	if e := s.writable(ch); e != nil {
		s.mu.Unlock()
		return e
	}
	nonce, e := parseNonce(p.Nonce)
	if e != nil {
		s.mu.Unlock()
		return e
	}
	if nonce != "" && p.EnforceNonce != nil && *p.EnforceNonce {
		// The same author's message with this nonce in the past few
		// minutes is returned instead of a new one.
		for _, id := range s.history[ch.ID] {
			if old := s.messages[id]; old.nonce == nonce && old.Author.ID == s.botID && s.now().Sub(old.Created) < NonceWindow {
				j := s.msgJSON(old, true, true)
				j["nonce"] = old.nonce
				s.nonceHits++
				s.changed()
				s.mu.Unlock()
				writeJSON(w, 200, j)
				return nil
			}
		}
	}
	msg := &message{Message: Message{ID: s.newID(), ChannelID: ch.ID, GuildID: ch.GuildID,
		Author: *s.users[s.botID], Created: s.now()}, nonce: nonce}
	if p.Flags != nil {
		if *p.Flags&FlagEphemeral != 0 {
			s.mu.Unlock()
			return invalidForm("flags: a channel message cannot be ephemeral")
		}
		msg.Flags = *p.Flags
	}
	if p.Reference != nil {
		ref := s.messages[p.Reference.MessageID]
		switch {
		case ref != nil && !ref.Deleted && ref.ChannelID == ch.ID:
			msg.ReplyTo = ref.ID
			msg.Type = 19
		case p.Reference.FailIfNotExists != nil && !*p.Reference.FailIfNotExists:
		default:
			s.mu.Unlock()
			return invalidForm("message_reference: Unknown message")
		}
	}
	if e := s.apply(msg, p, files, true, "POST /channels/"+ch.ID+"/messages"); e != nil {
		s.mu.Unlock()
		return e
	}
	s.addMessage(msg)
	j := s.msgJSON(msg, true, true)
	if nonce != "" {
		j["nonce"] = nonce
	}
	lost := s.lostAnswers > 0
	if lost {
		s.lostAnswers--
	}
	s.mu.Unlock()
	s.dispatchMessage(msg.ID)
	if lost {
		// Created, but the client hears of a server error: it cannot know.
		writeErr(w, errf(http.StatusInternalServerError, 0, "500: Internal Server Error"))
		return nil
	}
	writeJSON(w, 200, j)
	return nil
}

// parseNonce reads a message nonce: an integer or a string of at most 25
// characters.
func parseNonce(raw json.RawMessage) (string, *apiErr) {
	if !present(raw) {
		return "", nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err == nil {
		if utf8.RuneCountInString(str) > 25 {
			return "", invalidForm("nonce: Must be 25 or fewer in length.")
		}
		return str, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", invalidForm("nonce: must be an integer or a string")
	}
	return strconv.FormatInt(n, 10), nil
}

// addMessage stores a new message in its channel's history; with s.mu held.
func (s *Server) addMessage(m *message) {
	s.messages[m.ID] = m
	s.history[m.ChannelID] = append(s.history[m.ChannelID], m.ID)
	s.changed()
}

func (s *Server) editMessage(w http.ResponseWriter, r *http.Request, msg *message, channelID, where string) *apiErr {
	p, files, e := readPayload(r, s.limitOf(channelID))
	if e != nil {
		return e
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.channels[channelID] == nil {
		return errf(404, 10003, "Unknown Channel")
	}
	if s.held(w) {
		return nil
	}
	if e := s.writable(s.channels[channelID]); e != nil {
		return e
	}
	if !s.allowEdit(w, channelID) {
		return nil
	}
	if e := s.apply(msg, p, files, false, where); e != nil {
		return e
	}
	s.changed()
	writeJSON(w, 200, s.msgJSON(msg, true, true))
	return nil
}

func (s *Server) startThread(w http.ResponseWriter, r *http.Request, ch *Channel, msgID string) *apiErr {
	p, _, e := readPayload(r, MaxUploadBytes)
	if e != nil {
		return e
	}
	s.mu.Lock()
	if ch.NoThreads {
		s.mu.Unlock()
		return errf(403, 50013, "Missing Permissions")
	}
	msg := s.messages[msgID]
	if msg == nil || msg.ChannelID != ch.ID || msg.Deleted {
		s.mu.Unlock()
		return errf(404, 10008, "Unknown Message")
	}
	if ch.Type != ChannelText && ch.Type != ChannelNews {
		s.mu.Unlock()
		return errf(400, 50024, "Cannot execute action on this channel type")
	}
	if msg.Thread != "" {
		s.mu.Unlock()
		return errf(400, 160004, "A thread has already been created for this message")
	}
	if l := utf8.RuneCountInString(p.Name); l < 1 || l > MaxThreadName {
		s.mu.Unlock()
		return invalidForm("name: Must be between 1 and %d in length.", MaxThreadName)
	}
	typ := ChannelPublicThread
	if ch.Type == ChannelNews {
		typ = ChannelNewsThread
	}
	th := &Channel{ID: msg.ID, GuildID: ch.GuildID, ParentID: ch.ID, Name: p.Name, Type: typ, OwnerID: s.botID}
	s.channels[th.ID] = th
	msg.Thread = th.ID
	starter := &message{Message: Message{ID: s.newID(), ChannelID: th.ID, GuildID: th.GuildID, Author: msg.Author,
		Type: 21, ReplyTo: msg.ID, Created: s.now(), History: []string{""}}, refChannel: ch.ID}
	s.addMessage(starter)
	j := s.channelJSON(th)
	s.mu.Unlock()
	s.dispatchMessage(starter.ID)
	writeJSON(w, 201, j)
	return nil
}

// webhook serves /webhooks/{app}/{token}[/messages/{id}].
func (s *Server) webhook(w http.ResponseWriter, r *http.Request, seg []string) *apiErr {
	app, token := seg[0], seg[1]
	s.mu.Lock()
	in := s.byToken[token]
	if in == nil || app != s.appID {
		s.mu.Unlock()
		return errf(404, 10015, "Unknown Webhook")
	}
	if s.now().Sub(in.created) > TokenLifetime {
		s.expired++
		s.changed()
		s.mu.Unlock()
		return errf(401, 50027, "Invalid Webhook Token")
	}
	if in.Ack == 0 || in.Ack == 9 && len(seg) == 2 {
		s.mu.Unlock()
		return errf(404, 10015, "Unknown Webhook")
	}
	ch := s.channels[in.ChannelID]
	s.mu.Unlock()
	switch {
	case len(seg) == 2 && r.Method == "POST":
		return s.followup(w, r, in, ch)
	case len(seg) == 4 && seg[2] == "messages":
		s.mu.Lock()
		id := seg[3]
		if id == "@original" {
			id = in.Original
		} else if !slices.Contains(in.Followups, id) {
			id = ""
		}
		msg := s.messages[id]
		s.mu.Unlock()
		if msg == nil || msg.Deleted {
			return errf(404, 10008, "Unknown Message")
		}
		switch r.Method {
		case "GET":
			s.mu.Lock()
			j := s.msgJSON(msg, true, true)
			s.mu.Unlock()
			writeJSON(w, 200, j)
		case "PATCH":
			return s.editMessage(w, r, msg, msg.ChannelID, "PATCH /webhooks/.../messages/"+seg[3])
		case "DELETE":
			s.mu.Lock()
			msg.Deleted = true
			s.changed()
			s.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		default:
			return errf(405, 0, "405: Method Not Allowed")
		}
	default:
		return errf(404, 0, "404: Not Found")
	}
	return nil
}

func (s *Server) followup(w http.ResponseWriter, r *http.Request, in *interaction, ch *Channel) *apiErr {
	p, files, e := readPayload(r, s.limitOf(ch.ID))
	if e != nil {
		return e
	}
	s.mu.Lock()
	if s.held(w) {
		s.mu.Unlock()
		return nil
	}
	msg := &message{Message: Message{ID: s.newID(), ChannelID: ch.ID, GuildID: ch.GuildID, Author: *s.users[s.botID],
		Interaction: in.ID, Created: s.now()}}
	if p.Flags != nil {
		msg.Flags = *p.Flags &^ FlagLoading
	}
	if e := s.apply(msg, p, files, true, "POST /webhooks/... (follow-up)"); e != nil {
		s.mu.Unlock()
		return e
	}
	s.addMessage(msg)
	in.Followups = append(in.Followups, msg.ID)
	j := s.msgJSON(msg, true, true)
	s.mu.Unlock()
	if msg.Flags&FlagEphemeral == 0 {
		s.dispatchMessage(msg.ID)
	}
	if r.URL.Query().Get("wait") == "true" {
		writeJSON(w, 200, j)
	} else {
		w.WriteHeader(http.StatusNoContent)
	}
	return nil
}

// callback answers POST /interactions/{id}/{token}/callback.
func (s *Server) callback(w http.ResponseWriter, r *http.Request, id, token string) *apiErr {
	received := time.Now() // the acknowledgement's arrival, for Interaction.Answered
	limit := MaxUploadBytes
	s.mu.Lock()
	if in := s.interactions[id]; in != nil {
		limit = s.uploadLimit(s.channels[in.ChannelID])
	}
	s.mu.Unlock()
	p, files, e := readPayload(r, limit)
	if e != nil {
		return e
	}
	if e := s.acknowledge(id, token, p, files, received); e != nil {
		return e
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// acknowledge applies an interaction's initial response p (from the
// callback endpoint, or the body of the answer to an interaction sent to
// the Interactions Endpoint URL), as Discord does.
func (s *Server) acknowledge(id, token string, p *msgPayload, files []upload, received time.Time) *apiErr {
	s.mu.Lock()
	in := s.interactions[id]
	if in == nil || in.Token != token {
		s.mu.Unlock()
		return errf(404, 10062, "Unknown interaction")
	}
	if in.deadline && in.Ack == 0 {
		s.violation("interaction %s answered after %s", id, InteractionDeadline)
		s.changed()
		s.mu.Unlock()
		return errf(404, 10062, "Unknown interaction")
	}
	if in.Ack != 0 {
		s.mu.Unlock()
		return errf(400, 40060, "Interaction has already been acknowledged.")
	}
	component := in.Type == 3 || in.Type == 5 && in.Message != ""
	data := &msgPayload{}
	if present(p.Data) {
		if err := json.Unmarshal(p.Data, data); err != nil {
			s.mu.Unlock()
			return invalidForm("data: %v", err)
		}
	}
	ch := s.channels[in.ChannelID]
	newMsg := func(flags int) *message {
		return &message{Message: Message{ID: s.newID(), ChannelID: ch.ID, GuildID: ch.GuildID, Author: *s.users[s.botID],
			Interaction: in.ID, Flags: flags, Created: s.now()}}
	}
	flags := 0
	if data.Flags != nil {
		flags = *data.Flags & FlagEphemeral
	}
	var created *message
	switch p.Type {
	case 4:
		m := newMsg(flags)
		if e := s.apply(m, data, files, true, "interaction callback type 4"); e != nil {
			s.mu.Unlock()
			return e
		}
		created = m
	case 5:
		m := newMsg(flags | FlagLoading)
		m.History = []string{""}
		created = m
	case 6, 7:
		if !component {
			s.mu.Unlock()
			return errf(400, 40043, "Interaction callback type %d is only for components", p.Type)
		}
		in.Original = in.Message
		if p.Type == 7 {
			msg := s.messages[in.Message]
			if e := s.apply(msg, data, files, false, "interaction callback type 7"); e != nil {
				s.mu.Unlock()
				return e
			}
		}
	case 9:
		if in.Type == 5 {
			s.mu.Unlock()
			return errf(400, 50035, "Invalid Form Body: a modal submit cannot open a modal")
		}
		modal, e := parseModal(data)
		if e != nil {
			s.mu.Unlock()
			return e
		}
		in.Modal = modal
		in.modals[modal.CustomID] = modal
	default:
		s.mu.Unlock()
		return invalidForm("type: callback type %d is not valid here", p.Type)
	}
	in.Ack = p.Type
	in.Answered = received
	if created != nil {
		s.addMessage(created)
		in.Original = created.ID
	}
	s.changed()
	s.mu.Unlock()
	if created != nil && created.Flags&FlagEphemeral == 0 {
		s.dispatchMessage(created.ID)
	}
	return nil
}

func parseModal(p *msgPayload) (*Modal, *apiErr) {
	if p.CustomID == "" || utf8.RuneCountInString(p.CustomID) > MaxCustomID {
		return nil, invalidForm("data.custom_id: must be 1 to %d characters", MaxCustomID)
	}
	if l := utf8.RuneCountInString(p.Title); l < 1 || l > 45 {
		return nil, invalidForm("data.title: must be 1 to 45 characters")
	}
	var rows []struct {
		Type       int `json:"type"`
		Components []struct {
			Type        int     `json:"type"`
			CustomID    string  `json:"custom_id"`
			Label       string  `json:"label"`
			Style       int     `json:"style"`
			MinLength   *int    `json:"min_length"`
			MaxLength   int     `json:"max_length"`
			Value       *string `json:"value"`
			Placeholder string  `json:"placeholder"`
			Required    *bool   `json:"required"`
		} `json:"components"`
	}
	if err := json.Unmarshal(p.Components, &rows); err != nil || len(rows) < 1 || len(rows) > 5 {
		return nil, invalidForm("data.components: 1 to 5 action rows")
	}
	m := &Modal{CustomID: p.CustomID, Title: p.Title}
	for i, row := range rows {
		if row.Type != 1 || len(row.Components) != 1 {
			return nil, invalidForm("data.components.%d: one text input per row", i)
		}
		c := row.Components[0]
		if c.Type != 4 || c.CustomID == "" || c.Style < 1 || c.Style > 2 {
			return nil, invalidForm("data.components.%d.components.0: not a valid text input", i)
		}
		if l := utf8.RuneCountInString(c.Label); l < 1 || l > 45 {
			return nil, invalidForm("data.components.%d.components.0.label: must be 1 to 45 characters", i)
		}
		if c.MaxLength > 4000 || c.MaxLength < 0 {
			return nil, invalidForm("data.components.%d.components.0.max_length: 1 to 4000", i)
		}
		if c.MinLength != nil && (*c.MinLength < 0 || *c.MinLength > 4000) {
			return nil, invalidForm("data.components.%d.components.0.min_length: 0 to 4000", i)
		}
		if utf8.RuneCountInString(c.Placeholder) > 100 {
			return nil, invalidForm("data.components.%d.components.0.placeholder: at most 100 characters", i)
		}
		if c.Value != nil {
			// A pre-filled value is held to the input's own bounds.
			n := utf8.RuneCountInString(*c.Value)
			max := 4000
			if c.MaxLength > 0 {
				max = c.MaxLength
			}
			if n > max || c.MinLength != nil && n < *c.MinLength {
				return nil, invalidForm("data.components.%d.components.0.value: length %d outside the input's bounds (at most %d)", i, n, max)
			}
			if m.Values == nil {
				m.Values = map[string]string{}
			}
			m.Values[c.CustomID] = *c.Value
		}
		m.Inputs = append(m.Inputs, c.CustomID)
		if c.Required != nil && !*c.Required {
			m.Optional = append(m.Optional, c.CustomID)
		}
	}
	return m, nil
}

// JSON shapes, all with s.mu held.

func (s *Server) userJSON(u *User) map[string]any {
	return map[string]any{"id": u.ID, "username": u.Name, "global_name": u.Name, "discriminator": "0", "avatar": nil, "bot": u.Bot}
}

func (s *Server) channelJSON(c *Channel) map[string]any {
	j := map[string]any{"id": c.ID, "type": c.Type, "name": c.Name}
	if c.GuildID != "" {
		j["guild_id"] = c.GuildID
	}
	if c.ParentID != "" {
		j["parent_id"] = c.ParentID
		j["owner_id"] = c.OwnerID
		j["thread_metadata"] = map[string]any{"archived": c.Archived, "auto_archive_duration": 1440, "locked": c.Locked,
			"archive_timestamp": nil}
	}
	if c.Type == ChannelDM {
		j["recipients"] = []any{s.userJSON(s.user(c.Recipient))}
	}
	return j
}

func (s *Server) attachmentJSON(a Attachment) map[string]any {
	j := map[string]any{"id": a.ID, "filename": a.Filename, "size": a.Size, "url": a.URL, "proxy_url": a.URL,
		"content_type": a.ContentType}
	if a.Description != "" {
		j["description"] = a.Description
	}
	return j
}

// msgJSON is a message as Discord sends it. Without the content intent a
// person's guild message that does not mention the bot shows no content.
func (s *Server) msgJSON(m *message, withRef, content bool) map[string]any {
	pinged := s.replyPinged(m)
	visible := content || m.GuildID == "" || m.Author.ID == s.botID || mentions(m.Content, s.botID) || pinged == s.botID
	text := m.Content
	atts := []any{}
	for _, a := range m.Attachments {
		atts = append(atts, s.attachmentJSON(a))
	}
	components := json.RawMessage("[]")
	if present(m.components) {
		components = m.components
	}
	if !visible {
		text, atts, components = "", []any{}, json.RawMessage("[]")
	}
	var mentioned []any
	ids := mentionIDs(m.Content)
	if pinged != "" && !slices.Contains(ids, pinged) {
		ids = append(ids, pinged) // a reply ping: the replied-to author is mentioned
	}
	for _, id := range ids {
		mentioned = append(mentioned, s.userJSON(s.user(id)))
	}
	if mentioned == nil {
		mentioned = []any{}
	}
	var edited any
	if m.Edits > 0 {
		edited = m.EditedAt.Format(time.RFC3339Nano)
	}
	j := map[string]any{
		"id": m.ID, "channel_id": m.ChannelID, "author": s.userJSON(&m.Author), "content": text,
		"timestamp": m.Created.Format(time.RFC3339Nano), "edited_timestamp": edited, "tts": false,
		"mention_everyone": m.MentionEveryone, "mentions": mentioned, "mention_roles": []any{},
		"attachments": atts, "embeds": []any{}, "components": components, "pinned": false,
		"type": m.Type, "flags": m.Flags,
	}
	if m.GuildID != "" {
		j["guild_id"] = m.GuildID
	}
	if m.Interaction != "" {
		j["webhook_id"] = s.appID
		j["application_id"] = s.appID
	}
	if m.ReplyTo != "" {
		refCh := m.ChannelID
		if m.refChannel != "" {
			refCh = m.refChannel
		}
		j["message_reference"] = map[string]any{"message_id": m.ReplyTo, "channel_id": refCh, "guild_id": nilIfEmpty(m.GuildID)}
		if withRef {
			if ref := s.messages[m.ReplyTo]; ref != nil && !ref.Deleted {
				j["referenced_message"] = s.msgJSON(ref, false, content)
			} else {
				j["referenced_message"] = nil
			}
		}
	}
	if m.Thread != "" {
		if th := s.channels[m.Thread]; th != nil {
			j["thread"] = s.channelJSON(th)
		}
	}
	return j
}

// replyPinged is the author a reply pings (Discord's default for a
// reply), or ""; with s.mu held.
func (s *Server) replyPinged(m *message) string {
	if !m.replyPing || m.ReplyTo == "" {
		return ""
	}
	if ref := s.messages[m.ReplyTo]; ref != nil && ref.Author.ID != m.Author.ID {
		return ref.Author.ID
	}
	return ""
}

func mentionIDs(content string) []string {
	var ids []string
	for _, m := range mentionRe.FindAllStringSubmatch(content, -1) {
		if !slices.Contains(ids, m[1]) {
			ids = append(ids, m[1])
		}
	}
	return ids
}

func mentions(content, id string) bool { return slices.Contains(mentionIDs(content), id) }

// dispatchMessage sends MESSAGE_CREATE for a stored message to the bot,
// as Discord does for every message it can see, its own included.
func (s *Server) dispatchMessage(id string) {
	s.mu.Lock()
	m := s.messages[id]
	s.mu.Unlock()
	need := IntentGuildMessages
	if m.GuildID == "" {
		need = IntentDirectMessages
	}
	_ = s.dispatch("MESSAGE_CREATE", m.GuildID, need, func(intents int) any {
		j := s.msgJSON(m, true, intents&IntentMessageContent != 0)
		if m.nonce != "" {
			j["nonce"] = m.nonce // only the create's answer and its event carry it
		}
		return j
	})
}

// listMessages serves GET /channels/{channel}/messages as Discord
// documents it: at most one of around, before and after (message ids),
// limit 1 to 100 (default 50), newest message first. With after, the
// messages right after that id are returned (the oldest of them, newest
// first); with before or none, the newest before it. Messages are read
// as the session's intents allow; message nonces are not returned (only
// a create's answer and its MESSAGE_CREATE carry one).
func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, ch *Channel) *apiErr {
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		l, err := strconv.Atoi(v)
		if err != nil || l < 1 || l > 100 {
			return invalidForm("limit: int value should be less than or equal to 100 and greater than or equal to 1.")
		}
		limit = l
	}
	var anchor string
	var mode string
	for _, k := range []string{"around", "before", "after"} {
		if v := q.Get(k); v != "" {
			if mode != "" {
				return invalidForm("%s: only one of around, before and after may be set", k)
			}
			if _, err := strconv.ParseUint(v, 10, 64); err != nil {
				return invalidForm("%s: Value \"%s\" is not snowflake.", k, v)
			}
			mode, anchor = k, v
		}
	}
	if mode == "around" {
		return errf(http.StatusNotImplemented, 0, "discordtest: around is not implemented")
	}
	a, _ := strconv.ParseUint(anchor, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	var picked []*message
	ids := s.history[ch.ID]
	visible := func(msg *message) bool { return !msg.Deleted && msg.Flags&FlagEphemeral == 0 }
	if mode == "after" {
		for _, id := range ids { // oldest first
			n, _ := strconv.ParseUint(id, 10, 64)
			if msg := s.messages[id]; n > a && visible(msg) && len(picked) < limit {
				picked = append(picked, msg)
			}
		}
		slices.Reverse(picked)
	} else {
		for i := len(ids) - 1; i >= 0 && len(picked) < limit; i-- {
			n, _ := strconv.ParseUint(ids[i], 10, 64)
			if msg := s.messages[ids[i]]; (mode == "" || n < a) && visible(msg) {
				picked = append(picked, msg)
			}
		}
	}
	out := []any{}
	for _, msg := range picked {
		out = append(out, s.msgJSON(msg, true, s.contentIntent()))
	}
	writeJSON(w, 200, out)
	return nil
}
