package kontexttest

import (
	"image"
	"image/color"
	"testing"
)

// TestEditCaptionOnCleanBand: an edit's caption and header are drawn on
// opaque bands, so the caption of the image it edits never shows through
// ("makedit owinter").
func TestEditCaptionOnCleanBand(t *testing.T) {
	const w, h = 256, 256
	noisy := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range noisy.Pix {
		noisy.Pix[i] = uint8(i*7919>>3) ^ uint8(i)
	}
	for i := 3; i < len(noisy.Pix); i += 4 {
		noisy.Pix[i] = 0xFF
	}
	j := &renderJob{prov: Provenance{Prompt: "make it winter", Model: "flux-kontext-max", Seed: 1, AspectRatio: "match_input_image"},
		input: noisy, format: "png", pixels: w * h}
	img := j.draw()
	if img.Rect.Dx() != w || img.Rect.Dy() != h {
		t.Fatalf("got %v, want %dx%d", img.Rect, w, h)
	}
	colours := func(y0, y1 int) map[color.RGBA]bool {
		seen := map[color.RGBA]bool{}
		for y := y0; y < y1; y++ {
			for x := 0; x < w; x++ {
				seen[img.RGBAAt(x, y)] = true
			}
		}
		return seen
	}
	// At this size one caption line is 15 px high with 4 px of padding:
	// the bottom 20 rows are band and text only.
	if got := colours(h-20, h); len(got) > 2 {
		t.Errorf("the caption band has %d colours, want 2 (band and text): the input shows through", len(got))
	}
	if got := colours(h-3, h); len(got) != 1 {
		t.Errorf("the band's padding has %d colours, want 1", len(got))
	}
	if got := colours(0, glyphHeight/2+1); len(got) > 2 {
		t.Errorf("the header band has %d colours, want 2 (band and text)", len(got))
	}
}
