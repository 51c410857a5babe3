package kontext

import (
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Models served on CometAPI's Replicate-style route besides the Kontext ones.
const (
	ModelFlux2Pro  = "flux-2-pro"
	ModelFlux2Flex = "flux-2-flex"
)

// RefStyle says how a model takes its reference images.
type RefStyle int

const (
	// RefsNumbered: input_image, then input_image_2, input_image_3, ...
	// (FLUX.1 Kontext; BFL's API reference calls the further ones
	// "Experimental Multiref").
	RefsNumbered RefStyle = iota
	// RefsArray: one input_images array, in order (FLUX.2).
	RefsArray
)

// Model describes one model the client can call: everything that differs
// between models is here, so adding a model is adding a row.
type Model struct {
	// Name is the short name people and configuration use
	// ("flux-kontext-max").
	Name string
	// ID is the provider's model id, the path segment of the create route
	// (/replicate/v1/models/{ID}/predictions) and "model" on the generic
	// route.
	ID string
	// Label is a short description for pickers ("max: best quality").
	Label string
	// Refs is the field the references go in; MaxRefs is how many the
	// model takes in all (the edited image included).
	Refs    RefStyle
	MaxRefs int
	// Price is the default price in USD per image (CometAPI's), replaced
	// by configuration.
	Price float64
	// Pool is the name of the provider's concurrency pool the model's
	// predictions count against; PoolSlots is its default size, 0 when only
	// the account's limit applies.
	Pool      string
	PoolSlots int
	// Aspects lists the aspect_ratio values the model accepts, the one
	// the bot uses by default first. DefaultAspect is the provider's own
	// default when the field is left out.
	Aspects       []string
	DefaultAspect string
	// OutputFormats lists the output_format values the model accepts.
	// DefaultFormat is the provider's default when the field is left out.
	OutputFormats []string
	DefaultFormat string
	// SafetyMin and SafetyMax bound safety_tolerance; SafetyMaxInput is
	// the bound with an input image.
	SafetyMin, SafetyMax, SafetyMaxInput int
	// PromptUpsampling reports whether the model takes prompt_upsampling;
	// UpsamplingDefault is the provider's value when it is left out (true
	// on flux-2-flex), so the client sends false explicitly then.
	PromptUpsampling, UpsamplingDefault bool
	// Latency is how long the model usually takes for a 1 MP image: the
	// first poll comes that long after the create.
	Latency time.Duration
	// ImagesRoute reports whether CometAPI's OpenAI-style
	// /v1/images/generations serves the model (RouteImages); the others
	// always use the Replicate-style route.
	ImagesRoute bool
}

// Models is every model this package serves, the default first.
//
// Sources (checked for issue 13):
//   - FLUX.1 Kontext: BFL's API reference for flux-kontext-pro/-max lists
//     input_image_2, input_image_3 and input_image_4 beside input_image
//     ("Experimental Multiref"); apidoc.cometapi.com (image/replicate/create)
//     shows a black-forest-labs/flux-kontext-max prediction whose input
//     carries input_image..input_image_4. Replicate's schema: aspect_ratio
//     as in AspectRatios (default match_input_image), output_format png or
//     jpg (default png), safety_tolerance 0..6 (at most 2 with an input
//     image), prompt_upsampling a boolean. Prices: CometAPI lists $0.192
//     for max; pro is half of it ($0.096), the configured defaults so far.
//     CometAPI reports 3 to 10 s per image.
//   - FLUX.2 [pro]: Replicate's schema (black-forest-labs/flux-2-pro,
//     version 285631b5) has prompt, input_images ("Maximum 8 images. Must
//     be jpeg, png, gif, or webp."), aspect_ratio (match_input_image,
//     custom, 1:1, 16:9, 3:2, 2:3, 4:5, 5:4, 9:16, 3:4, 4:3; default 1:1),
//     resolution, width, height (custom only), safety_tolerance 1..5
//     (default 2), seed, output_format webp, jpg or png (default webp),
//     output_quality. prompt_upsampling (boolean, default false) is in the
//     earlier version 3961946e (which took 4 images); it is sent only when
//     asked for. CometAPI's create page lists black-forest-labs/flux-2-pro
//     on the same route and sends input_images as an array of URLs.
//     Price: no CometAPI figure for flux-2-pro was found; BFL/Replicate
//     sell it at about $0.03 per megapixel (first MP) and CometAPI's
//     Replicate-route prices are 2.4x BFL's for Kontext (0.192 vs 0.08),
//     so 0.072 is used: configure KONTEXT_PRICE_FLUX_2_PRO with the
//     account's real price.
//   - FLUX.2 [flex]: as pro, plus steps (1..50) and guidance (1.5..10);
//     Replicate's page says "Maximum 10 images" and prompt_upsampling
//     defaults to true there. CometAPI's model page
//     (cometapi.com/models/replicate/black-forest-labs/flux-2-flex) lists
//     $0.192 per request. Replicate's example took 22.6 s.
//   - Latency of flux-2-pro: no published figure was found; 6 s is assumed
//     (between Kontext's 3-4 s and flex's 20 s); KONTEXT_FIRST_POLL
//     overrides it.
var Models = []Model{
	{
		Name: ModelMax, ID: replicateOwner + ModelMax, Label: "max: best quality and typography",
		Refs: RefsNumbered, MaxRefs: 4, Price: 0.192, Pool: ModelMax, PoolSlots: 6,
		Aspects: AspectRatios, DefaultAspect: AspectMatchInput,
		OutputFormats: []string{"png", "jpg"}, DefaultFormat: "png",
		SafetyMin: 0, SafetyMax: 6, SafetyMaxInput: 2, PromptUpsampling: true,
		Latency: 4 * time.Second, ImagesRoute: true,
	},
	{
		Name: ModelPro, ID: replicateOwner + ModelPro, Label: "pro: faster and cheaper",
		Refs: RefsNumbered, MaxRefs: 4, Price: 0.096, Pool: ModelPro,
		Aspects: AspectRatios, DefaultAspect: AspectMatchInput,
		OutputFormats: []string{"png", "jpg"}, DefaultFormat: "png",
		SafetyMin: 0, SafetyMax: 6, SafetyMaxInput: 2, PromptUpsampling: true,
		Latency: 3 * time.Second, ImagesRoute: true,
	},
	{
		Name: ModelFlux2Pro, ID: replicateOwner + ModelFlux2Pro, Label: "flux-2-pro: FLUX.2, up to 8 references",
		Refs: RefsArray, MaxRefs: 8, Price: 0.072, Pool: ModelFlux2Pro,
		Aspects: flux2Aspects, DefaultAspect: "1:1",
		OutputFormats: []string{"webp", "jpg", "png"}, DefaultFormat: "webp",
		SafetyMin: 1, SafetyMax: 5, SafetyMaxInput: 5, PromptUpsampling: true,
		Latency: 6 * time.Second,
	},
	{
		Name: ModelFlux2Flex, ID: replicateOwner + ModelFlux2Flex, Label: "flux-2-flex: FLUX.2, finest text",
		Refs: RefsArray, MaxRefs: 10, Price: 0.192, Pool: ModelFlux2Flex,
		Aspects: flux2Aspects, DefaultAspect: "1:1",
		OutputFormats: []string{"webp", "jpg", "png"}, DefaultFormat: "webp",
		SafetyMin: 1, SafetyMax: 5, SafetyMaxInput: 5, PromptUpsampling: true, UpsamplingDefault: true,
		Latency: 20 * time.Second,
	},
}

// flux2Aspects are FLUX.2's aspect ratios on Replicate, "custom" (which
// needs width and height) left out.
var flux2Aspects = []string{AspectMatchInput, "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"}

// available is the models this process serves (Restrict); nil: all.
var available atomic.Pointer[[]Model]

// Available returns the rows of Models this process serves, in order:
// all of them unless Restrict said otherwise (KONTEXT_MODELS).
func Available() []Model {
	if p := available.Load(); p != nil {
		return *p
	}
	return Models
}

// Restrict makes the process serve only the named models (short names, in
// Models' order; none means all): LookupModel, ValidModel, Available and
// therefore the client, the pickers and the option parsers ignore the
// others. It is meant to be called once at start-up, from configuration.
func Restrict(list []string) error {
	if len(list) == 0 {
		available.Store(nil)
		return nil
	}
	var want []string
	for _, n := range list {
		m, ok := lookupIn(Models, n)
		if !ok {
			return fmt.Errorf("kontext: restrict: unknown model %q: use %s", n, strings.Join(names(Models), ", "))
		}
		want = append(want, m.Name)
	}
	var rows []Model
	for _, m := range Models {
		if slices.Contains(want, m.Name) {
			rows = append(rows, m)
		}
	}
	available.Store(&rows)
	return nil
}

// LookupModel returns the available model called name: its short name,
// its provider id ("black-forest-labs/flux-2-pro"), or "max"/"pro",
// case-insensitively.
func LookupModel(name string) (Model, bool) { return lookupIn(Available(), name) }

func lookupIn(models []Model, name string) (Model, bool) {
	n := strings.ToLower(strings.TrimSpace(name))
	switch n {
	case "max":
		n = ModelMax
	case "pro":
		n = ModelPro
	}
	for _, m := range models {
		if n == m.Name || n == m.ID {
			return m, true
		}
	}
	return Model{}, false
}

// ModelNames returns the short names of the available models, in order.
func ModelNames() []string { return names(Available()) }

func names(models []Model) []string {
	out := make([]string, len(models))
	for i, m := range models {
		out[i] = m.Name
	}
	return out
}

// ValidAspect reports whether the model takes aspect ratio s.
func (m Model) ValidAspect(s string) bool { return slices.Contains(m.Aspects, s) }

// EnvName is the model's name as an environment variable suffix:
// upper-cased, '-' and '.' made '_' ("FLUX_KONTEXT_MAX").
func (m Model) EnvName() string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return r
	}, strings.ToUpper(m.Name))
}

// PoolOf is the pool a job of model counts against (its Pool in Models,
// hidden or not): the scheduler's Job.Pool. "" for a name not in Models.
func PoolOf(model string) string {
	if m, ok := lookupIn(Models, model); ok {
		return m.Pool
	}
	return ""
}
