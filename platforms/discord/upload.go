package discord

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"

	"golang.org/x/image/draw"
)

// Upload limits. Discord refuses a message whose files exceed the
// channel's upload limit with 413 (code 40005). The limit is 10 MiB unless
// the server's boosts raise it; interactions say which it is
// (attachment_size_limit). A posted copy is made to fit; the stored image
// is never changed.
const (
	// minUploadLimit is Discord's default upload limit, used when nothing
	// better is known, and the floor of any limit Discord reports.
	minUploadLimit = 10 << 20
	// uploadMargin leaves room in the request for the message's JSON and
	// the multipart framing.
	uploadMargin = 256 << 10
)

// noteUploadLimit remembers the upload limit an interaction reported for
// its server (a cache: lost at a restart, where jobs carry their own).
func (b *Bot) noteUploadLimit(guildID string, limit int) {
	if guildID == "" || limit <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.uploadLimits) >= 10000 {
		clear(b.uploadLimits)
	}
	b.uploadLimits[guildID] = limit
}

// knownLimit is the upload limit last reported in a server, or 0.
func (b *Bot) knownLimit(guildID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.uploadLimits[guildID]
}

// uploadLimit is the upload limit in a server: what the job's own
// interaction reported (known, when > 0), else the last one an
// interaction there reported, never below Discord's default.
func (b *Bot) uploadLimit(guildID string, known int) int {
	if known <= 0 && guildID != "" {
		b.mu.Lock()
		known = b.uploadLimits[guildID]
		b.mu.Unlock()
	}
	return max(known, minUploadLimit)
}

// fit returns f unchanged when it fits limit, else a JPEG copy that does:
// at decreasing quality first, then scaled down.
func fit(f *outFile, limit int) (*outFile, error) {
	budget := limit - uploadMargin
	if f == nil || len(f.Data) <= budget {
		return f, nil
	}
	src, _, err := image.Decode(bytes.NewReader(f.Data))
	if err != nil {
		return nil, fmt.Errorf("discord: re-encode an image too large to post: %w", err)
	}
	// JPEG has no transparency: flatten onto white.
	b := src.Bounds()
	img := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(img, img.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.Draw(img, img.Bounds(), src, b.Min, draw.Over)
	var cur image.Image = img
	for scale := 0; scale < 8; scale++ {
		for _, q := range []int{90, 80, 70, 60} {
			var buf bytes.Buffer
			if err := jpeg.Encode(&buf, cur, &jpeg.Options{Quality: q}); err != nil {
				return nil, fmt.Errorf("discord: re-encode: %w", err)
			}
			if buf.Len() <= budget {
				name := f.Name
				if i := len(name) - len(extOf(name)); i > 0 {
					name = name[:i]
				}
				return &outFile{Name: name + ".jpg", ContentType: "image/jpeg", Data: buf.Bytes()}, nil
			}
		}
		cb := cur.Bounds()
		w, h := cb.Dx()*7/10, cb.Dy()*7/10
		if w < 16 || h < 16 {
			break
		}
		small := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.ApproxBiLinear.Scale(small, small.Bounds(), cur, cb, draw.Src, nil)
		cur = small
	}
	return nil, errors.New("discord: could not make the image fit the upload limit")
}

// extOf is the extension of a file name, with its dot, or "".
func extOf(name string) string {
	for i := len(name) - 1; i >= 0 && name[i] != '/'; i-- {
		if name[i] == '.' {
			return name[i:]
		}
	}
	return ""
}

// fitResult makes a result message's image fit the upload limit of the
// server it is posted in, renaming its attachment if it is re-encoded.
//
// A message of several files (f.More) shares the limit: each file is
// made to fit an equal part of it.
func (b *Bot) fitResult(m outMessage, f *outFile, guildID string, known int) (outMessage, *outFile, error) {
	limit := b.uploadLimit(guildID, known)
	if f != nil && len(f.More) > 0 {
		all := append([]*outFile{{Name: f.Name, ContentType: f.ContentType, Data: f.Data}}, f.More...)
		part := limit / len(all)
		var fitted []*outFile
		for _, one := range all {
			var err error
			if m, one, err = b.fitOne(m, one, part); err != nil {
				return m, nil, err
			}
			fitted = append(fitted, one)
		}
		out := *fitted[0]
		out.More = fitted[1:]
		return m, &out, nil
	}
	return b.fitOne(m, f, limit)
}

// fitOne makes one file fit limit, renaming its attachment if it is
// re-encoded.
func (b *Bot) fitOne(m outMessage, f *outFile, limit int) (outMessage, *outFile, error) {
	small, err := fit(f, limit)
	if err != nil || small == f {
		return m, f, err
	}
	b.log.Info("discord: posting a smaller copy of an image over the upload limit", "bytes", len(f.Data), "posted", len(small.Data), "limit", limit)
	m.Attachments = append([]outAttachment(nil), m.Attachments...)
	for i := range m.Attachments {
		if m.Attachments[i].Filename == f.Name {
			m.Attachments[i].Filename = small.Name
		}
	}
	return m, small, nil
}

// noteUploadLimitIn notes the upload limit an interaction's JSON reports
// (attachment_size_limit, a field discordgo v0.29 does not read), from
// the gateway or the interactions endpoint.
func (b *Bot) noteUploadLimitIn(raw []byte) {
	var in struct {
		GuildID             string `json:"guild_id"`
		AttachmentSizeLimit int    `json:"attachment_size_limit"`
	}
	if json.Unmarshal(raw, &in) == nil {
		b.noteUploadLimit(in.GuildID, in.AttachmentSizeLimit)
	}
}
