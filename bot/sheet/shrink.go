package sheet

import (
	"image"
	"image/color"

	"golang.org/x/image/draw"
)

// shrink scales src down to w×h by averaging the source pixels under
// each thumbnail pixel (a box filter: every source pixel counts, so
// nothing aliases, at about one addition a source pixel). The formats
// decoders return for photos (YCbCr JPEGs, RGBA and NRGBA PNGs) are read
// straight from their planes; others go through x/image/draw's bilinear
// kernel.
func shrink(src image.Image, w, h int) *image.RGBA {
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	b := src.Bounds()
	if b.Dx() < w || b.Dy() < h {
		draw.BiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
		return dst
	}
	switch s := src.(type) {
	case *image.YCbCr:
		shrinkYCbCr(dst, s)
	case *image.RGBA:
		shrinkPix(dst, s.Pix, s.Stride, b, false)
	case *image.NRGBA:
		shrinkPix(dst, s.Pix, s.Stride, b, true)
	default:
		draw.BiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	}
	return dst
}

// span is the source range [lo, hi) under destination index i of n,
// over a source of size size starting at off.
func span(i, n, size, off int) (int, int) {
	lo, hi := off+i*size/n, off+(i+1)*size/n
	return lo, max(hi, lo+1)
}

// shrinkYCbCr averages luma over each destination pixel's box and chroma
// over the same box in the chroma planes.
func shrinkYCbCr(dst *image.RGBA, s *image.YCbCr) {
	b := s.Bounds()
	w, h := dst.Rect.Dx(), dst.Rect.Dy()
	for dy := range h {
		y0, y1 := span(dy, h, b.Dy(), b.Min.Y)
		for dx := range w {
			x0, x1 := span(dx, w, b.Dx(), b.Min.X)
			var sy, n uint32
			for y := y0; y < y1; y++ {
				row := s.Y[s.YOffset(x0, y):]
				for _, v := range row[:x1-x0] {
					sy += uint32(v)
				}
			}
			n = uint32((x1 - x0) * (y1 - y0))
			// Chroma: the chroma samples of the box's corners and what
			// lies between them.
			c0, c1 := s.COffset(x0, y0), s.COffset(x1-1, y1-1)
			cx0, cx1 := c0%s.CStride, c1%s.CStride
			var scb, scr, cn uint32
			for o := c0 - cx0; o <= c1-cx1; o += s.CStride {
				for x := cx0; x <= cx1; x++ {
					scb += uint32(s.Cb[o+x])
					scr += uint32(s.Cr[o+x])
					cn++
				}
			}
			r, g, bl := color.YCbCrToRGB(uint8(sy/n), uint8(scb/cn), uint8(scr/cn))
			i := dst.PixOffset(dx, dy)
			dst.Pix[i], dst.Pix[i+1], dst.Pix[i+2], dst.Pix[i+3] = r, g, bl, 0xff
		}
	}
}

// shrinkPix averages 8-bit RGBA pixels (premultiplied, or not when
// straight is set) into dst, premultiplied.
func shrinkPix(dst *image.RGBA, pix []byte, stride int, b image.Rectangle, straight bool) {
	w, h := dst.Rect.Dx(), dst.Rect.Dy()
	for dy := range h {
		y0, y1 := span(dy, h, b.Dy(), 0)
		for dx := range w {
			x0, x1 := span(dx, w, b.Dx(), 0)
			var sr, sg, sb, sa uint32
			for y := y0; y < y1; y++ {
				row := pix[y*stride+x0*4 : y*stride+x1*4]
				for i := 0; i < len(row); i += 4 {
					r, g, bl, a := uint32(row[i]), uint32(row[i+1]), uint32(row[i+2]), uint32(row[i+3])
					if straight && a != 0xff {
						r, g, bl = r*a/0xff, g*a/0xff, bl*a/0xff
					}
					sr, sg, sb, sa = sr+r, sg+g, sb+bl, sa+a
				}
			}
			n := uint32((x1 - x0) * (y1 - y0))
			i := dst.PixOffset(dx, dy)
			dst.Pix[i], dst.Pix[i+1], dst.Pix[i+2], dst.Pix[i+3] = uint8(sr/n), uint8(sg/n), uint8(sb/n), uint8(sa/n)
		}
	}
}
