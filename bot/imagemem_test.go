package bot_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"
	"os"
	"runtime"
	"strings"
	"testing"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
)

// bitWriter writes a DEFLATE bit stream (RFC 1951, 3.1.1).
type bitWriter struct {
	buf []byte
	acc uint64
	n   uint
}

func (b *bitWriter) bits(v uint64, n uint) {
	b.acc |= v << b.n
	for b.n += n; b.n >= 8; b.n -= 8 {
		b.buf = append(b.buf, byte(b.acc))
		b.acc >>= 8
	}
}

// code writes a Huffman code, most significant bit first.
func (b *bitWriter) code(c uint64, n uint) {
	var r uint64
	for i := range n {
		r = r<<1 | c>>i&1
	}
	b.bits(r, n)
}

// zeroZlib is a zlib stream of n zero bytes, made without compressing
// them: one fixed-Huffman block of a literal 0 and then copies of 258
// bytes at distance 1, 13 bits each. A 288 MB image is 1.8 MB of stream,
// made in milliseconds.
func zeroZlib(n int64) []byte {
	b := &bitWriter{buf: []byte{0x78, 0x01}}
	b.bits(1, 1) // final block
	b.bits(1, 2) // fixed Huffman codes
	left := n
	if left > 0 {
		b.code(0x30, 8) // literal 0
		left--
	}
	for ; left >= 258; left -= 258 {
		b.code(0xc5, 8) // length 258 (symbol 285)
		b.code(0, 5)    // distance 1
	}
	for ; left > 0; left-- {
		b.code(0x30, 8)
	}
	b.code(0, 7)                                                       // end of block
	b.bits(0, 7)                                                       // flush to a byte
	return binary.BigEndian.AppendUint32(b.buf, uint32(n%65521)<<16|1) // Adler-32 of zeros
}

// zeroPNG is a complete, valid w×h PNG of color type ctype (0 gray, 2
// RGB, 3 paletted, 4 gray+alpha, 6 RGBA) at depth bits per channel, every
// pixel zero: a file of a few KB to a few MB that decodes into as much
// memory as any photo of its format.
func zeroPNG(w, h int, depth, ctype byte, interlaced, trns bool) []byte {
	channels := map[byte]int{0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
	bits := int64(channels) * int64(depth)
	rows := func(pw, ph int64) int64 {
		if pw == 0 || ph == 0 {
			return 0
		}
		return ph * (1 + (pw*bits+7)/8)
	}
	var raw int64
	if interlaced {
		for _, p := range [7][4]int64{{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4}, {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}} {
			raw += rows((int64(w)-p[0]+p[2]-1)/p[2], (int64(h)-p[1]+p[3]-1)/p[3])
		}
	} else {
		raw = rows(int64(w), int64(h))
	}
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := append([]byte(typ), data...)
		b.Write(c)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(c))
	}
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = depth, ctype
	if interlaced {
		ihdr[12] = 1
	}
	chunk("IHDR", ihdr)
	if ctype == 3 {
		chunk("PLTE", []byte{0, 0, 0})
	}
	if trns {
		switch ctype {
		case 0:
			chunk("tRNS", []byte{0, 1})
		case 2:
			chunk("tRNS", []byte{0, 1, 0, 1, 0, 1})
		}
	}
	chunk("IDAT", zeroZlib(raw))
	chunk("IEND", nil)
	return b.Bytes()
}

// allocated returns the bytes f allocates.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestDecodeMemoryCoversTheDecoder decodes images of every kind and checks
// that DecodeMemory, read from the headers alone, is never below what Go's
// decoder really allocates, and not far above it.
func TestDecodeMemoryCoversTheDecoder(t *testing.T) {
	encode := func(t *testing.T, enc func(*bytes.Buffer) error) []byte {
		var buf bytes.Buffer
		if err := enc(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	rgba := image.NewRGBA(image.Rect(0, 0, 640, 480))
	for i := range rgba.Pix {
		rgba.Pix[i] = uint8(i * 7)
	}
	gray := image.NewGray(image.Rect(0, 0, 640, 480))
	for i := range gray.Pix {
		gray.Pix[i] = uint8(i * 3)
	}
	pal := image.NewPaletted(image.Rect(0, 0, 640, 480), palette.Plan9)
	for i := range pal.Pix {
		pal.Pix[i] = uint8(i)
	}
	webp, err := os.ReadFile("../kontext/kontexttest/testdata/gopher.webp")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data func(t *testing.T) []byte
	}{
		{"PNGGray8", func(*testing.T) []byte { return zeroPNG(640, 480, 8, 0, false, false) }},
		{"PNGGray8Transparent", func(*testing.T) []byte { return zeroPNG(640, 480, 8, 0, false, true) }},
		{"PNGGray16", func(*testing.T) []byte { return zeroPNG(640, 480, 16, 0, false, false) }},
		{"PNGRGB8", func(*testing.T) []byte { return zeroPNG(640, 480, 8, 2, false, false) }},
		{"PNGRGB16Transparent", func(*testing.T) []byte { return zeroPNG(640, 480, 16, 2, false, true) }},
		{"PNGPaletted", func(*testing.T) []byte { return zeroPNG(640, 480, 8, 3, false, false) }},
		{"PNGGrayAlpha16", func(*testing.T) []byte { return zeroPNG(640, 480, 16, 4, false, false) }},
		{"PNGRGBA8", func(*testing.T) []byte { return zeroPNG(640, 480, 8, 6, false, false) }},
		{"PNGRGBA16", func(*testing.T) []byte { return zeroPNG(640, 480, 16, 6, false, false) }},
		{"PNGRGBA16Interlaced", func(*testing.T) []byte { return zeroPNG(640, 480, 16, 6, true, false) }},
		{"PNGEncodedByGo", func(t *testing.T) []byte {
			return encode(t, func(b *bytes.Buffer) error { return png.Encode(b, rgba) })
		}},
		{"JPEGColor", func(t *testing.T) []byte {
			return encode(t, func(b *bytes.Buffer) error { return jpeg.Encode(b, rgba, &jpeg.Options{Quality: 90}) })
		}},
		{"JPEGGray", func(t *testing.T) []byte {
			return encode(t, func(b *bytes.Buffer) error { return jpeg.Encode(b, gray, nil) })
		}},
		{"GIF", func(t *testing.T) []byte {
			return encode(t, func(b *bytes.Buffer) error { return gif.Encode(b, pal, nil) })
		}},
		{"WebP", func(*testing.T) []byte { return webp }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := tt.data(t)
			est, err := bot.DecodeMemory(data)
			if err != nil {
				t.Fatal(err)
			}
			var decodeErr error
			got := allocated(func() { _, _, decodeErr = image.Decode(bytes.NewReader(data)) })
			if decodeErr != nil {
				t.Fatalf("the test image does not decode: %v", decodeErr)
			}
			const noise = 16 << 10 // what the runtime may allocate meanwhile
			if got > uint64(est)+noise {
				t.Errorf("decoding allocated %d bytes, more than the %d estimated", got, est)
			}
			if uint64(est) > 2*got+128<<10 {
				t.Errorf("estimated %d bytes, far above the %d decoding allocated", est, got)
			}
		})
	}
}

// TestDecodeMemoryOfLargeImages checks the budget from headers alone, for
// images too large to decode in a test: within the pixel limit, 8-bit
// PNGs fit up to 33 MP, 16-bit ones up to 16 MP; the do not.
func TestDecodeMemoryOfLargeImages(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		fits bool
	}{
		{"RGBA8At33MP", zeroPNG(6600, 5000, 8, 6, false, false), true},
		{"RGBA16At16MP", zeroPNG(4000, 4000, 16, 6, false, false), true},
		{"Gray16At40MP", zeroPNG(7300, 5479, 16, 0, false, false), true},
		{"PalettedAt40MP", zeroPNG(7300, 5479, 8, 3, false, false), true},
		{"RGBA8At40MP", zeroPNG(7300, 5479, 8, 6, false, false), false},
		{"RGBA16At36MP", zeroPNG(6000, 6000, 16, 6, false, false), false},
		{"RGBA16At8192Square", zeroPNG(8192, 8192, 16, 6, false, false), false},
		{"RGBA8InterlacedAt36MP", zeroPNG(6000, 6000, 8, 6, true, false), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem, err := bot.DecodeMemory(tt.data)
			if err != nil {
				t.Fatal(err)
			}
			if got := mem <= bot.MaxDecodeBytes; got != tt.fits {
				t.Errorf("%d bytes: fits %v, want %v (budget %d)", mem, got, tt.fits, bot.MaxDecodeBytes)
			}
		})
	}
}

// TestSixteenBitImageRefusedBeforeDecoding is the input: a small
// file of 6000×6000 pixels at 16 bits per channel (288 MB once decoded),
// complete or only its header, and an interlaced 8-bit one of the same
// size. Each is refused from its headers, with the sentence that says the
// limit, allocating next to nothing.
func TestSixteenBitImageRefusedBeforeDecoding(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		needMiB int // what the sentence says the image needs
	}{
		{"Complete6000Square", zeroPNG(6000, 6000, 16, 6, false, false), 275},
		{"HeaderOnly", zeroPNG(6000, 6000, 16, 6, false, false)[:33], 275},
		{"Interlaced8BitComplete", zeroPNG(6000, 6000, 8, 6, true, false), 276},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.data) > 4<<20 {
				t.Fatalf("the test file is %d bytes, want a small file", len(tt.data))
			}
			var err error
			got := allocated(func() { err = bot.CheckImage(tt.data) })
			if !errors.Is(err, bot.ErrImageMemory) {
				t.Fatalf("got %v, want ErrImageMemory", err)
			}
			msg := bot.Explain(err)
			if want := fmt.Sprintf("6000×6000 pixels in this format need %d MiB of memory, and the limit is %d MiB", tt.needMiB, bot.MaxDecodeBytes>>20); !strings.Contains(msg, want) {
				t.Errorf("told %q, want it to say %q", msg, want)
			}
			if got > 1<<20 {
				t.Errorf("the check allocated %d bytes, want under 1 MiB", got)
			}
		})
	}
}

// TestSixteenBitEditRefusedBeforeAnyCall sends the image as an
// edit through the core: refused with its sentence, nothing stored, no
// call to the provider.
func TestSixteenBitEditRefusedBeforeAnyCall(t *testing.T) {
	h := newHarness(t, bot.Config{}, kontexttest.Options{})
	req := &bot.Request{Kind: bot.KindEdit, Conv: conv, User: "ada", Prompt: "make it winter", Image: zeroPNG(6000, 6000, 16, 6, false, false)}
	var err error
	got := allocated(func() { _, err = h.core.Submit(context.Background(), req) })
	if !errors.Is(err, bot.ErrImageMemory) {
		t.Fatalf("got %v, want ErrImageMemory", err)
	}
	if got > 1<<20 {
		t.Errorf("refusing allocated %d bytes, want under 1 MiB", got)
	}
	if st := h.fake.Stats(); st.Creates != 0 {
		t.Errorf("creates: got %d, want 0", st.Creates)
	}
	if jobs, _ := h.db.LiveJobs(context.Background()); len(jobs) != 0 {
		t.Errorf("%d jobs kept, want none", len(jobs))
	}
}
