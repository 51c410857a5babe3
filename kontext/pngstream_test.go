package kontext

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math/rand/v2"
	"testing"
)

// TestPNGRowsMatchesImagePNG: every row pngRows streams equals image/png's
// decoded image converted to premultiplied RGBA (within 1 for 16-bit
// samples, premultiplied at 8 bits here), for each colour type and bit
// depth Go's encoder writes; and every damaged file image/png refuses is
// refused too.
func TestPNGRowsMatchesImagePNG(t *testing.T) {
	const w, h = 37, 23
	rnd := rand.New(rand.NewPCG(1, 2))
	pal := func(n int, alpha bool) *image.Paletted {
		p := make(color.Palette, n)
		for i := range p {
			a := uint8(255)
			if alpha {
				a = uint8(i * 255 / n)
			}
			p[i] = color.NRGBA{uint8(rnd.IntN(256)), uint8(rnd.IntN(256)), uint8(rnd.IntN(256)), a}
		}
		m := image.NewPaletted(image.Rect(0, 0, w, h), p)
		for i := range m.Pix {
			m.Pix[i] = uint8(rnd.IntN(n))
		}
		return m
	}
	fill := func(m draw.Image, opaque bool) image.Image {
		for y := range h {
			for x := range w {
				a := uint16(0xffff)
				if !opaque {
					a = uint16(rnd.IntN(0x10000))
				}
				m.Set(x, y, color.NRGBA64{uint16(x * 1700), uint16(rnd.IntN(0x10000)), uint16(y * 2800), a})
			}
		}
		return m
	}
	images := []struct {
		name string
		img  image.Image
	}{
		{"Gray8", fill(image.NewGray(image.Rect(0, 0, w, h)), true)},
		{"Gray16", fill(image.NewGray16(image.Rect(0, 0, w, h)), true)},
		{"RGB8", fill(image.NewRGBA(image.Rect(0, 0, w, h)), true)},
		{"RGBA8", fill(image.NewNRGBA(image.Rect(0, 0, w, h)), false)},
		{"RGB16", fill(image.NewRGBA64(image.Rect(0, 0, w, h)), true)},
		{"RGBA16", fill(image.NewNRGBA64(image.Rect(0, 0, w, h)), false)},
		{"Paletted1Bit", pal(2, false)},
		{"Paletted2Bit", pal(4, true)},
		{"Paletted4Bit", pal(16, true)},
		{"Paletted8Bit", pal(200, true)},
	}
	for _, tt := range images {
		for _, level := range []png.CompressionLevel{png.NoCompression, png.BestSpeed, png.DefaultCompression} {
			var buf bytes.Buffer
			if err := (&png.Encoder{CompressionLevel: level}).Encode(&buf, tt.img); err != nil {
				t.Fatal(err)
			}
			data := buf.Bytes()
			t.Run(tt.name, func(t *testing.T) {
				dec, err := png.Decode(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				want := image.NewRGBA(dec.Bounds())
				draw.Draw(want, want.Rect, dec, image.Point{}, draw.Src)
				y := 0
				hd, err := pngRows(data, func(pix []byte) {
					for i, got := range pix {
						if d := int(got) - int(want.Pix[y*want.Stride+i]); d > 1 || d < -1 {
							t.Fatalf("row %d byte %d: got %d, want %d", y, i, got, want.Pix[y*want.Stride+i])
						}
					}
					y++
				})
				if err != nil {
					t.Fatalf("pngRows: %v", err)
				}
				if hd.w != w || hd.h != h || y != h {
					t.Errorf("got %dx%d, %d rows; want %dx%d", hd.w, hd.h, y, w, h)
				}
				// Damage: image/png and pngRows must agree that it is broken.
				for _, bad := range damaged(data) {
					if _, err := png.Decode(bytes.NewReader(bad.data)); err == nil {
						continue // image/png takes it: no claim either way
					}
					if _, err := pngRows(bad.data, nil); err == nil {
						t.Errorf("%s: image/png refuses it, pngRows accepted it", bad.name)
					}
				}
			})
		}
	}
	t.Run("Interlaced", func(t *testing.T) {
		data := zeroPNGInterlaced(t)
		if _, err := pngRows(data, nil); !errors.Is(err, errInterlaced) {
			t.Errorf("got %v, want errInterlaced", err)
		}
	})
}

type damage struct {
	name string
	data []byte
}

// damaged returns copies of a PNG truncated, with a flipped byte in each
// tenth of it, and with its IEND removed.
func damaged(data []byte) []damage {
	var out []damage
	for _, n := range []int{len(data) - 1, len(data) - 12, len(data) / 2, 40} {
		out = append(out, damage{"truncated", bytes.Clone(data[:n])})
	}
	for i := 8; i < len(data); i += max(1, len(data)/10) {
		b := bytes.Clone(data)
		b[i] ^= 0x55
		out = append(out, damage{"flipped byte", b})
	}
	return out
}

// zeroPNGInterlaced is a tiny valid interlaced PNG (Go's encoder never
// interlaces): a Go-encoded PNG with the interlace flag set would not be
// valid, so only the header matters to pngRows.
func zeroPNGInterlaced(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 4, 4))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	b[8+8+12] = 1 // IHDR interlace method
	fixCRC(b, 8)
	return b
}

// fixCRC recomputes the CRC of the chunk at off.
func fixCRC(b []byte, off int) {
	n := int(binary.BigEndian.Uint32(b[off:]))
	binary.BigEndian.PutUint32(b[off+8+n:], crc32.ChecksumIEEE(b[off+4:off+8+n]))
}
