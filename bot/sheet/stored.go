package sheet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"

	"golang.org/x/image/draw"
)

// ThumbQuality is the JPEG quality of stored thumbnails (EncodeThumb).
const ThumbQuality = 85

// Store keeps encoded thumbnails (EncodeThumb) beyond a process, by the
// key naming the image's bytes (Node.Key): a database every replica of
// the bot reads. Render reads a node's thumbnail from it before it
// reads the node's image, and puts there every thumbnail it had to make.
type Store interface {
	// Thumb returns the encoded thumbnail kept under key; nil with no
	// error when there is none. An error fails the render.
	Thumb(ctx context.Context, key string) ([]byte, error)
	// PutThumb keeps data under key. An error does not fail the render
	// (the thumbnail is made again next time).
	PutThumb(ctx context.Context, key string, data []byte) error
}

// EncodeThumb encodes a thumbnail for a Store: a JPEG (quality
// ThumbQuality, a few KB) of the thumbnail laid on BoxColor, which is
// what a sheet draws it on, so a sheet drawn from it looks the same.
func EncodeThumb(th *image.RGBA) ([]byte, error) {
	if th == nil || th.Rect.Empty() {
		return nil, errors.New("sheet: encode thumbnail: empty")
	}
	src := th
	if !th.Opaque() {
		flat := image.NewRGBA(th.Rect)
		fill(flat, flat.Rect, BoxColor)
		draw.Draw(flat, flat.Rect, th, th.Rect.Min, draw.Over)
		src = flat
	}
	var b bytes.Buffer
	b.Grow(16 << 10)
	if err := jpeg.Encode(&b, src, &jpeg.Options{Quality: ThumbQuality}); err != nil {
		return nil, fmt.Errorf("sheet: encode thumbnail: %w", err)
	}
	return b.Bytes(), nil
}

// DecodeThumb reads a thumbnail EncodeThumb wrote. Anything else (not a
// JPEG, or larger than ThumbSize a side) is an error.
func DecodeThumb(data []byte) (*image.RGBA, error) {
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("sheet: decode thumbnail: %w", err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || cfg.Width > ThumbSize || cfg.Height > ThumbSize {
		return nil, fmt.Errorf("sheet: decode thumbnail: %d×%d is not a thumbnail", cfg.Width, cfg.Height)
	}
	src, err := jpeg.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("sheet: decode thumbnail: %w", err)
	}
	b := src.Bounds()
	th := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(th, th.Rect, src, b.Min, draw.Src)
	return th, nil
}

// stored reads node n's thumbnail from s: nil when s is nil, n has no
// key, none is kept, or the one kept does not decode (it is then made
// again from the image, and replaced).
func stored(ctx context.Context, s Store, n Node) (*image.RGBA, error) {
	if s == nil || n.Key == "" {
		return nil, nil
	}
	data, err := s.Thumb(ctx, n.Key)
	if err != nil || data == nil {
		return nil, err
	}
	th, err := DecodeThumb(data)
	if err != nil {
		return nil, nil
	}
	return th, nil
}

// keep puts th, made from node n's image, in s, when both are set.
func keep(ctx context.Context, s Store, n Node, th *image.RGBA) {
	if s == nil || n.Key == "" || th == nil {
		return
	}
	data, err := EncodeThumb(th)
	if err != nil {
		return
	}
	_ = s.PutThumb(ctx, n.Key, data) // the Store reports its own errors
}
