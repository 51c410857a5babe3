package kontexttest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Prediction statuses.
const (
	statusStarting   = "starting"
	statusProcessing = "processing"
	statusSucceeded  = "succeeded"
	statusFailed     = "failed"
	statusCanceled   = "canceled"
	statusAborted    = "aborted"
)

const (
	modelOwner       = "black-forest-labs/"
	modelMax         = "flux-kontext-max"
	modelPro         = "flux-kontext-pro"
	aspectMatchInput = "match_input_image"
	replicateAPI     = "https://api.replicate.com/v1/predictions/"

	// maxInputPixels bounds the decoded size of an input image.
	maxInputPixels = 64 << 20
	// maxProcessingDelay bounds the time a prediction stays "starting".
	maxProcessingDelay = 20 * time.Millisecond
)

// aspectRatios are the aspect_ratio values the provider accepts (a copy of
// kontext.AspectRatios: this package must not import kontext, whose own
// tests import this one).
var aspectRatios = []string{
	aspectMatchInput, "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3",
	"4:5", "5:4", "21:9", "9:21", "2:1", "1:2",
}

// modelSpec is one model's input schema as the fake enforces it (a copy of
// what kontext.Models says, from the same sources: BFL's API reference and
// Replicate's schemas; this package must not import kontext).
type modelSpec struct {
	name     string
	fields   []string // every input field the model takes
	numbered bool     // references in input_image, input_image_2.. (else input_images)
	maxRefs  int
	aspects  []string
	// defaultAspect and defaultFormat are the values of a field left out.
	defaultAspect, defaultFormat string
	formats                      []string
	safetyMin, safetyMax         int64
	safetyMaxInput               int64
	flex                         bool // steps and guidance
	upsample                     bool // prompt_upsampling when left out
}

var kontextFields = []string{
	"prompt", "input_image", "input_image_2", "input_image_3", "input_image_4", "aspect_ratio", "seed",
	"output_format", "safety_tolerance", "prompt_upsampling",
}

// flux2Fields are FLUX.2 [pro]'s fields on Replicate; [flex] adds steps and
// guidance.
var flux2Fields = []string{
	"prompt", "input_images", "aspect_ratio", "resolution", "width", "height", "safety_tolerance", "seed",
	"output_format", "output_quality", "prompt_upsampling",
}

var flux2Aspects = []string{aspectMatchInput, "custom", "1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3"}

// flux2Resolutions are FLUX.2's resolution values.
var flux2Resolutions = []string{aspectMatchInput, "0.5 MP", "1 MP", "2 MP", "4 MP"}

var models = []modelSpec{
	{name: modelMax, fields: kontextFields, numbered: true, maxRefs: 4, aspects: aspectRatios, defaultAspect: aspectMatchInput,
		formats: []string{"png", "jpg"}, defaultFormat: "png", safetyMin: 0, safetyMax: 6, safetyMaxInput: 2},
	{name: modelPro, fields: kontextFields, numbered: true, maxRefs: 4, aspects: aspectRatios, defaultAspect: aspectMatchInput,
		formats: []string{"png", "jpg"}, defaultFormat: "png", safetyMin: 0, safetyMax: 6, safetyMaxInput: 2},
	{name: "flux-2-pro", fields: flux2Fields, maxRefs: 8, aspects: flux2Aspects, defaultAspect: "1:1",
		formats: []string{"webp", "jpg", "png"}, defaultFormat: "webp", safetyMin: 1, safetyMax: 5, safetyMaxInput: 5},
	{name: "flux-2-flex", fields: append(slices.Clone(flux2Fields), "steps", "guidance"), maxRefs: 10, aspects: flux2Aspects,
		defaultAspect: "1:1", formats: []string{"webp", "jpg", "png"}, defaultFormat: "webp", safetyMin: 1, safetyMax: 5,
		safetyMaxInput: 5, flex: true, upsample: true}, // Replicate: prompt_upsampling defaults to true on flex
}

// inputMIMETypes are the media types a data: URI input image may declare.
var inputMIMETypes = []string{"image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp"}

// lookupModel returns the spec of a bare model name.
func lookupModel(s string) (modelSpec, bool) {
	for _, m := range models {
		if m.name == s {
			return m, true
		}
	}
	return modelSpec{}, false
}

// validModel reports whether s is a model the Images route serves
// (FLUX.1 Kontext only).
func validModel(s string) bool { return s == modelMax || s == modelPro }

func modelList() string {
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = modelOwner + m.name
	}
	return strings.Join(names, ", ")
}

// prediction is one prediction's state, guarded by Fake.mu.
type prediction struct {
	id, key   string
	model     string          // full name, "black-forest-labs/flux-kontext-max"
	input     json.RawMessage // the input object as received, compacted
	base      string          // scheme://host for result URLs
	seed      int64
	fate      Fault         // outcome faults (and moderation) deciding its end
	run       time.Duration // the run time drawn for it (Latency plus jitter)
	job       *renderJob
	status    string
	errMsg    string
	hasErr    bool
	outputURL string
	logs      string
	created   time.Time
	started   time.Time
	completed time.Time
	timers    []*time.Timer
	done      chan struct{} // closed once final
}

func isFinal(status string) bool {
	return status != statusStarting && status != statusProcessing
}

func (p *prediction) stopTimers() {
	for _, t := range p.timers {
		t.Stop()
	}
}

// resultFile is one downloadable result.
type resultFile struct {
	data    []byte
	ctype   string
	expires time.Time
}

// predictionJSON is the prediction object on the wire.
type predictionJSON struct {
	ID          string            `json:"id"`
	Model       string            `json:"model"`
	Input       json.RawMessage   `json:"input"`
	Status      string            `json:"status"`
	Output      any               `json:"output"`
	Error       *string           `json:"error"`
	Logs        string            `json:"logs"`
	CreatedAt   string            `json:"created_at"`
	StartedAt   *string           `json:"started_at"`
	CompletedAt *string           `json:"completed_at"`
	URLs        predictionURLs    `json:"urls"`
	Metrics     predictionMetrics `json:"metrics"`
}

type predictionURLs struct {
	Get    string `json:"get"`
	Cancel string `json:"cancel"`
}

type predictionMetrics struct {
	ImageCount  *int     `json:"image_count,omitempty"`
	PredictTime *float64 `json:"predict_time,omitempty"`
}

// stamp formats t as RFC 3339 in UTC with milliseconds.
func stamp(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.UTC().Format("2006-01-02T15:04:05.000Z")
	return &s
}

// view renders p for the wire; the caller holds f.mu.
func (f *Fake) view(p *prediction) predictionJSON {
	v := predictionJSON{
		ID:          p.id,
		Model:       p.model,
		Input:       p.input,
		Status:      p.status,
		Logs:        p.logs,
		CreatedAt:   *stamp(p.created),
		StartedAt:   stamp(p.started),
		CompletedAt: stamp(p.completed),
		URLs:        predictionURLs{Get: replicateAPI + p.id, Cancel: replicateAPI + p.id + "/cancel"},
	}
	if p.hasErr {
		e := p.errMsg
		v.Error = &e
	}
	if !p.completed.IsZero() && !p.started.IsZero() {
		pt := math.Round(p.completed.Sub(p.started).Seconds()*1000) / 1000
		v.Metrics.PredictTime = &pt
	}
	if p.status == statusSucceeded {
		one := 1
		v.Metrics.ImageCount = &one
		if f.opts.OutputAsString {
			v.Output = p.outputURL
		} else {
			v.Output = []string{p.outputURL}
		}
	}
	return v
}

// reqError is a refused request: its status and detail.
type reqError struct {
	status int
	detail string
}

func invalid(format string, args ...any) *reqError {
	return &reqError{status: http.StatusUnprocessableEntity, detail: fmt.Sprintf(format, args...)}
}

// readBody reads the request body, refusing with 413 one larger than
// MaxRequestBytes (at once when its Content-Length says so).
func (f *Fake) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *reqError) {
	if r.ContentLength > f.opts.MaxRequestBytes {
		return nil, &reqError{status: http.StatusRequestEntityTooLarge, detail: "request body too large"}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, f.opts.MaxRequestBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &reqError{status: http.StatusRequestEntityTooLarge, detail: "request body too large"}
		}
		return nil, &reqError{status: http.StatusBadRequest, detail: "could not read the request body: " + err.Error()}
	}
	return data, nil
}

// object decodes data as exactly one JSON object whose keys are all in
// allowed (matched exactly, unlike encoding/json's case-insensitive
// matching). where names the object in error details.
func object(data []byte, where string, allowed ...string) (map[string]json.RawMessage, *reqError) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			return nil, invalid("%s must be a JSON object", where)
		}
		return nil, &reqError{status: http.StatusBadRequest, detail: "invalid JSON in " + where + ": " + err.Error()}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &reqError{status: http.StatusBadRequest, detail: "invalid JSON in " + where + ": unexpected data after the object"}
	}
	if m == nil {
		return nil, invalid("%s must be a JSON object", where)
	}
	var unknown []string
	for k := range m {
		if !slices.Contains(allowed, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, invalid("%s: unknown field %q (allowed: %s)", where, unknown[0], strings.Join(allowed, ", "))
	}
	return m, nil
}

// field decodes m[key] into a T. ok is false when the key is absent or
// null; want describes T in the error ("a string", "an integer").
func field[T any](m map[string]json.RawMessage, where, key, want string) (v T, ok bool, rerr *reqError) {
	raw, present := m[key]
	if !present || string(raw) == "null" {
		return v, false, nil
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, false, invalid("%s.%s must be %s, got %s", where, key, want, abbreviate(string(raw), 40))
	}
	return v, true, nil
}

func abbreviate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// createRequest is a validated create body.
type createRequest struct {
	model  string // full name
	input  json.RawMessage
	prov   Provenance
	seeded bool
	format string
	image  image.Image   // decoded first reference, nil for text-to-image
	refs   []image.Image // the further references, decoded, in order
}

// parseCreate validates a create body. pathModel is the model of the model
// route ("owner/name"), empty on the generic route.
func (f *Fake) parseCreate(r *http.Request, body []byte, pathModel string) (*createRequest, *reqError) {
	allowed := []string{"input"}
	if pathModel == "" {
		allowed = []string{"model", "input"}
	}
	top, rerr := object(body, "body", allowed...)
	if rerr != nil {
		return nil, rerr
	}
	model := pathModel
	if pathModel == "" {
		m, ok, rerr := field[string](top, "body", "model", "a string")
		if rerr != nil {
			return nil, rerr
		}
		if !ok {
			return nil, invalid("model is required")
		}
		model = m
	}
	short, owned := strings.CutPrefix(model, modelOwner)
	spec, known := lookupModel(short)
	if !owned || !known {
		return nil, invalid("unknown model %q: use one of %s", model, modelList())
	}
	rawIn, ok := top["input"]
	if !ok || string(rawIn) == "null" {
		return nil, invalid("input is required")
	}
	in, rerr := object(rawIn, "input", spec.fields...)
	if rerr != nil {
		return nil, rerr
	}
	req := &createRequest{model: model, format: spec.defaultFormat}
	req.prov.Model = short

	prompt, _, rerr := field[string](in, "input", "prompt", "a string")
	if rerr != nil {
		return nil, rerr
	}
	if strings.TrimSpace(prompt) == "" {
		return nil, invalid("input.prompt is required")
	}
	req.prov.Prompt = prompt

	aspect, ok, rerr := field[string](in, "input", "aspect_ratio", "a string")
	if rerr != nil {
		return nil, rerr
	}
	if !ok {
		aspect = spec.defaultAspect
	}
	if !slices.Contains(spec.aspects, aspect) {
		return nil, invalid("input.aspect_ratio %q is not one of %s", aspect, strings.Join(spec.aspects, ", "))
	}
	req.prov.AspectRatio = aspect

	seed, ok, rerr := field[int64](in, "input", "seed", "an integer")
	if rerr != nil {
		return nil, rerr
	}
	req.prov.Seed, req.seeded = seed, ok

	format, ok, rerr := field[string](in, "input", "output_format", "a string")
	if rerr != nil {
		return nil, rerr
	}
	if !ok {
		format = spec.defaultFormat
	}
	if !slices.Contains(spec.formats, format) {
		return nil, invalid("input.output_format %q is not one of %s", format, strings.Join(spec.formats, ", "))
	}
	if format == "webp" {
		// Not the provider's answer: this fake encodes png and jpg only.
		return nil, invalid("kontexttest: this fake renders png or jpg only; send input.output_format (%s defaults to webp)", short)
	}
	req.format = format

	tolerance, hasTolerance, rerr := field[int64](in, "input", "safety_tolerance", "an integer")
	if rerr != nil {
		return nil, rerr
	}
	if hasTolerance && (tolerance < spec.safetyMin || tolerance > spec.safetyMax) {
		return nil, invalid("input.safety_tolerance must be between %d and %d, got %d", spec.safetyMin, spec.safetyMax, tolerance)
	}
	upsample, ok, rerr := field[bool](in, "input", "prompt_upsampling", "a boolean")
	if rerr != nil {
		return nil, rerr
	}
	if !ok {
		upsample = spec.upsample
	}
	req.prov.PromptUpsampling = upsample
	if !spec.numbered {
		if rerr := flux2Options(in, spec, aspect); rerr != nil {
			return nil, rerr
		}
	}

	srcs, names, rerr := references(in, spec)
	if rerr != nil {
		return nil, rerr
	}
	if len(srcs) > 0 && hasTolerance && tolerance > spec.safetyMaxInput {
		return nil, invalid("input.safety_tolerance must be at most %d with %s, got %d", spec.safetyMaxInput, names[0], tolerance)
	}
	for i, src := range srcs {
		data, rerr := f.fetchInput(r, names[i], src)
		if rerr != nil {
			return nil, rerr
		}
		img, rerr := decodeInput(names[i], data)
		if rerr != nil {
			return nil, rerr
		}
		if i == 0 {
			req.image = img
			req.prov.InputSHA256 = sha256Hex(data)
		} else {
			req.refs = append(req.refs, img)
		}
		req.prov.Inputs = append(req.prov.Inputs, sha256Hex(data))
	}

	var compact bytes.Buffer
	if err := json.Compact(&compact, rawIn); err != nil {
		return nil, invalid("input: %v", err)
	}
	req.input = compact.Bytes()
	return req, nil
}

// references returns the reference images' values in order, with the
// name of each in error details: input_image, input_image_2.. on Kontext
// (input_image_N only after input_image_N-1: stricter than documented,
// a gap is refused), input_images[i] on FLUX.2 (at most maxRefs).
func references(in map[string]json.RawMessage, spec modelSpec) (srcs, names []string, rerr *reqError) {
	if !spec.numbered {
		list, ok, rerr := field[[]string](in, "input", "input_images", "an array of strings")
		if rerr != nil || !ok {
			return nil, nil, rerr
		}
		if len(list) > spec.maxRefs {
			return nil, nil, invalid("input.input_images: at most %d images, got %d", spec.maxRefs, len(list))
		}
		for i, src := range list {
			srcs, names = append(srcs, src), append(names, "input_images["+strconv.Itoa(i)+"]")
		}
		return srcs, names, nil
	}
	gap := ""
	for i := 1; i <= spec.maxRefs; i++ {
		name := "input_image"
		if i > 1 {
			name += "_" + strconv.Itoa(i)
		}
		src, ok, rerr := field[string](in, "input", name, "a string")
		if rerr != nil {
			return nil, nil, rerr
		}
		switch {
		case !ok:
			if gap == "" {
				gap = name
			}
		case gap != "":
			return nil, nil, invalid("input.%s given without input.%s", name, gap)
		default:
			srcs, names = append(srcs, src), append(names, name)
		}
	}
	return srcs, names, nil
}

// flux2Options checks FLUX.2's own fields: resolution, width and height
// (aspect_ratio custom only, and then required), output_quality, and
// [flex]'s steps and guidance.
func flux2Options(in map[string]json.RawMessage, spec modelSpec, aspect string) *reqError {
	res, ok, rerr := field[string](in, "input", "resolution", "a string")
	if rerr != nil {
		return rerr
	}
	if ok && !slices.Contains(flux2Resolutions, res) {
		return invalid("input.resolution %q is not one of %s", res, strings.Join(flux2Resolutions, ", "))
	}
	for _, side := range []string{"width", "height"} {
		v, ok, rerr := field[int64](in, "input", side, "an integer")
		if rerr != nil {
			return rerr
		}
		if ok && (v < 256 || v > 2048) {
			return invalid("input.%s must be between 256 and 2048, got %d", side, v)
		}
		if aspect == "custom" && !ok {
			return invalid("input.%s is required with aspect_ratio custom", side)
		}
	}
	if q, ok, rerr := field[int64](in, "input", "output_quality", "an integer"); rerr != nil {
		return rerr
	} else if ok && (q < 0 || q > 100) {
		return invalid("input.output_quality must be between 0 and 100, got %d", q)
	}
	if !spec.flex {
		return nil
	}
	if n, ok, rerr := field[int64](in, "input", "steps", "an integer"); rerr != nil {
		return rerr
	} else if ok && (n < 1 || n > 50) {
		return invalid("input.steps must be between 1 and 50, got %d", n)
	}
	if g, ok, rerr := field[float64](in, "input", "guidance", "a number"); rerr != nil {
		return rerr
	} else if ok && (g < 1.5 || g > 10) {
		return invalid("input.guidance must be between 1.5 and 10, got %g", g)
	}
	return nil
}

// fetchInput returns the bytes a reference image names (name is its
// field, for error details): a data: URI, or a still valid result URL of
// this fake.
func (f *Fake) fetchInput(r *http.Request, name, src string) ([]byte, *reqError) {
	switch {
	case strings.HasPrefix(src, "data:"):
		rest := strings.TrimPrefix(src, "data:")
		mime, payload, ok := strings.Cut(rest, ";base64,")
		if !ok {
			return nil, invalid("input.%s: a data URI must be data:image/<type>;base64,<data>", name)
		}
		if !slices.Contains(inputMIMETypes, strings.ToLower(mime)) {
			return nil, invalid("input.%s: unsupported media type %q (png, jpeg, gif or webp)", name, mime)
		}
		data, err := base64.StdEncoding.DecodeString(payload)
		if err != nil {
			return nil, invalid("input.%s: invalid base64: %v", name, err)
		}
		return data, nil
	case strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "https://"):
		u, err := url.Parse(src)
		if err != nil {
			return nil, invalid("could not fetch %s: %v", name, err)
		}
		file, ok := strings.CutPrefix(u.Path, "/files/")
		if !ok || !strings.EqualFold(u.Host, r.Host) || !validSegment(file) {
			return nil, invalid("could not fetch %s: %s is not reachable from the provider", name, abbreviate(src, 200))
		}
		data, _, ok := f.file(file)
		if !ok {
			return nil, invalid("could not fetch %s: %s answered 404", name, abbreviate(src, 200))
		}
		return data, nil
	default:
		return nil, invalid("input.%s must be an http(s) URL or a data:image/...;base64, URI", name)
	}
}

// decodeInput decodes a reference image (name is its field), refusing
// anything that is not a complete png, jpeg, gif or webp.
func decodeInput(name string, data []byte) (image.Image, *reqError) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, invalid("input.%s could not be decoded as an image: %v", name, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > maxInputPixels {
		return nil, invalid("input.%s has an unsupported size %dx%d", name, cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, invalid("input.%s could not be decoded as %s: %v", name, format, err)
	}
	return img, nil
}

// create serves both create routes.
func (f *Fake) create(w http.ResponseWriter, r *http.Request, key, pathModel string, outcome Fault) {
	body, rerr := f.readBody(w, r)
	if rerr == nil {
		var req *createRequest
		if req, rerr = f.parseCreate(r, body, pathModel); rerr == nil {
			f.start(w, r, key, req, outcome)
			return
		}
	}
	f.fail(w, Create, rerr.status, rerr.detail)
}

// start creates the prediction for a valid request, or answers 429 when
// the key has no free slot.
func (f *Fake) start(w http.ResponseWriter, r *http.Request, key string, req *createRequest, outcome Fault) {
	fate := Fault{Moderated: outcome.Moderated, Aborted: outcome.Aborted, Failed: outcome.Failed, Expired: outcome.Expired,
		EndStatus: outcome.EndStatus, DataURIOutput: outcome.DataURIOutput}
	if !fate.Moderated && f.opts.Moderate(req.prov.Prompt) {
		fate.Moderated = true
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, detailBody("the fake provider is closed"))
		return
	}
	if !f.acquire(key, req.prov.Model) {
		f.mu.Unlock()
		f.log.Info("kontexttest: slot limit", "key_slots", f.opts.Slots, "model", req.prov.Model)
		f.slotLimited(w, Create)
		return
	}
	if !req.seeded {
		req.prov.Seed = f.rng.Int64N(1 << 32)
	}
	id := f.randomID()
	for f.preds[id] != nil {
		id = f.randomID()
	}
	now := time.Now()
	p := &prediction{
		id:      id,
		key:     key,
		model:   req.model,
		input:   req.input,
		base:    scheme + "://" + r.Host,
		seed:    req.prov.Seed,
		fate:    fate,
		job:     &renderJob{prov: req.prov, input: req.image, refs: req.refs, format: req.format, pixels: f.opts.Pixels},
		status:  statusStarting,
		created: now,
		done:    make(chan struct{}),
	}
	f.preds[id] = p
	f.stats.Created++
	f.countPrompt(req.prov.Prompt)
	f.sweepFiles(now)
	run := f.runTime()
	p.run = run
	p.timers = []*time.Timer{
		time.AfterFunc(min(f.latency/4, maxProcessingDelay), func() { f.startProcessing(p) }),
		time.AfterFunc(run, func() { f.finish(p) }),
	}
	wait, hold := preferWait(r.Header)
	var v predictionJSON
	if !hold {
		v = f.view(p) // before any timer can move it past "starting"
	}
	f.mu.Unlock()
	f.log.Info("kontexttest: prediction created", "id", id, "model", req.model, "seed", req.prov.Seed, "edit", req.image != nil)

	if hold {
		f.hold(r, p, wait)
		f.mu.Lock()
		v = f.view(p)
		f.mu.Unlock()
	}
	writeJSON(w, http.StatusCreated, v)
}

// startProcessing moves p from starting to processing.
func (f *Fake) startProcessing(p *prediction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || p.status != statusStarting {
		return
	}
	p.status = statusProcessing
	p.markStarted(time.Now())
}

func (p *prediction) markStarted(now time.Time) {
	if p.started.IsZero() {
		p.started = now
		p.logs += "Using seed: " + strconv.FormatInt(p.seed, 10) + "\n"
	}
}

// finish ends p per its fate, rendering its image when it succeeds.
func (f *Fake) finish(p *prediction) {
	f.mu.Lock()
	if f.closed || isFinal(p.status) {
		f.mu.Unlock()
		return
	}
	f.stats.Runs++
	f.stats.RunTime += p.run
	switch {
	case p.fate.Moderated:
		f.settle(p, statusFailed, ModerationError)
		f.mu.Unlock()
		return
	case p.fate.Aborted:
		f.settle(p, statusAborted, "")
		f.mu.Unlock()
		return
	case p.fate.EndStatus != "":
		f.settle(p, p.fate.EndStatus, p.fate.Failed)
		f.mu.Unlock()
		return
	case p.fate.Failed != "":
		f.settle(p, statusFailed, p.fate.Failed)
		f.mu.Unlock()
		return
	}
	job := p.job
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()

	data, err := job.render()

	f.mu.Lock()
	defer f.mu.Unlock()
	if isFinal(p.status) { // canceled while rendering
		return
	}
	if err != nil {
		f.settle(p, statusFailed, "internal error: "+err.Error())
		return
	}
	now := time.Now()
	expires := now.Add(f.opts.ResultTTL)
	if p.fate.Expired {
		expires = now
	}
	p.outputURL = p.base + "/files/" + f.storeFile(data, job.format, expires)
	if p.fate.DataURIOutput {
		p.outputURL = "data:application/octet-stream;base64," + base64.StdEncoding.EncodeToString(data)
	}
	p.logs += fmt.Sprintf("Generated image in %.3fs\n", now.Sub(p.created).Seconds())
	f.settle(p, statusSucceeded, "")
}

// settle makes p final with status (and error text errMsg for failed) and
// frees its slot; the caller holds f.mu.
func (f *Fake) settle(p *prediction, status, errMsg string) {
	now := time.Now()
	if status != statusCanceled {
		p.markStarted(now)
	}
	p.status = status
	p.completed = now
	if status == statusFailed || errMsg != "" {
		p.errMsg, p.hasErr = errMsg, true
	}
	p.stopTimers()
	p.timers = nil
	p.job = nil
	f.release(p.key, strings.TrimPrefix(p.model, modelOwner))
	switch status {
	case statusSucceeded:
		f.stats.Succeeded++
	case statusFailed:
		f.stats.Failed++
	case statusCanceled:
		f.stats.Canceled++
	case statusAborted:
		f.stats.Aborted++
	}
	close(p.done)
	if errMsg != "" {
		f.log.Info("kontexttest: prediction final", "id", p.id, "status", status, "error", errMsg)
	} else {
		f.log.Info("kontexttest: prediction final", "id", p.id, "status", status)
	}
}

// storeFile keeps a result and returns its file name; the caller holds f.mu.
func (f *Fake) storeFile(data []byte, format string, expires time.Time) string {
	ctype, ext := "image/png", ".png"
	if format == "jpg" {
		ctype, ext = "image/jpeg", ".jpg"
	}
	name := f.randomID() + ext
	f.files[name] = &resultFile{data: data, ctype: ctype, expires: expires}
	return name
}

// sweepFiles forgets expired results; the caller holds f.mu.
func (f *Fake) sweepFiles(now time.Time) {
	for name, file := range f.files {
		if !now.Before(file.expires) {
			delete(f.files, name)
		}
	}
}

// file returns a result that has not expired.
func (f *Fake) file(name string) (data []byte, ctype string, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	file := f.files[name]
	if file == nil {
		return nil, "", false
	}
	if !time.Now().Before(file.expires) {
		delete(f.files, name)
		return nil, "", false
	}
	return file.data, file.ctype, true
}

// preferWait parses "Prefer: wait=N" (N whole seconds, 1..60). Anything
// else, malformed or out of range, is ignored.
func preferWait(h http.Header) (time.Duration, bool) {
	for _, v := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			pref, _, _ = strings.Cut(pref, ";")
			name, val, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			n, err := strconv.Atoi(strings.TrimSpace(val))
			if err != nil || n < 1 || n > 60 {
				return 0, false
			}
			return time.Duration(n) * time.Second, true
		}
	}
	return 0, false
}

// await honours Prefer: wait, holding the request until p is final, the
// wait runs out, the client leaves or the fake closes.
func (f *Fake) await(r *http.Request, p *prediction) {
	if d, ok := preferWait(r.Header); ok {
		f.hold(r, p, d)
	}
}

// hold waits until p is final, d passes, the client leaves or the fake
// closes.
func (f *Fake) hold(r *http.Request, p *prediction, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	case <-r.Context().Done():
	case <-f.done:
	}
}

// lookup returns key's prediction id, nil when unknown or another key's.
func (f *Fake) lookup(key, id string) *prediction {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.preds[id]; p != nil && p.key == key {
		return p
	}
	return nil
}

// poll serves GET /replicate/v1/predictions/{id}.
func (f *Fake) poll(w http.ResponseWriter, r *http.Request, key, id string) {
	p := f.lookup(key, id)
	if p == nil {
		writeJSON(w, http.StatusNotFound, detailBody("Not found"))
		return
	}
	f.await(r, p)
	f.mu.Lock()
	v := f.view(p)
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

// cancel serves POST /replicate/v1/predictions/{id}/cancel.
func (f *Fake) cancel(w http.ResponseWriter, key, id string) {
	p := f.lookup(key, id)
	if p == nil {
		writeJSON(w, http.StatusNotFound, detailBody("Not found"))
		return
	}
	f.mu.Lock()
	if !isFinal(p.status) {
		f.settle(p, statusCanceled, "")
	}
	v := f.view(p)
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, v)
}

// download serves GET /files/{name}.
func (f *Fake) download(w http.ResponseWriter, name string) {
	data, ctype, ok := f.file(name)
	if !ok {
		writeJSON(w, http.StatusNotFound, detailBody("Not found"))
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}

// images serves POST /v1/images/generations: synchronous text-to-image.
func (f *Fake) images(w http.ResponseWriter, r *http.Request, key string) {
	body, rerr := f.readBody(w, r)
	var prompt, model, format string
	if rerr == nil {
		prompt, model, format, rerr = parseImages(body)
	}
	if rerr != nil {
		f.fail(w, Images, rerr.status, rerr.detail)
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}

	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		writeJSON(w, http.StatusServiceUnavailable, detailBody("the fake provider is closed"))
		return
	}
	if !f.acquire(key, model) {
		f.mu.Unlock()
		f.slotLimited(w, Images)
		return
	}
	seed := f.rng.Int64N(1 << 32)
	run := f.runTime()
	f.stats.Created++
	f.countPrompt(prompt)
	f.mu.Unlock()
	held := true
	release := func() {
		if held {
			held = false
			f.mu.Lock()
			f.release(key, model)
			f.mu.Unlock()
		}
	}
	defer release()

	t := time.NewTimer(run)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	case <-f.done:
		release()
		writeJSON(w, http.StatusServiceUnavailable, detailBody("the fake provider is closed"))
		return
	}
	if f.opts.Moderate(prompt) {
		release()
		f.failBody(w, Images, http.StatusBadRequest, map[string]any{
			"detail": ModerationError,
			"error":  map[string]any{"message": ModerationError, "type": "invalid_request_error"},
		})
		return
	}
	job := renderJob{prov: Provenance{Prompt: prompt, Seed: seed, Model: model, AspectRatio: "1:1"}, format: "png", pixels: f.opts.Pixels}
	data, err := job.render()
	if err != nil {
		release()
		f.fail(w, Images, http.StatusInternalServerError, "internal error: "+err.Error())
		return
	}
	item := map[string]string{}
	if format == "b64_json" {
		item["b64_json"] = base64.StdEncoding.EncodeToString(data)
	} else {
		now := time.Now()
		f.mu.Lock()
		f.sweepFiles(now)
		name := f.storeFile(data, "png", now.Add(f.opts.ResultTTL))
		f.mu.Unlock()
		item["url"] = scheme + "://" + r.Host + "/files/" + name
	}
	release()
	writeJSON(w, http.StatusOK, map[string]any{"created": time.Now().Unix(), "data": []map[string]string{item}})
}

// parseImages validates an Images body.
func parseImages(body []byte) (prompt, model, format string, rerr *reqError) {
	top, rerr := object(body, "body", "model", "prompt", "n", "response_format", "size")
	if rerr != nil {
		return "", "", "", rerr
	}
	model, ok, rerr := field[string](top, "body", "model", "a string")
	if rerr != nil {
		return "", "", "", rerr
	}
	if !ok {
		return "", "", "", invalid("model is required")
	}
	if !validModel(model) {
		return "", "", "", invalid("unknown model %q: use %s or %s", model, modelMax, modelPro)
	}
	prompt, _, rerr = field[string](top, "body", "prompt", "a string")
	if rerr != nil {
		return "", "", "", rerr
	}
	if strings.TrimSpace(prompt) == "" {
		return "", "", "", invalid("prompt is required")
	}
	n, ok, rerr := field[int64](top, "body", "n", "an integer")
	if rerr != nil {
		return "", "", "", rerr
	}
	if ok && n != 1 {
		return "", "", "", invalid("n must be 1, got %d", n)
	}
	format, ok, rerr = field[string](top, "body", "response_format", "a string")
	if rerr != nil {
		return "", "", "", rerr
	}
	if !ok {
		format = "url"
	}
	if format != "url" && format != "b64_json" {
		return "", "", "", invalid("response_format %q is not one of url, b64_json", format)
	}
	if _, _, rerr := field[string](top, "body", "size", "a string"); rerr != nil {
		return "", "", "", rerr
	}
	return prompt, model, format, nil
}

// countPrompt counts a created prediction of prompt; with f.mu held.
func (f *Fake) countPrompt(prompt string) {
	if f.stats.CreatedByPrompt == nil {
		f.stats.CreatedByPrompt = map[string]int{}
	}
	f.stats.CreatedByPrompt[prompt]++
}
