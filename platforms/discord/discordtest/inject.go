package discordtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Option is one option of a slash command, as a person fills it in.
type Option struct {
	Name       string
	Type       int
	Value      any
	attachment *Attachment
	// Options are a subcommand's options or a group's subcommand.
	Options []Option
}

// Sub is a subcommand (type 1) with its options.
func Sub(name string, opts ...Option) Option { return Option{Name: name, Type: 1, Options: opts} }

// Group is a subcommand group (type 2) holding one subcommand.
func Group(name string, sub Option) Option {
	return Option{Name: name, Type: 2, Options: []Option{sub}}
}

// Number is a number option (type 10).
func Number(name string, v float64) Option { return Option{Name: name, Type: 10, Value: v} }

// ChannelOption is a channel option (type 7): its value is the channel's
// id, the channel itself goes in data.resolved.channels.
func ChannelOption(name, channelID string) Option {
	return Option{Name: name, Type: 7, Value: channelID}
}

// String is a string option.
func String(name, v string) Option { return Option{Name: name, Type: 3, Value: v} }

// Integer is an integer option.
func Integer(name string, v int64) Option { return Option{Name: name, Type: 4, Value: v} }

// Bool is a boolean option (type 5).
func Bool(name string, v bool) Option { return Option{Name: name, Type: 5, Value: v} }

// File is an attachment option (type 11): its value is the attachment's
// id, the file itself goes in data.resolved.attachments.
func File(name string, a Attachment) Option {
	return Option{Name: name, Type: 11, Value: a.ID, attachment: &a}
}

// Say is a message a person posts.
type Say struct {
	ChannelID string
	UserID    string
	Content   string
	// Attachments are files from Upload.
	Attachments []Attachment
	// ReplyTo makes the message a reply (message_reference and
	// referenced_message) to a message of the same channel. Like
	// Discord's clients, a reply pings the replied-to author (who is then
	// in mentions) unless NoReplyPing is set.
	ReplyTo     string
	NoReplyPing bool
}

// MaxAttachments is how many files Discord lets one message carry.
const MaxAttachments = 10

// Say posts a person's message and sends MESSAGE_CREATE to the bot.
func (s *Server) Say(m Say) (Message, error) {
	if len(m.Attachments) > MaxAttachments {
		return Message{}, fmt.Errorf("discordtest: a message carries at most %d attachments, not %d", MaxAttachments, len(m.Attachments))
	}
	s.mu.Lock()
	ch := s.channels[m.ChannelID]
	if ch == nil {
		s.mu.Unlock()
		return Message{}, fmt.Errorf("discordtest: unknown channel %s", m.ChannelID)
	}
	msg := &message{Message: Message{ID: s.newID(), ChannelID: ch.ID, GuildID: ch.GuildID, Author: *s.user(m.UserID),
		Content: m.Content, History: []string{m.Content}, Attachments: slices.Clone(m.Attachments), Created: s.now()}}
	if m.ReplyTo != "" {
		ref := s.messages[m.ReplyTo]
		if ref == nil || ref.ChannelID != ch.ID || ref.Deleted {
			s.mu.Unlock()
			return Message{}, fmt.Errorf("discordtest: cannot reply to %s in %s", m.ReplyTo, ch.ID)
		}
		msg.ReplyTo, msg.Type, msg.replyPing = ref.ID, 19, !m.NoReplyPing
	}
	s.addMessage(msg)
	c := msg.copy()
	s.mu.Unlock()
	need := IntentGuildMessages
	if ch.GuildID == "" {
		need = IntentDirectMessages
	}
	err := s.dispatch("MESSAGE_CREATE", ch.GuildID, need, func(intents int) any {
		return s.msgJSON(msg, true, intents&IntentMessageContent != 0)
	})
	return c, err
}

// Slash injects a slash command, checked against the registered command
// (global or the channel's guild): unknown options, wrong types, missing
// required options and values outside the choices are refused.
func (s *Server) Slash(channelID, userID, command string, opts ...Option) (Interaction, error) {
	s.mu.Lock()
	ch := s.channels[channelID]
	if ch == nil {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: unknown channel %s", channelID)
	}
	cmd, err := s.findCommand(ch, 1, command)
	if err != nil {
		s.mu.Unlock()
		return Interaction{}, err
	}
	if err := s.usable(ch, cmd, userID); err != nil {
		s.mu.Unlock()
		return Interaction{}, err
	}
	attachments, channels := map[string]any{}, map[string]any{}
	options, err := s.options("/"+command, cmd.Options, opts, attachments, channels)
	if err != nil {
		s.mu.Unlock()
		return Interaction{}, err
	}
	data := map[string]any{"id": cmd.ID, "name": cmd.Name, "type": 1, "options": options}
	resolved := map[string]any{}
	if len(attachments) > 0 {
		resolved["attachments"] = attachments
	}
	if len(channels) > 0 {
		resolved["channels"] = channels
	}
	if len(resolved) > 0 {
		data["resolved"] = resolved
	}
	if ch.GuildID != "" {
		data["guild_id"] = ch.GuildID
	}
	in := s.newInteraction(2, ch, userID, data, nil)
	s.mu.Unlock()
	return s.deliver(in)
}

// MessageCommand injects a message context-menu command (data.type 3) on
// target, with the message in data.resolved.messages.
func (s *Server) MessageCommand(channelID, userID, command, targetID string) (Interaction, error) {
	s.mu.Lock()
	ch := s.channels[channelID]
	target := s.messages[targetID]
	if ch == nil || target == nil || target.ChannelID != channelID || target.Deleted {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: no message %s in channel %s", targetID, channelID)
	}
	cmd, err := s.findCommand(ch, 3, command)
	if err != nil {
		s.mu.Unlock()
		return Interaction{}, err
	}
	data := map[string]any{"id": cmd.ID, "name": cmd.Name, "type": 3, "target_id": targetID,
		// Interactions carry the target's content whatever the intents.
		"resolved": map[string]any{"messages": map[string]any{targetID: s.msgJSON(target, false, true)}}}
	in := s.newInteraction(2, ch, userID, data, nil)
	s.mu.Unlock()
	return s.deliver(in)
}

// Click presses a button of a message (interaction type 3).
func (s *Server) Click(userID, messageID, customID string) (Interaction, error) {
	s.mu.Lock()
	m := s.messages[messageID]
	if m == nil || m.Deleted {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: no message %s", messageID)
	}
	i := slices.IndexFunc(m.Buttons, func(b Button) bool { return b.CustomID == customID })
	if i < 0 || m.Buttons[i].Disabled {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: message %s has no enabled button %q", messageID, customID)
	}
	ch := s.channels[m.ChannelID]
	data := map[string]any{"custom_id": customID, "component_type": 2}
	in := s.newInteraction(3, ch, userID, data, m)
	s.mu.Unlock()
	return s.deliver(in)
}

// Choose picks values in a string select of a message (interaction type
// 3, component_type 3, data.values), as a person does: only values the
// select offers, as many as its min_values and max_values allow.
func (s *Server) Choose(userID, messageID, customID string, values ...string) (Interaction, error) {
	s.mu.Lock()
	m := s.messages[messageID]
	if m == nil || m.Deleted {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: no message %s", messageID)
	}
	i := slices.IndexFunc(m.Selects, func(sel Select) bool { return sel.CustomID == customID })
	if i < 0 || m.Selects[i].Disabled {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: message %s has no enabled select %q", messageID, customID)
	}
	sel := m.Selects[i]
	if len(values) < sel.MinValues || len(values) > sel.MaxValues {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: select %q takes %d to %d values, got %d", customID, sel.MinValues, sel.MaxValues, len(values))
	}
	for _, v := range values {
		if !slices.ContainsFunc(sel.Options, func(o SelectOption) bool { return o.Value == v }) {
			s.mu.Unlock()
			return Interaction{}, fmt.Errorf("discordtest: select %q has no option %q", customID, v)
		}
	}
	ch := s.channels[m.ChannelID]
	data := map[string]any{"custom_id": customID, "component_type": 3, "values": slices.Clone(values)}
	in := s.newInteraction(3, ch, userID, data, m)
	s.mu.Unlock()
	return s.deliver(in)
}

// SubmitModal submits the modal the bot opened in answer to from, with a
// value for each of its text inputs (interaction type 5). An optional
// input without a value is submitted empty, as Discord does when the
// person leaves it blank; a required one must have a value that is not
// empty.
func (s *Server) SubmitModal(from Interaction, values map[string]string) (Interaction, error) {
	s.mu.Lock()
	orig := s.interactions[from.ID]
	if orig == nil || orig.Modal == nil {
		s.mu.Unlock()
		return Interaction{}, fmt.Errorf("discordtest: interaction %s opened no modal", from.ID)
	}
	modal := orig.Modal
	var rows []any
	for _, id := range modal.Inputs {
		v, ok := values[id]
		if (!ok || v == "") && !slices.Contains(modal.Optional, id) {
			s.mu.Unlock()
			return Interaction{}, fmt.Errorf("discordtest: no value for the required text input %q", id)
		}
		if utf8.RuneCountInString(v) > 4000 {
			s.mu.Unlock()
			return Interaction{}, errors.New("discordtest: text input value too long")
		}
		rows = append(rows, map[string]any{"type": 1, "components": []any{map[string]any{"type": 4, "custom_id": id, "value": v}}})
	}
	ch := s.channels[orig.ChannelID]
	var m *message
	if orig.Message != "" {
		m = s.messages[orig.Message]
	}
	data := map[string]any{"custom_id": modal.CustomID, "components": rows}
	in := s.newInteraction(5, ch, orig.User, data, m)
	s.mu.Unlock()
	return s.deliver(in)
}

func (s *Server) findCommand(ch *Channel, typ int, name string) (*Command, error) {
	// Guild commands first, then global ones (which work everywhere).
	for _, scope := range []string{ch.GuildID, ""} {
		for i := range s.commands[scope] {
			c := &s.commands[scope][i]
			if c.Type == typ && c.Name == name {
				return c, nil
			}
		}
	}
	return nil, fmt.Errorf("discordtest: no command %q of type %d is registered for channel %s", name, typ, ch.ID)
}

// usable refuses a command the member cannot see: Discord hides a
// command whose default_member_permissions the member lacks (members with
// Administrator see everything) unless a server admin has overridden it;
// with s.mu held.
func (s *Server) usable(ch *Channel, cmd *Command, userID string) error {
	need := cmd.DefaultMemberPermissions
	if ch.GuildID == "" || need == nil || s.overridden[cmd.Name] {
		return nil
	}
	p := s.user(userID).Permissions
	if p&PermAdministrator != 0 || p&*need == *need {
		return nil
	}
	return fmt.Errorf("discordtest: /%s needs permissions %d, which %s lacks: Discord does not show it to them", cmd.Name, *need, userID)
}

// options checks what a person filled in against the definitions of one
// level and returns the interaction's options JSON; with s.mu held.
func (s *Server) options(where string, defs []CommandOption, opts []Option, attachments, channels map[string]any) ([]any, error) {
	out := []any{}
	subs := 0
	for _, o := range opts {
		def := findOption(defs, o.Name)
		if def == nil {
			return nil, fmt.Errorf("discordtest: %s has no option %q", where, o.Name)
		}
		if def.Type != o.Type {
			return nil, fmt.Errorf("discordtest: %s option %q has type %d, not %d", where, o.Name, def.Type, o.Type)
		}
		if o.Type == 1 || o.Type == 2 {
			subs++
			inner, err := s.options(where+" "+o.Name, def.Options, o.Options, attachments, channels)
			if err != nil {
				return nil, err
			}
			out = append(out, map[string]any{"name": o.Name, "type": o.Type, "options": inner})
			continue
		}
		if err := checkValue(def, o.Value); err != nil {
			return nil, fmt.Errorf("discordtest: %s: %w", where, err)
		}
		if o.Type == 7 {
			id, _ := o.Value.(string)
			c := s.channels[id]
			if c == nil {
				return nil, fmt.Errorf("discordtest: %s option %q: no channel %s", where, o.Name, id)
			}
			if len(def.ChannelTypes) > 0 && !slices.Contains(def.ChannelTypes, c.Type) {
				return nil, fmt.Errorf("discordtest: %s option %q: channel type %d is not offered", where, o.Name, c.Type)
			}
			channels[id] = s.channelJSON(c)
		}
		out = append(out, map[string]any{"name": o.Name, "type": o.Type, "value": o.Value})
		if o.attachment != nil {
			attachments[o.attachment.ID] = s.attachmentJSON(*o.attachment)
		}
	}
	hasSubs := slices.ContainsFunc(defs, func(d CommandOption) bool { return d.Type == 1 || d.Type == 2 })
	if hasSubs && subs != 1 {
		return nil, fmt.Errorf("discordtest: %s takes exactly one subcommand, got %d", where, subs)
	}
	for _, def := range defs {
		if def.Required && !slices.ContainsFunc(opts, func(o Option) bool { return o.Name == def.Name }) {
			return nil, fmt.Errorf("discordtest: %s needs option %q", where, def.Name)
		}
	}
	return out, nil
}

func findOption(defs []CommandOption, name string) *CommandOption {
	for i := range defs {
		if defs[i].Name == name {
			return &defs[i]
		}
	}
	return nil
}

func checkValue(def *CommandOption, v any) error {
	switch def.Type {
	case 3:
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("option %q wants a string", def.Name)
		}
		if def.MaxLength > 0 && utf8.RuneCountInString(str) > def.MaxLength {
			return fmt.Errorf("option %q is longer than %d", def.Name, def.MaxLength)
		}
		if len(def.Choices) > 0 && !slices.ContainsFunc(def.Choices, func(c Choice) bool { return c.Value == str }) {
			return fmt.Errorf("option %q: %q is not one of its choices", def.Name, str)
		}
	case 5:
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("option %q wants a boolean", def.Name)
		}
	case 7:
		if _, ok := v.(string); !ok {
			return fmt.Errorf("option %q wants a channel id", def.Name)
		}
	case 10:
		f, ok := v.(float64)
		if !ok || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("option %q wants a number", def.Name)
		}
		if def.MinValue != nil && f < *def.MinValue || def.MaxValue != nil && f > *def.MaxValue {
			return fmt.Errorf("option %q: %v is out of range", def.Name, f)
		}
	case 4:
		n, ok := v.(int64)
		if !ok {
			return fmt.Errorf("option %q wants an integer", def.Name)
		}
		if def.MinValue != nil && float64(n) < *def.MinValue || def.MaxValue != nil && float64(n) > *def.MaxValue {
			return fmt.Errorf("option %q: %d is out of range", def.Name, n)
		}
	}
	return nil
}

// newInteraction stores an interaction and returns its JSON; with s.mu held.
func (s *Server) newInteraction(typ int, ch *Channel, userID string, data map[string]any, m *message) *interaction {
	tok := make([]byte, 32)
	_, _ = rand.Read(tok)
	in := &interaction{Interaction: Interaction{ID: s.newID(), Token: "aW50ZXJhY3Rpb246" + hex.EncodeToString(tok),
		Type: typ, ChannelID: ch.ID, GuildID: ch.GuildID, User: userID, Injected: time.Now()}, created: s.now(), modals: map[string]*Modal{}}
	if m != nil {
		in.Message = m.ID
	}
	j := map[string]any{
		"id": in.ID, "application_id": s.appID, "type": typ, "token": in.Token, "version": 1,
		"channel_id": ch.ID, "channel": s.channelJSON(ch), "data": data,
		"app_permissions": "309237746688", "locale": "en-US", "entitlements": []any{},
		"attachment_size_limit": s.uploadLimit(ch),
	}
	u := s.userJSON(s.user(userID))
	if ch.GuildID != "" {
		j["guild_id"] = ch.GuildID
		j["guild_locale"] = "en-US"
		j["member"] = map[string]any{"user": u, "roles": []any{}, "permissions": strconv.FormatUint(s.user(userID).Permissions, 10),
			"joined_at": "2024-01-01T00:00:00Z", "deaf": false, "mute": false}
		j["context"] = 0
		j["authorizing_integration_owners"] = map[string]any{"0": ch.GuildID}
	} else {
		j["user"] = u
		j["context"] = 1
		j["authorizing_integration_owners"] = map[string]any{"0": "0"}
	}
	if m != nil {
		j["message"] = s.msgJSON(m, false, true)
	}
	in.data = j
	s.interactions[in.ID] = in
	s.byToken[in.Token] = in
	s.timer(InteractionDeadline, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		in.deadline = true
		if in.Ack == 0 {
			in.Failed = true
			s.failed = append(s.failed, in.ID)
			s.violation("interaction %s (type %d) was not answered within %s", in.ID, in.Type, InteractionDeadline)
		}
		s.changed()
	})
	s.changed()
	return in
}

// deliver sends INTERACTION_CREATE over the gateway, or POSTs the
// interaction to the Interactions Endpoint URL when one is set.
func (s *Server) deliver(in *interaction) (Interaction, error) {
	s.mu.Lock()
	url := s.endpoint
	if url != "" && !s.closed {
		s.posts.Add(1)
		go s.postInteraction(url, in)
	}
	s.mu.Unlock()
	if url != "" {
		return s.Interaction(in.ID), nil
	}
	guild, _ := in.data["guild_id"].(string)
	err := s.dispatch("INTERACTION_CREATE", guild, 0, func(int) any { return in.data })
	return s.Interaction(in.ID), err
}
