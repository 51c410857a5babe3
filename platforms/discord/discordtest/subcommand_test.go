package discordtest

import (
	"encoding/json"
	"strings"
	"testing"
)

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// TestSubcommandRegistration: the command shapes Discord refuses (per
// discord-api-spec's ApplicationCommandOption rules) are refused.
func TestSubcommandRegistration(t *testing.T) {
	sub := func(name string, opts ...map[string]any) map[string]any {
		return map[string]any{"type": 1, "name": name, "description": "d", "options": opts}
	}
	good := map[string]any{"name": "kontext", "description": "k", "default_member_permissions": "32",
		"options": []map[string]any{{"type": 2, "name": "settings", "description": "s", "options": []map[string]any{
			sub("show"),
			sub("set", map[string]any{"type": 4, "name": "daily_limit", "description": "d", "min_value": 0},
				map[string]any{"type": 10, "name": "budget", "description": "b", "min_value": 0},
				map[string]any{"type": 7, "name": "add_channel", "description": "c", "channel_types": []int{0}}),
		}}}}
	tests := []struct {
		name string
		cmd  map[string]any
		want string // "" when accepted
	}{
		{"group of subcommands", good, ""},
		{"mixed with an option", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			sub("show"), {"type": 3, "name": "x", "description": "x"}}}, "mixed"},
		{"group holding an option", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			{"type": 2, "name": "g", "description": "g", "options": []map[string]any{{"type": 3, "name": "x", "description": "x"}}}}}, "only subcommands"},
		{"empty group", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			{"type": 2, "name": "g", "description": "g"}}}, "needs subcommands"},
		{"nested group", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			sub("s", map[string]any{"type": 2, "name": "g", "description": "g", "options": []map[string]any{sub("x")}})}}, "cannot"},
		{"subcommand without description", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			{"type": 1, "name": "s"}}}, "description"},
		{"channel types on a string", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			{"type": 3, "name": "x", "description": "x", "channel_types": []int{0}}}}, "channel_types"},
		{"range on a string", map[string]any{"name": "k", "description": "k", "options": []map[string]any{
			{"type": 3, "name": "x", "description": "x", "min_value": 0}}}, "min_value"},
		{"permissions as a number", map[string]any{"name": "k", "description": "k", "default_member_permissions": 32}, "default_member_permissions"},
		{"permissions not a bitfield", map[string]any{"name": "k", "description": "k", "default_member_permissions": "manage"}, "default_member_permissions"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{})
			defer s.Close()
			c := newClient(t, s)
			code, body, _ := c.do("PUT", "/applications/"+s.AppID()+"/guilds/g1/commands", []map[string]any{tc.cmd})
			if tc.want == "" {
				if code != 200 {
					t.Fatalf("got %d %v, want 200", code, body)
				}
				return
			}
			if code != 400 || !strings.Contains(strings.ToLower(toString(body)), strings.ToLower(tc.want)) {
				t.Errorf("got %d %v, want 400 mentioning %q", code, body, tc.want)
			}
		})
	}
}

// TestSubcommandInvocation: a subcommand is invoked with its nested
// options, a command with default_member_permissions is hidden from
// members without them until a server admin overrides it, and the
// member's permissions reach the bot.
func TestSubcommandInvocation(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	s.AddTextChannel("g1", "c1", "art")
	s.AddUser("u1", "ada")
	s.AddUser("u2", "mod")
	s.SetPermissions("u2", DefaultPermissions|PermManageGuild)
	c := newClient(t, s)
	cmd := map[string]any{"name": "kontext", "description": "k", "default_member_permissions": "32",
		"options": []map[string]any{{"type": 2, "name": "settings", "description": "s", "options": []map[string]any{
			{"type": 1, "name": "show", "description": "d"},
			{"type": 1, "name": "set", "description": "d", "options": []map[string]any{
				{"type": 10, "name": "budget", "description": "b", "min_value": 0},
				{"type": 7, "name": "add_channel", "description": "c", "channel_types": []int{0}}}},
		}}}}
	if code, body, _ := c.do("PUT", "/applications/"+s.AppID()+"/guilds/g1/commands", []map[string]any{cmd}); code != 200 {
		t.Fatalf("register: %d %v", code, body)
	}
	c.connect("Bot "+s.Token(), IntentGuildMessages)
	set := Group("settings", Sub("set", Number("budget", 5), ChannelOption("add_channel", "c1")))
	if _, err := s.Slash("c1", "u1", "kontext", set); err == nil || !strings.Contains(err.Error(), "does not show") {
		t.Errorf("a member without Manage Server: got %v, want the command hidden", err)
	}
	bad := []struct {
		name string
		opt  Option
	}{
		{"no subcommand", Group("settings", Option{Name: "x", Type: 1})},
		{"negative budget", Group("settings", Sub("set", Number("budget", -1)))},
		{"unknown channel", Group("settings", Sub("set", ChannelOption("add_channel", "nope")))},
		{"option outside its subcommand", Number("budget", 5)},
	}
	for _, tc := range bad {
		if _, err := s.Slash("c1", "u2", "kontext", tc.opt); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	in, err := s.Slash("c1", "u2", "kontext", set)
	if err != nil {
		t.Fatal(err)
	}
	ev := c.next("INTERACTION_CREATE")
	if got := toString(ev["member"].(map[string]any)["permissions"]); got != "2248473465835105" {
		t.Errorf("member permissions: got %s, want the manager's", got)
	}
	data := toString(ev["data"])
	for _, want := range []string{`"name":"settings"`, `"name":"set"`, `"budget"`, `"channels"`} {
		if !strings.Contains(data, want) {
			t.Errorf("interaction data %s lacks %s", data, want)
		}
	}
	if ev["id"] != in.ID {
		t.Errorf("event for %v, want %s", ev["id"], in.ID)
	}
	s.OverrideCommandPermissions("kontext")
	if _, err := s.Slash("c1", "u1", "kontext", Group("settings", Sub("show"))); err != nil {
		t.Errorf("after an override, a member: %v", err)
	}
}
