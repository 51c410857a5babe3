package bot

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"kontextbot/bot/sheet"
)

// KindHistory asks for a conversation's history as a picture; KindUse
// makes one of its images the current one. Neither calls the provider or
// costs anything.
const (
	KindHistory Kind = "history"
	KindUse     Kind = "use"
)

// ThumbnailCache is how many thumbnails of history sheets the core keeps
// in memory (at most 160 KB each), in front of the ones in the store
// (Store.Thumbnail), so a sheet asked for again reads nothing but the
// conversation.
const ThumbnailCache = 128

// History errors, each with its sentence.
var (
	// ErrEmptyHistory answers a history asked for before any image;
	// errors.Is also matches ErrNoImage.
	ErrEmptyHistory = &UserError{Msg: "There is no history here yet: no image has been made in this conversation. Make one first, then ask again.", Err: ErrNoImage}
	// ErrNoSuchImage answers a pick of an image the conversation does
	// not hold (any more); errors.Is also matches ErrNoImage.
	ErrNoSuchImage = &UserError{Msg: "I no longer have that image: only the last images of a conversation are kept. Ask for the history again to see what is left.", Err: ErrNoImage}
)

// HistoryItem is one image on a history sheet.
type HistoryItem struct {
	// Number is the image's number on the sheet, from 1 (creation order).
	Number int
	Turn   Turn
	// Head is set on the conversation's current image.
	Head bool
}

// Label is the item as a menu shows it, "3 · make it snow" (with
// " (current)" on the current image), at most n characters.
func (it HistoryItem) Label(n int) string {
	what := strings.Join(strings.Fields(it.Turn.Prompt), " ")
	if it.Turn.Kind == KindUpload || what == "" {
		what = "uploaded image"
	}
	prefix := strconv.Itoa(it.Number) + " · "
	suffix := ""
	if it.Head {
		suffix = " (current)"
	}
	room := n - utf8.RuneCountInString(prefix) - utf8.RuneCountInString(suffix)
	if utf8.RuneCountInString(what) > room {
		r := []rune(what)
		what = string(r[:max(0, room-1)]) + "…"
	}
	return prefix + what + suffix
}

// HistorySheet is a conversation's history as a picture: a PNG contact
// sheet of its images, numbered in creation order, and the same images
// as a list.
type HistorySheet struct {
	Conv ConvKey
	// PNG is the contact sheet.
	PNG []byte
	// Items are the images, Items[n-1] being number n.
	Items []HistoryItem
	// Layout is where each image is on the sheet.
	Layout sheet.Layout
}

// Head returns the current image's item, or nil.
func (h *HistorySheet) Head() *HistoryItem {
	for i := range h.Items {
		if h.Items[i].Head {
			return &h.Items[i]
		}
	}
	return nil
}

// Text is a one-line caption for the sheet; threads says whether the
// menus offer to open an image in a new thread.
func (h *HistorySheet) Text(threads bool) string {
	s := fmt.Sprintf("History: %d image%s", len(h.Items), plural(len(h.Items)))
	if cur := h.Head(); cur != nil {
		s += fmt.Sprintf(", the current one is %d (framed)", cur.Number)
	}
	if !threads {
		return s + ". Pick one to make it current again."
	}
	return s + ". Pick one to make it current again, or to open it in a new thread."
}

// History draws the conversation at req.Conv as a contact sheet: its
// kept images (at most the store's history limit) as thumbnails, from
// memory, else from the store, else made from the image (decoded once,
// scaled down) and stored for every later sheet, in any process. No
// provider call, no charge.
func (c *Core) History(ctx context.Context, req *Request) (*HistorySheet, error) {
	conv, err := c.conversation(ctx, req.Conv)
	if err != nil {
		return nil, fmt.Errorf("bot: history: %w", err)
	}
	if conv == nil || len(conv.Turns) == 0 {
		return nil, ErrEmptyHistory
	}
	h := &HistorySheet{Conv: req.Conv}
	turns := conv.Numbered()
	nodes := make([]sheet.Node, len(turns))
	for i, t := range turns {
		load := func(ctx context.Context) ([]byte, error) {
			img, err := c.store.Image(ctx, t.SHA256)
			if errors.Is(err, ErrNotFound) {
				return nil, nil // drawn as an empty box
			}
			if err != nil {
				return nil, fmt.Errorf("bot: history: image %s: %w", t.ID, err)
			}
			return img, nil
		}
		nodes[i] = sheet.Node{ID: t.ID, Parent: t.Parent, Load: load, Key: t.SHA256}
		h.Items = append(h.Items, HistoryItem{Number: i + 1, Turn: t, Head: t.ID == conv.Head})
	}
	h.PNG, h.Layout, err = sheet.Render(ctx, nodes, conv.Head, sheet.Options{Budget: c.cfg.ImageBudget, Cache: c.thumbs, Store: storedThumbs{c}})
	if err != nil {
		return nil, fmt.Errorf("bot: history: %w", err)
	}
	return h, nil
}

// storedThumbs is the store's thumbnails as a sheet.Store.
type storedThumbs struct{ c *Core }

// Thumb reads the thumbnail of image sha; nil when none is stored.
func (s storedThumbs) Thumb(ctx context.Context, sha string) ([]byte, error) {
	data, err := s.c.store.Thumbnail(ctx, sha)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bot: history: thumbnail %s: %w", sha, err)
	}
	return data, nil
}

// PutThumb stores the thumbnail of image sha, made for a sheet. An image
// gone meanwhile (deleted, pruned) needs none; any other failure is
// logged, and the thumbnail is made again next time.
func (s storedThumbs) PutThumb(ctx context.Context, sha string, data []byte) error {
	err := s.c.store.PutThumbnail(ctx, sha, data)
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.c.log.Warn("bot: store thumbnail", "sha256", sha, "err", err)
	}
	return err
}

// pick finds the image req.Turn names in the conversation at req.Conv:
// a turn id, or its number on the history sheet ("3").
func (c *Core) pick(ctx context.Context, req *Request, op string) (*Turn, []byte, error) {
	conv, err := c.conversation(ctx, req.Conv)
	if err != nil {
		return nil, nil, fmt.Errorf("bot: %s: %w", op, err)
	}
	if conv == nil || len(conv.Turns) == 0 {
		return nil, nil, ErrEmptyHistory
	}
	t := conv.Turn(req.Turn)
	if n, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(req.Turn), "#")); err == nil && t == nil {
		if n < 1 || n > len(conv.Turns) {
			return nil, nil, Userf("There is no image %d here: pick one from 1 to %d.", n, len(conv.Turns))
		}
		t = &conv.Numbered()[n-1]
	}
	if t == nil {
		return nil, nil, ErrNoSuchImage
	}
	img, err := c.store.Image(ctx, t.SHA256)
	if err != nil {
		return nil, nil, fmt.Errorf("bot: %s: %w", op, err)
	}
	cp := *t
	return &cp, img, nil
}

// Use makes the image req.Turn names (its id, or its number on the
// history sheet) the conversation's current image, so the next edit
// starts from it, and returns it to show again, as Undo does. No
// provider call, no charge.
func (c *Core) Use(ctx context.Context, req *Request) (*Delivery, error) {
	t, img, err := c.pick(ctx, req, "use")
	if err != nil {
		return nil, err
	}
	if _, err := c.store.SetHead(ctx, req.Conv, t.ID); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, ErrNoSuchImage
		}
		return nil, fmt.Errorf("bot: use: %w", err)
	}
	d := &Delivery{Conv: req.Conv, Turn: *t, Image: img}
	d.Record = func(ctx context.Context, p Posted) error { return c.recordPost(ctx, req.Conv, *t, img, p) }
	return d, nil
}

// Branch returns the image req.Turn names (as Use) to post where a new
// thread can start from it, leaving the conversation's current image as
// it is. The adapter posts it and records the post with Posted.Thread
// set to the new thread: that conversation then starts from the image
// (with its ancestors, so undo and history work there too).
func (c *Core) Branch(ctx context.Context, req *Request) (*Delivery, error) {
	t, img, err := c.pick(ctx, req, "branch")
	if err != nil {
		return nil, err
	}
	d := &Delivery{Conv: req.Conv, Turn: *t, Image: img}
	d.Record = func(ctx context.Context, p Posted) error { return c.recordPost(ctx, req.Conv, *t, img, p) }
	return d, nil
}
