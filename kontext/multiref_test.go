package kontext

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"

	"kontextbot/kontext/kontexttest"
)

// TestRunMultiReference sends edits with several references to every
// model through the strict fake, which records the sha256 of each image it
// received, in order, in the result's provenance.
func TestRunMultiReference(t *testing.T) {
	a, b, c, d := testPNG(t, 96, 64), testPNG(t, 64, 64), testPNG(t, 40, 80), testPNG(t, 50, 50)
	tests := []struct {
		name   string
		model  string
		refs   [][]byte
		up     bool
		fields []string // the input fields that carry images
	}{
		{name: "KontextMaxTwo", model: ModelMax, refs: [][]byte{a, b}, fields: []string{"input_image", "input_image_2"}},
		{name: "KontextProFour", model: ModelPro, refs: [][]byte{a, b, c, d}, up: true,
			fields: []string{"input_image", "input_image_2", "input_image_3", "input_image_4"}},
		{name: "KontextOne", model: ModelMax, refs: [][]byte{c}, fields: []string{"input_image"}},
		{name: "Flux2ProThree", model: ModelFlux2Pro, refs: [][]byte{c, a, b}, fields: []string{"input_images"}},
		{name: "Flux2FlexTwoUpsampled", model: ModelFlux2Flex, refs: [][]byte{b, a}, up: true, fields: []string{"input_images"}},
		{name: "Flux2ProOne", model: ModelFlux2Pro, refs: [][]byte{d}, fields: []string{"input_images"}},
		// flux-2-flex upsamples unless told not to: false is sent.
		{name: "Flux2FlexNoUpsampling", model: ModelFlux2Flex, refs: [][]byte{a}, fields: []string{"input_images"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
			cl := newTestClient(t, s, func(c *Config) { c.HTTPClient = &http.Client{Transport: rec} })
			res, err := cl.Run(context.Background(), Request{Prompt: "put the dog on the beach", Model: tt.model,
				InputImage: tt.refs[0], References: tt.refs[1:], PromptUpsampling: tt.up})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			prov, err := kontexttest.ReadProvenance(res.Data)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, r := range tt.refs {
				want = append(want, sha(r))
			}
			if !reflect.DeepEqual(prov.Inputs, want) {
				t.Errorf("provenance inputs = %v, want %v", prov.Inputs, want)
			}
			if got, want := prov.InputSHA256, sha(tt.refs[0]); got != want {
				t.Errorf("InputSHA256 = %s, want %s", got, want)
			}
			if got, want := prov.Model, tt.model; got != want {
				t.Errorf("model = %s, want %s", got, want)
			}
			if got, want := prov.PromptUpsampling, tt.up; got != want {
				t.Errorf("prompt upsampling = %v, want %v", got, want)
			}
			if got, want := prov.AspectRatio, AspectMatchInput; got != want {
				t.Errorf("aspect ratio = %s, want %s (an edit follows its input on every model)", got, want)
			}
			var body struct {
				Input map[string]json.RawMessage `json:"input"`
			}
			if err := json.Unmarshal(rec.bodies[0], &body); err != nil {
				t.Fatal(err)
			}
			var got []string
			for k := range body.Input {
				if strings.HasPrefix(k, "input_image") {
					got = append(got, k)
				}
			}
			slices.Sort(got)
			if !reflect.DeepEqual(got, tt.fields) {
				t.Errorf("image fields sent = %v, want %v", got, tt.fields)
			}
		})
	}
}

// TestMultiReferenceBodyMatchesMarshal: a body with several images, some
// sent as they are and some re-encoded, is json.Marshal's byte for byte.
func TestMultiReferenceBodyMatchesMarshal(t *testing.T) {
	small, big := photoPNG(t, 120, 90, false), photoPNG(t, 330, 300, false)
	tricky := `a "quoted" "@kontext-input-0" "input_images":["@"] \ é`
	for _, model := range []string{ModelMax, ModelFlux2Pro} {
		for _, route := range []string{RouteModels, RoutePredictions} {
			t.Run(model+"/"+route, func(t *testing.T) {
				s := newFake(t, kontexttest.Options{})
				rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
				c := newTestClient(t, s, func(c *Config) {
					c.HTTPClient = &http.Client{Transport: rec}
					c.Route = route
					setInputLimits(c, 64<<10, 128*128, 0)
				})
				req := Request{Prompt: tricky, Model: model, InputImage: small, References: [][]byte{big, small}, Seed: seed(5)}
				if _, err := c.Run(context.Background(), req); err != nil {
					t.Fatalf("Run: %v", err)
				}
				got := rec.bodies[0]
				uris := sentURIs(t, got)
				if len(uris) != 3 {
					t.Fatalf("sent %d images, want 3", len(uris))
				}
				if want := "data:image/png;base64," + base64.StdEncoding.EncodeToString(small); uris[0] != want || uris[2] != want {
					t.Errorf("the small images were not sent as they are")
				}
				if !strings.HasPrefix(uris[1], "data:image/jpeg;base64,") {
					t.Errorf("image 2 = %.40q, want a re-encoded JPEG", uris[1])
				}
				m, _ := LookupModel(model)
				v := struct {
					Model string `json:"model,omitempty"`
					Input input  `json:"input"`
				}{Input: inputFields(m, req, uris)}
				if route == RoutePredictions {
					v.Model = m.ID
				}
				want, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("got body\n%.300s\nwant json.Marshal's\n%.300s", got, want)
				}
			})
		}
	}
}

// sentURIs returns the images of a create body, in order, whatever the
// model's field style.
func sentURIs(t *testing.T, body []byte) []string {
	t.Helper()
	var v struct {
		Input struct {
			I1     string   `json:"input_image"`
			I2     string   `json:"input_image_2"`
			I3     string   `json:"input_image_3"`
			I4     string   `json:"input_image_4"`
			Images []string `json:"input_images"`
		} `json:"input"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("the body is not JSON: %v", err)
	}
	if len(v.Input.Images) > 0 {
		return v.Input.Images
	}
	var out []string
	for _, u := range []string{v.Input.I1, v.Input.I2, v.Input.I3, v.Input.I4} {
		if u != "" {
			out = append(out, u)
		}
	}
	return out
}

// TestMultiReferenceShrinksOn413: a 413 makes every image smaller, once.
func TestMultiReferenceShrinksOn413(t *testing.T) {
	a, b := photoPNG(t, 200, 150, false), photoPNG(t, 180, 180, false)
	s := newFake(t, kontexttest.Options{MaxRequestBytes: 60 << 10})
	rec := &recorder{next: http.DefaultTransport.(*http.Transport).Clone()}
	c := newTestClient(t, s, func(c *Config) { c.HTTPClient = &http.Client{Transport: rec}; c.Model = ModelFlux2Flex })
	res, err := c.Run(context.Background(), Request{Prompt: "merge them", InputImage: a, References: [][]byte{b}})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := len(rec.bodies); got != 2 {
		t.Fatalf("sent %d creates, want 2 (the 413, then smaller)", got)
	}
	for i, u := range sentURIs(t, rec.bodies[1]) {
		if !strings.HasPrefix(u, "data:image/jpeg;base64,") {
			t.Errorf("image %d after the 413 = %.40q, want re-encoded", i+1, u)
		}
	}
	prov, err := kontexttest.ReadProvenance(res.Data)
	if err != nil {
		t.Fatal(err)
	}
	if len(prov.Inputs) != 2 {
		t.Errorf("the provider received %d images, want 2", len(prov.Inputs))
	}
}

// TestRunRefusesBadReferencesLocally: requests a model would refuse are
// refused before anything is sent.
func TestRunRefusesBadReferencesLocally(t *testing.T) {
	img := testPNG(t, 32, 32)
	five := [][]byte{img, img, img, img}
	tests := []struct {
		name string
		req  Request
		want string
	}{
		{"TooManyForKontext", Request{Model: ModelMax, InputImage: img, References: five}, "at most 4 images"},
		{"TooManyForFlux2Pro", Request{Model: ModelFlux2Pro, InputImage: img, References: append(slices.Clone(five), five...)}, "at most 8 images"},
		{"ReferencesWithoutInput", Request{Model: ModelPro, References: [][]byte{img}}, "an image to edit first"},
		{"EmptyReference", Request{Model: ModelFlux2Flex, InputImage: img, References: [][]byte{{}}}, "reference 2 is empty"},
		{"AspectNotOnFlux2", Request{Model: ModelFlux2Pro, AspectRatio: "21:9"}, "aspect ratio"},
		{"UnknownModel", Request{Model: "flux-3"}, "unknown model"},
		{"UnreadableReference", Request{Model: ModelMax, InputImage: img, References: [][]byte{[]byte("not an image at all")}}, "image 2 cannot be read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFake(t, kontexttest.Options{})
			c := newTestClient(t, s, nil)
			tt.req.Prompt = "a cat"
			_, err := c.Run(context.Background(), tt.req)
			var ae *APIError
			if !errors.As(err, &ae) || !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("err = %v, want an invalid request", err)
			}
			if !strings.Contains(ae.UserMessage(), tt.want) {
				t.Errorf("message %q, want it to mention %q", ae.UserMessage(), tt.want)
			}
			if got := s.Stats().Creates; got != 0 {
				t.Errorf("%d creates sent, want 0", got)
			}
		})
	}
}

// TestModelsTable: every row is complete and LookupModel finds it.
func TestModelsTable(t *testing.T) {
	for _, m := range Models {
		t.Run(m.Name, func(t *testing.T) {
			got, ok := LookupModel(m.ID)
			if !ok || got.Name != m.Name {
				t.Errorf("LookupModel(%q) = %q, %v", m.ID, got.Name, ok)
			}
			if !ValidModel(m.Name) {
				t.Errorf("ValidModel(%q) = false", m.Name)
			}
			if m.MaxRefs < 1 || m.Price <= 0 || m.Pool == "" || m.Latency <= 0 || len(m.Aspects) == 0 || m.Label == "" {
				t.Errorf("incomplete row %+v", m)
			}
			for _, a := range m.Aspects {
				if !ValidAspect(a) {
					t.Errorf("aspect %q is not in AspectRatios", a)
				}
			}
			if !slices.Contains(m.OutputFormats, "png") {
				t.Errorf("%s has no png output", m.Name)
			}
		})
	}
	if got, want := (Model{Name: "flux-kontext-max"}).EnvName(), "FLUX_KONTEXT_MAX"; got != want {
		t.Errorf("EnvName = %q, want %q", got, want)
	}
}

// TestRestrict: KONTEXT_MODELS hides models from every lookup and from the
// client, and restricting to none serves all again.
func TestRestrict(t *testing.T) {
	t.Cleanup(func() { _ = Restrict(nil) })
	if err := Restrict([]string{"flux-3"}); err == nil {
		t.Fatal("Restrict(flux-3) succeeded, want an unknown model error")
	}
	if err := Restrict([]string{"black-forest-labs/flux-2-pro", "pro"}); err != nil {
		t.Fatal(err)
	}
	if got, want := ModelNames(), []string{ModelPro, ModelFlux2Pro}; !reflect.DeepEqual(got, want) {
		t.Errorf("ModelNames = %v, want %v", got, want)
	}
	if ValidModel(ModelMax) {
		t.Error("ValidModel(flux-kontext-max) = true while hidden")
	}
	if _, ok := LookupModel("max"); ok {
		t.Error("LookupModel(max) found a hidden model")
	}
	s := newFake(t, kontexttest.Options{})
	c := newTestClient(t, s, func(c *Config) { c.Model = ModelPro })
	_, err := c.Run(context.Background(), Request{Prompt: "a cat", Model: ModelMax})
	if !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("Run with a hidden model: %v, want an invalid request", err)
	}
	if got := s.Stats().Creates; got != 0 {
		t.Errorf("%d creates sent for a hidden model, want 0", got)
	}
	if err := Restrict(nil); err != nil || len(ModelNames()) != len(Models) {
		t.Errorf("Restrict(nil) = %v, %d models served; want all %d", err, len(ModelNames()), len(Models))
	}
}

// TestImagesRouteOnlyForItsModels: with RouteImages, a FLUX.2
// text-to-image goes to the Replicate-style route, which serves it.
func TestImagesRouteOnlyForItsModels(t *testing.T) {
	s := newFake(t, kontexttest.Options{})
	c := newTestClient(t, s, func(c *Config) { c.Route = RouteImages })
	res, err := c.Run(context.Background(), Request{Prompt: "a barn", Model: ModelFlux2Pro})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if st := s.Stats(); st.Creates != 1 || st.Images != 0 {
		t.Errorf("%d creates, %d images requests; want 1 and 0", st.Creates, st.Images)
	}
	if prov, err := kontexttest.ReadProvenance(res.Data); err != nil || prov.Model != ModelFlux2Pro || prov.AspectRatio != "1:1" {
		t.Errorf("provenance %+v, %v; want flux-2-pro at its default 1:1", prov, err)
	}
}
