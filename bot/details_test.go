package bot_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

func TestEnhanceReachesProviderAndIsKept(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	plain := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a kite"}).ID)
	enhanced := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add clouds", Enhance: true}).ID)
	re := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindReroll, Turn: enhanced.Turn.ID}).ID)
	tests := []struct {
		name string
		d    *bot.Delivery
		want bool
	}{
		{"off by default", plain, false},
		{"asked for", enhanced, true},
		{"kept by reroll", re, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := provenance(t, tc.d).PromptUpsampling; got != tc.want {
				t.Errorf("provider's prompt_upsampling: got %v, want %v", got, tc.want)
			}
			if got := tc.d.Turn.Enhance; got != tc.want {
				t.Errorf("turn's Enhance: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDetails(t *testing.T) {
	now := time.Date(2026, 5, 4, 10, 30, 0, 0, time.UTC)
	h := newHarness(t, bot.Config{Now: func() time.Time { return now }}, kontexttest.Options{})
	base := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a lighthouse", User: "ada"}).ID)
	seed := int64(77)
	edit := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add a rainbow", Seed: &seed, Aspect: "16:9",
		Model: kontext.ModelPro, Enhance: true, User: "bob"}).ID)
	d, err := h.core.Details(context.Background(), &bot.Request{Conv: conv, Turn: edit.Turn.ID, User: "cy"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Parent == nil || d.Parent.ID != base.Turn.ID || d.Target != base.Turn.ID {
		t.Fatalf("parent %+v, target %s; want %s for both", d.Parent, d.Target, base.Turn.ID)
	}
	style := bot.DetailsStyle{Bold: "**%s**",
		Mention: func(u string) string { return "<@" + u + ">" },
		Link: func(c bot.ConvKey, tt *bot.Turn, label string) string {
			if len(tt.Messages) == 0 {
				return ""
			}
			return "[" + label + "](link/" + tt.Messages[0] + ")"
		}}
	text := d.Text(style)
	for _, want := range []string{"**Prompt**: add a rainbow", "**Seed**: 77", "**Model**: " + kontext.ModelPro,
		"**Aspect ratio**: 16:9", "**Enhance**: on", "**Made from**: [image " + base.Turn.ID + "](link/m1)",
		"**Asked by**: <@bob>", "**When**: 2026-05-04 10:30 UTC", "**Cost**: $0.040"} {
		if !strings.Contains(text, want) {
			t.Errorf("details lack %q:\n%s", want, text)
		}
	}
	prompt, o, err := bot.ParseOptions(d.Settings())
	if err != nil {
		t.Fatalf("settings %q do not parse: %v", d.Settings(), err)
	}
	if prompt != "add a rainbow" || o.Seed == nil || *o.Seed != 77 || o.Model != kontext.ModelPro || o.Aspect != "16:9" || !o.Enhance {
		t.Errorf("settings %q read back as %q %+v", d.Settings(), prompt, o)
	}
	t.Run("current image by default", func(t *testing.T) {
		d, err := h.core.Details(context.Background(), &bot.Request{Conv: conv})
		if err != nil || d.Turn.ID != edit.Turn.ID {
			t.Errorf("got %v, %v; want the head %s", d, err, edit.Turn.ID)
		}
	})
	t.Run("imagine targets itself", func(t *testing.T) {
		d, err := h.core.Details(context.Background(), &bot.Request{Conv: conv, Turn: base.Turn.ID})
		if err != nil || d.Target != base.Turn.ID || d.Parent != nil {
			t.Errorf("got %+v, %v; want target %s and no parent", d, err, base.Turn.ID)
		}
	})
	t.Run("unknown image", func(t *testing.T) {
		var ue *bot.UserError
		if _, err := h.core.Details(context.Background(), &bot.Request{Conv: conv, Turn: "inope"}); !errors.As(err, &ue) {
			t.Errorf("got %v, want a UserError", err)
		}
	})
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	type step struct {
		user    string
		admin   bool
		turn    int // index into the images made: 0 imagine, 1 edit of 0, 2 edit of 1
		wantErr error
		kept    bool
	}
	tests := []struct {
		name      string
		admins    []string
		steps     []step
		wantHead  int // -1: empty
		wantTurns []int
		gone      []int // images no longer stored
	}{
		{"requester deletes the head", nil, []step{{user: "ada", turn: 2}}, 1, []int{0, 1}, []int{2}},
		{"someone else is refused", nil, []step{{user: "eve", turn: 2, wantErr: bot.ErrCannotDelete}}, 2, []int{0, 1, 2}, nil},
		{"platform admin may", nil, []step{{user: "eve", admin: true, turn: 2}}, 1, []int{0, 1}, []int{2}},
		{"KONTEXT_ADMINS may", []string{"root"}, []step{{user: "root", turn: 2}}, 1, []int{0, 1}, []int{2}},
		{"an image a later one was made from stays hidden", nil, []step{{user: "ada", turn: 1, kept: true}}, 2, []int{0, 1, 2}, nil},
		{"then deleting the later one frees both", nil, []step{{user: "ada", turn: 1, kept: true}, {user: "ada", turn: 2}}, 0, []int{0}, []int{1, 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, bot.Config{Admins: tc.admins}, kontexttest.Options{})
			var ds []*bot.Delivery
			ds = append(ds, h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a boat"}).ID))
			ds = append(ds, h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add sails"}).ID))
			ds = append(ds, h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "make it night"}).ID))
			for _, s := range tc.steps {
				del, err := h.core.Delete(ctx, &bot.Request{Conv: conv, User: s.user, Admin: s.admin, Turn: ds[s.turn].Turn.ID})
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("Delete: got %v, want %v", err, s.wantErr)
				}
				if err == nil && del.Kept != s.kept {
					t.Errorf("kept: got %v, want %v", del.Kept, s.kept)
				}
			}
			c, err := h.db.Conversation(ctx, conv)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tt := range c.Turns {
				got = append(got, tt.ID)
			}
			var want []string
			for _, i := range tc.wantTurns {
				want = append(want, ds[i].Turn.ID)
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Errorf("turns: got %v, want %v", got, want)
			}
			if got, want := c.Head, ds[tc.wantHead].Turn.ID; got != want {
				t.Errorf("head: got %s, want %s", got, want)
			}
			for _, i := range tc.gone {
				if _, err := h.db.Image(ctx, ds[i].Turn.SHA256); !errors.Is(err, bot.ErrNotFound) {
					t.Errorf("image %d: got %v, want it gone", i, err)
				}
			}
			for _, i := range tc.wantTurns {
				if _, err := h.db.Image(ctx, ds[i].Turn.SHA256); err != nil {
					t.Errorf("image %d: %v, want it kept", i, err)
				}
			}
		})
	}
	t.Run("undo still reaches a hidden image", func(t *testing.T) {
		h := newHarness(t, bot.Config{}, kontexttest.Options{})
		a := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindImagine, Prompt: "a boat"}).ID)
		b := h.mustDeliver(h.submit(&bot.Request{Kind: bot.KindEdit, Prompt: "add sails"}).ID)
		if _, err := h.core.Delete(ctx, &bot.Request{Conv: conv, User: "ada", Turn: a.Turn.ID}); err != nil {
			t.Fatal(err)
		}
		d, err := h.core.Undo(ctx, &bot.Request{Conv: conv, User: "ada", Turn: b.Turn.ID})
		if err != nil {
			t.Fatal(err)
		}
		if d.Turn.ID != a.Turn.ID || digest(d.Image) != a.Turn.SHA256 {
			t.Errorf("undo showed %s, want the hidden %s with its image", d.Turn.ID, a.Turn.ID)
		}
	})
}

func TestParseEnhance(t *testing.T) {
	tests := []struct {
		in     string
		prompt string
		want   bool
		err    bool
	}{
		{"a fox", "a fox", false, false},
		{"a fox --enhance", "a fox", true, false},
		{"--enhance a fox --seed 3", "a fox", true, false},
		{"a fox --enhance=no", "a fox", false, false},
		{"a fox --enhance=maybe", "", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			p, o, err := bot.ParseOptions(tc.in)
			if (err != nil) != tc.err {
				t.Fatalf("err: got %v, want error %v", err, tc.err)
			}
			if err == nil && (p != tc.prompt || o.Enhance != tc.want) {
				t.Errorf("got %q enhance %v, want %q %v", p, o.Enhance, tc.prompt, tc.want)
			}
		})
	}
}

func TestDetailsText(t *testing.T) {
	seed := int64(9)
	made := time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)
	link := func(_ bot.ConvKey, tt *bot.Turn, label string) string {
		if len(tt.Messages) == 0 {
			return ""
		}
		return "<" + tt.Messages[0] + "|" + label + ">"
	}
	tests := []struct {
		name  string
		d     bot.Details
		style bot.DetailsStyle
		want  []string
		not   []string
	}{
		{"references known and gone",
			bot.Details{Turn: bot.Turn{ID: "i3", Kind: bot.KindEdit, Prompt: "mix them", Seed: &seed, Model: "flux-kontext-max", Parent: "i1",
				Refs: []string{"i2", "i9"}, Requester: "U1", Created: made},
				Parent: &bot.Turn{ID: "i1", SHA256: "a", Messages: []string{"m1"}},
				Refs:   []bot.Turn{{ID: "i2", SHA256: "b", Messages: []string{"m2"}}, {ID: "i9"}}, USD: 0.08},
			bot.DetailsStyle{Link: link, Mention: func(u string) string { return "@" + u }},
			[]string{"Made from: <m1|image i1>", "References: <m2|image i2>, image i9 (no longer kept)", "Asked by: @U1",
				"When: 2026-01-02 03:04 UTC", "Cost: $0.080", "Aspect ratio: default", "Enhance: off"}, nil},
		{"parent gone",
			bot.Details{Turn: bot.Turn{ID: "i3", Kind: bot.KindEdit, Prompt: "x", Parent: "i1"}},
			bot.DetailsStyle{Link: link}, []string{"Made from: image i1 (no longer kept)"}, nil},
		{"upload",
			bot.Details{Turn: bot.Turn{ID: "i1", Kind: bot.KindUpload, Width: 4, Height: 3, Format: "png"}},
			bot.DetailsStyle{}, []string{"Prompt: (an uploaded image)", "Cost: nothing (uploaded)", "Size: 4×3 png"},
			[]string{"Enhance", "Seed", "Aspect"}},
		{"escaped prompt",
			bot.Details{Turn: bot.Turn{ID: "i1", Kind: bot.KindImagine, Prompt: "a <!channel> cat"}},
			bot.DetailsStyle{Escape: func(s string) string { return strings.ReplaceAll(s, "<", "&lt;") }},
			[]string{"Prompt: a &lt;!channel> cat"}, []string{"<!channel>"}},
		{"long prompt cut",
			bot.Details{Turn: bot.Turn{ID: "i1", Kind: bot.KindImagine, Prompt: strings.Repeat("é", 1500)}},
			bot.DetailsStyle{}, []string{strings.Repeat("é", 999) + "…"}, []string{strings.Repeat("é", 1000)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.d.Text(tc.style)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(got, w) {
					t.Errorf("has %q:\n%s", w, got)
				}
			}
		})
	}
}
