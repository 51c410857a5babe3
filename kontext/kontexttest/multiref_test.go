package kontexttest_test

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

const (
	flux2ProPath  = "/replicate/v1/models/black-forest-labs/flux-2-pro/predictions"
	flux2FlexPath = "/replicate/v1/models/black-forest-labs/flux-2-flex/predictions"
)

// TestCreateReferences: each model takes its own reference fields, up to
// its own count, and the result's provenance names every reference's
// sha256 in order.
func TestCreateReferences(t *testing.T) {
	a, b, c := twoTone(t, 40, 30), twoTone(t, 30, 30), twoTone(t, 20, 50)
	ua, ub, uc := dataURI("image/png", a), dataURI("image/png", b), dataURI("image/png", c)
	tests := []struct {
		name     string
		path     string
		input    map[string]any
		inputs   [][]byte
		aspect   string
		upsample bool
	}{
		{name: "KontextTwo", path: maxPath, inputs: [][]byte{a, b}, aspect: "match_input_image",
			input: map[string]any{"input_image": ua, "input_image_2": ub}},
		{name: "KontextFour", path: proPath, inputs: [][]byte{a, b, c, a}, aspect: "match_input_image", upsample: true,
			input: map[string]any{"input_image": ua, "input_image_2": ub, "input_image_3": uc, "input_image_4": ua, "prompt_upsampling": true}},
		{name: "Flux2ProArray", path: flux2ProPath, inputs: [][]byte{c, b, a}, aspect: "match_input_image",
			input: map[string]any{"input_images": []string{uc, ub, ua}, "aspect_ratio": "match_input_image", "output_format": "png"}},
		{name: "Flux2ProDefaultAspect", path: flux2ProPath, inputs: [][]byte{a}, aspect: "1:1",
			input: map[string]any{"input_images": []string{ua}, "output_format": "jpg", "resolution": "1 MP", "output_quality": 90}},
		{name: "Flux2FlexOptions", path: flux2FlexPath, inputs: [][]byte{b, a}, aspect: "4:3", upsample: true,
			input: map[string]any{"input_images": []string{ub, ua}, "aspect_ratio": "4:3", "output_format": "png", "steps": 30, "guidance": 4.5, "prompt_upsampling": true, "safety_tolerance": 5}},
		{name: "Flux2FlexDefaultUpsampling", path: flux2FlexPath, inputs: [][]byte{a}, aspect: "1:1", upsample: true,
			input: map[string]any{"input_images": []string{ua}, "output_format": "png"}},
		{name: "Flux2FlexNoUpsampling", path: flux2FlexPath, inputs: [][]byte{a}, aspect: "1:1",
			input: map[string]any{"input_images": []string{ua}, "output_format": "png", "prompt_upsampling": false}},
		{name: "Flux2TextToImage", path: flux2ProPath, aspect: "16:9",
			input: map[string]any{"aspect_ratio": "16:9", "output_format": "png", "input_images": []string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, kontexttest.Options{Pixels: 64 * 64})
			tt.input["prompt"] = "put the dog on the beach"
			tt.input["seed"] = 4
			p := create(t, s, tt.path, map[string]any{"input": tt.input}, wait)
			if p.Status != "succeeded" {
				t.Fatalf("status = %q (error %v), want succeeded", p.Status, p.Error)
			}
			prov, err := kontexttest.ReadProvenance(download(t, s, p.url(t)).body)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, in := range tt.inputs {
				want = append(want, sha(in))
			}
			if !reflect.DeepEqual(prov.Inputs, want) {
				t.Errorf("inputs = %v, want %v", prov.Inputs, want)
			}
			wantFirst := ""
			if len(want) > 0 {
				wantFirst = want[0]
			}
			if prov.InputSHA256 != wantFirst {
				t.Errorf("InputSHA256 = %q, want %q", prov.InputSHA256, wantFirst)
			}
			if got, want := prov.AspectRatio, tt.aspect; got != want {
				t.Errorf("aspect ratio = %q, want %q", got, want)
			}
			if got, want := prov.PromptUpsampling, tt.upsample; got != want {
				t.Errorf("prompt upsampling = %v, want %v", got, want)
			}
			if got, want := "black-forest-labs/"+prov.Model, p.Model; got != want {
				t.Errorf("model = %q, want %q", got, want)
			}
		})
	}
}

// TestCreateReferencesRefused: what a model's schema does not take is a
// 422 in the provider's error shape, and nothing is created.
func TestCreateReferencesRefused(t *testing.T) {
	img := twoTone(t, 20, 20)
	u := dataURI("image/png", img)
	nine := []string{u, u, u, u, u, u, u, u, u}
	tests := []struct {
		name  string
		path  string
		input map[string]any
		want  string // in the detail
	}{
		{"InputImagesOnKontext", maxPath, map[string]any{"input_images": []string{u}}, `unknown field "input_images"`},
		{"InputImage2OnFlux2", flux2ProPath, map[string]any{"input_images": []string{u}, "input_image_2": u, "output_format": "png"}, `unknown field "input_image_2"`},
		{"InputImageOnFlux2", flux2FlexPath, map[string]any{"input_image": u, "output_format": "png"}, `unknown field "input_image"`},
		{"InputImage5OnKontext", proPath, map[string]any{"input_image": u, "input_image_5": u}, `unknown field "input_image_5"`},
		{"GapInKontextReferences", maxPath, map[string]any{"input_image": u, "input_image_3": u}, "input_image_3 given without input.input_image_2"},
		{"SecondWithoutFirst", maxPath, map[string]any{"input_image_2": u}, "input_image_2 given without input.input_image"},
		{"TooManyOnFlux2Pro", flux2ProPath, map[string]any{"input_images": nine, "output_format": "png"}, "at most 8 images, got 9"},
		{"UndecodableSecond", maxPath, map[string]any{"input_image": u, "input_image_2": dataURI("image/png", []byte("no image here"))}, "input.input_image_2 could not be decoded"},
		{"UndecodableInArray", flux2ProPath, map[string]any{"input_images": []string{u, dataURI("image/jpeg", img[:40])}, "output_format": "png"}, "input.input_images[1] could not be decoded"},
		{"BadBase64Third", proPath, map[string]any{"input_image": u, "input_image_2": u, "input_image_3": "data:image/png;base64,@@"}, "input.input_image_3: invalid base64"},
		{"ArrayNotStrings", flux2ProPath, map[string]any{"input_images": []int{1}, "output_format": "png"}, "input.input_images must be an array of strings"},
		{"UpsamplingNotBool", flux2FlexPath, map[string]any{"prompt_upsampling": "yes", "output_format": "png"}, "prompt_upsampling must be a boolean"},
		{"StepsOnPro", flux2ProPath, map[string]any{"steps": 20, "output_format": "png"}, `unknown field "steps"`},
		{"GuidanceOutOfRange", flux2FlexPath, map[string]any{"guidance": 20, "output_format": "png"}, "guidance must be between 1.5 and 10"},
		{"Kontext21x9OnFlux2", flux2ProPath, map[string]any{"aspect_ratio": "21:9", "output_format": "png"}, `aspect_ratio "21:9" is not one of`},
		{"SafetyZeroOnFlux2", flux2ProPath, map[string]any{"safety_tolerance": 0, "output_format": "png"}, "safety_tolerance must be between 1 and 5"},
		{"KontextSafety3WithSecondImage", maxPath, map[string]any{"input_image": u, "input_image_2": u, "safety_tolerance": 3}, "at most 2 with input_image"},
		{"CustomWithoutSize", flux2ProPath, map[string]any{"aspect_ratio": "custom", "output_format": "png"}, "width is required"},
		{"WebpNotRendered", flux2ProPath, map[string]any{"input_images": []string{u}}, "renders png or jpg only"},
		{"UnknownModel", "/replicate/v1/models/black-forest-labs/flux-3/predictions", map[string]any{}, "unknown model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, kontexttest.Options{Pixels: 64 * 64})
			tt.input["prompt"] = "a cat"
			r := call(t, s, http.MethodPost, tt.path, map[string]any{"input": tt.input}, nil)
			if got, want := r.status, http.StatusUnprocessableEntity; got != want {
				t.Fatalf("status = %d (%s), want %d", got, r.body, want)
			}
			if d := r.detail(t); !strings.Contains(d, tt.want) {
				t.Errorf("detail = %q, want it to contain %q", d, tt.want)
			}
			if got := s.Stats().Created; got != 0 {
				t.Errorf("%d predictions created, want 0", got)
			}
		})
	}
}

// TestModelSlots: a model's own limit of active tasks sits inside the
// key's: the one over either gets 429.
func TestModelSlots(t *testing.T) {
	s := newServer(t, kontexttest.Options{Slots: 3, ModelSlots: map[string]int{"flux-kontext-max": 1}, Latency: time.Minute, Pixels: 64 * 64})
	steps := []struct {
		path string
		want int
	}{
		{maxPath, http.StatusCreated},
		{maxPath, http.StatusTooManyRequests}, // max's own pool is full
		{proPath, http.StatusCreated},
		{flux2ProPath, http.StatusCreated},
		{proPath, http.StatusTooManyRequests}, // the key's 3 are busy
	}
	for i, st := range steps {
		in := map[string]any{"prompt": "a cat"}
		if st.path == flux2ProPath {
			in["output_format"] = "png"
		}
		r := call(t, s, http.MethodPost, st.path, map[string]any{"input": in}, nil)
		if r.status != st.want {
			t.Fatalf("create %d on %s: status %d (%s), want %d", i+1, st.path, r.status, r.body, st.want)
		}
	}
	got := s.Stats()
	if got.SlotLimit429 != 2 || got.MaxActive != 3 || got.MaxActiveModel["flux-kontext-max"] != 1 {
		t.Errorf("stats: %d slot 429s, max active %d, max active max %d; want 2, 3, 1", got.SlotLimit429, got.MaxActive, got.MaxActiveModel["flux-kontext-max"])
	}
}
