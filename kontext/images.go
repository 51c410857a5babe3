package kontext

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"net/http"
	"strings"

	// Decoders for every format the provider may return or a user may send.
	_ "image/gif"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
)

// MaxDecodePixels bounds the size Describe accepts, so a hostile header
// cannot make a caller allocate without limit. Results are held to much
// less (Config.MaxResultPixels), inputs to a memory budget
// (Config.MaxDecodeBytes).
const MaxDecodePixels = 64 << 20

// inputJPEGQuality is the quality of a re-encoded opaque input: high
// enough that an edit does not inherit visible artefacts.
const inputJPEGQuality = 92

// Describe names an encoded image's format and reads its size from the
// header, without decoding its pixels. Only PNG, JPEG, GIF and WebP pass.
func Describe(data []byte) (*Result, error) {
	res, _, err := describe(data)
	return res, err
}

func describe(data []byte) (*Result, image.Config, error) {
	format := Sniff(data)
	if format == "" {
		return nil, image.Config{}, fmt.Errorf("not a PNG, JPEG, GIF or WebP image (%s)", http.DetectContentType(data))
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, cfg, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxDecodePixels {
		return nil, cfg, fmt.Errorf("unreasonable size %dx%d", cfg.Width, cfg.Height)
	}
	return &Result{Data: data, Format: format, Width: cfg.Width, Height: cfg.Height}, cfg, nil
}

// DecodedBytes is the memory an image of this header takes once decoded:
// width × height × bytes per pixel of its colour model (8 for 16-bit RGBA,
// 4 for 8-bit RGBA, 3 at most for JPEG's YCbCr, 1 for paletted or gray).
func DecodedBytes(cfg image.Config) int64 {
	return int64(cfg.Width) * int64(cfg.Height) * bytesPerPixel(cfg.ColorModel)
}

func bytesPerPixel(m color.Model) int64 {
	switch m {
	case color.GrayModel, color.AlphaModel:
		return 1
	case color.Gray16Model, color.Alpha16Model:
		return 2
	case color.YCbCrModel:
		return 3
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel, color.NYCbCrAModel:
		return 4
	case color.RGBA64Model, color.NRGBA64Model:
		return 8
	}
	if _, ok := m.(color.Palette); ok {
		return 1
	}
	return 8 // unknown: assume the worst
}

// errResultTooLarge marks a result refused from its header alone.
var errResultTooLarge = errors.New("the result is far larger than the model's 1 MP output")

// verify checks a result from its header, against MaxResultPixels and a
// memory budget of 4 bytes per allowed pixel (bit depth included), and only
// then decodes it completely.
func (c *Client) verify(data []byte) (*Result, error) {
	res, cfg, err := describe(data)
	if err != nil {
		return nil, err
	}
	px := int64(cfg.Width) * int64(cfg.Height)
	if need := DecodedBytes(cfg); px > int64(c.cfg.MaxResultPixels) || need > 4*int64(c.cfg.MaxResultPixels) {
		return nil, fmt.Errorf("%w: %dx%d, %d bytes decoded; not decoded", errResultTooLarge, cfg.Width, cfg.Height, need)
	}
	if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
		return nil, err
	}
	return res, nil
}

// decodeDataURI decodes a base64 data: URI of at most limit decoded bytes,
// whatever its media type (Replicate has answered
// data:application/octet-stream;base64,...); verify checks the bytes.
func decodeDataURI(uri string, limit int64) ([]byte, error) {
	header, payload, ok := strings.Cut(uri, ",")
	if !ok || !strings.HasPrefix(strings.ToLower(header), "data:") {
		return nil, errors.New("not a data: URI")
	}
	if !strings.HasSuffix(strings.ToLower(header), ";base64") {
		return nil, errors.New("the data: URI is not base64")
	}
	if int64(len(payload)) > int64(base64.StdEncoding.EncodedLen(int(min(limit, math.MaxInt32)))) {
		return nil, fmt.Errorf("the data: URI holds more than %d bytes", limit)
	}
	data, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		if data, err = base64.RawStdEncoding.DecodeString(payload); err != nil {
			return nil, fmt.Errorf("the data: URI is not valid base64: %w", err)
		}
	}
	return data, nil
}

// DataURI encodes an image as a data: URI for input_image. PNG, JPEG, GIF
// and WebP go as they are, byte for byte; any other format this package
// can decode (BMP, TIFF) is re-encoded as PNG, within DefaultMaxDecodeBytes.
func DataURI(img []byte) (string, error) {
	if format := Sniff(img); format != "" {
		return dataURI(format, img), nil
	}
	decoded, err := decodeWithin(img, DefaultMaxDecodeBytes)
	if err != nil {
		return "", fmt.Errorf("kontext: input image: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, decoded); err != nil {
		return "", fmt.Errorf("kontext: input image: re-encode: %w", err)
	}
	return dataURI("png", buf.Bytes()), nil
}

func dataURI(format string, data []byte) string {
	return "data:image/" + format + ";base64," + base64.StdEncoding.EncodeToString(data)
}

// Sniff names the format of an encoded image the provider accepts as it is:
// "png", "jpeg", "gif" or "webp"; "" for anything else.
func Sniff(b []byte) string {
	switch ct := http.DetectContentType(b); ct {
	case "image/png", "image/jpeg", "image/gif", "image/webp":
		return strings.TrimPrefix(ct, "image/")
	}
	return ""
}

// errInputBudget marks an input too big to decode within the budget.
var errInputBudget = errors.New("too large to process")

// decodeWithin decodes img only when its header says it fits budget bytes.
func decodeWithin(img []byte, budget int64) (image.Image, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return nil, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || DecodedBytes(cfg) > budget {
		return nil, fmt.Errorf("%w: %dx%d pixels would take %d MB decoded", errInputBudget, cfg.Width, cfg.Height, DecodedBytes(cfg)>>20)
	}
	decoded, _, err := image.Decode(bytes.NewReader(img))
	return decoded, err
}

// encodedInput is an input image as it is sent: its format and bytes.
type encodedInput struct {
	format string
	data   []byte
}

func (in *encodedInput) uriHeader() string { return "data:image/" + in.format + ";base64," }

// uriLen is the length of its data URI.
func (in *encodedInput) uriLen() int {
	return len(in.uriHeader()) + base64.StdEncoding.EncodedLen(len(in.data))
}

// input returns the input image to send: the bytes as they are when their
// data URI fits limit, else a downscaled re-encoding.
func (c *Client) input(ctx context.Context, img []byte, limit int) (*encodedInput, error) {
	if format := Sniff(img); format != "" {
		if in := (&encodedInput{format: format, data: img}); in.uriLen() <= limit {
			return in, nil
		}
	}
	return c.shrinkInput(ctx, img, limit)
}

// shrinkInput scales img down to at most InputPixels and encodes it as
// JPEG quality 92 (PNG when it has transparency); while the data URI
// passes limit it scales down further, by the ratio of the sizes. A PNG
// that is not interlaced is decoded row by row into the smaller image,
// never whole; any other image is decoded whole, within MaxDecodeBytes.
// Either way the memory is first taken from the Budget (waiting for it).
func (c *Client) shrinkInput(ctx context.Context, img []byte, limit int) (*encodedInput, error) {
	base, opaque, err := c.firstScale(ctx, img)
	if err != nil {
		return nil, err
	}
	pixels := c.cfg.InputPixels
	for range 6 {
		scaled := scaleDown(base, pixels)
		var buf bytes.Buffer
		format := "png"
		if opaque {
			format = "jpeg"
			err = jpeg.Encode(&buf, scaled, &jpeg.Options{Quality: inputJPEGQuality})
		} else {
			err = png.Encode(&buf, scaled)
		}
		if err != nil {
			return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the input image cannot be re-encoded", Err: err}
		}
		in := &encodedInput{format: format, data: buf.Bytes()}
		b := scaled.Bounds()
		c.log.Debug("kontext: input image re-encoded", "from_bytes", len(img), "to_bytes", buf.Len(), "width", b.Dx(), "height", b.Dy(), "format", format, "limit", limit)
		if in.uriLen() <= limit {
			return in, nil
		}
		pixels = int(float64(b.Dx()*b.Dy()) * float64(limit) / float64(in.uriLen()) * 0.9)
		if pixels < 32*32 {
			break
		}
	}
	return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the input image is too large to send, even made smaller"}
}

// firstScale returns img decoded and scaled down to at most InputPixels,
// and whether it is opaque, within its share of the Budget.
func (c *Client) firstScale(ctx context.Context, img []byte) (image.Image, bool, error) {
	unreadable := func(err error) error {
		return &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the input image cannot be read as an image", Err: err}
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return nil, false, unreadable(err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, false, unreadable(fmt.Errorf("size %dx%d", cfg.Width, cfg.Height))
	}
	pixels := c.cfg.InputPixels
	dw, dh := scaledSize(cfg.Width, cfg.Height, pixels)
	// The scaled image (4 bytes a pixel) and its encoding, plus the rows
	// of a streamed PNG or the whole decoded image.
	mem, err := DecodeMemory(img)
	if err != nil {
		return nil, false, unreadable(err)
	}
	if mem > c.cfg.MaxDecodeBytes { // refused alike however it would be decoded
		return nil, false, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the input image is too large to process; send one of at most about 30 megapixels",
			Err: fmt.Errorf("%w: %dx%d pixels would take %d MB decoded", errInputBudget, cfg.Width, cfg.Height, mem>>20)}
	}
	need := 5*int64(pixels) + mem
	streamed := format == "png" && !pngInterlaced(img)
	if streamed {
		need = 5*int64(pixels) + 64<<10 + 40*int64(cfg.Width)
	}
	release, err := c.cfg.Budget.Acquire(ctx, need)
	switch {
	case errors.Is(err, ErrOverBudget):
		return nil, false, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the input image is too large to process; send one with fewer pixels", Err: err}
	case err != nil:
		return nil, false, c.ctxError(ctx, "create", "")
	}
	defer release()
	if streamed {
		s := newAreaScaler(cfg.Width, cfg.Height, dw, dh)
		if _, err := pngRows(img, s.add); err != nil {
			return nil, false, unreadable(err)
		}
		dst := s.image()
		return dst, dst.Opaque(), nil
	}
	src, err := decodeWithin(img, c.cfg.MaxDecodeBytes)
	if err != nil {
		msg := "the input image cannot be read as an image"
		if errors.Is(err, errInputBudget) {
			msg = "the input image is too large to process; send one of at most about 30 megapixels"
		}
		return nil, false, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: msg, Err: err}
	}
	opaque := false
	if o, ok := src.(interface{ Opaque() bool }); ok {
		opaque = o.Opaque()
	}
	return scaleDown(src, pixels), opaque, nil
}

// pngInterlaced reads the interlace flag of a PNG's IHDR.
func pngInterlaced(img []byte) bool {
	return len(img) > 28 && img[28] != 0
}

// scaledSize is w×h scaled to at most pixels in area, keeping its aspect
// ratio (w×h itself when it is small enough).
func scaledSize(w, h, pixels int) (int, int) {
	if w*h <= pixels {
		return w, h
	}
	f := math.Sqrt(float64(pixels) / float64(w*h))
	return max(1, int(float64(w)*f)), max(1, int(float64(h)*f))
}

// scaleDown returns src scaled to at most pixels in area, keeping its
// aspect ratio (src itself when it is small enough), averaging the area
// each new pixel covers. (x/image/draw's kernel scalers keep a float
// buffer of the new width times the old height: 84 MB for an 18 MiB
// input, 200 MB for a 40 MP one.)
func scaleDown(src image.Image, pixels int) image.Image {
	b := src.Bounds()
	if b.Dx()*b.Dy() <= pixels {
		return src
	}
	nw, nh := scaledSize(b.Dx(), b.Dy(), pixels)
	return scaleArea(src, nw, nh)
}
