package bot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"net/http"

	// Decoders for every input format the bot accepts.
	_ "image/gif"
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/webp"

	"kontextbot/kontext"
)

// Limits on what a person can send. They hold before any charge or call to
// the provider.
const (
	MaxImageBytes   = 20 << 20   // 20 MiB
	MaxImageSide    = 8192       // pixels
	MaxImagePixels  = 40_000_000 // 40 megapixels
	MaxPromptRunes  = 2000
	acceptedFormats = "PNG, JPEG, WebP or GIF"
)

// Input errors, each with its own sentence. Test with errors.Is.
var (
	ErrNotImage      = &UserError{Msg: "That file is not an image the bot can edit: send a " + acceptedFormats + "."}
	ErrImageTooLarge = &UserError{Msg: fmt.Sprintf("That image is too large: the limit is %d MiB.", MaxImageBytes>>20)}
	ErrImageTooBig   = &UserError{Msg: fmt.Sprintf("That image has too many pixels: the limit is %d pixels a side and %d megapixels.", MaxImageSide, MaxImagePixels/1_000_000)}
	ErrImageBroken   = &UserError{Msg: "That image is damaged or incomplete and cannot be read. Try saving it again."}
	ErrEmptyPrompt   = &UserError{Msg: "Tell me what to make or change: the prompt is empty."}
	ErrPromptTooLong = &UserError{Msg: fmt.Sprintf("That prompt is too long: keep it under %d characters.", MaxPromptRunes)}
)

// CheckImage accepts a PNG, JPEG, WebP or GIF of at most MaxImageBytes,
// MaxImageSide a side and MaxImagePixels in all, whose pixels take at most
// MaxDecodeBytes to decode (see DecodeMemory), and that decodes completely.
// The size, pixel format and memory are read from the headers before
// anything is decoded, so a decompression bomb, or a small file of 16-bit
// pixels, is refused without allocating its pixels. It decodes without
// any shared bound: see CheckImageWithin.
func CheckImage(data []byte) error {
	return CheckImageWithin(context.Background(), data, nil)
}

// CheckImageWithin is CheckImage with the full decode inside budget: it
// waits (until ctx ends) for the image's DecodeMemory to be free, and
// refuses with a sentence an image that needs more than the whole budget.
// A PNG that is not interlaced is not decoded whole: it is read through
// row by row (kontext.CheckPNG), taking no budget.
func CheckImageWithin(ctx context.Context, data []byte, budget *kontext.Budget) error {
	if len(data) > MaxImageBytes {
		return ErrImageTooLarge
	}
	if kontext.Sniff(data) == "" {
		return ErrNotImage
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: decode config (%s): %w", ErrImageBroken, http.DetectContentType(data), err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return ErrImageBroken
	}
	if cfg.Width > MaxImageSide || cfg.Height > MaxImageSide || cfg.Width*cfg.Height > MaxImagePixels {
		return ErrImageTooBig
	}
	mem, err := DecodeMemory(data)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrImageBroken, err)
	}
	if mem > MaxDecodeBytes {
		return &UserError{Err: ErrImageMemory, Msg: fmt.Sprintf(
			"That image is too large to open: %d×%d pixels in this format need %d MiB of memory, and the limit is %d MiB. Send a smaller version (fewer pixels, or 8 bits per channel).",
			cfg.Width, cfg.Height, (mem+(1<<20)-1)>>20, MaxDecodeBytes>>20)}
	}
	if format == "png" {
		// Read through without holding the pixels; only an interlaced PNG
		// needs the full decode below.
		err := kontext.CheckPNG(data)
		if !errors.Is(err, kontext.ErrInterlaced) {
			if err != nil {
				return fmt.Errorf("%w: decode: %w", ErrImageBroken, err)
			}
			return nil
		}
	}
	release, err := budget.Acquire(ctx, mem)
	switch {
	case errors.Is(err, kontext.ErrOverBudget):
		return &UserError{Err: ErrImageMemory, Msg: fmt.Sprintf(
			"That image is too large to open here: %d×%d pixels in this format need %d MiB of memory, more than this bot may use for images (%d MiB). Send a smaller version (fewer pixels, or 8 bits per channel).",
			cfg.Width, cfg.Height, (mem+(1<<20)-1)>>20, budget.Size()>>20)}
	case err != nil:
		return fmt.Errorf("bot: check image: %w", err)
	}
	defer release()
	if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("%w: decode: %w", ErrImageBroken, err)
	}
	return nil
}

// ReadImage reads a downloaded image of at most MaxImageBytes (more is
// ErrImageTooLarge) into one buffer: sized from size, the response's
// Content-Length, when it is known, so the bytes are never copied to a
// doubled buffer on the way (io.ReadAll's growth holds up to twice the
// file). A size of -1 means unknown.
func ReadImage(r io.Reader, size int64) ([]byte, error) {
	if size > MaxImageBytes {
		return nil, ErrImageTooLarge
	}
	var buf bytes.Buffer
	if size > 0 {
		buf.Grow(int(size) + bytes.MinRead) // ReadFrom wants MinRead free to read the end
	}
	if _, err := buf.ReadFrom(io.LimitReader(r, MaxImageBytes+1)); err != nil {
		return nil, err
	}
	if buf.Len() > MaxImageBytes {
		return nil, ErrImageTooLarge
	}
	return buf.Bytes(), nil
}
