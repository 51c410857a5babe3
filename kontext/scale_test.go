package kontext

import (
	"image"
	"image/color"
	"testing"
)

func TestScaleArea(t *testing.T) {
	tests := []struct {
		name           string
		sw, sh, dw, dh int
	}{
		{"Halve", 64, 48, 32, 24},
		{"ByAThird", 300, 200, 100, 66},
		{"Fractional", 1000, 777, 611, 473},
		{"ToOnePixel", 50, 30, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Left half opaque red, right half half-transparent blue
			// (premultiplied): a uniform area stays exactly its colour, the
			// seam averages.
			src := image.NewNRGBA(image.Rect(0, 0, tt.sw, tt.sh))
			for y := range tt.sh {
				for x := range tt.sw {
					c := color.NRGBA{R: 200, A: 255}
					if x >= tt.sw/2 {
						c = color.NRGBA{B: 200, A: 128}
					}
					src.SetNRGBA(x, y, c)
				}
			}
			dst := scaleArea(src, tt.dw, tt.dh)
			if got := dst.Rect; got != image.Rect(0, 0, tt.dw, tt.dh) {
				t.Fatalf("got %v, want %dx%d", got, tt.dw, tt.dh)
			}
			if tt.dw < 4 {
				got := dst.RGBAAt(0, 0)
				want := color.RGBA{R: 100, B: 50, A: 192} // the average of both halves
				if d := diff(got, want); d > 1 {
					t.Errorf("got %v, want %v", got, want)
				}
				return
			}
			left := color.RGBAModel.Convert(color.NRGBA{R: 200, A: 255}).(color.RGBA)
			right := color.RGBAModel.Convert(color.NRGBA{B: 200, A: 128}).(color.RGBA)
			for y := range tt.dh {
				if got := dst.RGBAAt(0, y); diff(got, left) > 1 {
					t.Fatalf("row %d left: got %v, want %v", y, got, left)
				}
				if got := dst.RGBAAt(tt.dw-1, y); diff(got, right) > 1 {
					t.Fatalf("row %d right: got %v, want %v", y, got, right)
				}
			}
		})
	}
}

func diff(a, b color.RGBA) int {
	d := 0
	for _, p := range [][2]uint8{{a.R, b.R}, {a.G, b.G}, {a.B, b.B}, {a.A, b.A}} {
		d = max(d, abs(int(p[0])-int(p[1])))
	}
	return d
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
