package bot

import (
	"fmt"

	"kontextbot/kontext"
)

// MaxDecodeBytes is the memory one image may take to decode. Decoding
// allocates by pixel format, not by file size: a 280 KB PNG of 6000×6000
// pixels at 16 bits per channel decodes into 288 MB. The limit lets every
// baseline JPEG and lossy WebP within MaxImagePixels through, 8-bit PNGs
// up to 33 MP (4 bytes a pixel), and 16-bit or interlaced PNGs, progressive
// JPEGs and lossless WebPs up to about 8 to 18 MP, by format. It is the
// provider client's budget for re-encoding an input (128 MiB), so that an
// image the bot accepts is never refused later, after it waited in line.
const MaxDecodeBytes = 128 << 20

// ErrImageMemory is the error of an image that would take more than
// MaxDecodeBytes to decode; the error CheckImage returns wraps it and
// says how much the image needs.
var ErrImageMemory = &UserError{Msg: fmt.Sprintf("That image is too large to open: it would need more than %d MiB of memory. Send a smaller version (fewer pixels, or 8 bits per channel).", MaxDecodeBytes>>20)}

// DecodeMemory estimates, from the headers only, the bytes Go's decoder
// allocates to decode data (PNG, JPEG, GIF or WebP); see
// kontext.DecodeMemory. Nothing is decompressed.
func DecodeMemory(data []byte) (int64, error) { return kontext.DecodeMemory(data) }
