package slackfake

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Block Kit limits, from Slack's reference (docs.slack.dev: reference/
// block-kit/blocks, block-elements, composition-objects, views).
const (
	maxModalBlocks    = 100
	maxBlockID        = 255
	maxActionID       = 255
	maxLabel          = 2000
	maxHint           = 2000
	maxPlaceholder    = 150
	maxButtonText     = 24 // a view's submit and close
	maxSelectOptions  = 100
	maxOptionText     = 75
	maxOptionValue    = 150
	maxTextInputChars = 3000
	maxSectionText    = 3000
	maxHeaderText     = 150
)

// element is a block element as the fake reads it.
type element struct {
	Type             string          `json:"type"`
	ActionID         string          `json:"action_id"`
	Placeholder      json.RawMessage `json:"placeholder"`
	InitialValue     *string         `json:"initial_value"`
	MinLength        *int            `json:"min_length"`
	MaxLength        *int            `json:"max_length"`
	IsDecimalAllowed *bool           `json:"is_decimal_allowed"`
	MinValue         *string         `json:"min_value"`
	MaxValue         *string         `json:"max_value"`
	Options          []option        `json:"options"`
	InitialOption    *option         `json:"initial_option"`
	InitialChannels  []string        `json:"initial_channels"`
	MaxSelectedItems *int            `json:"max_selected_items"`
}

type option struct {
	Text  textObject `json:"text"`
	Value string     `json:"value"`
}

type textObject struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// block is a layout block as the fake reads it.
type block struct {
	Type     string          `json:"type"`
	BlockID  string          `json:"block_id"`
	Label    json.RawMessage `json:"label"`
	Hint     json.RawMessage `json:"hint"`
	Optional bool            `json:"optional"`
	Element  *element        `json:"element"`
	Text     json.RawMessage `json:"text"`
}

// Limits of a message's actions blocks.
const (
	maxActionElements = 25
	maxButtonLabel    = 75
	maxButtonValue    = 2000
)

// checkMessageBlocks checks the actions blocks of a message as
// chat.postMessage and files.completeUploadExternal do: 1 to 25
// elements, action ids of 1 to 255 characters unique in their block,
// buttons with a plain_text label of at most 75 characters and a value
// of at most 2000, and static selects checked as in a modal (1 to 100
// options, option text 1 to 75 characters, value 1 to 150, placeholder
// at most 150). Other blocks are only required to have a type.
func checkMessageBlocks(raw json.RawMessage) error {
	var blocks []struct {
		Type     string            `json:"type"`
		BlockID  string            `json:"block_id"`
		Elements []json.RawMessage `json:"elements"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return fmt.Errorf("blocks: %v", err)
	}
	for i, b := range blocks {
		if b.Type != "actions" {
			continue
		}
		where := fmt.Sprintf("blocks[%d]", i)
		if len(b.BlockID) > maxBlockID {
			return fmt.Errorf("%s.block_id: longer than %d", where, maxBlockID)
		}
		if len(b.Elements) < 1 || len(b.Elements) > maxActionElements {
			return fmt.Errorf("%s.elements: want 1 to %d", where, maxActionElements)
		}
		ids := map[string]bool{}
		for j, rawEl := range b.Elements {
			ew := fmt.Sprintf("%s.elements[%d]", where, j)
			var e element
			var btn struct {
				Text  json.RawMessage `json:"text"`
				Value string          `json:"value"`
			}
			if json.Unmarshal(rawEl, &e) != nil || json.Unmarshal(rawEl, &btn) != nil {
				return fmt.Errorf("%s: not an element", ew)
			}
			if e.ActionID == "" || len(e.ActionID) > maxActionID {
				return fmt.Errorf("%s.action_id: want 1 to %d characters", ew, maxActionID)
			}
			if ids[e.ActionID] {
				return fmt.Errorf("%s.action_id: %q used twice in the block", ew, e.ActionID)
			}
			ids[e.ActionID] = true
			switch e.Type {
			case "button":
				if err := checkText(ew+".text", btn.Text, true, maxButtonLabel); err != nil {
					return err
				}
				if len(btn.Value) > maxButtonValue {
					return fmt.Errorf("%s.value: longer than %d", ew, maxButtonValue)
				}
			case "static_select":
				if err := checkElement(ew, &e); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%s.type: %q is not an element the fake knows in a message", ew, e.Type)
			}
		}
	}
	return nil
}

// checkText checks a text object: its type, and 1 to max characters.
func checkText(what string, raw json.RawMessage, plainOnly bool, max int) error {
	var t textObject
	if err := json.Unmarshal(raw, &t); err != nil {
		return fmt.Errorf("%s: not a text object: %s", what, raw)
	}
	if t.Type != "plain_text" && (plainOnly || t.Type != "mrkdwn") {
		return fmt.Errorf("%s: type %q, want plain_text", what, t.Type)
	}
	if n := utf8.RuneCountInString(t.Text); n < 1 || n > max {
		return fmt.Errorf("%s: %d characters, want 1 to %d", what, n, max)
	}
	return nil
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// checkModal checks a modal's blocks, and its submit and close buttons,
// as views.open does: unknown block or element types, missing labels,
// texts past their limits, duplicate block ids, initial values that are
// not among the options or outside the range, and input blocks without a
// submit button are refused.
func checkModal(raw, submit, close json.RawMessage) error {
	var blocks []block
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return fmt.Errorf("blocks: %v", err)
	}
	if len(blocks) > maxModalBlocks {
		return fmt.Errorf("blocks: %d, at most %d", len(blocks), maxModalBlocks)
	}
	for what, b := range map[string]json.RawMessage{"submit": submit, "close": close} {
		if present(b) {
			if err := checkText(what, b, true, maxButtonText); err != nil {
				return err
			}
		}
	}
	ids := map[string]bool{}
	inputs := false
	for i, b := range blocks {
		where := fmt.Sprintf("blocks[%d]", i)
		if len(b.BlockID) > maxBlockID {
			return fmt.Errorf("%s.block_id: longer than %d", where, maxBlockID)
		}
		if b.BlockID != "" {
			if ids[b.BlockID] {
				return fmt.Errorf("%s.block_id: %q used twice", where, b.BlockID)
			}
			ids[b.BlockID] = true
		}
		switch b.Type {
		case "input":
			inputs = true
			if err := checkText(where+".label", b.Label, true, maxLabel); err != nil {
				return err
			}
			if present(b.Hint) {
				if err := checkText(where+".hint", b.Hint, true, maxHint); err != nil {
					return err
				}
			}
			if b.Element == nil {
				return fmt.Errorf("%s.element: missing", where)
			}
			if err := checkElement(where+".element", b.Element); err != nil {
				return err
			}
		case "section":
			if err := checkText(where+".text", b.Text, false, maxSectionText); err != nil {
				return err
			}
		case "header":
			if err := checkText(where+".text", b.Text, true, maxHeaderText); err != nil {
				return err
			}
		case "divider", "context":
		default:
			return fmt.Errorf("%s.type: %q is not a block the fake knows in a modal", where, b.Type)
		}
	}
	if inputs && !present(submit) {
		return errors.New("submit: required when the view has input blocks")
	}
	return nil
}

// checkElement checks an input block's element.
func checkElement(where string, e *element) error {
	if e.ActionID == "" || len(e.ActionID) > maxActionID {
		return fmt.Errorf("%s.action_id: want 1 to %d characters", where, maxActionID)
	}
	if present(e.Placeholder) {
		if err := checkText(where+".placeholder", e.Placeholder, true, maxPlaceholder); err != nil {
			return err
		}
	}
	switch e.Type {
	case "plain_text_input":
		if e.MaxLength != nil && (*e.MaxLength < 1 || *e.MaxLength > maxTextInputChars) {
			return fmt.Errorf("%s.max_length: want 1 to %d", where, maxTextInputChars)
		}
		if e.MinLength != nil && (*e.MinLength < 0 || *e.MinLength > maxTextInputChars) {
			return fmt.Errorf("%s.min_length: want 0 to %d", where, maxTextInputChars)
		}
		if e.InitialValue != nil {
			// A pre-filled value is held to the input's own bounds.
			limit := maxTextInputChars
			if e.MaxLength != nil {
				limit = *e.MaxLength
			}
			if n := utf8.RuneCountInString(*e.InitialValue); n > limit {
				return fmt.Errorf("%s.initial_value: %d characters, over max_length %d", where, n, limit)
			}
		}
	case "number_input":
		if e.IsDecimalAllowed == nil {
			return fmt.Errorf("%s.is_decimal_allowed: required", where)
		}
		lo, hi := math.Inf(-1), math.Inf(1)
		var err error
		if e.MinValue != nil {
			if lo, err = parseNumber(*e.MinValue, *e.IsDecimalAllowed); err != nil {
				return fmt.Errorf("%s.min_value: %v", where, err)
			}
		}
		if e.MaxValue != nil {
			if hi, err = parseNumber(*e.MaxValue, *e.IsDecimalAllowed); err != nil {
				return fmt.Errorf("%s.max_value: %v", where, err)
			}
		}
		if lo > hi {
			return fmt.Errorf("%s: min_value above max_value", where)
		}
		if e.InitialValue != nil {
			v, err := parseNumber(*e.InitialValue, *e.IsDecimalAllowed)
			if err != nil || v < lo || v > hi {
				return fmt.Errorf("%s.initial_value: %q is not a number in range", where, *e.InitialValue)
			}
		}
	case "static_select":
		if len(e.Options) < 1 || len(e.Options) > maxSelectOptions {
			return fmt.Errorf("%s.options: want 1 to %d", where, maxSelectOptions)
		}
		for k, o := range e.Options {
			if o.Text.Type != "plain_text" {
				return fmt.Errorf("%s.options[%d].text: want plain_text", where, k)
			}
			if n := utf8.RuneCountInString(o.Text.Text); n < 1 || n > maxOptionText {
				return fmt.Errorf("%s.options[%d].text: want 1 to %d characters", where, k, maxOptionText)
			}
			if n := len(o.Value); n < 1 || n > maxOptionValue {
				return fmt.Errorf("%s.options[%d].value: want 1 to %d characters", where, k, maxOptionValue)
			}
		}
		if e.InitialOption != nil && !slices.Contains(e.Options, *e.InitialOption) {
			return fmt.Errorf("%s.initial_option: not one of the options", where)
		}
	case "multi_channels_select":
		if e.MaxSelectedItems != nil && *e.MaxSelectedItems < 1 {
			return fmt.Errorf("%s.max_selected_items: at least 1", where)
		}
		if e.MaxSelectedItems != nil && len(e.InitialChannels) > *e.MaxSelectedItems {
			return fmt.Errorf("%s.initial_channels: more than max_selected_items", where)
		}
	default:
		return fmt.Errorf("%s.type: %q is not an input element the fake knows", where, e.Type)
	}
	return nil
}

func parseNumber(s string, decimal bool) (float64, error) {
	if !decimal {
		n, err := strconv.ParseInt(s, 10, 64)
		return float64(n), err
	}
	f, err := strconv.ParseFloat(s, 64)
	if err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
		err = errors.New("not a number")
	}
	return f, err
}

// SubmitValues submits a modal the bot opened, as a person fills it in:
// values maps block id → action id → what they chose (a string for text
// and number inputs and for a static select's option value, []string for
// channel multi-selects). An input left out keeps its initial value.
// Like Slack's client, it refuses a required input left empty, a number
// that is not one or is out of range, and an option or channel that is
// not offered; the view state carries each element as Slack sends it.
func (s *Server) SubmitValues(v View, values map[string]map[string]any) (*Envelope, error) {
	var blocks []block
	if err := json.Unmarshal(v.Blocks, &blocks); err != nil {
		return nil, fmt.Errorf("slackfake: view blocks: %w", err)
	}
	for bid, acts := range values {
		i := slices.IndexFunc(blocks, func(b block) bool { return b.BlockID == bid && b.Type == "input" })
		if i < 0 {
			return nil, fmt.Errorf("slackfake: the view has no input block %q", bid)
		}
		for act := range acts {
			if blocks[i].Element.ActionID != act {
				return nil, fmt.Errorf("slackfake: block %q has no element %q", bid, act)
			}
		}
	}
	s.mu.Lock()
	state := map[string]any{}
	for _, b := range blocks {
		if b.Type != "input" {
			continue
		}
		e := b.Element
		given, set := values[b.BlockID][e.ActionID]
		st, empty, err := s.elementState(e, given, set)
		if err != nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("slackfake: block %q: %w", b.BlockID, err)
		}
		if empty && !b.Optional {
			s.mu.Unlock()
			return nil, fmt.Errorf("slackfake: block %q is required", b.BlockID)
		}
		state[b.BlockID] = map[string]any{e.ActionID: st}
	}
	p := s.interactionBase("view_submission", v.User, "")
	p["view"] = map[string]any{"id": v.ID, "team_id": s.opts.TeamID, "type": "modal", "blocks": v.Blocks,
		"private_metadata": v.PrivateMetadata, "callback_id": v.CallbackID, "state": map[string]any{"values": state},
		"hash": "1712345678.abcdef", "title": map[string]any{"type": "plain_text", "text": v.Title},
		"clear_on_close": false, "notify_on_close": false, "root_view_id": v.ID, "previous_view_id": nil,
		"app_id": s.opts.AppID, "external_id": "", "app_installed_team_id": s.opts.TeamID, "bot_id": s.opts.BotID}
	p["response_urls"] = []any{}
	s.mu.Unlock()
	return s.send("interactive", p), nil
}

// elementState is one element's entry in view.state.values; with s.mu held.
func (s *Server) elementState(e *element, given any, set bool) (st map[string]any, empty bool, err error) {
	switch e.Type {
	case "plain_text_input", "number_input":
		var val *string
		if set {
			str, ok := given.(string)
			if !ok {
				return nil, false, fmt.Errorf("%s takes a string", e.Type)
			}
			if str != "" {
				val = &str
			}
		} else {
			val = e.InitialValue
		}
		if val != nil && e.Type == "number_input" {
			f, err := parseNumber(*val, *e.IsDecimalAllowed)
			if err != nil {
				return nil, false, fmt.Errorf("%q is not a valid number here", *val)
			}
			if e.MinValue != nil {
				if lo, _ := parseNumber(*e.MinValue, *e.IsDecimalAllowed); f < lo {
					return nil, false, fmt.Errorf("%q is below %s", *val, *e.MinValue)
				}
			}
			if e.MaxValue != nil {
				if hi, _ := parseNumber(*e.MaxValue, *e.IsDecimalAllowed); f > hi {
					return nil, false, fmt.Errorf("%q is above %s", *val, *e.MaxValue)
				}
			}
		}
		if val != nil && e.MaxLength != nil && utf8.RuneCountInString(*val) > *e.MaxLength {
			return nil, false, fmt.Errorf("longer than %d", *e.MaxLength)
		}
		st = map[string]any{"type": e.Type, "value": nil}
		if val != nil {
			st["value"] = *val
		}
		return st, val == nil, nil
	case "static_select":
		sel := e.InitialOption
		if set {
			str, ok := given.(string)
			if !ok {
				return nil, false, errors.New("static_select takes an option value")
			}
			i := slices.IndexFunc(e.Options, func(o option) bool { return o.Value == str })
			if i < 0 {
				return nil, false, fmt.Errorf("%q is not one of the options", str)
			}
			sel = &e.Options[i]
		}
		st = map[string]any{"type": e.Type, "selected_option": nil}
		if sel != nil {
			st["selected_option"] = map[string]any{"text": map[string]any{"type": "plain_text", "text": sel.Text.Text, "emoji": true}, "value": sel.Value}
		}
		return st, sel == nil, nil
	case "multi_channels_select":
		chs := e.InitialChannels
		if set {
			list, ok := given.([]string)
			if !ok {
				return nil, false, errors.New("multi_channels_select takes []string")
			}
			chs = list
		}
		for _, id := range chs {
			if c := s.channels[id]; c == nil || c.kind == "im" {
				return nil, false, fmt.Errorf("%q is not a channel of the workspace", id)
			}
		}
		if e.MaxSelectedItems != nil && len(chs) > *e.MaxSelectedItems {
			return nil, false, fmt.Errorf("more than %d channels", *e.MaxSelectedItems)
		}
		if chs == nil {
			chs = []string{}
		}
		return map[string]any{"type": e.Type, "selected_channels": chs}, len(chs) == 0, nil
	}
	return nil, false, fmt.Errorf("element type %q", e.Type)
}

// usersInfo is users.info: the person with their workspace role.
func (s *Server) usersInfo(w http.ResponseWriter, p params) {
	if s.opts.NoUsersRead {
		writeJSON(w, map[string]any{"ok": false, "error": "missing_scope", "needed": "users:read", "provided": "commands,chat:write"})
		return
	}
	id := p.get("user")
	s.mu.Lock()
	name, known := s.users[id]
	role, hasRole := s.roles[id]
	s.mu.Unlock()
	if !known && !hasRole {
		slackErr(w, "user_not_found")
		return
	}
	if name == "" {
		name = s.userName(id)
	}
	writeJSON(w, map[string]any{"ok": true, "user": map[string]any{
		"id": id, "team_id": s.opts.TeamID, "name": name, "real_name": name, "deleted": false, "color": "9f69e7",
		"tz": "Europe/London", "tz_label": "Greenwich Mean Time", "tz_offset": 0,
		"profile":  map[string]any{"real_name": name, "display_name": name, "team": s.opts.TeamID},
		"is_admin": role.Admin, "is_owner": role.Owner, "is_primary_owner": role.PrimaryOwner,
		"is_restricted": false, "is_ultra_restricted": false, "is_bot": false, "is_app_user": false,
		"updated": 1712345678, "is_email_confirmed": true, "who_can_share_contact_card": "EVERYONE"}})
}
