package kontext

import (
	"image"
	"image/draw"
	"math"
)

// areaScaler downscales an image fed to it row by row, each destination
// pixel the average of the source area it covers (partly covered source
// pixels weighted by their share), in premultiplied RGBA. Besides the
// destination it holds three rows' worth of sums, so a 40 MP source costs
// what its rows cost, not what its pixels cost.
type areaScaler struct {
	sw, sh int
	dst    *image.RGBA
	// xcol[x] is the destination column source column x falls in first,
	// xw0[x] its weight there and xw1[x] its weight in the next column.
	xcol      []int
	xw0, xw1  []float64
	fy        float64
	y         int       // source rows added so far
	dy        int       // destination row cur sums into
	row       []float64 // the current source row, scaled horizontally
	cur, next []float64
}

func newAreaScaler(sw, sh, dw, dh int) *areaScaler {
	s := &areaScaler{sw: sw, sh: sh, dst: image.NewRGBA(image.Rect(0, 0, dw, dh)),
		xcol: make([]int, sw), xw0: make([]float64, sw), xw1: make([]float64, sw),
		fy: float64(dh) / float64(sh), row: make([]float64, 4*dw), cur: make([]float64, 4*dw), next: make([]float64, 4*dw)}
	fx := float64(dw) / float64(sw)
	for x := range sw {
		s.xcol[x], s.xw0[x], s.xw1[x] = split(x, fx, dw)
	}
	return s
}

// split places source pixel i, of scale factor f (at most 1), in the
// destination: the index it starts in and its weights there and in the
// next index (n indices in all).
func split(i int, f float64, n int) (int, float64, float64) {
	lo, hi := float64(i)*f, float64(i+1)*f
	d := min(int(math.Floor(lo)), n-1)
	if edge := float64(d + 1); hi > edge && d+1 < n {
		return d, edge - lo, hi - edge
	}
	return d, hi - lo, 0
}

// add feeds the next source row, premultiplied RGBA, 4 bytes a pixel.
func (s *areaScaler) add(pix []byte) {
	clear(s.row)
	for x := range s.sw {
		p := pix[4*x : 4*x+4 : 4*x+4]
		d, w0, w1 := 4*s.xcol[x], s.xw0[x], s.xw1[x]
		r, g, b, a := float64(p[0]), float64(p[1]), float64(p[2]), float64(p[3])
		s.row[d] += w0 * r
		s.row[d+1] += w0 * g
		s.row[d+2] += w0 * b
		s.row[d+3] += w0 * a
		if w1 != 0 {
			s.row[d+4] += w1 * r
			s.row[d+5] += w1 * g
			s.row[d+6] += w1 * b
			s.row[d+7] += w1 * a
		}
	}
	dh := s.dst.Rect.Dy()
	d, v0, v1 := split(s.y, s.fy, dh)
	s.y++
	for d > s.dy { // this row starts a later destination row
		s.flush()
	}
	for i, v := range s.row {
		s.cur[i] += v0 * v
		if v1 != 0 {
			s.next[i] += v1 * v
		}
	}
}

// flush writes the current destination row and moves to the next.
func (s *areaScaler) flush() {
	if s.dy >= s.dst.Rect.Dy() {
		return
	}
	out := s.dst.Pix[s.dy*s.dst.Stride:]
	for i, v := range s.cur {
		out[i] = uint8(min(max(math.Round(v), 0), 255))
	}
	// Premultiplied: no channel may pass alpha after rounding.
	for i := 0; i+3 < len(s.cur); i += 4 {
		a := out[i+3]
		out[i], out[i+1], out[i+2] = min(out[i], a), min(out[i+1], a), min(out[i+2], a)
	}
	s.cur, s.next = s.next, s.cur
	clear(s.next)
	s.dy++
}

// image returns the destination once every source row was added.
func (s *areaScaler) image() *image.RGBA {
	for s.dy < s.dst.Rect.Dy() {
		s.flush()
	}
	return s.dst
}

// scaleArea downscales src to dw×dh by area averaging, converting it to
// RGBA one row at a time.
func scaleArea(src image.Image, dw, dh int) *image.RGBA {
	b := src.Bounds()
	s := newAreaScaler(b.Dx(), b.Dy(), dw, dh)
	row := image.NewRGBA(image.Rect(0, 0, b.Dx(), 1))
	for y := b.Min.Y; y < b.Max.Y; y++ {
		draw.Draw(row, row.Rect, src, image.Pt(b.Min.X, y), draw.Src)
		s.add(row.Pix)
	}
	return s.image()
}
