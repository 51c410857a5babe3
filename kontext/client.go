package kontext

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	// Decoders for every format the provider may return or a user may send.
	_ "image/gif"
	_ "image/jpeg"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
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
	// route that takes an input image.
	RouteImages = "images"
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// BaseURL is CometAPI's base, e.g. https://api.cometapi.com. Required.
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
	// Wait is sent as "Prefer: wait=N" on create (at most 60s); default 60s.
	// Negative disables it.
	Wait time.Duration
	// RequestTimeout bounds each HTTP request (create adds Wait); default 30s.
	RequestTimeout time.Duration
	// JobTimeout bounds one whole Run or Resume; default 5m.
	JobTimeout time.Duration
	// PollInterval is the first wait between polls; default 500ms. It grows
	// by half each poll up to MaxPollInterval (default 5s).
	PollInterval, MaxPollInterval time.Duration
	// MaxRetries is how many times a transient failure (429, 5xx, network)
	// is retried per request; default 5. Negative means none.
	MaxRetries int
	// RetryBase is the first backoff when the provider names no delay;
	// default 500ms, doubling, with full jitter, capped at 30s.
	RetryBase time.Duration
	// MaxImageBytes caps a downloaded result; default 50 MiB.
	MaxImageBytes int64
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
	base, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("kontext: new client: base URL %q is not an http(s) URL", cfg.BaseURL)
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
	setDefault(&cfg.RequestTimeout, 30*time.Second)
	setDefault(&cfg.JobTimeout, 5*time.Minute)
	setDefault(&cfg.PollInterval, 500*time.Millisecond)
	setDefault(&cfg.MaxPollInterval, 5*time.Second)
	setDefault(&cfg.RetryBase, 500*time.Millisecond)
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 5
	}
	cfg.MaxRetries = max(cfg.MaxRetries, 0)
	if cfg.MaxImageBytes <= 0 {
		cfg.MaxImageBytes = 50 << 20
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
// ends first, the prediction is cancelled in the background (best effort)
// and Run returns at once.
func (c *Client) Run(ctx context.Context, req Request) (*Result, error) {
	if strings.TrimSpace(req.Prompt) == "" {
		return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the prompt is empty"}
	}
	model := req.Model
	if model == "" {
		model = c.cfg.Model
	}
	if !ValidModel(model) {
		return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: fmt.Sprintf("unknown model %q", model)}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.JobTimeout, errJobDeadline)
	defer cancel()
	if c.cfg.Route == RouteImages && req.InputImage == nil {
		return c.runImages(ctx, model, req)
	}
	body, err := c.createBody(model, req)
	if err != nil {
		return nil, err
	}
	var p prediction
	raw, err := c.call(ctx, "create", http.MethodPost, c.createURL(model), body, "")
	if err != nil {
		return nil, err
	}
	if err := decodePrediction(raw, &p); err != nil {
		return nil, &APIError{Op: "create", Kind: ErrProviderFailure, Message: "the answer is not a prediction", Err: err}
	}
	if req.OnCreated != nil {
		req.OnCreated(p.ID)
	}
	res, err := c.finish(ctx, &p)
	if err != nil {
		return nil, err
	}
	if req.Seed != nil {
		res.Seed = req.Seed
	}
	return res, nil
}

// Resume follows a prediction created earlier (by this process or one
// before a restart) to its end, then downloads its image.
func (c *Client) Resume(ctx context.Context, predictionID string) (*Result, error) {
	if predictionID == "" {
		return nil, &APIError{Op: "poll", Kind: ErrInvalidRequest, Message: "no prediction id"}
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.JobTimeout, errJobDeadline)
	defer cancel()
	return c.finish(ctx, &prediction{ID: predictionID, Status: "starting"})
}

var errJobDeadline = errors.New("kontext: the job's overall deadline passed")

// finish polls p until it is final, then downloads and checks its output.
// If ctx ends first it cancels the prediction in the background.
func (c *Client) finish(ctx context.Context, p *prediction) (*Result, error) {
	delay := c.cfg.PollInterval
	for !p.final() {
		if err := sleep(ctx, delay); err != nil {
			c.abandon(ctx, p.ID)
			return nil, c.ctxError(ctx, "poll", p.ID)
		}
		delay = min(delay*3/2, c.cfg.MaxPollInterval)
		raw, err := c.call(ctx, "poll", http.MethodGet, c.endpoint("replicate/v1/predictions/"+url.PathEscape(p.ID)), nil, p.ID)
		if err != nil {
			if ctx.Err() != nil {
				c.abandon(ctx, p.ID)
			}
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
	}
	// The prediction is final: it no longer occupies one of the provider's
	// active tasks, so a queue slot can go to the next job while this one
	// downloads.
	releaseSlot(ctx)
	switch p.Status {
	case "succeeded":
	case "failed":
		msg := p.errorText()
		if isModeration(msg) {
			return nil, &APIError{Op: "poll", Kind: ErrContentRefused, PredictionID: p.ID, Message: msg}
		}
		return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: "the prediction failed: " + msg}
	default: // canceled, aborted, and any status this client does not know
		return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: "the prediction ended " + strconv.Quote(p.Status)}
	}
	out, err := p.outputURL()
	if err != nil {
		return nil, &APIError{Op: "poll", Kind: ErrProviderFailure, PredictionID: p.ID, Message: err.Error()}
	}
	res, err := c.download(ctx, out, p.ID)
	if err != nil {
		return nil, err
	}
	res.PredictionID = p.ID
	res.Model = strings.TrimPrefix(p.Model, replicateOwner)
	res.Seed = p.seed()
	return res, nil
}

// abandon asks the provider to cancel a prediction whose caller gave up,
// without making the caller wait (Close waits for it). A prediction left
// because the queue is shutting down (cause ErrShutdown) is not cancelled:
// the next process follows it to the end with Resume.
func (c *Client) abandon(ctx context.Context, id string) {
	if id == "" || errors.Is(context.Cause(ctx), ErrShutdown) {
		return
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u := c.endpoint("replicate/v1/predictions/" + url.PathEscape(id) + "/cancel")
		status, _, _, err := c.once(ctx, http.MethodPost, u, nil, 0, "")
		c.log.Debug("kontext: cancel", "prediction", id, "status", status, "err", err)
	}()
}

const replicateOwner = "black-forest-labs/"

func (c *Client) createURL(model string) string {
	if c.cfg.Route == RoutePredictions {
		return c.endpoint("replicate/v1/predictions")
	}
	return c.endpoint("replicate/v1/models/" + replicateOwner + model + "/predictions")
}

func (c *Client) endpoint(path string) string {
	return c.base.String() + "/" + path
}

// input is the provider's input schema (Replicate's for flux-kontext-*).
type input struct {
	Prompt          string `json:"prompt"`
	InputImage      string `json:"input_image,omitempty"`
	AspectRatio     string `json:"aspect_ratio,omitempty"`
	Seed            *int64 `json:"seed,omitempty"`
	OutputFormat    string `json:"output_format,omitempty"`
	SafetyTolerance *int   `json:"safety_tolerance,omitempty"`
}

func (c *Client) createBody(model string, req Request) ([]byte, error) {
	if req.AspectRatio != "" && !ValidAspect(req.AspectRatio) {
		return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: fmt.Sprintf("aspect ratio %q is not one of %s", req.AspectRatio, strings.Join(AspectRatios, ", "))}
	}
	in := input{Prompt: req.Prompt, AspectRatio: req.AspectRatio, Seed: req.Seed, OutputFormat: req.OutputFormat, SafetyTolerance: req.SafetyTolerance}
	if req.InputImage != nil {
		uri, err := DataURI(req.InputImage)
		if err != nil {
			return nil, &APIError{Op: "create", Kind: ErrInvalidRequest, Message: "the input image cannot be sent", Err: err}
		}
		in.InputImage = uri
	}
	body := struct {
		Model string `json:"model,omitempty"`
		Input input  `json:"input"`
	}{Input: in}
	if c.cfg.Route == RoutePredictions {
		body.Model = replicateOwner + model
	}
	return json.Marshal(body)
}

// DataURI encodes an image as a data: URI for input_image. PNG, JPEG, GIF
// and WebP go as they are, byte for byte; any other format this package
// can decode (BMP, TIFF) is re-encoded as PNG.
func DataURI(img []byte) (string, error) {
	format := Sniff(img)
	if format == "" {
		decoded, _, err := image.Decode(bytes.NewReader(img))
		if err != nil {
			return "", fmt.Errorf("kontext: input image: %w", err)
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, decoded); err != nil {
			return "", fmt.Errorf("kontext: input image: re-encode: %w", err)
		}
		img, format = buf.Bytes(), "png"
	}
	return "data:image/" + format + ";base64," + base64.StdEncoding.EncodeToString(img), nil
}

// Sniff names the format of an encoded image the provider accepts as it is:
// "png", "jpeg", "gif" or "webp"; "" for anything else.
func Sniff(b []byte) string {
	switch ct := http.DetectContentType(b); ct {
	case "image/png", "image/jpeg", "image/gif", "image/webp":
		return strings.TrimPrefix(ct, "image/")
	}
	return ""
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

// outputURL accepts output as a URL string (Replicate) or a list of URLs
// (CometAPI's docs) and returns the first.
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

func isModeration(msg string) bool {
	m := strings.ToLower(msg)
	for _, w := range []string{"flagged as sensitive", "moderat", "nsfw", "safety"} {
		if strings.Contains(m, w) {
			return true
		}
	}
	return false
}

// runImages makes a text-to-image call on the OpenAI-style route. That
// route takes neither aspect ratio nor seed.
func (c *Client) runImages(ctx context.Context, model string, req Request) (*Result, error) {
	if req.AspectRatio != "" && req.AspectRatio != AspectMatchInput && req.AspectRatio != "1:1" {
		c.log.Debug("kontext: the images route ignores the aspect ratio", "aspect", req.AspectRatio)
	}
	body, err := json.Marshal(map[string]string{"model": model, "prompt": req.Prompt})
	if err != nil {
		return nil, fmt.Errorf("kontext: images: %w", err)
	}
	raw, err := c.call(ctx, "images", http.MethodPost, c.endpoint("v1/images/generations"), body, "")
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
		if res, err = verify(data); err != nil {
			return nil, &APIError{Op: "images", Kind: ErrProviderFailure, Message: "the image does not decode", Err: err}
		}
	} else if res, err = c.download(ctx, d.URL, ""); err != nil {
		return nil, err
	}
	res.Model = model
	return res, nil
}

// download fetches a result at once (provider URLs expire) and verifies it
// decodes. The API key is never sent: result hosts are not CometAPI.
func (c *Client) download(ctx context.Context, rawURL, id string) (*Result, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: "the output is not an http(s) URL"}
	}
	var data []byte
	for attempt := 1; ; attempt++ {
		start := time.Now()
		status, hdr, body, err := c.fetch(ctx, u.String())
		retry, wait := c.retryable(status, hdr, body, err, attempt)
		c.observe(Attempt{Op: "download", Status: status, Retry: retry && ctx.Err() == nil, Duration: time.Since(start)})
		switch {
		case err == nil && status == http.StatusOK:
			data = body
		case ctx.Err() != nil:
			return nil, c.ctxError(ctx, "download", id)
		case status == http.StatusNotFound || status == http.StatusGone || status == http.StatusForbidden:
			return nil, &APIError{Op: "download", Kind: ErrProviderFailure, StatusCode: status, PredictionID: id, Message: "the result URL has expired", Attempts: attempt}
		case errors.Is(err, errTooLarge):
			return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: fmt.Sprintf("the result is larger than %d bytes", c.cfg.MaxImageBytes), Attempts: attempt}
		case retry:
			if err := sleep(ctx, wait); err != nil {
				return nil, c.ctxError(ctx, "download", id)
			}
			continue
		default:
			return nil, &APIError{Op: "download", Kind: failureKind(status, err), StatusCode: status, PredictionID: id, Attempts: attempt, Err: err}
		}
		break
	}
	res, err := verify(data)
	if err != nil {
		return nil, &APIError{Op: "download", Kind: ErrProviderFailure, PredictionID: id, Message: "the result does not decode as an image", Err: err}
	}
	return res, nil
}

var errTooLarge = errors.New("body too large")

func (c *Client) observe(a Attempt) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(a)
	}
}

func (c *Client) fetch(ctx context.Context, u string) (int, http.Header, []byte, error) {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body, c.cfg.MaxImageBytes)
	return resp.StatusCode, resp.Header, body, err
}

// MaxDecodePixels bounds the size of an image verify decodes, so a hostile
// answer cannot make it allocate without limit.
const MaxDecodePixels = 64 << 20

// Describe names an encoded image's format and reads its size from the
// header, without decoding its pixels. Only PNG, JPEG, GIF and WebP pass.
func Describe(data []byte) (*Result, error) {
	format := Sniff(data)
	if format == "" {
		return nil, fmt.Errorf("not a PNG, JPEG, GIF or WebP image (%s)", http.DetectContentType(data))
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxDecodePixels {
		return nil, fmt.Errorf("unreasonable size %dx%d", cfg.Width, cfg.Height)
	}
	return &Result{Data: data, Format: format, Width: cfg.Width, Height: cfg.Height}, nil
}

// verify describes data and checks that it decodes completely.
func verify(data []byte) (*Result, error) {
	res, err := Describe(data)
	if err != nil {
		return nil, err
	}
	if _, _, err := image.Decode(bytes.NewReader(data)); err != nil {
		return nil, err
	}
	return res, nil
}

const maxJSONBytes = 64 << 20 // b64_json answers carry a whole image

// call sends one API request with retries: 429, 500, 502, 503, 504 and
// network errors are retried with backoff (honouring retry_after and
// Retry-After); any other failure is returned at once as an *APIError.
func (c *Client) call(ctx context.Context, op, method, u string, body []byte, id string) ([]byte, error) {
	timeout, prefer := c.cfg.RequestTimeout, ""
	if op == "create" && c.cfg.Wait > 0 {
		timeout += c.cfg.Wait
		prefer = "wait=" + strconv.Itoa(max(1, int((c.cfg.Wait+time.Second-1)/time.Second)))
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		status, hdr, respBody, err := c.once(ctx, method, u, body, timeout, prefer)
		c.log.Debug("kontext: call", "op", op, "prediction", id, "attempt", attempt, "status", status, "err", err)
		ok := err == nil && status >= 200 && status < 300
		retry, wait := false, time.Duration(0)
		if !ok && ctx.Err() == nil {
			retry, wait = c.retryable(status, hdr, respBody, err, attempt)
		}
		c.observe(Attempt{Op: op, Status: status, Retry: retry, Duration: time.Since(start)})
		if ok {
			return respBody, nil
		}
		if ctx.Err() != nil {
			return nil, c.ctxError(ctx, op, id)
		}
		if !retry {
			return nil, c.statusError(op, id, status, respBody, err, attempt)
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, c.ctxError(ctx, op, id)
		}
	}
}

// once makes a single HTTP request to the provider, with the API key, and
// reads the whole answer. prefer, when set, is sent as the Prefer header.
func (c *Client) once(ctx context.Context, method, u string, body []byte, timeout time.Duration, prefer string) (int, http.Header, []byte, error) {
	if timeout <= 0 {
		timeout = c.cfg.RequestTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(rctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, err
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
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	respBody, err := readLimited(resp.Body, maxJSONBytes)
	return resp.StatusCode, resp.Header, respBody, err
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

// retryable decides whether a failed attempt is tried again, and after how
// long.
func (c *Client) retryable(status int, hdr http.Header, body []byte, err error, attempt int) (bool, time.Duration) {
	if attempt > c.cfg.MaxRetries {
		return false, 0
	}
	switch {
	case err != nil && !errors.Is(err, errTooLarge):
		return isNetError(err), c.backoff(attempt)
	case status == http.StatusTooManyRequests:
		if d, ok := retryAfter(hdr, body); ok {
			return true, d
		}
		return true, c.backoff(attempt)
	case status == http.StatusInternalServerError, status == http.StatusBadGateway,
		status == http.StatusServiceUnavailable, status == http.StatusGatewayTimeout:
		if d, ok := retryAfter(hdr, body); ok {
			return true, d
		}
		return true, c.backoff(attempt)
	}
	return false, 0
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
func (c *Client) statusError(op, id string, status int, body []byte, err error, attempts int) error {
	e := &APIError{Op: op, StatusCode: status, PredictionID: id, Attempts: attempts, Err: err, Message: providerMessage(body)}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Kind = ErrUnauthorized
	case status == http.StatusPaymentRequired:
		e.Kind = ErrOutOfCredits
	case (status == http.StatusBadRequest || status == http.StatusUnprocessableEntity) && isModeration(e.Message):
		e.Kind = ErrContentRefused
	case status == http.StatusBadRequest || status == http.StatusUnprocessableEntity:
		e.Kind = ErrInvalidRequest
	case status == http.StatusNotFound && op == "poll":
		e.Kind, e.Message = ErrProviderFailure, "the provider no longer knows this prediction"
	default:
		e.Kind = failureKind(status, err)
	}
	return e
}

func failureKind(status int, err error) error {
	switch {
	case status == http.StatusTooManyRequests:
		return ErrRateLimited
	case status == http.StatusGatewayTimeout, errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	return ErrProviderFailure
}

// providerMessage extracts the provider's explanation from an error body:
// {"detail": ...}, {"error": "..."} or {"error": {"message": ...}}.
func providerMessage(body []byte) string {
	var b struct {
		Detail  json.RawMessage `json:"detail"`
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &b) != nil {
		return ""
	}
	for _, raw := range []json.RawMessage{b.Detail, b.Error} {
		var s string
		if json.Unmarshal(raw, &s) == nil && s != "" {
			return truncate(s, 300)
		}
		var o struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &o) == nil && o.Message != "" {
			return truncate(o.Message, 300)
		}
	}
	return truncate(b.Message, 300)
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
