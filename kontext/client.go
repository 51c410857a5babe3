package kontext

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Routes a Client can create predictions on.
const (
	// RouteModels posts to /replicate/v1/models/black-forest-labs/{model}/predictions
	// (CometAPI's current docs). The default.
	RouteModels = "models"
	// RoutePredictions posts to /replicate/v1/predictions with "model" in
	// the body (CometAPI's product page).
	RoutePredictions = "predictions"
	// RouteImages sends text-to-image to the OpenAI-style
	// /v1/images/generations; edits still use RouteModels, the only kind of
	// route that takes an input image, and so do the models the Images
	// route does not serve (Model.ImagesRoute: FLUX.2).
	RouteImages = "images"
)

// Defaults for the fields of Config.
const (
	// DefaultRequestTimeout bounds one HTTP request. CometAPI notes a
	// query that once took over 45 s to answer, so the bound sits above it.
	DefaultRequestTimeout = 60 * time.Second
	// DefaultJobTimeout bounds one whole Run or Resume.
	DefaultJobTimeout = 5 * time.Minute
	// DefaultInputMaxBytes is the largest input_image data URI sent as it
	// is. Replicate advises data URIs only under about 1 MB (bigger inputs
	// risk 413); 1 MiB of data URI is about 768 KiB of image.
	DefaultInputMaxBytes = 1 << 20
	// WorkingPixels is the model's working size, about 1 megapixel: an
	// input too big to send as it is gets downscaled to at most this.
	WorkingPixels = 1024 * 1024
	// DefaultMaxResultPixels refuses results far above the model's 1 MP.
	DefaultMaxResultPixels = 4 * WorkingPixels
	// DefaultMaxDecodeBytes is the memory one input image may take once
	// decoded for re-encoding (width × height × bytes per pixel, bit depth
	// included): a 12 MP photo takes 48 MB, a 6000×6000 16-bit PNG 288 MB.
	DefaultMaxDecodeBytes = 128 << 20
)

// TypicalLatency is how long model usually takes to make a 1 MP image
// (its Latency in Models; 4 s for a name not there): by default the first
// poll comes that long after the create.
func TypicalLatency(model string) time.Duration {
	if m, ok := LookupModel(model); ok {
		return m.Latency
	}
	return 4 * time.Second
}

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// BaseURL is CometAPI's base, e.g. https://api.cometapi.com. Required.
	// Trailing slashes and a trailing /v1 (CometAPI's docs and the
	// OpenAI SDK write the base as https://api.cometapi.com/v1) are
	// removed: every route is built from the bare host.
	BaseURL string
	// APIKey is sent as a bearer token to BaseURL's host only. Required.
	APIKey string
	// Model is used when a Request names none; default ModelMax.
	Model string
	// Route is RouteModels (default), RoutePredictions or RouteImages.
	Route string
	// HTTPClient is the one client for every call to the provider; default
	// a fresh client with sane transport timeouts.
	HTTPClient *http.Client
	// Wait is sent as "Prefer: wait=N" on create (at most 60s); zero means
	// 60s, negative disables it. While a create is held the prediction id
	// is unknown: a crash then loses the prediction (still billed) and a
	// cancellation cannot cancel it. The bot disables it by default
	// (KONTEXT_WAIT=0): create, hand the id to OnCreated, then poll.
	Wait time.Duration
	// RequestTimeout bounds each HTTP request (create adds Wait); default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// JobTimeout bounds one whole Run or Resume; default
	// DefaultJobTimeout. It must be longer than RequestTimeout plus Wait.
	JobTimeout time.Duration
	// FirstPoll is the wait between the create and the first poll; default
	// TypicalLatency of the model, or PollInterval when only that is set.
	// Resume polls at once.
	FirstPoll time.Duration
	// PollInterval is the wait between later polls; default an eighth of
	// the first poll's delay, between 10ms and 500ms (500ms at the models'
	// typical latency). After BackoffAfter (default 15s) from the create,
	// each wait grows by half up to MaxPollInterval (default 5s).
	PollInterval, BackoffAfter, MaxPollInterval time.Duration
	// MaxRetries is how many times a transient failure is retried per
	// request; default 5. Negative means none. A create is retried only
	// when it certainly made nothing: a 429, a connection that failed
	// before the request was written, or a 5xx other than 502/504/524
	// whose body is not a prediction. Polls and downloads are also
	// retried on timeouts, network errors, 502, 504 and 524.
	MaxRetries int
	// RetryBase is the first backoff when the provider names no delay;
	// default 500ms, doubling, with full jitter, capped at 30s.
	RetryBase time.Duration
	// MaxImageBytes caps a downloaded result; default 50 MiB.
	MaxImageBytes int64
	// MaxResultPixels refuses a result with more pixels, read from its
	// header before decoding, and one whose decoded size (bit depth
	// included) passes 4 bytes per pixel of it; default
	// DefaultMaxResultPixels.
	MaxResultPixels int
	// InputMaxBytes is the largest input_image data URI sent byte for
	// byte; a bigger input is downscaled to InputPixels and re-encoded
	// (JPEG quality 92, or PNG when it has transparency). Default
	// DefaultInputMaxBytes. A 413 halves it for one more try.
	InputMaxBytes int
	// InputPixels is the area a re-encoded input is downscaled to; default
	// WorkingPixels, the model's working size.
	InputPixels int
	// MaxDecodeBytes is the memory budget for decoding one input image that
	// must be re-encoded; default DefaultMaxDecodeBytes.
	MaxDecodeBytes int64
	// Budget, when set, is shared with everything else that decodes
	// people's images: re-encoding an input takes its share (DecodeMemory
	// plus the scaled image) and waits while it is spent. nil: no bound.
	Budget *Budget
	// Logger receives debug lines for every call; nil discards. Prompts and
	// keys are never logged.
	Logger *slog.Logger
	// Observe, when set, is told about every HTTP attempt to the provider
	// (for metrics). It must not block.
	Observe func(Attempt)
}

// Attempt describes one HTTP request to the provider.
type Attempt struct {
	// Op is "create", "poll", "download" or "images".
	Op string
	// Status is the HTTP status, 0 when the request failed without one.
	Status int
	// Retry reports whether the client will try again.
	Retry bool
	// Duration is how long the request took.
	Duration time.Duration
}

// Client calls FLUX.1 Kontext through CometAPI. It is safe for concurrent
// use. Close waits for the background cancels it started.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
	log  *slog.Logger
	bg   sync.WaitGroup
}

// NewClient checks cfg and returns a ready client.
func NewClient(cfg Config) (*Client, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("kontext: new client: no API key")
	}
	base, err := ParseBaseURL(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("kontext: new client: %w", err)
	}
	if cfg.Model == "" {
		cfg.Model = ModelMax
	}
	if !ValidModel(cfg.Model) {
		return nil, fmt.Errorf("kontext: new client: unknown model %q", cfg.Model)
	}
	switch cfg.Route {
	case "":
		cfg.Route = RouteModels
	case RouteModels, RoutePredictions, RouteImages:
	default:
		return nil, fmt.Errorf("kontext: new client: unknown route %q", cfg.Route)
	}
	if cfg.Wait == 0 {
		cfg.Wait = 60 * time.Second
	}
	cfg.Wait = min(cfg.Wait, 60*time.Second)
	setDefault(&cfg.RequestTimeout, DefaultRequestTimeout)
	setDefault(&cfg.JobTimeout, DefaultJobTimeout)
	if cfg.FirstPoll <= 0 && cfg.PollInterval > 0 {
		cfg.FirstPoll = cfg.PollInterval
	}
	setDefault(&cfg.BackoffAfter, 15*time.Second)
	setDefault(&cfg.MaxPollInterval, 5*time.Second)
	setDefault(&cfg.RetryBase, 500*time.Millisecond)
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 5
	}
	cfg.MaxRetries = max(cfg.MaxRetries, 0)
	if cfg.MaxImageBytes <= 0 {
		cfg.MaxImageBytes = 50 << 20
	}
	if cfg.MaxResultPixels <= 0 {
		cfg.MaxResultPixels = DefaultMaxResultPixels
	}
	if cfg.InputMaxBytes <= 0 {
		cfg.InputMaxBytes = DefaultInputMaxBytes
	}
	if cfg.InputPixels <= 0 {
		cfg.InputPixels = WorkingPixels
	}
	if cfg.MaxDecodeBytes <= 0 {
		cfg.MaxDecodeBytes = DefaultMaxDecodeBytes
	}
	if held := cfg.RequestTimeout + max(cfg.Wait, 0); cfg.JobTimeout <= held {
		return nil, fmt.Errorf("kontext: new client: the job timeout (%s) must be longer than one create request may take (%s: the request timeout plus the Prefer: wait time)", cfg.JobTimeout, held)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: newTransport()}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, base: base, http: hc, log: log}, nil
}

// ParseBaseURL checks a provider base URL and returns it without trailing
// slashes and without a trailing /v1 (the form CometAPI's docs and the
// OpenAI SDK use): the Replicate-style routes live under the bare host.
func ParseBaseURL(raw string) (*url.URL, error) {
	s := strings.TrimRight(strings.TrimSpace(raw), "/")
	if strings.HasSuffix(strings.ToLower(s), "/v1") {
		s = strings.TrimRight(s[:len(s)-len("/v1")], "/")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("base URL %q is not an http(s) URL such as https://api.cometapi.com", raw)
	}
	return u, nil
}

func setDefault(d *time.Duration, v time.Duration) {
	if *d <= 0 {
		*d = v
	}
}

func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = 0 // Prefer: wait holds headers back; each request has its own deadline
	return t
}

// Model is the model used when a Request names none.
func (c *Client) Model() string { return c.cfg.Model }

// Close waits for the best-effort cancels of abandoned predictions, then
// closes idle connections.
func (c *Client) Close() {
	c.bg.Wait()
	c.http.CloseIdleConnections()
}

// Run makes one image: text-to-image when req.InputImage is nil, an edit
// otherwise. It returns once the image is downloaded and decodes. When ctx
// ends first, or the job fails in any way after the prediction was created
// (a poll that keeps failing, the job's deadline, a malformed answer, a
// result that cannot be downloaded or decoded), the prediction is
// cancelled in the background (best effort) and Run returns at once; only
// a queue shutdown (cause ErrShutdown) leaves it running, for Resume.
func (c *Client) Run(ctx context.Context, req Request) (*Result, error) {
	if strings.TrimSpace(req.Prompt) == "" {
		return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the prompt is empty"}
	}
	model := req.Model
	if model == "" {
		model = c.cfg.Model
	}
	m, ok := LookupModel(model)
	if !ok || m.Name != model {
		return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: fmt.Sprintf("unknown model %q", model)}
	}
	if err := checkRequest(m, req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.JobTimeout, errJobDeadline)
	defer cancel()
	if c.cfg.Route == RouteImages && req.InputImage == nil && m.ImagesRoute {
		return c.runImages(ctx, model, req)
	}
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, c.ctxError(ctx, "create", "")
	}
	p, err := c.create(ctx, m, req)
	if err != nil {
		return nil, err
	}
	if req.OnCreated != nil {
		req.OnCreated(p.ID)
	}
	if ctx.Err() != nil {
		// The job ended while the create was in flight: the prediction
		// exists. At shutdown it is recorded and followed by the next
		// process; otherwise nobody will receive it, so it is cancelled.
		err := c.ctxError(ctx, "create", p.ID)
		c.abandon(ctx, p.ID, err)
		return nil, err
	}
	// The first poll comes FirstPoll after the create was sent: at once
	// after a held create that ran out, on schedule when the provider
	// ignored Prefer: wait.
	first, interval := c.schedule(model)
	res, err := c.finish(ctx, p, max(first-time.Since(start), 0), interval)
	if err != nil {
		return nil, err
	}
	if req.Seed != nil {
		res.Seed = req.Seed
	}
	return res, nil
}

// Resume follows a prediction created earlier (by this process or one
// before a restart) to its end, then downloads its image. It polls at once,
// then on Run's schedule.
func (c *Client) Resume(ctx context.Context, predictionID string) (*Result, error) {
	if predictionID == "" {
		return nil, &APIError{Op: "poll", Kind: ErrInvalidRequest, Message: "no prediction id"}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.JobTimeout, errJobDeadline)
	defer cancel()
	_, interval := c.schedule(c.cfg.Model)
	return c.finish(ctx, &prediction{ID: predictionID, Status: "starting"}, 0, interval)
}

// schedule is the polling schedule for model: the first poll's delay
// (FirstPoll, default the model's typical latency) and the interval after
// it (PollInterval, default an eighth of that delay, 10ms to 500ms).
func (c *Client) schedule(model string) (first, interval time.Duration) {
	first = c.cfg.FirstPoll
	if first <= 0 {
		first = TypicalLatency(model)
	}
	interval = c.cfg.PollInterval
	if interval <= 0 {
		interval = min(max(first/8, 10*time.Millisecond), 500*time.Millisecond)
	}
	return first, interval
}

var errJobDeadline = errors.New("kontext: the job's overall deadline passed")

// checkRequest refuses, before anything is sent, what model m would refuse
// as invalid: too many references, references without an input image, an
// aspect ratio or output format it does not take, prompt upsampling it
// does not have. (A safety tolerance out of range is left to the provider,
// whose message names the field.)
func checkRequest(m Model, req Request) error {
	refuse := func(format string, args ...any) error {
		return &APIError{Op: "create", Kind: ErrInvalidRequest, Message: fmt.Sprintf(format, args...)}
	}
	if req.InputImage == nil && len(req.References) > 0 {
		return refuse("further references need an image to edit first")
	}
	if n := 1 + len(req.References); req.InputImage != nil && n > m.MaxRefs {
		return refuse("%s takes at most %d images, got %d", m.Name, m.MaxRefs, n)
	}
	for i, r := range req.References {
		if len(r) == 0 {
			return refuse("reference %d is empty", i+2)
		}
	}
	if req.AspectRatio != "" && !m.ValidAspect(req.AspectRatio) {
		return refuse("aspect ratio %q is not one of %s", req.AspectRatio, strings.Join(m.Aspects, ", "))
	}
	if req.OutputFormat != "" && !slices.Contains(m.OutputFormats, req.OutputFormat) {
		return refuse("output format %q is not one of %s", req.OutputFormat, strings.Join(m.OutputFormats, ", "))
	}
	if req.PromptUpsampling && !m.PromptUpsampling {
		return refuse("%s has no prompt upsampling", m.Name)
	}
	return nil
}

// images returns the request's references in order: InputImage, then
// References; nil for text-to-image.
func (req Request) images() [][]byte {
	if req.InputImage == nil {
		return nil
	}
	return append([][]byte{req.InputImage}, req.References...)
}

// create sends the create request and returns the prediction it made.
// Each reference image goes byte for byte when its data URI is at most
// InputMaxBytes, downscaled and re-encoded otherwise; a 413 (nothing was
// created) makes every one of them half as big and sends it once more.
func (c *Client) create(ctx context.Context, m Model, req Request) (*prediction, error) {
	imgs := req.images()
	ins := make([]*encodedInput, len(imgs))
	for i, img := range imgs {
		in, err := c.input(ctx, img, c.cfg.InputMaxBytes)
		if err != nil {
			return nil, refError(err, i)
		}
		ins[i] = in
	}
	if err := req.beforeCreate(ctx); err != nil {
		return nil, err
	}
	for shrunk := false; ; shrunk = true {
		body, err := c.createBody(m, req, ins)
		if err != nil {
			return nil, err
		}
		raw, err := c.call(ctx, "create", http.MethodPost, c.createURL(m), body, "")
		var ae *APIError
		if errors.As(err, &ae) && ae.StatusCode == http.StatusRequestEntityTooLarge {
			if !shrunk && len(ins) > 0 {
				c.log.Info("kontext: the provider refused the request as too large; sending the input images smaller, once", "body_bytes", body.size, "images", len(ins))
				for i, img := range imgs {
					if ins[i], err = c.shrinkInput(ctx, img, ins[i].uriLen()/2); err != nil {
						return nil, refError(err, i)
					}
				}
				continue
			}
			if len(ins) > 1 {
				ae.Message = "the input images are too large for the provider, even made smaller"
			} else if len(ins) == 1 {
				ae.Message = "the input image is too large for the provider, even made smaller"
			}
			return nil, err
		}
		if err != nil {
			return nil, err
		}
		var p prediction
		if err := decodePrediction(raw, &p); err != nil || p.ID == "" {
			if err == nil {
				err = errors.New("no id")
			}
			c.log.Warn("kontext: the provider accepted a create but its answer is not a prediction: a prediction may exist that nobody will receive; it is not re-sent", "err", err)
			return nil, &APIError{Op: "create", Kind: ErrProviderFailure, Message: "the answer is not a prediction", Unsure: true, Err: err}
		}
		return &p, nil
	}
}

// finish follows p to its end and fetches its output. When that fails for
// any reason but a shutdown, and p may still run or has a result nobody
// will receive, p is cancelled in the background.
func (c *Client) finish(ctx context.Context, p *prediction, first, interval time.Duration) (*Result, error) {
	res, err := c.follow(ctx, p, first, interval)
	if err != nil && (!p.final() || p.Status == "succeeded") {
		c.abandon(ctx, p.ID, err)
	}
	return res, err
}

// follow polls p until it is final (the first poll after first, then on
// the schedule of nextPoll), then fetches and checks its output.
func (c *Client) follow(ctx context.Context, p *prediction, first, interval time.Duration) (*Result, error) {
	began, delay := time.Now(), first
	for !p.final() {
		if err := sleep(ctx, delay); err != nil {
			return nil, c.ctxError(ctx, "poll", p.ID)
		}
		raw, err := c.call(ctx, "poll", http.MethodGet, c.endpoint("replicate/v1/predictions/"+url.PathEscape(p.ID)), nil, p.ID)
		if err != nil {
			return nil, err
		}
		var next prediction
		if err := decodePrediction(raw, &next); err != nil {
			return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: "the answer is not a prediction", Err: err}
		}
		if next.ID != "" && next.ID != p.ID {
			return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: "the answer is for prediction " + next.ID}
		}
		next.ID = p.ID
		*p = next
		delay = c.nextPoll(delay, time.Since(began), interval)
	}
	// The prediction is final: it no longer occupies one of the provider's
	// active tasks, so a queue slot can go to the next job while this one
	// downloads.
	releaseSlot(ctx)
	switch {
	case p.Status == "succeeded":
	case p.Status == "failed" && isModeration(p.errorText()):
		return nil, &APIError{Op: "poll", Kind: ErrContentRefused, PredictionID: p.ID, Message: p.errorText()}
	case p.Status == "failed":
		return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: "the prediction failed: " + p.errorText()}
	case isModeration(p.Status): // Black Forest Labs' "Content Moderated", "Request Moderated"
		return nil, &APIError{Op: "poll", Kind: ErrContentRefused, PredictionID: p.ID, Message: p.Status}
	default: // canceled, aborted, and any status this client does not know
		return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: "the prediction ended " + strconv.Quote(p.Status)}
	}
	out, err := p.outputURL()
	if err != nil {
		return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: err.Error()}
	}
	res, err := c.fetchOutput(ctx, out, p.ID)
	if err != nil {
		return nil, err
	}
	res.PredictionID = p.ID
	res.Model = strings.TrimPrefix(p.Model, replicateOwner)
	res.Seed = p.seed()
	return res, nil
}

// nextPoll is the wait before the next poll: interval until BackoffAfter
// has passed since following began, then growing by half each poll up to
// MaxPollInterval.
func (c *Client) nextPoll(prev, elapsed, interval time.Duration) time.Duration {
	if elapsed < c.cfg.BackoffAfter {
		return interval
	}
	return min(max(prev, interval)*3/2, max(c.cfg.MaxPollInterval, interval))
}

// abandon asks the provider to cancel a prediction nobody will receive,
// without making the caller wait (Close waits for it). A prediction left
// because the queue is shutting down (cause ErrShutdown) is not cancelled:
// the next process follows it to the end with Resume. CometAPI documents
// only create and query, so a 404 or 405 is expected and logged at debug.
func (c *Client) abandon(ctx context.Context, id string, why error) {
	if id == "" || errors.Is(context.Cause(ctx), ErrShutdown) {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u := c.endpoint("replicate/v1/predictions/" + url.PathEscape(id) + "/cancel")
		r := c.once(ctx, http.MethodPost, u, nil, 0, "")
		switch {
		case r.err == nil && r.status >= 200 && r.status < 300:
			c.log.Info("kontext: cancelled a prediction nobody will receive", "prediction", id, "reason", why)
		case r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed:
			c.log.Debug("kontext: the provider has no cancel for this prediction", "prediction", id, "status", r.status, "reason", why)
		default:
			c.log.Warn("kontext: could not cancel a prediction nobody will receive", "prediction", id, "status", r.status, "err", r.err, "reason", why)
		}
	}()
}

const replicateOwner = "black-forest-labs/"

func (c *Client) createURL(m Model) string {
	if c.cfg.Route == RoutePredictions {
		return c.endpoint("replicate/v1/predictions")
	}
	return c.endpoint("replicate/v1/models/" + m.ID + "/predictions")
}

func (c *Client) endpoint(path string) string {
	return c.base.String() + "/" + path
}

// input is the provider's input schema: Replicate's for flux-kontext-* and
// flux-2-* (see Models for the sources). A model is sent only the fields
// it takes: the reference fields of its RefStyle, and the rest left out
// when unset.
type input struct {
	Prompt string `json:"prompt"`
	// InputImage.. InputImage4: FLUX.1 Kontext (RefsNumbered).
	InputImage  string `json:"input_image,omitempty"`
	InputImage2 string `json:"input_image_2,omitempty"`
	InputImage3 string `json:"input_image_3,omitempty"`
	InputImage4 string `json:"input_image_4,omitempty"`
	// InputImages: FLUX.2 (RefsArray).
	InputImages      []string `json:"input_images,omitempty"`
	AspectRatio      string   `json:"aspect_ratio,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	OutputFormat     string   `json:"output_format,omitempty"`
	SafetyTolerance  *int     `json:"safety_tolerance,omitempty"`
	PromptUpsampling *bool    `json:"prompt_upsampling,omitempty"`
}

// maxNumbered is how many numbered input_image fields exist in input.
const maxNumbered = 4

// inputFields returns the input object for m and req, with refs as the
// reference images' values, in order.
func inputFields(m Model, req Request, refs []string) input {
	in := input{Prompt: req.Prompt, AspectRatio: req.AspectRatio, Seed: req.Seed, OutputFormat: req.OutputFormat,
		SafetyTolerance: req.SafetyTolerance}
	if req.PromptUpsampling != m.UpsamplingDefault {
		up := req.PromptUpsampling // sent only when it differs from the provider's default
		in.PromptUpsampling = &up
	}
	// Each model is asked for what the bot means by an unset field: a PNG
	// (FLUX.2's own default is webp) in the input's aspect ratio for an
	// edit (FLUX.2's is 1:1).
	if in.OutputFormat == "" && m.DefaultFormat != "png" {
		in.OutputFormat = "png"
	}
	if in.AspectRatio == "" && len(refs) > 0 && m.DefaultAspect != AspectMatchInput {
		in.AspectRatio = AspectMatchInput
	}
	switch m.Refs {
	case RefsArray:
		if len(refs) > 0 {
			in.InputImages = refs
		}
	default:
		numbered := []*string{&in.InputImage, &in.InputImage2, &in.InputImage3, &in.InputImage4}
		for i, r := range refs {
			*numbered[i] = r
		}
	}
	return in
}

// createBody is the create request's JSON; ins are the reference images,
// none for text-to-image. The body is json.Marshal's, byte for byte, but
// no data URI is ever built: each image's base64 is encoded as the body
// is sent, a few KiB at a time, from the image's bytes.
func (c *Client) createBody(m Model, req Request, ins []*encodedInput) (*body, error) {
	if m.Refs == RefsNumbered && len(ins) > maxNumbered {
		return nil, fmt.Errorf("kontext: create body: %d images for %d input_image fields", len(ins), maxNumbered)
	}
	// Each image is first a placeholder string no prompt can collide
	// with by chance, then replaced by its data URI as the body streams.
	nonce := strconv.FormatUint(rand.Uint64(), 36)
	marks := make([]string, len(ins))
	for i := range ins {
		marks[i] = "@kontext-input-" + nonce + "-" + strconv.Itoa(i)
	}
	v := struct {
		Model string `json:"model,omitempty"`
		Input input  `json:"input"`
	}{Input: inputFields(m, req, marks)}
	if c.cfg.Route == RoutePredictions {
		v.Model = m.ID
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("kontext: create body: %w", err)
	}
	if len(ins) == 0 {
		return bytesBody(raw), nil
	}
	// Quotes inside strings are escaped, so each quoted mark is found
	// exactly once, as the value it stands for.
	var parts []func() io.Reader
	size, rest := int64(0), raw
	for i, in := range ins {
		q := []byte(`"` + marks[i] + `"`)
		if bytes.Count(raw, q) != 1 {
			return nil, fmt.Errorf("kontext: create body: image %d is not once in the JSON", i+1)
		}
		at := bytes.Index(rest, q)
		if at < 0 {
			return nil, fmt.Errorf("kontext: create body: image %d is out of order in the JSON", i+1)
		}
		head := string(rest[:at+1]) + in.uriHeader()
		data := in.data
		size += int64(len(head)) + int64(base64.StdEncoding.EncodedLen(len(data)))
		parts = append(parts, func() io.Reader { return strings.NewReader(head) }, func() io.Reader { return &base64Reader{src: data} })
		rest = rest[at+len(q)-1:] // from the closing quote
	}
	tail := string(rest)
	size += int64(len(tail))
	parts = append(parts, func() io.Reader { return strings.NewReader(tail) })
	return &body{
		size: size,
		open: func() io.Reader {
			rs := make([]io.Reader, len(parts))
			for i, p := range parts {
				rs[i] = p()
			}
			return io.MultiReader(rs...)
		},
	}, nil
}

// body is a request body that can be sent again: open returns a new
// reader of its size bytes each time.
type body struct {
	size int64
	open func() io.Reader
}

func bytesBody(b []byte) *body {
	return &body{size: int64(len(b)), open: func() io.Reader { return bytes.NewReader(b) }}
}

// base64Reader reads src encoded in standard base64, with padding, 3 KiB
// of src at a time.
type base64Reader struct {
	src, out []byte
	buf      [4096]byte
}

func (r *base64Reader) Read(p []byte) (int, error) {
	if len(r.out) == 0 {
		if len(r.src) == 0 {
			return 0, io.EOF
		}
		n := min(len(r.src), 3072) // a multiple of 3: padding only at the very end
		base64.StdEncoding.Encode(r.buf[:], r.src[:n])
		r.out, r.src = r.buf[:base64.StdEncoding.EncodedLen(n)], r.src[n:]
	}
	k := copy(p, r.out)
	r.out = r.out[k:]
	return k, nil
}

// prediction is the Replicate-style prediction object.
type prediction struct {
	ID     string          `json:"id"`
	Model  string          `json:"model"`
	Status string          `json:"status"`
	Output json.RawMessage `json:"output"`
	Error  json.RawMessage `json:"error"`
	Logs   string          `json:"logs"`
}

func decodePrediction(raw []byte, p *prediction) error {
	if err := json.Unmarshal(raw, p); err != nil {
		return err
	}
	if p.Status == "" {
		return errors.New("no status")
	}
	return nil
}

// final reports whether the status is final: everything but starting and
// processing, including values this client has never seen.
func (p *prediction) final() bool {
	return p.Status != "starting" && p.Status != "processing"
}

// outputURL accepts output as a string (Replicate) or a list of strings
// (CometAPI's docs) and returns the first: an http(s) URL, or a data: URI
// (Replicate's sync mode has answered data:application/octet-stream;base64,...).
func (p *prediction) outputURL() (string, error) {
	var one string
	if err := json.Unmarshal(p.Output, &one); err == nil && one != "" {
		return one, nil
	}
	var many []string
	if err := json.Unmarshal(p.Output, &many); err == nil && len(many) > 0 && many[0] != "" {
		return many[0], nil
	}
	return "", fmt.Errorf("the prediction succeeded without an output URL (output: %.100s)", p.Output)
}

func (p *prediction) errorText() string {
	var s string
	if json.Unmarshal(p.Error, &s) == nil && s != "" {
		return s
	}
	if len(p.Error) > 0 && string(p.Error) != "null" {
		return string(p.Error)
	}
	return "no reason given"
}

var seedLog = regexp.MustCompile(`(?i)seed\D{0,3}?(\d{1,19})`)

// seed reads the seed from the logs ("Using seed: 1234"), when present.
func (p *prediction) seed() *int64 {
	m := seedLog.FindStringSubmatch(p.Logs)
	if m == nil {
		return nil
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return nil
	}
	return &n
}

// isModeration reports whether a provider's error text or status says the
// prompt or image was refused by moderation: "flagged as sensitive",
// Black Forest Labs' "Content Moderated" / "Request Moderated", an NSFW or
// safety-filter refusal. (Not any mention of "safety": a 422 about
// safety_tolerance is an invalid request.)
func isModeration(msg string) bool {
	m := strings.ToLower(msg)
	for _, w := range []string{"flagged as sensitive", "moderated", "moderation", "nsfw", "safety filter", "safety system", "content policy", "content_policy"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

// runImages makes a text-to-image call on the OpenAI-style route. CometAPI
// documents model, prompt, n, size and response_format there, and nothing
// for a seed or an aspect ratio: rather than drop them silently, it refuses
// a request that asks for either.
func (c *Client) runImages(ctx context.Context, model string, req Request) (*Result, error) {
	var dropped []string
	if req.Seed != nil {
		dropped = append(dropped, "a seed")
	}
	if req.AspectRatio != "" && req.AspectRatio != AspectMatchInput && req.AspectRatio != "1:1" {
		dropped = append(dropped, "an aspect ratio")
	}
	if len(dropped) > 0 {
		return nil, &APIError{Op: "images", Kind: ErrInvalidRequest,
			Message: "the images route (KONTEXT_ROUTE=images) cannot take " + strings.Join(dropped, " or ") +
				"; the models and predictions routes can (KONTEXT_ROUTE=models, the default)"}
	}
	body, err := json.Marshal(map[string]any{"model": model, "prompt": req.Prompt, "n": 1})
	if err != nil {
		return nil, fmt.Errorf("kontext: images: %w", err)
	}
	if err := req.beforeCreate(ctx); err != nil {
		return nil, err
	}
	raw, err := c.call(ctx, "images", http.MethodPost, c.endpoint("v1/images/generations"), bytesBody(body), "")
	if err != nil {
		return nil, err
	}
	var answer struct {
		Data []struct {
			URL     string `json:"url"`
			B64JSON string `json:"b64_json"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil || len(answer.Data) == 0 {
		return nil, &APIError{Op: "images", Kind: ErrProviderFailure, Message: "the answer carries no image", Err: err}
	}
	var res *Result
	if d := answer.Data[0]; d.B64JSON != "" {
		data, err := base64.StdEncoding.DecodeString(d.B64JSON)
		if err != nil {
			return nil, &APIError{Op: "images", Kind: ErrProviderFailure, Message: "b64_json is not base64", Err: err}
		}
		if res, err = c.verify(data); err != nil {
			return nil, &APIError{Op: "images", Kind: ErrProviderFailure, Message: "the image is not a usable result", Err: err}
		}
	} else if res, err = c.fetchOutput(ctx, d.URL, ""); err != nil {
		return nil, err
	}
	res.Model = model
	return res, nil
}

// fetchOutput returns the result an output names: a data: URI decoded in
// place (bounded by MaxImageBytes), or an http(s) URL downloaded at once.
func (c *Client) fetchOutput(ctx context.Context, out, id string) (*Result, error) {
	if !strings.HasPrefix(strings.ToLower(out), "data:") {
		return c.download(ctx, out, id)
	}
	data, err := decodeDataURI(out, c.cfg.MaxImageBytes)
	if err != nil {
		return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: "the output data URI is unusable", Err: err}
	}
	res, err := c.verify(data)
	if err != nil {
		return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: "the result is not a usable image", Err: err}
	}
	return res, nil
}

// download fetches a result at once (provider URLs expire) and verifies it
// decodes. The API key is never sent: result hosts are not CometAPI.
func (c *Client) download(ctx context.Context, rawURL, id string) (*Result, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: "the output is neither an http(s) URL nor a data: URI"}
	}
	var data []byte
	for attempt := 1; ; attempt++ {
		start := time.Now()
		r := c.fetch(ctx, u.String())
		ok := r.err == nil && r.status == http.StatusOK
		var d decision
		if !ok && ctx.Err() == nil {
			d = c.decide(false, r, attempt)
		}
		c.observe(Attempt{Op: "download", Status: r.status, Retry: d.retry, Duration: time.Since(start)})
		switch {
		case ok:
			data = r.body
		case ctx.Err() != nil:
			return nil, c.ctxError(ctx, "download", id)
		case r.status == http.StatusNotFound || r.status == http.StatusGone || r.status == http.StatusForbidden:
			return nil, &APIError{Op: "download", Kind: ErrProviderFailure, StatusCode: r.status, PredictionID: id, Message: "the result URL has expired", Attempts: attempt}
		case errors.Is(r.err, errTooLarge):
			return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: fmt.Sprintf("the result is larger than %d bytes", c.cfg.MaxImageBytes), Attempts: attempt}
		case d.retry:
			if err := sleep(ctx, d.wait); err != nil {
				return nil, c.ctxError(ctx, "download", id)
			}
			continue
		default:
			return nil, &APIError{Op: "download", Kind: failureKind(r.status, r.err), StatusCode: r.status, PredictionID: id, Attempts: attempt, Err: r.err}
		}
		break
	}
	res, err := c.verify(data)
	if err != nil {
		return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: "the result is not a usable image", Err: err}
	}
	return res, nil
}

var errTooLarge = errors.New("body too large")

func (c *Client) observe(a Attempt) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(a)
	}
}

// reply is the outcome of one HTTP request. wrote reports that the whole
// request, body included, was written to the connection.
type reply struct {
	status int
	hdr    http.Header
	body   []byte
	err    error
	wrote  bool
}

func (c *Client) fetch(ctx context.Context, u string) reply {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return reply{err: err}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body, c.cfg.MaxImageBytes)
	return reply{status: resp.StatusCode, hdr: resp.Header, body: body, err: err, wrote: true}
}

const maxJSONBytes = 64 << 20 // b64_json answers carry a whole image

// call sends one API request with retries (see decide) and returns the
// body of its 2xx answer; any other outcome is an *APIError, or the
// context's error.
func (c *Client) call(ctx context.Context, op, method, u string, body *body, id string) ([]byte, error) {
	create := op == "create" || op == "images"
	timeout, prefer := c.cfg.RequestTimeout, ""
	if op == "create" && c.cfg.Wait > 0 {
		timeout += c.cfg.Wait
		prefer = "wait=" + strconv.Itoa(max(1, int((c.cfg.Wait+time.Second-1)/time.Second)))
	}
	// A create once sent is never cut short by the caller: cutting it
	// would leave a prediction the provider may have made and nobody could
	// cancel. It runs to its answer or its own timeout; the caller's end
	// is seen before the next attempt, and Run cancels what it created.
	reqCtx := ctx
	if create {
		reqCtx = context.WithoutCancel(ctx)
	}
	for attempt := 1; ; attempt++ {
		if create && attempt > 1 && ctx.Err() != nil {
			return nil, c.ctxError(ctx, op, id)
		}
		start := time.Now()
		r := c.once(reqCtx, method, u, body, timeout, prefer)
		ok := r.err == nil && r.status >= 200 && r.status < 300
		var d decision
		if !ok && ctx.Err() == nil {
			d = c.decide(create, r, attempt)
		}
		c.log.Debug("kontext: call", "op", op, "prediction", id, "attempt", attempt, "status", r.status, "err", r.err, "retry", d.retry)
		c.observe(Attempt{Op: op, Status: r.status, Retry: d.retry, Duration: time.Since(start)})
		switch {
		case ok:
			return r.body, nil
		case ctx.Err() != nil:
			err := c.ctxError(ctx, op, id)
			var ae *APIError
			if create && r.wrote {
				c.log.Warn("kontext: the job ended while a create was in flight: the provider may have made a prediction nobody will receive; it is not re-sent", "op", op, "cause", context.Cause(ctx))
				if errors.As(err, &ae) {
					ae.Unsure = true
				}
			}
			return nil, err
		case d.unsure:
			c.log.Warn("kontext: the answer to a create was lost after the request was sent: the provider may have made a prediction; it is not re-sent", "op", op, "status", r.status, "err", r.err, "attempt", attempt)
			e := c.statusError(op, id, r, attempt)
			e.Kind, e.Unsure = ErrTimeout, true
			return nil, e
		case !d.retry:
			return nil, c.statusError(op, id, r, attempt)
		}
		if create && r.status == http.StatusTooManyRequests {
			// The pool is full at the provider: the scheduler holds its
			// other jobs back meanwhile.
			slotLimited(ctx, d.wait)
		}
		if err := sleep(ctx, d.wait); err != nil {
			return nil, c.ctxError(ctx, op, id)
		}
	}
}

// once makes a single HTTP request to the provider, with the API key, and
// reads the whole answer. prefer, when set, is sent as the Prefer header.
// The body is read afresh for each request (GetBody too, for the
// transport's own resends of a request it never wrote).
func (c *Client) once(ctx context.Context, method, u string, body *body, timeout time.Duration, prefer string) reply {
	if timeout <= 0 {
		timeout = c.cfg.RequestTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wrote atomic.Bool
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}})
	var rd io.Reader
	if body != nil {
		rd = body.open()
	}
	req, err := http.NewRequestWithContext(rctx, method, u, rd)
	if err != nil {
		return reply{err: err}
	}
	if body != nil {
		req.ContentLength = body.size
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(body.open()), nil }
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if prefer != "" {
		req.Header.Set("Prefer", prefer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{err: err, wrote: wrote.Load()}
	}
	defer resp.Body.Close()
	respBody, err := readLimited(resp.Body, maxJSONBytes)
	return reply{status: resp.StatusCode, hdr: resp.Header, body: respBody, err: err, wrote: true}
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

// decision is what to do after a failed attempt: retry after wait, or
// stop; unsure marks a create that may have made a prediction.
type decision struct {
	retry, unsure bool
	wait          time.Duration
}

// decide classifies a failed attempt. A create (create true: the models,
// predictions or images route) is retried only when it certainly made
// nothing: a 429, a connection that failed before the whole request was
// written, or a 5xx other than 502/504/524 whose body is not a prediction.
// A create whose request was written and whose answer was lost (timeout,
// reset, unreadable body) or came as 502/504/524 is unsure and never
// re-sent. Polls and downloads also retry timeouts, network errors and
// 500/502/503/504/520-524. An error code saying the request itself is wrong
// (invalid_request, ...) is never retried, whatever the status.
func (c *Client) decide(create bool, r reply, attempt int) decision {
	env := parseEnvelope(r.body)
	switch {
	case r.status == http.StatusTooManyRequests:
		if d, ok := retryAfter(r.hdr, r.body); ok {
			return c.again(attempt, d)
		}
		return c.again(attempt, c.backoff(attempt))
	case create && r.status >= 200 && r.status < 300: // accepted, but the answer could not be read
		return decision{unsure: true}
	case r.status == 0 && r.err != nil:
		if create {
			if r.wrote {
				return decision{unsure: true}
			}
			return c.again(attempt, c.backoff(attempt))
		}
		if isNetError(r.err) {
			return c.again(attempt, c.backoff(attempt))
		}
		return decision{}
	case env.invalid():
		return decision{}
	case create && (r.status == http.StatusBadGateway || r.status == http.StatusGatewayTimeout || r.status == 524):
		return decision{unsure: true}
	case create && r.status >= 500:
		if isPrediction(r.body) {
			return decision{unsure: true}
		}
		if r.status == http.StatusNotImplemented || r.status == http.StatusHTTPVersionNotSupported {
			return decision{}
		}
	case r.status >= 500 && !transient(r.status):
		return decision{}
	case r.status < 500:
		return decision{}
	}
	if d, ok := retryAfter(r.hdr, r.body); ok {
		return c.again(attempt, d)
	}
	return c.again(attempt, c.backoff(attempt))
}

// again retries after wait unless the attempts are spent.
func (c *Client) again(attempt int, wait time.Duration) decision {
	if attempt > c.cfg.MaxRetries {
		return decision{}
	}
	return decision{retry: true, wait: wait}
}

// transient lists the 5xx a poll or a download retries.
func transient(status int) bool {
	switch status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable,
		http.StatusGatewayTimeout, 520, 521, 522, 523, 524:
		return true
	}
	return false
}

// isPrediction reports whether an error answer nevertheless carries a
// prediction: then something was created.
func isPrediction(body []byte) bool {
	var p prediction
	return decodePrediction(body, &p) == nil && p.ID != ""
}

func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, context.DeadlineExceeded) // a per-request timeout, the job still running
}

// backoff is exponential with full jitter: uniformly in [d/2, d] where d
// doubles from RetryBase, capped at 30s.
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.RetryBase << min(attempt-1, 16)
	d = min(d, 30*time.Second)
	return d/2 + rand.N(d/2+1)
}

const maxRetryAfter = 2 * time.Minute

// retryAfter reads the provider's requested delay: the JSON body's
// retry_after (seconds) first, then the Retry-After header (seconds or an
// HTTP date).
func retryAfter(hdr http.Header, body []byte) (time.Duration, bool) {
	var b struct {
		RetryAfter *float64 `json:"retry_after"`
	}
	if json.Unmarshal(body, &b) == nil && b.RetryAfter != nil && *b.RetryAfter >= 0 {
		return min(time.Duration(*b.RetryAfter*float64(time.Second)), maxRetryAfter), true
	}
	v := hdr.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return min(time.Duration(s)*time.Second, maxRetryAfter), true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(time.Until(t), 0), maxRetryAfter), true
	}
	return 0, false
}

// statusError turns a final failed attempt into an *APIError of the right kind.
func (c *Client) statusError(op, id string, r reply, attempts int) *APIError {
	env := parseEnvelope(r.body)
	e := &APIError{Op: op, StatusCode: r.status, PredictionID: id, Attempts: attempts, Err: r.err,
		Message: env.message, Code: env.code, Type: env.typ, Param: env.param}
	status := r.status
	switch {
	case status == http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
	case status == http.StatusForbidden:
		e.Kind = ErrForbidden
	case status == http.StatusPaymentRequired:
		e.Kind = ErrOutOfCredits
	case status == http.StatusRequestEntityTooLarge:
		e.Kind, e.Message = ErrInvalidRequest, "the request is too large for the provider"
	case (status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || env.invalid()) &&
		(env.moderation() || isModeration(e.Message)):
		e.Kind = ErrContentRefused
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity || env.invalid():
		e.Kind = ErrInvalidRequest
	case status == http.StatusNotFound && op == "poll":
		e.Kind, e.Message = ErrProviderFailure, "the provider no longer knows this prediction"
	default:
		e.Kind = failureKind(status, r.err)
	}
	return e
}

func failureKind(status int, err error) error {
	switch {
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status == http.StatusGatewayTimeout, status == 524, errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	return ErrProviderFailure
}

// envelope is a provider error body: CometAPI's (OpenAI-style)
// {"error":{"message","type","param","code"}}, Replicate's
// {"detail","title","status"}, or a bare {"error": "..."} / {"message": "..."}.
type envelope struct {
	message, code, typ, param string
}

func parseEnvelope(body []byte) envelope {
	var b struct {
		Detail  json.RawMessage `json:"detail"`
		Title   string          `json:"title"`
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	var env envelope
	if len(body) == 0 || json.Unmarshal(body, &b) != nil {
		return env
	}
	var o struct {
		Message string          `json:"message"`
		Type    string          `json:"type"`
		Param   json.RawMessage `json:"param"`
		Code    json.RawMessage `json:"code"`
	}
	if json.Unmarshal(b.Error, &o) == nil {
		env.message, env.typ = o.Message, o.Type
		env.code, env.param = scalar(o.Code), scalar(o.Param)
	}
	var s string
	switch {
	case env.message != "":
	case json.Unmarshal(b.Detail, &s) == nil && s != "":
		env.message = s
	case json.Unmarshal(b.Error, &s) == nil && s != "":
		env.message = s
	case b.Message != "":
		env.message = b.Message
	case len(b.Detail) > 0 && string(b.Detail) != "null":
		env.message = string(b.Detail) // FastAPI-style validation details
	default:
		env.message = b.Title
	}
	env.message = truncate(env.message, 300)
	return env
}

// scalar returns a JSON string's value or a number's text; "" otherwise.
func scalar(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// invalidCodes are error codes and types that say the request itself is
// wrong: sending it again cannot help, whatever the HTTP status.
var invalidCodes = []string{"invalid_request", "invalid_request_error", "invalid_parameter", "invalid_parameters",
	"invalid_value", "invalid_argument", "invalid_input", "invalid_image", "invalid_prompt", "bad_request",
	"validation_error", "unprocessable_entity", "content_policy_violation", "moderation_blocked", "content_moderated"}

func (e envelope) invalid() bool {
	for _, s := range []string{e.code, e.typ} {
		if s != "" && slices.Contains(invalidCodes, strings.ToLower(s)) {
			return true
		}
	}
	return false
}

func (e envelope) moderation() bool {
	for _, s := range []string{e.code, e.typ} {
		switch strings.ToLower(s) {
		case "content_policy_violation", "moderation_blocked", "content_moderated":
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ctxError reports why ctx ended: the job's own deadline or the caller's
// deadline is ErrTimeout; a cancellation is returned as context.Canceled.
func (c *Client) ctxError(ctx context.Context, op, id string) error {
	cause := context.Cause(ctx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &APIError{Op: op, Kind: ErrTimeout, PredictionID: id, Err: cause}
	}
	if id != "" {
		return fmt.Errorf("kontext: %s %s: %w", op, id, ctx.Err())
	}
	return fmt.Errorf("kontext: %s: %w", op, ctx.Err())
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// refError names the reference an input error is about when it is not
// the first one (the image being edited): "image 2 cannot be read...".
func refError(err error, i int) error {
	var ae *APIError
	if i > 0 && errors.As(err, &ae) {
		ae.Message = strings.Replace(ae.Message, "the input image", "image "+strconv.Itoa(i+1), 1)
	}
	return err
}
