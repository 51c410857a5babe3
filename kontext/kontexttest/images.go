package kontexttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	stddraw "image/draw"
	_ "image/gif" // input images may be gif
	"image/jpeg"
	"image/png"
	"math"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"

	"golang.org/x/image/draw"
	"golang.org/x/image/font/basicfont"
	_ "golang.org/x/image/webp" // input images may be webp
)

// Provenance is what every generated image carries, in a PNG tEXt chunk or
// a JPEG COM segment, so a test can prove which request made an image.
type Provenance struct {
	// Prompt is the prompt exactly as the request gave it.
	Prompt string `json:"prompt"`
	// Seed is the seed used: input.seed when given, else a random one.
	Seed int64 `json:"seed"`
	// Model is the bare model name, "flux-kontext-max", "flux-2-pro"...
	Model string `json:"model"`
	// InputSHA256 is the hex sha256 of the exact input_image bytes the fake
	// received (decoded from the data: URI, or the result it was pointed
	// at); "" for text-to-image.
	InputSHA256 string `json:"input_sha256"`
	// AspectRatio is the requested aspect_ratio (the model's default when
	// the request gave none: "match_input_image" on Kontext, "1:1" on
	// FLUX.2 and on the Images route).
	AspectRatio string `json:"aspect_ratio"`
	// Inputs are the hex sha256 of every reference image the fake
	// received, in order: input_image, input_image_2.. on Kontext, the
	// input_images array on FLUX.2. Inputs[0] is InputSHA256; nil for
	// text-to-image.
	Inputs []string `json:"inputs,omitempty"`
	// PromptUpsampling is the request's prompt_upsampling.
	PromptUpsampling bool `json:"prompt_upsampling,omitempty"`
}

// ErrNoProvenance is returned by ReadProvenance for a PNG or JPEG that
// carries no provenance.
var ErrNoProvenance = errors.New("kontexttest: image carries no provenance")

const (
	provenanceKey = "kontext:provenance"
	// jpegCOMPrefix starts every COM segment holding (part of) the
	// provenance JSON; the parts are concatenated in order.
	jpegCOMPrefix = provenanceKey + ":"
	jpegQuality   = 90
)

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// ReadProvenance returns the provenance a fake-generated image carries,
// from its PNG tEXt chunk or its JPEG COM segments.
func ReadProvenance(img []byte) (Provenance, error) {
	var (
		meta []byte
		err  error
	)
	switch {
	case bytes.HasPrefix(img, pngSignature):
		meta, err = pngProvenance(img)
	case len(img) >= 2 && img[0] == 0xFF && img[1] == 0xD8:
		meta, err = jpegProvenance(img)
	default:
		return Provenance{}, errors.New("kontexttest: ReadProvenance: not a PNG or JPEG image")
	}
	if err != nil {
		return Provenance{}, err
	}
	var p Provenance
	if err := json.Unmarshal(meta, &p); err != nil {
		return Provenance{}, fmt.Errorf("kontexttest: ReadProvenance: %w", err)
	}
	return p, nil
}

func pngProvenance(img []byte) ([]byte, error) {
	for pos := len(pngSignature); ; {
		if len(img)-pos < 12 {
			return nil, errors.New("kontexttest: ReadProvenance: truncated PNG")
		}
		n := int(binary.BigEndian.Uint32(img[pos:]))
		if n < 0 || n > len(img)-pos-12 {
			return nil, errors.New("kontexttest: ReadProvenance: truncated PNG chunk")
		}
		typ := string(img[pos+4 : pos+8])
		data := img[pos+8 : pos+8+n]
		if crc32.ChecksumIEEE(img[pos+4:pos+8+n]) != binary.BigEndian.Uint32(img[pos+8+n:]) {
			return nil, fmt.Errorf("kontexttest: ReadProvenance: bad CRC in PNG %s chunk", typ)
		}
		switch typ {
		case "tEXt":
			if k, v, ok := bytes.Cut(data, []byte{0}); ok && string(k) == provenanceKey {
				return v, nil
			}
		case "IEND":
			return nil, ErrNoProvenance
		}
		pos += 12 + n
	}
}

func jpegProvenance(img []byte) ([]byte, error) {
	var meta []byte
	found := false
	for pos := 2; pos < len(img); {
		if img[pos] != 0xFF {
			return nil, errors.New("kontexttest: ReadProvenance: malformed JPEG")
		}
		for pos < len(img) && img[pos] == 0xFF { // fill bytes
			pos++
		}
		if pos >= len(img) {
			break
		}
		marker := img[pos]
		pos++
		switch {
		case marker == 0xD9 || marker == 0xDA: // EOI, SOS: no more metadata
			pos = len(img)
			continue
		case marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7): // no length
			continue
		}
		if len(img)-pos < 2 {
			return nil, errors.New("kontexttest: ReadProvenance: truncated JPEG")
		}
		n := int(binary.BigEndian.Uint16(img[pos:]))
		if n < 2 || n > len(img)-pos {
			return nil, errors.New("kontexttest: ReadProvenance: truncated JPEG segment")
		}
		if payload := img[pos+2 : pos+n]; marker == 0xFE && bytes.HasPrefix(payload, []byte(jpegCOMPrefix)) {
			meta = append(meta, payload[len(jpegCOMPrefix):]...)
			found = true
		}
		pos += n
	}
	if !found {
		return nil, ErrNoProvenance
	}
	return meta, nil
}

// asciiJSON marshals v as JSON with every non-ASCII rune escaped, so it
// fits a Latin-1 PNG tEXt chunk unchanged.
func asciiJSON(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(data))
	for _, r := range string(data) {
		switch {
		case r < 0x80:
			b.WriteByte(byte(r))
		case r > 0xFFFF:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
	}
	return b.Bytes(), nil
}

func sha256Hex(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// renderJob is everything that decides one result image.
type renderJob struct {
	prov   Provenance
	input  image.Image   // decoded first reference, nil for text-to-image
	refs   []image.Image // the further references, decoded
	format string        // "png" or "jpg"
	pixels int           // target area
}

// render draws and encodes the result image, provenance included.
func (j *renderJob) render() ([]byte, error) {
	return encode(j.draw(), j.format, j.prov)
}

// outputSize returns the output size for aspect: about pixels in area,
// both sides multiples of 32, the ratio within 3:7..7:3.
// match_input_image (or "") follows the input image's ratio, clamped to
// that range, and is square without an input.
func outputSize(aspect string, input image.Image, pixels int) (w, h int) {
	const lo, hi = 3.0 / 7, 7.0 / 3
	ratio := 1.0
	if a, b, ok := strings.Cut(aspect, ":"); ok {
		x, err1 := strconv.Atoi(a)
		y, err2 := strconv.Atoi(b)
		if err1 == nil && err2 == nil && x > 0 && y > 0 {
			ratio = float64(x) / float64(y)
		}
	} else if input != nil {
		b := input.Bounds()
		if b.Dx() > 0 && b.Dy() > 0 {
			ratio = float64(b.Dx()) / float64(b.Dy())
		}
	}
	ratio = min(max(ratio, lo), hi)
	// Of the four ways to round the exact sides to multiples of 32, take
	// the one closest in ratio and area, keeping the ratio in range.
	fw, fh := math.Sqrt(float64(pixels)*ratio), math.Sqrt(float64(pixels)/ratio)
	best := math.Inf(1)
	for _, cw := range []int{int(fw/32) * 32, int(fw/32+1) * 32} {
		for _, ch := range []int{int(fh/32) * 32, int(fh/32+1) * 32} {
			cw, ch := max(32, cw), max(32, ch)
			r := float64(cw) / float64(ch)
			cost := math.Abs(math.Log(r/ratio)) + math.Abs(math.Log(float64(cw*ch)/float64(pixels)))
			if r < lo-1e-9 || r > hi+1e-9 {
				cost += 100 // out of range: only if nothing else fits
			}
			if cost < best {
				best, w, h = cost, cw, ch
			}
		}
	}
	return w, h
}

// draw paints the result: for text-to-image a gradient with shapes, for an
// edit the input scaled to cover the output with a tint, a band and a
// frame; then the prompt as a caption and the model and seed as a header.
func (j *renderJob) draw() *image.RGBA {
	w, h := outputSize(j.prov.AspectRatio, j.input, j.pixels)
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	key, _ := json.Marshal(j.prov)
	sum := sha256.Sum256(key)
	rnd := mix(binary.LittleEndian.Uint64(sum[:8]) ^ binary.LittleEndian.Uint64(sum[8:16]))
	hue := rnd.float() * 360
	accent := hsv(hue, 0.85, 0.95)

	if j.input == nil {
		c1 := hsv(hue, 0.55+0.35*rnd.float(), 0.45+0.4*rnd.float())
		c2 := hsv(math.Mod(hue+90+180*rnd.float(), 360), 0.55+0.35*rnd.float(), 0.55+0.4*rnd.float())
		gradient(img, c1, c2)
		side := min(w, h)
		for range 7 {
			c := hsv(rnd.float()*360, 0.5+0.5*rnd.float(), 0.5+0.5*rnd.float())
			alpha := 90 + rnd.intn(120)
			x, y := rnd.intn(w), rnd.intn(h)
			size := side/10 + rnd.intn(max(1, side/4))
			if rnd.intn(2) == 0 {
				blendCircle(img, x, y, size/2, c, alpha)
			} else {
				blendRect(img, image.Rect(x-size/2, y-size/3, x+size/2, y+size/3), c, alpha)
			}
		}
	} else {
		cover(img, j.input)
		blendRect(img, img.Rect, accent, 51) // a 20% prompt-coloured tint
		t := max(2, min(w, h)/96)
		blendRect(img, image.Rect(0, 0, w, t), accent, 256)
		blendRect(img, image.Rect(0, h-t, w, h), accent, 256)
		blendRect(img, image.Rect(0, 0, t, h), accent, 256)
		blendRect(img, image.Rect(w-t, 0, w, h), accent, 256)
		// Further references: a framed thumbnail each, top right, in
		// order left to right, so a picture shows what it was made from.
		side := min(w, h) / 4
		for i, ref := range j.refs {
			x1 := w - t - (len(j.refs)-1-i)*(side+t)
			r := image.Rect(x1-side, 2*t+min(w, h)/32, x1, 2*t+min(w, h)/32+side)
			if r.Min.X < t || side < 8 {
				continue // no room for this many: the first ones go
			}
			thumb := image.NewRGBA(image.Rect(0, 0, side-2*t, side-2*t))
			cover(thumb, ref)
			blendRect(img, r, accent, 256)
			draw.Draw(img, r.Inset(t), thumb, image.Point{}, draw.Src)
		}
	}

	scale := max(1, min(w/256, h/52))
	pad := 4 * scale
	lineH := 15 * scale
	// Header: model and seed, small, on a prompt-coloured band. The bands
	// are opaque, so an edit's text never mixes with its input's.
	hs := max(1, scale/2)
	header := j.prov.Model + " seed " + strconv.FormatInt(j.prov.Seed, 10)
	blendRect(img, image.Rect(0, 0, w, glyphHeight*hs+2*hs), accent, 256)
	drawText(img, 2*hs, hs, header, hs, color.RGBA{0, 0, 0, 255})
	// Caption: the prompt, on a dark band at the bottom.
	maxChars := max(1, (w-2*pad)/(glyphAdvance*scale))
	maxLines := min(4, max(1, (h/3)/lineH))
	lines := wrap(j.prov.Prompt, maxChars, maxLines)
	bandH := len(lines)*lineH + 2*pad
	blendRect(img, image.Rect(0, h-bandH, w, h), color.RGBA{24, 24, 24, 255}, 256)
	for i, line := range lines {
		drawText(img, pad, h-bandH+pad+i*lineH+scale, line, scale, color.RGBA{255, 255, 255, 255})
	}
	return img
}

// cover scales src to cover dst (cropping the centre), over white when
// src has transparency.
func cover(dst *image.RGBA, src image.Image) {
	w, h := dst.Rect.Dx(), dst.Rect.Dy()
	b := src.Bounds()
	iw, ih := b.Dx(), b.Dy()
	sr := b
	if iw*h > ih*w { // input wider: crop its sides
		cw := max(1, ih*w/h)
		sr.Min.X += (iw - cw) / 2
		sr.Max.X = sr.Min.X + cw
	} else {
		ch := max(1, iw*h/w)
		sr.Min.Y += (ih - ch) / 2
		sr.Max.Y = sr.Min.Y + ch
	}
	if o, ok := src.(interface{ Opaque() bool }); ok && o.Opaque() {
		draw.ApproxBiLinear.Scale(dst, dst.Rect, src, sr, draw.Src, nil)
		return
	}
	for i := range dst.Pix {
		dst.Pix[i] = 0xFF
	}
	draw.ApproxBiLinear.Scale(dst, dst.Rect, src, sr, draw.Over, nil)
}

// gradient fills img with a diagonal gradient from c1 to c2: pixel (x, y)
// has colour table[x+y], so every row is one copy.
func gradient(img *image.RGBA, c1, c2 color.RGBA) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	n := w + h - 1
	table := make([]byte, 4*n)
	for i := range n {
		t := i * 256 / n
		table[4*i+0] = lerp(c1.R, c2.R, t)
		table[4*i+1] = lerp(c1.G, c2.G, t)
		table[4*i+2] = lerp(c1.B, c2.B, t)
		table[4*i+3] = 0xFF
	}
	for y := range h {
		copy(img.Pix[y*img.Stride:y*img.Stride+4*w], table[4*y:4*(y+w)])
	}
}

func lerp(a, b uint8, t int) uint8 { return uint8((int(a)*(256-t) + int(b)*t) >> 8) }

// blendSpan blends c over the pixels [x0, x1) of row y with alpha/256.
func blendSpan(img *image.RGBA, y, x0, x1 int, c color.RGBA, alpha int) {
	b := img.Rect
	if y < b.Min.Y || y >= b.Max.Y {
		return
	}
	x0, x1 = max(x0, b.Min.X), min(x1, b.Max.X)
	if x0 >= x1 {
		return
	}
	row := img.Pix[img.PixOffset(x0, y):img.PixOffset(x1, y)]
	if alpha >= 256 {
		for i := 0; i < len(row); i += 4 {
			row[i], row[i+1], row[i+2], row[i+3] = c.R, c.G, c.B, 0xFF
		}
		return
	}
	inv := 256 - alpha
	cr, cg, cb := int(c.R)*alpha, int(c.G)*alpha, int(c.B)*alpha
	for i := 0; i < len(row); i += 4 {
		row[i] = uint8((int(row[i])*inv + cr) >> 8)
		row[i+1] = uint8((int(row[i+1])*inv + cg) >> 8)
		row[i+2] = uint8((int(row[i+2])*inv + cb) >> 8)
	}
}

func blendRect(img *image.RGBA, r image.Rectangle, c color.RGBA, alpha int) {
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		blendSpan(img, y, r.Min.X, r.Max.X, c, alpha)
	}
}

func blendCircle(img *image.RGBA, cx, cy, radius int, c color.RGBA, alpha int) {
	for dy := -radius; dy <= radius; dy++ {
		dx := int(math.Sqrt(float64(radius*radius - dy*dy)))
		blendSpan(img, cy+dy, cx-dx, cx+dx+1, c, alpha)
	}
}

// hsv converts a hue (degrees), saturation and value (0..1) to an opaque colour.
func hsv(hue, s, v float64) color.RGBA {
	c := v * s
	hp := math.Mod(hue, 360) / 60
	x := c * (1 - math.Abs(math.Mod(hp, 2)-1))
	var r, g, b float64
	switch int(hp) {
	case 0:
		r, g = c, x
	case 1:
		r, g = x, c
	case 2:
		g, b = c, x
	case 3:
		g, b = x, c
	case 4:
		r, b = x, c
	default:
		r, b = c, x
	}
	m := v - c
	to := func(f float64) uint8 { return uint8(math.Round((f + m) * 255)) }
	return color.RGBA{to(r), to(g), to(b), 0xFF}
}

// mix is a splitmix64 generator: stable across Go versions, so images stay
// byte-for-byte deterministic.
type mix uint64

func (m *mix) next() uint64 {
	*m += 0x9e3779b97f4a7c15
	z := uint64(*m)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (m *mix) intn(n int) int { return int(m.next() % uint64(n)) }
func (m *mix) float() float64 { return float64(m.next()>>11) / (1 << 53) }

// The caption font: basicfont's 7x13 face, read straight from its mask.
var (
	face         = basicfont.Face7x13
	glyphAdvance = face.Advance
	glyphHeight  = face.Ascent + face.Descent
	glyphMask    = alphaMask(face.Mask)
)

func alphaMask(m image.Image) *image.Alpha {
	if a, ok := m.(*image.Alpha); ok && a.Rect.Min == (image.Point{}) {
		return a
	}
	a := image.NewAlpha(image.Rect(0, 0, m.Bounds().Dx(), m.Bounds().Dy()))
	stddraw.Draw(a, a.Rect, m, m.Bounds().Min, stddraw.Src)
	return a
}

// glyphIndex returns the index of r's glyph in the mask (U+FFFD when the
// face lacks r).
func glyphIndex(r rune) int {
	for _, rg := range face.Ranges {
		if rg.Low <= r && r < rg.High {
			return int(r-rg.Low) + rg.Offset
		}
	}
	if r != '\ufffd' {
		return glyphIndex('\ufffd')
	}
	return 0
}

// drawText draws s with its top-left corner at (x, y), every font pixel a
// scale×scale block.
func drawText(img *image.RGBA, x, y int, s string, scale int, c color.RGBA) {
	for _, r := range s {
		top := glyphIndex(r) * glyphHeight
		for gy := range glyphHeight {
			row := glyphMask.Pix[(top+gy)*glyphMask.Stride:]
			for gx := range face.Width {
				if row[gx] < 0x80 {
					continue
				}
				px, py := x+(face.Left+gx)*scale, y+gy*scale
				for yy := py; yy < py+scale; yy++ {
					blendSpan(img, yy, px, px+scale, c, 256)
				}
			}
		}
		x += glyphAdvance * scale
	}
}

// wrap breaks text into at most maxLines lines of at most maxChars runes,
// breaking long words, ending with "..." when it had to cut.
func wrap(text string, maxChars, maxLines int) []string {
	var lines []string
	var cur []rune
	for _, word := range strings.Fields(text) {
		rs := []rune(word)
		if len(cur) > 0 && len(cur)+1+len(rs) > maxChars {
			lines = append(lines, string(cur))
			cur = cur[:0]
		}
		for len(rs) > 0 {
			if len(cur) > 0 {
				cur = append(cur, ' ')
			}
			n := min(len(rs), maxChars-len(cur))
			if n <= 0 {
				lines = append(lines, string(cur[:len(cur)-1]))
				cur = cur[:0]
				continue
			}
			cur = append(cur, rs[:n]...)
			rs = rs[n:]
			if len(rs) > 0 {
				lines = append(lines, string(cur))
				cur = cur[:0]
			}
		}
	}
	if len(cur) > 0 {
		lines = append(lines, string(cur))
	}
	if len(lines) > maxLines {
		last := []rune(lines[maxLines-1])
		if keep := maxChars - 3; len(last) > keep {
			last = last[:max(0, keep)]
		}
		lines = append(lines[:maxLines-1], string(last)+"...")
	}
	return lines
}

// pngBuffers reuses the PNG encoder's buffers across images.
type pngBuffers struct{ pool sync.Pool }

func (p *pngBuffers) Get() *png.EncoderBuffer {
	b, _ := p.pool.Get().(*png.EncoderBuffer)
	return b
}

func (p *pngBuffers) Put(b *png.EncoderBuffer) { p.pool.Put(b) }

var pngEncoder = png.Encoder{CompressionLevel: png.BestSpeed, BufferPool: &pngBuffers{}}

// encode encodes img as PNG (tEXt provenance after IHDR) or, for "jpg",
// JPEG (COM provenance after SOI).
func encode(img *image.RGBA, format string, prov Provenance) ([]byte, error) {
	meta, err := asciiJSON(prov)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if format == "jpg" {
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: jpegQuality}); err != nil {
			return nil, err
		}
		return insertJPEGComment(buf.Bytes(), meta)
	}
	if err := pngEncoder.Encode(&buf, img); err != nil {
		return nil, err
	}
	return insertPNGText(buf.Bytes(), provenanceKey, meta)
}

// insertPNGText adds a tEXt chunk right after IHDR.
func insertPNGText(enc []byte, keyword string, text []byte) ([]byte, error) {
	const ihdrEnd = 8 + 12 + 13
	if len(enc) < ihdrEnd || string(enc[12:16]) != "IHDR" {
		return nil, errors.New("kontexttest: unexpected PNG layout")
	}
	data := make([]byte, 0, len(keyword)+1+len(text))
	data = append(append(append(data, keyword...), 0), text...)
	out := make([]byte, 0, len(enc)+12+len(data))
	out = append(out, enc[:ihdrEnd]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	chunk := len(out)
	out = append(append(out, "tEXt"...), data...)
	out = binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out[chunk:]))
	return append(out, enc[ihdrEnd:]...), nil
}

// insertJPEGComment adds COM segments holding text right after SOI.
func insertJPEGComment(enc, text []byte) ([]byte, error) {
	if len(enc) < 2 || enc[0] != 0xFF || enc[1] != 0xD8 {
		return nil, errors.New("kontexttest: unexpected JPEG layout")
	}
	const maxPart = 0xFFFF - 2 - len(jpegCOMPrefix)
	out := make([]byte, 0, len(enc)+len(text)+64)
	out = append(out, enc[:2]...)
	for first := true; first || len(text) > 0; first = false {
		part := text[:min(len(text), maxPart)]
		text = text[len(part):]
		out = append(out, 0xFF, 0xFE)
		out = binary.BigEndian.AppendUint16(out, uint16(2+len(jpegCOMPrefix)+len(part)))
		out = append(append(out, jpegCOMPrefix...), part...)
	}
	return append(out, enc[2:]...), nil
}
