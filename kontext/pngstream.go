package kontext

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// ErrInterlaced marks a PNG that CheckPNG cannot stream: its rows come
// in seven passes over the whole image, so only a full decode checks it.
var ErrInterlaced = errors.New("kontext: interlaced PNG")

var errInterlaced = ErrInterlaced

// CheckPNG reads a PNG that is not interlaced through to its end, as
// image/png would decode it (chunk CRCs, the zlib stream and checksum,
// every row's filter, the amount of pixel data), holding two rows and the
// zlib window, never its pixels. An interlaced PNG returns ErrInterlaced,
// checked no further than its header.
func CheckPNG(data []byte) error {
	_, err := pngRows(data, nil)
	return err
}

// pngHeader is what IHDR, PLTE and tRNS say about a PNG's pixels.
type pngHeader struct {
	w, h         int
	depth, ctype byte
	interlaced   bool
	palette      [][4]byte // premultiplied RGBA
	trns         []byte    // gray or RGB key colour (types 0 and 2)
}

// pngRows decodes a PNG that is not interlaced one row at a time, holding
// two rows of it and the zlib window, never its pixels: every chunk's CRC,
// the zlib stream and its checksum, every row's filter and the amount of
// pixel data are checked as image/png checks them. When row is not nil it
// gets each row in turn as premultiplied RGBA, 4 bytes a pixel (the slice
// is reused). An interlaced PNG returns errInterlaced before any row.
func pngRows(data []byte, row func(pix []byte)) (*pngHeader, error) {
	const sig = "\x89PNG\r\n\x1a\n"
	if !bytes.HasPrefix(data, []byte(sig)) {
		return nil, errors.New("png: not a PNG")
	}
	var hd *pngHeader
	var idat []io.Reader
	ended := false
	for off := len(sig); !ended; {
		if off+8 > len(data) {
			return nil, io.ErrUnexpectedEOF
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		typ := string(data[off+4 : off+8])
		if n < 0 || n > len(data)-off-12 {
			return nil, io.ErrUnexpectedEOF
		}
		chunk := data[off+8 : off+8+n]
		if crc32.ChecksumIEEE(data[off+4:off+8+n]) != binary.BigEndian.Uint32(data[off+8+n:]) {
			return nil, fmt.Errorf("png: invalid checksum in %s", typ)
		}
		off += 12 + n
		if hd == nil && typ != "IHDR" {
			return nil, errors.New("png: IHDR is not the first chunk")
		}
		var err error
		switch typ {
		case "IHDR":
			if hd != nil {
				return nil, errors.New("png: two IHDR chunks")
			}
			if hd, err = parseIHDR(chunk); err != nil {
				return nil, err
			}
			if hd.interlaced {
				return hd, errInterlaced
			}
		case "PLTE":
			if len(chunk)%3 != 0 || len(chunk) == 0 || len(chunk)/3 > 256 || (hd.ctype == 3 && len(chunk)/3 > 1<<hd.depth) {
				return nil, errors.New("png: bad PLTE length")
			}
			hd.palette = make([][4]byte, len(chunk)/3)
			for i := range hd.palette {
				hd.palette[i] = [4]byte{chunk[3*i], chunk[3*i+1], chunk[3*i+2], 0xff}
			}
		case "tRNS":
			switch hd.ctype {
			case 0, 2:
				hd.trns = chunk
			case 3:
				if len(chunk) > len(hd.palette) {
					return nil, errors.New("png: bad tRNS length")
				}
				for i, a := range chunk {
					p := &hd.palette[i]
					p[0], p[1], p[2], p[3] = mul(p[0], a), mul(p[1], a), mul(p[2], a), a
				}
			}
		case "IDAT":
			idat = append(idat, bytes.NewReader(chunk))
		case "IEND":
			ended = true
		}
	}
	if hd.ctype == 3 && hd.palette == nil {
		return nil, errors.New("png: no PLTE for a paletted image")
	}
	if len(idat) == 0 {
		return nil, errors.New("png: no IDAT")
	}
	zr, err := zlib.NewReader(io.MultiReader(idat...))
	if err != nil {
		return nil, fmt.Errorf("png: %w", err)
	}
	defer zr.Close()
	bits := int(hd.depth) * channels(hd.ctype)
	stride, bpp := (hd.w*bits+7)/8, max(1, bits/8)
	cr, pr := make([]byte, 1+stride), make([]byte, 1+stride)
	var out []byte
	if row != nil {
		out = make([]byte, 4*hd.w)
	}
	for range hd.h {
		if _, err := io.ReadFull(zr, cr); err != nil {
			return nil, fmt.Errorf("png: pixel data: %w", err)
		}
		if err := unfilter(cr[0], cr[1:], pr[1:], bpp); err != nil {
			return nil, err
		}
		if row != nil {
			hd.toRGBA(out, cr[1:])
			row(out)
		}
		cr, pr = pr, cr
	}
	// What image/png checks after the rows: nothing more, and the zlib
	// checksum (verified when the stream reaches its end).
	if n, err := zr.Read(cr[:1]); n != 0 || err != io.EOF {
		if err == nil || err == io.EOF {
			err = errors.New("too much pixel data")
		}
		return nil, fmt.Errorf("png: %w", err)
	}
	return hd, nil
}

func parseIHDR(c []byte) (*pngHeader, error) {
	if len(c) != 13 {
		return nil, errors.New("png: bad IHDR length")
	}
	w, h := binary.BigEndian.Uint32(c), binary.BigEndian.Uint32(c[4:])
	if w == 0 || h == 0 || w > 1<<20 || h > 1<<20 {
		return nil, fmt.Errorf("png: size %dx%d", w, h)
	}
	hd := &pngHeader{w: int(w), h: int(h), depth: c[8], ctype: c[9], interlaced: c[12] == 1}
	if c[10] != 0 || c[11] != 0 || c[12] > 1 {
		return nil, errors.New("png: unsupported compression, filter or interlace method")
	}
	ok := false
	switch hd.ctype {
	case 0:
		ok = hd.depth == 1 || hd.depth == 2 || hd.depth == 4 || hd.depth == 8 || hd.depth == 16
	case 3:
		ok = hd.depth == 1 || hd.depth == 2 || hd.depth == 4 || hd.depth == 8
	case 2, 4, 6:
		ok = hd.depth == 8 || hd.depth == 16
	}
	if !ok {
		return nil, fmt.Errorf("png: bit depth %d with color type %d", hd.depth, hd.ctype)
	}
	return hd, nil
}

func channels(ctype byte) int {
	switch ctype {
	case 2:
		return 3
	case 4:
		return 2
	case 6:
		return 4
	}
	return 1
}

// unfilter undoes a row's filter in place, given the previous row (zeros
// before the first) and the bytes per complete pixel.
func unfilter(f byte, cur, prev []byte, bpp int) error {
	switch f {
	case 0:
	case 1:
		for i := bpp; i < len(cur); i++ {
			cur[i] += cur[i-bpp]
		}
	case 2:
		for i, p := range prev {
			cur[i] += p
		}
	case 3:
		for i := range bpp {
			cur[i] += prev[i] / 2
		}
		for i := bpp; i < len(cur); i++ {
			cur[i] += byte((int(cur[i-bpp]) + int(prev[i])) / 2)
		}
	case 4:
		for i := range cur {
			var a, c int
			if i >= bpp {
				a, c = int(cur[i-bpp]), int(prev[i-bpp])
			}
			b := int(prev[i])
			p := a + b - c
			pa, pb, pc := absInt(p-a), absInt(p-b), absInt(p-c)
			switch {
			case pa <= pb && pa <= pc:
				cur[i] += byte(a)
			case pb <= pc:
				cur[i] += byte(b)
			default:
				cur[i] += byte(c)
			}
		}
	default:
		return fmt.Errorf("png: bad filter type %d", f)
	}
	return nil
}

func absInt(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// mul is c×a/255, rounded: premultiplies a colour channel.
func mul(c, a byte) byte { return byte((int(c)*int(a) + 127) / 255) }

// premul premultiplies a sample by alpha: at 16 bits for a 16-bit image
// (as image/color converts NRGBA64), then keeps the high byte.
func premul(c, a byte, raw, rawA, depth int) byte {
	if depth == 16 {
		return byte(raw * rawA / 0xffff >> 8)
	}
	return mul(c, a)
}

// toRGBA converts one unfiltered row into premultiplied RGBA.
func (hd *pngHeader) toRGBA(out, in []byte) {
	d := int(hd.depth)
	// sample returns the i-th sample of the row, scaled to 8 bits, and
	// its raw value (for tRNS key colours).
	sample := func(i int) (byte, int) {
		switch d {
		case 16:
			v := int(in[2*i])<<8 | int(in[2*i+1])
			return in[2*i], v
		case 8:
			return in[i], int(in[i])
		}
		perByte := 8 / d
		shift := 8 - d*(i%perByte+1)
		v := int(in[i/perByte]>>shift) & (1<<d - 1)
		return byte(v * 255 / (1<<d - 1)), v
	}
	key := func(k int) int {
		if 2*k+1 >= len(hd.trns) {
			return -1
		}
		return int(hd.trns[2*k])<<8 | int(hd.trns[2*k+1])
	}
	for x := range hd.w {
		o := out[4*x : 4*x+4 : 4*x+4]
		switch hd.ctype {
		case 0:
			g, raw := sample(x)
			o[0], o[1], o[2], o[3] = g, g, g, 0xff
			if raw == key(0) {
				o[0], o[1], o[2], o[3] = 0, 0, 0, 0
			}
		case 2:
			r, rr := sample(3 * x)
			g, rg := sample(3*x + 1)
			b, rb := sample(3*x + 2)
			o[0], o[1], o[2], o[3] = r, g, b, 0xff
			if rr == key(0) && rg == key(1) && rb == key(2) {
				o[0], o[1], o[2], o[3] = 0, 0, 0, 0
			}
		case 3:
			_, i := sample(x)
			p := [4]byte{0, 0, 0, 0xff} // an index past the palette: opaque black, as image/png
			if i < len(hd.palette) {
				p = hd.palette[i]
			}
			copy(o, p[:])
		case 4:
			g, rg := sample(2 * x)
			a, ra := sample(2*x + 1)
			g = premul(g, a, rg, ra, d)
			o[0], o[1], o[2], o[3] = g, g, g, a
		case 6:
			r, rr := sample(4 * x)
			g, rg := sample(4*x + 1)
			b, rb := sample(4*x + 2)
			a, ra := sample(4*x + 3)
			o[0], o[1], o[2], o[3] = premul(r, a, rr, ra, d), premul(g, a, rg, ra, d), premul(b, a, rb, ra, d), a
		}
	}
}
