package kontext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
)

// DecodeMemory estimates, from the headers only, the bytes Go's decoder
// allocates to decode data (PNG, JPEG, GIF or WebP): the pixels in the
// image type the decoder returns (8 bytes a pixel for 16-bit RGBA, 1 for
// paletted, ...), plus what the format needs on the way (the coefficients
// of a progressive JPEG, the passes of an interlaced PNG, the conversion
// of a CMYK or RGB JPEG). Nothing is decompressed.
func DecodeMemory(data []byte) (int64, error) {
	mem, err := pixelMemory(data)
	if err != nil {
		return 0, err
	}
	return mem + decoderOverhead, nil
}

// decoderOverhead is what a decoder allocates whatever the image's size:
// read buffers, the zlib window, Huffman tables (measured: under 50 KB).
const decoderOverhead = 64 << 10

func pixelMemory(data []byte) (int64, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return 0, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return 0, fmt.Errorf("kontext: image size %dx%d", cfg.Width, cfg.Height)
	}
	w, h := int64(cfg.Width), int64(cfg.Height)
	px := w * h
	switch format {
	case "png":
		return pngMemory(data, w, h), nil
	case "jpeg":
		return jpegMemory(data, w, h), nil
	case "gif":
		// The first frame, paletted (1 byte a pixel), and a copy when it is
		// interlaced.
		return 2 * px, nil
	case "webp":
		switch cfg.ColorModel {
		case color.YCbCrModel: // lossy: 4:2:0 planes over whole macroblocks
			return 2 * px, nil
		case color.NYCbCrAModel: // lossy with alpha: the alpha plane is decoded as a lossless image first
			return 7 * px, nil
		}
		return 8 * px, nil // lossless: NRGBA and the transforms' working copy
	}
	return 8 * px, nil
}

// pngMemory: the decoder returns Gray (1 byte a pixel), Gray16 (2), RGBA
// or NRGBA (4), RGBA64 or NRGBA64 (8), or Paletted (1), by color type and
// bit depth; a tRNS chunk turns gray and truecolor into NRGBA or NRGBA64.
// An interlaced image is decoded pass by pass into images beside the
// whole one: twice the pixels. Two rows of filter state (per pass) come
// on top.
func pngMemory(data []byte, w, h int64) int64 {
	const ihdr = 8 + 8 // signature, then the IHDR chunk's length and type
	if len(data) < ihdr+13 {
		return 8 * w * h
	}
	depth, ctype, interlaced := data[ihdr+8], data[ihdr+9], data[ihdr+12] != 0
	trns := false
	for off := 8; off+8 <= len(data); {
		n := int64(binary.BigEndian.Uint32(data[off:]))
		typ := string(data[off+4 : off+8])
		if typ == "IDAT" || typ == "IEND" {
			break
		}
		if typ == "tRNS" {
			trns = true
		}
		next := int64(off) + 12 + n
		if next > int64(len(data)) {
			break
		}
		off = int(next)
	}
	var bpp int64
	switch ctype {
	case 0: // gray
		bpp = 1
		if depth == 16 {
			bpp = 2
		}
		if trns {
			bpp *= 4
		}
	case 3: // paletted
		bpp = 1
	default: // truecolor, gray with alpha, truecolor with alpha
		bpp = 4
		if depth == 16 {
			bpp = 8
		}
	}
	mem, rows := w*h*bpp, 2*(w*8+1)
	if interlaced {
		mem, rows = 2*mem, 8*rows // each of the 7 passes has its rows too
	}
	return mem + rows
}

// jpegMemory: the decoder fills one plane per component over whole MCUs
// (Gray, or YCbCr at the file's subsampling, plus a K plane), keeps 256
// bytes of coefficients per 8×8 block of every component when the file is
// progressive, and converts CMYK and RGB files into a 4-byte-a-pixel image
// at the end.
func jpegMemory(data []byte, w, h int64) int64 {
	type comp struct {
		id   byte
		h, v int64
	}
	var comps []comp
	progressive, jfif, adobe, transform := false, false, false, byte(0)
	for i := 2; i+4 <= len(data) && comps == nil; {
		if data[i] != 0xff {
			i++
			continue
		}
		m := data[i+1]
		switch {
		case m == 0xff: // fill byte
			i++
			continue
		case m == 0xd8 || m == 0x01 || m >= 0xd0 && m <= 0xd7: // no length
			i += 2
			continue
		case m == 0xd9 || m == 0xda: // end of image, start of scan
			i = len(data)
			continue
		}
		n := int(binary.BigEndian.Uint16(data[i+2:]))
		seg := data[i+4 : min(i+2+n, len(data))]
		switch {
		case m == 0xe0 && len(seg) >= 5 && string(seg[:5]) == "JFIF\x00":
			jfif = true
		case m == 0xee && len(seg) >= 12 && string(seg[:5]) == "Adobe":
			adobe, transform = true, seg[11]
		case m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc: // start of frame
			progressive = m == 0xc2 || m == 0xc6 || m == 0xca || m == 0xce
			if len(seg) >= 6 {
				nc := int(seg[5])
				for k := 0; k < nc && 6+3*k+2 < len(seg); k++ {
					c := seg[6+3*k:]
					comps = append(comps, comp{id: c[0], h: int64(max(c[1]>>4, 1)), v: int64(max(c[1]&15, 1))})
				}
			}
		}
		i += 2 + n
	}
	if len(comps) == 0 {
		return 8 * w * h
	}
	var hmax, vmax int64 = 1, 1
	for _, c := range comps {
		hmax, vmax = max(hmax, c.h), max(vmax, c.v)
	}
	mxx, myy := (w+8*hmax-1)/(8*hmax), (h+8*vmax-1)/(8*vmax)
	var blocks int64
	for _, c := range comps {
		blocks += mxx * myy * c.h * c.v
	}
	mem := blocks * 64
	if progressive {
		mem += blocks * 256
	}
	rgb := len(comps) == 3 && !jfif && (adobe && transform == 0 ||
		comps[0].id == 'R' && comps[1].id == 'G' && comps[2].id == 'B')
	if len(comps) == 4 || rgb {
		mem += 4 * w * h
	}
	return mem
}
