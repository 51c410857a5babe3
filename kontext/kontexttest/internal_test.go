package kontexttest

import (
	"bytes"
	"fmt"
	"image"
	"math"
	"strings"
	"testing"
	"time"
)

func TestOutputSize(t *testing.T) {
	for _, aspect := range aspectRatios {
		for _, pixels := range []int{1024 * 1024, 512 * 512, 64 * 64} {
			t.Run(fmt.Sprintf("%s/%d", aspect, pixels), func(t *testing.T) {
				w, h := outputSize(aspect, nil, pixels)
				if w%32 != 0 || h%32 != 0 || w < 32 || h < 32 {
					t.Fatalf("size = %dx%d, want positive multiples of 32", w, h)
				}
				if r := float64(w) / float64(h); r < 3.0/7-1e-9 || r > 7.0/3+1e-9 {
					t.Errorf("size = %dx%d, ratio %.3f, want within 3:7..7:3", w, h, r)
				}
				// Rounding to multiples of 32 costs more precision on small images.
				tol := 0.08
				if pixels < 1024*1024 {
					tol = 0.12
				}
				if area := float64(w * h); pixels >= 512*512 && math.Abs(area/float64(pixels)-1) > tol {
					t.Errorf("area = %d, want within %.0f%% of %d", w*h, tol*100, pixels)
				}
				var want float64 = 1
				if a, b, ok := strings.Cut(aspect, ":"); ok {
					var x, y float64
					fmt.Sscan(a, &x)
					fmt.Sscan(b, &y)
					want = x / y
				}
				if got := float64(w) / float64(h); pixels >= 512*512 && math.Abs(got/want-1) > tol {
					t.Errorf("ratio = %.3f, want about %.3f", got, want)
				}
			})
		}
	}
}

func TestWrap(t *testing.T) {
	tests := []struct {
		name     string
		text     string
		chars    int
		lines    int
		want     []string
		wantNone bool
	}{
		{name: "fits", text: "a red fox", chars: 20, lines: 3, want: []string{"a red fox"}},
		{name: "breaks at words", text: "a red fox jumps", chars: 9, lines: 3, want: []string{"a red fox", "jumps"}},
		{name: "breaks long words", text: "abcdefghij", chars: 4, lines: 5, want: []string{"abcd", "efgh", "ij"}},
		{name: "cuts with an ellipsis", text: "one two three four five", chars: 7, lines: 2, want: []string{"one two", "thre..."}},
		{name: "collapses whitespace", text: "  a \n\t b  ", chars: 10, lines: 2, want: []string{"a b"}},
		{name: "counts runes", text: "ééé ééé", chars: 3, lines: 2, want: []string{"ééé", "ééé"}},
		{name: "empty", text: "   ", chars: 10, lines: 2, wantNone: true},
		{name: "one char per line", text: "ab cd", chars: 1, lines: 9, want: []string{"a", "b", "c", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := wrap(tt.text, tt.chars, tt.lines)
			if tt.wantNone {
				if len(got) != 0 {
					t.Errorf("wrap = %q, want no lines", got)
				}
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("wrap = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRenderSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("timing")
	}
	j := renderJob{prov: Provenance{Prompt: "a lighthouse at dusk", Seed: 1, Model: modelMax, AspectRatio: "1:1"}, format: "png", pixels: 1024 * 1024}
	start := time.Now()
	data, err := j.render()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one 1024x1024 text-to-image PNG: %v, %d bytes", time.Since(start), len(data))
}

func benchmarkRender(b *testing.B, j renderJob) {
	var size int
	for b.Loop() {
		data, err := j.render()
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
	}
	b.ReportMetric(float64(size), "bytes/image")
}

func BenchmarkRender(b *testing.B) {
	prov := Provenance{Prompt: "a lighthouse at dusk, oil painting, dramatic sky", Seed: 1, Model: modelMax, AspectRatio: "1:1"}
	input, _, err := image.Decode(bytes.NewReader(mustRender(b, renderJob{prov: prov, format: "png", pixels: 1024 * 1024})))
	if err != nil {
		b.Fatal(err)
	}
	edit := prov
	edit.AspectRatio, edit.InputSHA256 = aspectMatchInput, "00"
	b.Run("text-to-image/png/1024x1024", func(b *testing.B) {
		benchmarkRender(b, renderJob{prov: prov, format: "png", pixels: 1024 * 1024})
	})
	b.Run("text-to-image/jpg/1024x1024", func(b *testing.B) {
		benchmarkRender(b, renderJob{prov: prov, format: "jpg", pixels: 1024 * 1024})
	})
	b.Run("edit/png/1024x1024", func(b *testing.B) {
		benchmarkRender(b, renderJob{prov: edit, input: input, format: "png", pixels: 1024 * 1024})
	})
	b.Run("text-to-image/png/64x64", func(b *testing.B) {
		benchmarkRender(b, renderJob{prov: prov, format: "png", pixels: 64 * 64})
	})
}

func mustRender(b *testing.B, j renderJob) []byte {
	data, err := j.render()
	if err != nil {
		b.Fatal(err)
	}
	return data
}
