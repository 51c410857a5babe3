package kontexttest_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

func sha(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestImageSizes(t *testing.T) {
	t.Parallel()
	// Most cases use a quarter megapixel to keep the race-enabled run fast;
	// TestOutputSize covers every ratio at full size.
	servers := map[int]*kontexttest.Server{}
	for _, px := range []int{1024 * 1024, 256 * 256, 64 * 64} {
		servers[px] = newServer(t, kontexttest.Options{Latency: time.Millisecond, Slots: 32, Pixels: px})
	}
	tests := []struct {
		name   string
		pixels int
		aspect string
		input  []byte // input_image, nil for text-to-image
		w, h   int    // 0 = only check the properties
	}{
		{"1:1 at 1MP", 1024 * 1024, "1:1", nil, 1024, 1024},
		{"16:9 at 1MP", 1024 * 1024, "16:9", nil, 1376, 768},
		{"match 4:3 input at 1MP", 1024 * 1024, "match_input_image", twoTone(t, 80, 60), 1184, 896},
		{"very wide input at 1MP clamps to 7:3", 1024 * 1024, "match_input_image", twoTone(t, 100, 10), 1568, 672},
		{"9:16", 256 * 256, "9:16", nil, 192, 352},
		{"21:9", 256 * 256, "21:9", nil, 0, 0},
		{"3:4", 256 * 256, "3:4", nil, 0, 0},
		{"2:1", 256 * 256, "2:1", nil, 0, 0},
		{"4:5", 256 * 256, "4:5", nil, 0, 0},
		{"match_input_image without input is square", 256 * 256, "match_input_image", nil, 256, 256},
		{"no aspect_ratio without input is square", 256 * 256, "", nil, 256, 256},
		{"no aspect_ratio follows the input", 256 * 256, "", twoTone(t, 60, 80), 224, 288},
		{"very wide input clamps to 7:3", 256 * 256, "match_input_image", twoTone(t, 100, 10), 0, 0},
		{"very tall input clamps to 3:7", 256 * 256, "match_input_image", twoTone(t, 10, 100), 0, 0},
		{"explicit ratio wins over the input's", 256 * 256, "1:1", twoTone(t, 100, 10), 256, 256},
		{"small Pixels 1:1", 64 * 64, "1:1", nil, 64, 64},
		{"small Pixels 16:9", 64 * 64, "16:9", nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := servers[tt.pixels]
			in := map[string]any{"prompt": "a lighthouse", "seed": 1}
			if tt.aspect != "" {
				in["aspect_ratio"] = tt.aspect
			}
			if tt.input != nil {
				in["input_image"] = dataURI("image/png", tt.input)
			}
			img, _ := decode(t, download(t, s, generate(t, s, in).url(t)).body)
			w, h := img.Bounds().Dx(), img.Bounds().Dy()
			if tt.w != 0 && (w != tt.w || h != tt.h) {
				t.Errorf("size = %dx%d, want %dx%d", w, h, tt.w, tt.h)
			}
			if w%32 != 0 || h%32 != 0 {
				t.Errorf("size = %dx%d, want multiples of 32", w, h)
			}
			// Rounding to multiples of 32 costs more precision on small images.
			tol := map[int]float64{1024 * 1024: 0.08, 256 * 256: 0.15, 64 * 64: 0.6}[tt.pixels]
			if area := float64(w * h); math.Abs(area/float64(tt.pixels)-1) > tol {
				t.Errorf("area = %d, want within %.0f%% of %d", w*h, tol*100, tt.pixels)
			}
			if r := float64(w) / float64(h); r < 3.0/7-0.01 || r > 7.0/3+0.01 {
				t.Errorf("aspect = %.3f, want within 3:7..7:3", r)
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: time.Millisecond, Pixels: 128 * 128})
	input := dataURI("image/png", twoTone(t, 40, 30))
	base := map[string]any{"prompt": "a lighthouse at dusk", "seed": 7}
	with := func(kv ...any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	image := func(in map[string]any, path string) []byte {
		p := create(t, s, path, map[string]any{"input": in}, wait)
		return download(t, s, p.url(t)).body
	}
	tests := []struct {
		name string
		a, b map[string]any
		path string // for b; a always uses the max model
		same bool
	}{
		{"same png", base, base, maxPath, true},
		{"same jpg", with("output_format", "jpg"), with("output_format", "jpg"), maxPath, true},
		{"same edit", with("input_image", input), with("input_image", input), maxPath, true},
		{"other prompt", base, with("prompt", "a lighthouse at dawn"), maxPath, false},
		{"other seed", base, with("seed", 8), maxPath, false},
		{"other model", base, base, proPath, false},
		{"other aspect", with("aspect_ratio", "1:1"), with("aspect_ratio", "4:3"), maxPath, false},
		{"other input", with("input_image", input), with("input_image", dataURI("image/png", twoTone(t, 40, 31))), maxPath, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := image(tt.a, maxPath), image(tt.b, tt.path)
			if got := bytes.Equal(a, b); got != tt.same {
				t.Errorf("bytes equal = %v, want %v", got, tt.same)
			}
		})
	}
	t.Run("random seed when none is given", func(t *testing.T) {
		in := map[string]any{"prompt": "a lighthouse"}
		a := image(in, maxPath)
		b := image(in, maxPath)
		pa, _ := kontexttest.ReadProvenance(a)
		pb, _ := kontexttest.ReadProvenance(b)
		if pa.Seed == pb.Seed || bytes.Equal(a, b) {
			t.Errorf("seeds %d and %d (bytes equal %v), want two different random seeds", pa.Seed, pb.Seed, bytes.Equal(a, b))
		}
	})
}

// encodeAs re-encodes a two-tone picture in format.
func encodeAs(t *testing.T, format string) []byte {
	t.Helper()
	src, _ := decode(t, twoTone(t, 120, 90))
	var b bytes.Buffer
	var err error
	switch format {
	case "png":
		return twoTone(t, 120, 90)
	case "jpeg":
		err = jpeg.Encode(&b, src, &jpeg.Options{Quality: 95})
	case "gif":
		err = gif.Encode(&b, src, nil)
	case "webp":
		return mustRead(t, "testdata/gopher.webp")
	}
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEditProvenance(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: time.Millisecond, Pixels: 256 * 256})
	tests := []struct {
		format, mime string
		twoTone      bool
	}{
		{"png", "image/png", true},
		{"jpeg", "image/jpeg", true},
		{"gif", "image/gif", true},
		{"webp", "image/webp", false},
	}
	for _, tt := range tests {
		t.Run(tt.format, func(t *testing.T) {
			input := encodeAs(t, tt.format)
			p := create(t, s, proPath, map[string]any{"input": map[string]any{
				"prompt": "make it night", "seed": 9, "input_image": dataURI(tt.mime, input), "safety_tolerance": 2,
			}}, wait)
			if p.Status != "succeeded" {
				t.Fatalf("status = %q (error %v), want succeeded", p.Status, p.Error)
			}
			out := download(t, s, p.url(t)).body
			prov, err := kontexttest.ReadProvenance(out)
			if err != nil {
				t.Fatal(err)
			}
			want := kontexttest.Provenance{Prompt: "make it night", Seed: 9, Model: "flux-kontext-pro", InputSHA256: sha(input), AspectRatio: "match_input_image", Inputs: []string{sha(input)}}
			if !reflect.DeepEqual(prov, want) {
				t.Errorf("provenance = %+v, want %+v", prov, want)
			}
			if !tt.twoTone {
				return
			}
			img, _ := decode(t, out)
			b := img.Bounds()
			if got, want := float64(b.Dx())/float64(b.Dy()), 4.0/3; math.Abs(got-want) > 0.1 {
				t.Errorf("aspect = %.3f, want about %.3f (the input's)", got, want)
			}
			// The input is recognisable: red on the left, blue on the right.
			left := img.At(b.Dx()/4, b.Dy()/3).(color.RGBA)
			right := img.At(3*b.Dx()/4, b.Dy()/3).(color.RGBA)
			if left.R < 2*left.B || right.B < 2*right.R {
				t.Errorf("left %v, right %v: want the input's red and blue halves", left, right)
			}
		})
	}
	t.Run("chained edit from a result URL", func(t *testing.T) {
		first := generate(t, s, map[string]any{"prompt": "a red barn", "seed": 1})
		firstBytes := download(t, s, first.url(t)).body
		second := generate(t, s, map[string]any{"prompt": "add snow", "seed": 2, "input_image": first.url(t)})
		prov, err := kontexttest.ReadProvenance(download(t, s, second.url(t)).body)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := prov.InputSHA256, sha(firstBytes); got != want {
			t.Errorf("InputSHA256 = %s, want %s (the first result's bytes)", got, want)
		}
	})
	t.Run("text-to-image has no input hash", func(t *testing.T) {
		prov, err := kontexttest.ReadProvenance(download(t, s, generate(t, s, map[string]any{"prompt": "a barn"}).url(t)).body)
		if err != nil || prov.InputSHA256 != "" {
			t.Errorf("provenance = %+v, %v; want InputSHA256 empty", prov, err)
		}
	})
}

func TestReadProvenance(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: time.Millisecond, Pixels: 96 * 96})
	prompts := []struct{ name, prompt string }{
		{"ascii", "a cat"},
		{"utf-8", "Café ☕ «Grüße» 猫 🦊 \"quoted\" <b>&amp;</b>\nsecond line\t\\ \u0000 end"},
		{"long", strings.Repeat("é🦊", 12000)}, // needs several JPEG COM segments
	}
	formats := []struct{ format, ctype, ext, decoded string }{
		{"png", "image/png", ".png", "png"},
		{"jpg", "image/jpeg", ".jpg", "jpeg"},
	}
	for _, f := range formats {
		for _, p := range prompts {
			t.Run(f.format+"/"+p.name, func(t *testing.T) {
				pred := generate(t, s, map[string]any{"prompt": p.prompt, "seed": -5, "output_format": f.format, "aspect_ratio": "3:2"})
				url := pred.url(t)
				if !strings.HasSuffix(url, f.ext) {
					t.Errorf("URL %s, want it to end in %s", url, f.ext)
				}
				r := download(t, s, url)
				if got := r.header.Get("Content-Type"); got != f.ctype {
					t.Errorf("Content-Type = %q, want %q", got, f.ctype)
				}
				if _, format := decode(t, r.body); format != f.decoded {
					t.Errorf("decoded format = %q, want %q", format, f.decoded)
				}
				got, err := kontexttest.ReadProvenance(r.body)
				if err != nil {
					t.Fatal(err)
				}
				want := kontexttest.Provenance{Prompt: p.prompt, Seed: -5, Model: "flux-kontext-max", AspectRatio: "3:2"}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("provenance = %+.80v, want %+.80v", got, want)
				}
			})
		}
	}

	plain := image.NewRGBA(image.Rect(0, 0, 8, 8))
	var plainPNG, plainJPEG bytes.Buffer
	png.Encode(&plainPNG, plain)
	jpeg.Encode(&plainJPEG, plain, nil)
	good := download(t, s, generate(t, s, map[string]any{"prompt": "a cat"}).url(t)).body
	corrupt := bytes.Clone(good)
	corrupt[45] ^= 0xFF // inside the provenance chunk, after IHDR
	errs := []struct {
		name string
		data []byte
		is   error
	}{
		{"not an image", []byte("hello"), nil},
		{"empty", nil, nil},
		{"png without provenance", plainPNG.Bytes(), kontexttest.ErrNoProvenance},
		{"jpeg without provenance", plainJPEG.Bytes(), kontexttest.ErrNoProvenance},
		{"corrupted chunk", corrupt, nil},
		{"truncated png", good[:40], nil},
	}
	for _, tt := range errs {
		t.Run("error/"+tt.name, func(t *testing.T) {
			_, err := kontexttest.ReadProvenance(tt.data)
			if err == nil {
				t.Fatal("err = nil, want an error")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("err = %v, want %v", err, tt.is)
			}
		})
	}
}

func TestDownloadHeaders(t *testing.T) {
	t.Parallel()
	s := newServer(t, kontexttest.Options{Latency: time.Millisecond, Pixels: 64 * 64})
	r := call(t, s, http.MethodGet, generate(t, s, map[string]any{"prompt": "a cat"}).url(t), nil, map[string]string{"Authorization": ""})
	if got, want := r.header.Get("Content-Length"), strconv.Itoa(len(r.body)); got != want {
		t.Errorf("Content-Length = %s, want %s", got, want)
	}
}
