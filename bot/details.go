package bot

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrCannotDelete answers a delete by someone who may not delete the image.
var ErrCannotDelete = &UserError{Msg: "Only the person who asked for this image, or an admin, can delete it."}

// Details is what the Details button shows about one image: enough to
// reproduce it.
type Details struct {
	// Conv is the conversation the image is in.
	Conv ConvKey
	// Turn is the image.
	Turn Turn
	// Parent is the image it was made from; nil when it has none or the
	// conversation no longer keeps it (Turn.Parent still names it).
	Parent *Turn
	// Refs are the further references Turn.Refs names, in order; a
	// reference no longer kept is a Turn with only its ID.
	Refs []Turn
	// USD is the model's price per image (what the image cost); 0 for an
	// uploaded image.
	USD float64
	// Target is the turn "Use these settings" edits: the parent when it
	// is kept (the same base, prompt and seed make the same image), else
	// the image itself.
	Target string
}

// DetailsStyle is how a platform writes Details: its markup, mentions,
// message links and times. Every func may return "" for "not known".
type DetailsStyle struct {
	// Bold marks a label, as in HelpStyle.
	Bold string
	// Mention names a user without notifying them.
	Mention func(user string) string
	// Link is a link to the message turn t of the conversation at conv was
	// posted in, labelled label; "" when t has no known post.
	Link func(conv ConvKey, t *Turn, label string) string
	// Time writes when the image was made.
	Time func(t time.Time) string
	// Escape makes a person's text (the prompt) safe in the platform's
	// markup; nil leaves it as it is.
	Escape func(s string) string
}

// maxDetailsPrompt bounds the prompt shown in Details, so they fit in
// one message (the whole prompt is in "Use these settings").
const maxDetailsPrompt = 1000

// Text is the details as one short message, one field a line.
func (d *Details) Text(s DetailsStyle) string {
	b := func(x string) string {
		if s.Bold == "" {
			return x
		}
		return strings.Replace(s.Bold, "%s", x, 1)
	}
	var w strings.Builder
	line := func(label, value string) {
		if value != "" {
			w.WriteString(b(label) + ": " + value + "\n")
		}
	}
	t := d.Turn
	prompt := t.Prompt
	if n := []rune(prompt); len(n) > maxDetailsPrompt {
		prompt = string(n[:maxDetailsPrompt-1]) + "…"
	}
	if s.Escape != nil {
		prompt = s.Escape(prompt)
	}
	if t.Kind == KindUpload {
		prompt = "(an uploaded image)"
	}
	line("Prompt", prompt)
	if t.Seed != nil {
		line("Seed", strconv.FormatInt(*t.Seed, 10))
	}
	line("Model", t.Model)
	aspect := t.Aspect
	if aspect == "" && t.Kind != KindUpload {
		aspect = "default"
	}
	line("Aspect ratio", aspect)
	if t.Kind != KindUpload {
		line("Enhance", map[bool]string{true: "on (the model enhanced the prompt)", false: "off"}[t.Enhance])
	}
	line("Made by", string(t.Kind))
	if t.Parent != "" {
		line("Made from", d.link(s, d.Parent, t.Parent, "image "+t.Parent))
	}
	if len(d.Refs) > 0 {
		refs := make([]string, len(d.Refs))
		for i := range d.Refs {
			r := &d.Refs[i]
			refs[i] = d.link(s, r, r.ID, "image "+r.ID)
		}
		line("References", strings.Join(refs, ", "))
	}
	if t.Requester != "" && s.Mention != nil {
		line("Asked by", s.Mention(t.Requester))
	}
	if !t.Created.IsZero() {
		when := t.Created.UTC().Format("2006-01-02 15:04 UTC")
		if s.Time != nil {
			if x := s.Time(t.Created); x != "" {
				when = x
			}
		}
		line("When", when)
	}
	if t.Kind == KindUpload {
		line("Cost", "nothing (uploaded)")
	} else {
		line("Cost", fmt.Sprintf("$%.3f", d.USD))
	}
	line("Size", fmt.Sprintf("%d×%d %s", t.Width, t.Height, t.Format))
	return strings.TrimSuffix(w.String(), "\n")
}

// link is a link to turn t's post, or label when there is none.
func (d *Details) link(s DetailsStyle, t *Turn, id, label string) string {
	if t != nil && t.ID != "" && s.Link != nil {
		if l := s.Link(d.Conv, t, label); l != "" {
			return l
		}
	}
	if t == nil || t.SHA256 == "" {
		return label + " (no longer kept)"
	}
	return label
}

// Settings is the image's prompt with its options as a person types them
// ("a red fox --seed 7 --model flux-kontext-pro --ar 16:9 --enhance"), to
// pre-fill the Edit dialog: ParseOptions reads it back.
func (d *Details) Settings() string {
	t := d.Turn
	parts := []string{t.Prompt}
	if t.Seed != nil {
		parts = append(parts, "--seed "+strconv.FormatInt(*t.Seed, 10))
	}
	if t.Model != "" {
		parts = append(parts, "--model "+t.Model)
	}
	if t.Aspect != "" {
		parts = append(parts, "--ar "+t.Aspect)
	}
	if t.Enhance {
		parts = append(parts, "--enhance")
	}
	return strings.Join(parts, " ")
}

// Details describes turn req.Turn (or the current image) of the
// conversation at req.Conv. Anyone may see them.
func (c *Core) Details(ctx context.Context, req *Request) (*Details, error) {
	conv, t, err := c.turnOf(ctx, req, "details",
		Userf("I no longer have that image: it was deleted, or only the last images of a conversation are kept."))
	if err != nil {
		return nil, err
	}
	d := &Details{Conv: req.Conv, Turn: *t, Target: t.ID}
	if p := conv.Turn(t.Parent); p != nil {
		cp := *p
		d.Parent, d.Target = &cp, p.ID
	}
	for _, id := range t.Refs {
		if r := conv.Turn(id); r != nil {
			d.Refs = append(d.Refs, *r)
		} else {
			d.Refs = append(d.Refs, Turn{ID: id})
		}
	}
	if t.Kind != KindUpload {
		d.USD = c.cfg.Prices[t.Model]
	}
	return d, nil
}

// Deleted is what a delete did.
type Deleted struct {
	// Turn is the deleted image as it was, with the Messages it was posted
	// in (the adapter removes those posts).
	Turn Turn
	// Kept is set when a later image was made from it: its image stays in
	// the store, hidden, for undo and history.
	Kept bool
	// Conv is the conversation after the delete.
	Conv *Conversation
}

// Delete deletes image req.Turn (or the current image) of the
// conversation at req.Conv from the store, when req.User asked for it,
// is one of KONTEXT_ADMINS, or req.Admin is set (the adapter's platform
// lets them delete others' messages there); anyone else gets
// ErrCannotDelete. The adapter then removes the post.
func (c *Core) Delete(ctx context.Context, req *Request) (*Deleted, error) {
	conv, t, err := c.turnOf(ctx, req, "delete", Userf("That image is already deleted (or no longer kept)."))
	if err != nil {
		return nil, err
	}
	if t.Requester != req.User && !req.Admin && !c.isAdmin(req.User) {
		return nil, ErrCannotDelete
	}
	kept := conv.DerivedFrom(t.ID)
	after, err := c.store.DeleteTurn(ctx, req.Conv, t.ID)
	if err != nil {
		return nil, fmt.Errorf("bot: delete %s: %w", t.ID, err)
	}
	c.log.Info("image deleted", "turn", t.ID, "platform", req.Conv.Platform, "kept", kept)
	return &Deleted{Turn: *t, Kept: kept, Conv: after}, nil
}

// turnOf loads the conversation at req.Conv and its turn req.Turn, or its
// current image when req.Turn is empty: ErrNoImage when there is none,
// gone when the conversation no longer holds req.Turn.
func (c *Core) turnOf(ctx context.Context, req *Request, op string, gone error) (*Conversation, *Turn, error) {
	conv, err := c.conversation(ctx, req.Conv)
	if err != nil {
		return nil, nil, fmt.Errorf("bot: %s: %w", op, err)
	}
	if req.Turn == "" {
		if t := conv.Current(); t != nil {
			return conv, t, nil
		}
		return nil, nil, ErrNoImage
	}
	if t := conv.Turn(req.Turn); t != nil {
		return conv, t, nil
	}
	return nil, nil, gone
}
