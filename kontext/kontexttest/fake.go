// Package kontexttest is a fake CometAPI provider for FLUX.1 Kontext, as
// strict as the real one, for tests, benchmarks and manual runs.
//
// A Fake is an http.Handler that serves the routes described in
// API-NOTES.md ("CometAPI: FLUX.1 Kontext"):
//
//	POST /replicate/v1/models/black-forest-labs/{model}/predictions   create ({"input":{...}})
//	POST /replicate/v1/predictions                                    create ({"model":"black-forest-labs/{model}","input":{...}})
//	GET  /replicate/v1/predictions/{id}                               poll
//	POST /replicate/v1/predictions/{id}/cancel                        cancel
//	GET  /files/{name}                                                result download (no auth)
//	POST /v1/images/generations                                       OpenAI-style, synchronous
//
// Every route but the result download requires "Authorization: Bearer
// <key>". Request bodies are decoded strictly (an unknown or misspelt field
// is a 422 naming it), each key has a fixed number of active slots (the
// next create is a 429 with retry_after), predictions move through
// starting, processing and a final status on timers, and "Prefer: wait=N"
// holds an answer until the prediction is final. A request body larger than
// Options.MaxRequestBytes is refused with 413 before anything is created.
// Faults (HTTP errors with Replicate's or CometAPI's error body, hangs,
// connections cut after the request was handled, delays, malformed bodies,
// moderation and Black Forest Labs' final statuses, aborted or failed
// predictions, data: URI outputs, expired or replaced result files) are
// queued per endpoint with Fake.Inject; Stats counts what each endpoint
// received, cancels included.
//
// Results are real, decodable PNG or JPEG images of about Options.Pixels
// pixels, deterministic for (prompt, seed, model, input image, aspect
// ratio), with the prompt drawn on them; an edit is visibly derived from its
// input. Every image carries its Provenance, which ReadProvenance recovers,
// so a test can prove which prompt, seed and input image made it.
//
// NewServer starts a Fake on an httptest server; Close releases every held
// request and stops every timer, so no goroutine is left behind.
package kontexttest

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultAPIKey is the bearer key a Fake accepts when Options.APIKey is empty.
const DefaultAPIKey = "test-key"

// ModerationError is the error text of a prediction refused by moderation,
// and the message of the Images route's moderation answer.
const ModerationError = "Content flagged as sensitive by moderation"

// Defaults applied by New to zero Options fields.
const (
	defaultSlots     = 6
	defaultLatency   = 50 * time.Millisecond
	defaultResultTTL = 10 * time.Minute
	defaultPixels    = 1024 * 1024
	maxBodyBytes     = 64 << 20
)

// Options configures a Fake. The zero value is usable: every zero field
// takes the default given in its comment.
type Options struct {
	// APIKey is the bearer key every route but the result download
	// requires; default DefaultAPIKey ("test-key").
	APIKey string
	// ExtraKeys are further accepted keys. Each key, like APIKey, has its
	// own Slots and sees only its own predictions.
	ExtraKeys []string
	// Slots is the number of active (starting or processing) predictions
	// and running Images requests allowed per key; default 6.
	Slots int
	// ModelSlots bounds, per key, the active predictions of one model
	// (bare name, "flux-kontext-max") inside Slots: BFL's 24 active tasks
	// per account of which flux-kontext-max may use 6. The one over it gets
	// 429 like the one over Slots. A model not in it has only Slots.
	ModelSlots map[string]int
	// Latency is the fixed part of a prediction's (or an Images request's)
	// run time; default 50ms. A negative value means no latency at all.
	Latency time.Duration
	// Jitter adds a uniform random duration in [0, Jitter) to Latency;
	// default 0.
	Jitter time.Duration
	// ResultTTL is how long a result URL serves its image after the
	// prediction completes; after that it answers 404. Default 10m.
	ResultTTL time.Duration
	// Pixels is the target output area in pixels; default 1024*1024.
	// Benchmarks set it small (e.g. 64*64) to keep CPU off the measurement.
	Pixels int
	// OutputAsString answers a prediction's "output" as a single URL string
	// (Replicate's shape) instead of a one-element []string (CometAPI's
	// documented shape).
	OutputAsString bool
	// Moderate decides whether a prompt is refused: when it returns true the
	// prediction fails with ModerationError (the Images route answers 400).
	// Default: the prompt contains "forbidden", case-insensitively. It is
	// called from request goroutines and must be safe for concurrent use.
	Moderate func(prompt string) bool
	// MaxRequestBytes is the largest request body accepted; a bigger one
	// is answered 413 before anything is created (at once when its
	// Content-Length says so), as the real service does. Default 64 MiB.
	MaxRequestBytes int64
	// Logger receives request and prediction logs; nil discards them.
	Logger *slog.Logger
}

// Endpoint names one route of the fake, for Inject.
type Endpoint int

// The endpoints, in the order of Stats' per-endpoint counters.
const (
	// Create is either create route (model path or generic path).
	Create Endpoint = iota
	// Poll is GET /replicate/v1/predictions/{id}.
	Poll
	// Cancel is POST /replicate/v1/predictions/{id}/cancel.
	Cancel
	// Download is GET /files/{name}, the result "host".
	Download
	// Images is POST /v1/images/generations.
	Images

	numEndpoints
)

var endpointNames = [numEndpoints]string{"create", "poll", "cancel", "download", "images"}

// String returns the endpoint's lower-case name ("create", "poll", ...).
func (e Endpoint) String() string {
	if e >= 0 && e < numEndpoints {
		return endpointNames[e]
	}
	return "Endpoint(" + strconv.Itoa(int(e)) + ")"
}

// Fault is one injected misbehaviour, consumed by one request to the
// endpoint it was injected for. The fields combine in this order: Hang wins
// over everything; otherwise Delay is waited first, then Status (with Code
// and Message), Body (Download) or MalformedJSON answer instead of the
// normal handling; Reset lets the request be handled normally and cuts the
// connection instead of answering; the Create-only outcome fields
// (Moderated, Aborted, Failed, Expired, EndStatus, DataURIOutput) let the
// request be handled normally and decide the fate of the prediction it
// creates. A create request that is refused (401, 413, 422, slot-limit 429)
// spends its fault without effect.
type Fault struct {
	// Status answers this HTTP status (429, 500, 502, 503, 504, 524, 400,
	// 401, 403, 402, 413, 422, ...) with a JSON body {"detail": "..."}
	// (Replicate's shape) instead of the normal handling; nothing is
	// created.
	Status int
	// Code and Message, with Status, answer CometAPI's (OpenAI-style)
	// error envelope instead: {"error":{"message":Message,"type":...,
	// "param":null,"code":Code}}, e.g. Code "invalid_request" with Status
	// 500.
	Code, Message string
	// RetryAfter, with Status 429, sets the body field "retry_after"
	// (seconds, a number, possibly fractional) and the header
	// "Retry-After" (whole seconds, rounded up). Zero sets neither, so the
	// client must use its own backoff.
	RetryAfter time.Duration
	// Hang holds the request until the client gives up or the fake closes;
	// it is never answered. On Close the handler aborts the connection by
	// panicking with http.ErrAbortHandler, which net/http handles quietly.
	Hang bool
	// Delay answers (normally, or per Status/MalformedJSON) only after this
	// delay.
	Delay time.Duration
	// Reset handles the request normally (a create makes its prediction,
	// which runs and is billed) and then cuts the connection instead of
	// answering: the client has sent everything and never learns the
	// outcome.
	Reset bool
	// SlowAnswer handles the request for real at once (a create makes its
	// prediction, which runs and is billed) and sends the answer only after
	// this delay, as a slow network or gateway would: a client that gives
	// up meanwhile never learns the prediction's id.
	SlowAnswer time.Duration
	// MalformedJSON answers 200 with a truncated JSON body. On Download it
	// serves the first half of the result image instead (when there is one).
	MalformedJSON bool
	// Moderated (Create only): the prediction is accepted, then fails with
	// error ModerationError.
	Moderated bool
	// Aborted (Create only): the prediction ends with status "aborted".
	Aborted bool
	// Failed (Create only): the prediction ends "failed" with this error
	// text.
	Failed string
	// Expired (Create only): the prediction succeeds, but its result URL is
	// already expired (Download answers 404).
	Expired bool
	// EndStatus (Create only): the prediction ends with this status as it
	// is, e.g. Black Forest Labs' "Content Moderated" or "Request
	// Moderated" passed through, with Failed as its error when set.
	EndStatus string
	// DataURIOutput (Create only): the prediction's output is the result
	// itself as data:application/octet-stream;base64,... (what Replicate's
	// sync mode has answered) instead of a URL.
	DataURIOutput bool
	// Body (Download only): serve these bytes, with ContentType (default
	// image/png), instead of the stored result.
	Body        []byte
	ContentType string
}

// Stats counts what a Fake has seen. Stats() returns a snapshot.
type Stats struct {
	// Creates, Polls, Cancels, Downloads and Images count the requests
	// received per endpoint, every one including refused ones (requests
	// with an unknown path or a wrong method count nowhere).
	Creates, Polls, Cancels, Downloads, Images int
	// Active is the number of predictions currently starting or processing
	// plus Images requests running, over all keys.
	Active int
	// MaxActive is the highest number of active tasks of one key ever seen.
	MaxActive int
	// MaxActiveModel is, per model, the highest number of its active
	// tasks of one key ever seen.
	MaxActiveModel map[string]int
	// SlotLimit429 counts 429s answered because the key was at its Slots
	// limit (caused by the client's own concurrency).
	SlotLimit429 int
	// Injected429 counts 429s answered from injected faults.
	Injected429 int
	// Unauthorized counts 401s answered (refused keys and injected 401s).
	Unauthorized int
	// Invalid counts 400s and 422s answered (refused bodies, the Images
	// route's moderation 400, injected 400/422s).
	Invalid int
	// TooLarge counts 413s answered (bodies over MaxRequestBytes and
	// injected 413s).
	TooLarge int
	// Created counts the predictions created (and Images requests
	// accepted): what the account would be billed for at most.
	Created int
	// CreatedByPrompt counts the predictions created per prompt: a prompt
	// counted twice was paid for twice.
	CreatedByPrompt map[string]int
	// DownloadsWithAuth counts downloads that carried an Authorization
	// header: the key must never go to the result host.
	DownloadsWithAuth int
	// Succeeded, Failed, Canceled and Aborted count predictions by final
	// status (failed includes moderated).
	Succeeded, Failed, Canceled, Aborted int
	// Runs counts the predictions that ran to the end of their run time,
	// and RunTime adds up the run times (Latency plus jitter) drawn for
	// them: RunTime / Runs is the latency the fake really served, for
	// benchmarks that measure against it.
	Runs    int
	RunTime time.Duration
}

// Fake is a fake CometAPI provider. It implements http.Handler; create it
// with New (or NewServer) and release it with Close. It is safe for
// concurrent use.
type Fake struct {
	opts    Options
	latency time.Duration
	log     *slog.Logger
	keys    map[string]bool
	done    chan struct{} // closed by Close: releases held requests
	wg      sync.WaitGroup

	mu     sync.Mutex
	closed bool
	rng    *rand.Rand
	faults [numEndpoints][]Fault
	preds  map[string]*prediction
	files  map[string]*resultFile
	active map[string]int // active tasks per key
	// activeModel counts active tasks per key and model.
	activeModel map[[2]string]int
	stats       Stats
}

// New returns a Fake configured by opts, with defaults for zero fields.
func New(opts Options) *Fake {
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.Slots <= 0 {
		opts.Slots = defaultSlots
	}
	latency := opts.Latency
	switch {
	case latency == 0:
		latency = defaultLatency
	case latency < 0:
		latency = 0
	}
	if opts.Jitter < 0 {
		opts.Jitter = 0
	}
	if opts.ResultTTL == 0 {
		opts.ResultTTL = defaultResultTTL
	}
	if opts.Pixels <= 0 {
		opts.Pixels = defaultPixels
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = maxBodyBytes
	}
	if opts.Moderate == nil {
		opts.Moderate = func(prompt string) bool {
			return strings.Contains(strings.ToLower(prompt), "forbidden")
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	keys := map[string]bool{opts.APIKey: true}
	for _, k := range opts.ExtraKeys {
		if k != "" {
			keys[k] = true
		}
	}
	return &Fake{
		opts:    opts,
		latency: latency,
		log:     log,
		keys:    keys,
		done:    make(chan struct{}),
		rng:     rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		preds:   make(map[string]*prediction),
		files:   make(map[string]*resultFile),
		active:  make(map[string]int),
	}
}

// Inject queues faults for ep. Each later request to ep (with a known path
// and the right method) consumes the next queued fault, in order, before
// authentication and validation; once the queue is empty requests are
// handled normally. Inject panics for an unknown endpoint.
func (f *Fake) Inject(ep Endpoint, faults ...Fault) {
	if ep < 0 || ep >= numEndpoints {
		panic("kontexttest: Inject: unknown endpoint " + ep.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[ep] = append(f.faults[ep], faults...)
}

// Stats returns a snapshot of the counters.
func (f *Fake) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.MaxActiveModel = maps.Clone(f.stats.MaxActiveModel)
	s.CreatedByPrompt = maps.Clone(f.stats.CreatedByPrompt)
	for _, n := range f.active {
		s.Active += n
	}
	return s
}

// Close stops every timer, releases every held request (Prefer: wait
// answers at once, Hang aborts the connection, a running Images request
// answers 503) and waits for running result generation. Predictions not yet
// final stay as they are. Requests arriving afterwards get 503. Close is
// idempotent.
func (f *Fake) Close() {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return
	}
	f.closed = true
	close(f.done)
	for _, p := range f.preds {
		p.stopTimers()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Server is a Fake served by an httptest server on 127.0.0.1. Its URL field
// (from httptest.Server) is the base URL to give a client.
type Server struct {
	*Fake
	*httptest.Server
}

// NewServer starts a Fake configured by opts on a new httptest server.
func NewServer(opts Options) *Server {
	f := New(opts)
	return &Server{Fake: f, Server: httptest.NewServer(f)}
}

// Close closes the Fake (releasing held requests) and then the httptest
// server. It is idempotent.
func (s *Server) Close() {
	s.Fake.Close()
	s.Server.Close()
}

// ServeHTTP serves the fake's routes.
func (f *Fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ep, arg, method, ok := route(r.URL.Path)
	if !ok {
		writeJSON(w, http.StatusNotFound, detailBody("Not found"))
		return
	}
	if r.Method != method {
		w.Header().Set("Allow", method)
		writeJSON(w, http.StatusMethodNotAllowed, detailBody("Method not allowed"))
		return
	}
	f.log.Debug("kontexttest: request", "endpoint", ep.String(), "method", r.Method, "path", r.URL.Path)

	fault, hasFault, closed := f.begin(ep, r)
	if closed {
		writeJSON(w, http.StatusServiceUnavailable, detailBody("the fake provider is closed"))
		return
	}
	if hasFault && !f.applyFault(w, r, ep, arg, fault) {
		return
	}
	if hasFault && fault.Reset {
		// Handle the request for real, then cut the connection unanswered.
		defer func() { panic(http.ErrAbortHandler) }()
		w = &discardWriter{header: http.Header{}}
	}
	if hasFault && fault.SlowAnswer > 0 {
		// Handle the request for real, then hold the answer.
		rec := httptest.NewRecorder()
		defer func(w http.ResponseWriter) {
			t := time.NewTimer(fault.SlowAnswer)
			defer t.Stop()
			select {
			case <-t.C:
			case <-f.done:
				panic(http.ErrAbortHandler)
			case <-r.Context().Done():
				return
			}
			maps.Copy(w.Header(), rec.Header())
			w.WriteHeader(rec.Code)
			w.Write(rec.Body.Bytes())
		}(w)
		w = rec
	}
	var key string
	if ep != Download {
		var ok bool
		if key, ok = f.authorize(r); !ok {
			f.fail(w, ep, http.StatusUnauthorized, "Unauthorized")
			return
		}
	}
	switch ep {
	case Create:
		var outcome Fault
		if hasFault {
			outcome = fault
		}
		f.create(w, r, key, arg, outcome)
	case Poll:
		f.poll(w, r, key, arg)
	case Cancel:
		f.cancel(w, key, arg)
	case Download:
		f.download(w, arg)
	case Images:
		f.images(w, r, key)
	}
}

// route maps a path to its endpoint, its path argument (the model of the
// model route, a prediction id, a file name) and the method it accepts.
func route(path string) (ep Endpoint, arg, method string, ok bool) {
	switch {
	case path == "/replicate/v1/predictions":
		return Create, "", http.MethodPost, true
	case path == "/v1/images/generations":
		return Images, "", http.MethodPost, true
	}
	if rest, found := strings.CutPrefix(path, "/replicate/v1/predictions/"); found {
		if id, cancel := strings.CutSuffix(rest, "/cancel"); cancel && validSegment(id) {
			return Cancel, id, http.MethodPost, true
		}
		if validSegment(rest) {
			return Poll, rest, http.MethodGet, true
		}
		return 0, "", "", false
	}
	if rest, found := strings.CutPrefix(path, "/replicate/v1/models/"); found {
		if model, pred := strings.CutSuffix(rest, "/predictions"); pred {
			owner, name, two := strings.Cut(model, "/")
			if two && validSegment(owner) && validSegment(name) {
				return Create, model, http.MethodPost, true
			}
		}
		return 0, "", "", false
	}
	if name, found := strings.CutPrefix(path, "/files/"); found && validSegment(name) {
		return Download, name, http.MethodGet, true
	}
	return 0, "", "", false
}

func validSegment(s string) bool { return s != "" && !strings.Contains(s, "/") }

// begin counts the request and pops the endpoint's next fault.
func (f *Fake) begin(ep Endpoint, r *http.Request) (fault Fault, ok, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch ep {
	case Create:
		f.stats.Creates++
	case Poll:
		f.stats.Polls++
	case Cancel:
		f.stats.Cancels++
	case Download:
		f.stats.Downloads++
		if r.Header.Get("Authorization") != "" {
			f.stats.DownloadsWithAuth++
		}
	case Images:
		f.stats.Images++
	}
	if f.closed {
		return Fault{}, false, true
	}
	if q := f.faults[ep]; len(q) > 0 {
		fault, f.faults[ep] = q[0], q[1:]
		return fault, true, false
	}
	return Fault{}, false, false
}

// applyFault carries out the request-level part of a fault and reports
// whether normal handling should go on.
func (f *Fake) applyFault(w http.ResponseWriter, r *http.Request, ep Endpoint, arg string, fault Fault) bool {
	f.log.Info("kontexttest: injecting fault", "endpoint", ep.String(), "fault", fmt.Sprintf("%+v", fault))
	if fault.Hang {
		select {
		case <-r.Context().Done():
			return false
		case <-f.done:
			// Sever the connection: the request is never answered.
			panic(http.ErrAbortHandler)
		}
	}
	if fault.Delay > 0 {
		t := time.NewTimer(fault.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-f.done:
		case <-r.Context().Done():
			return false
		}
	}
	switch {
	case fault.Status != 0 && (fault.Code != "" || fault.Message != ""):
		msg := fault.Message
		if msg == "" {
			msg = faultDetail(fault.Status)
		}
		typ := "invalid_request_error"
		if fault.Status >= 500 {
			typ = "server_error"
		}
		f.failBody(w, ep, fault.Status, map[string]any{"error": map[string]any{"message": msg, "type": typ, "param": nil, "code": fault.Code}})
		return false
	case fault.Status != 0:
		body := detailBody(faultDetail(fault.Status))
		if fault.Status == http.StatusTooManyRequests {
			f.mu.Lock()
			f.stats.Injected429++
			f.mu.Unlock()
			if fault.RetryAfter > 0 {
				body["retry_after"] = fault.RetryAfter.Seconds()
				w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(fault.RetryAfter.Seconds())), 10))
			}
		}
		f.failBody(w, ep, fault.Status, body)
		return false
	case ep == Download && fault.Body != nil:
		ctype := fault.ContentType
		if ctype == "" {
			ctype = "image/png"
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Content-Length", strconv.Itoa(len(fault.Body)))
		w.WriteHeader(http.StatusOK)
		w.Write(fault.Body)
		return false
	case fault.MalformedJSON:
		if ep == Download {
			if data, ctype, ok := f.file(arg); ok {
				w.Header().Set("Content-Type", ctype)
				w.WriteHeader(http.StatusOK)
				w.Write(data[:len(data)/2])
				return false
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(`{"id":"` + strings.Repeat("x", 10) + `","status":"succ`))
		return false
	}
	return true
}

func faultDetail(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "Too many requests"
	case http.StatusUnauthorized:
		return "Unauthorized"
	case http.StatusPaymentRequired:
		return "Insufficient credits"
	case http.StatusUnprocessableEntity:
		return "Invalid input (injected fault)"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return "HTTP " + strconv.Itoa(status)
}

// authorize checks the bearer key and returns it.
func (f *Fake) authorize(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", false
	}
	for k := range f.keys {
		if subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1 {
			return k, true
		}
	}
	return "", false
}

// acquire takes one of key's slots; the caller holds f.mu.
func (f *Fake) acquire(key, model string) bool {
	mk := [2]string{key, model}
	if limit, ok := f.opts.ModelSlots[model]; f.active[key] >= f.opts.Slots || (ok && f.activeModel[mk] >= limit) {
		f.stats.SlotLimit429++
		return false
	}
	f.active[key]++
	if n := f.active[key]; n > f.stats.MaxActive {
		f.stats.MaxActive = n
	}
	if f.activeModel == nil {
		f.activeModel = map[[2]string]int{}
	}
	if f.stats.MaxActiveModel == nil {
		f.stats.MaxActiveModel = map[string]int{}
	}
	f.activeModel[mk]++
	f.stats.MaxActiveModel[model] = max(f.stats.MaxActiveModel[model], f.activeModel[mk])
	return true
}

// release frees one of key's slots for model; the caller holds f.mu.
func (f *Fake) release(key, model string) {
	if f.active[key]--; f.active[key] <= 0 {
		delete(f.active, key)
	}
	mk := [2]string{key, model}
	if f.activeModel[mk]--; f.activeModel[mk] <= 0 {
		delete(f.activeModel, mk)
	}
}

// runTime is Latency plus jitter; the caller holds f.mu.
func (f *Fake) runTime() time.Duration {
	d := f.latency
	if f.opts.Jitter > 0 {
		d += time.Duration(f.rng.Int64N(int64(f.opts.Jitter)))
	}
	return d
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomID returns 26 random lower-case alphanumerics; the caller holds f.mu.
func (f *Fake) randomID() string {
	var b [26]byte
	for i := range b {
		b[i] = idAlphabet[f.rng.IntN(len(idAlphabet))]
	}
	return string(b[:])
}

// slotLimited answers the slot-limit 429.
func (f *Fake) slotLimited(w http.ResponseWriter, ep Endpoint) {
	w.Header().Set("Retry-After", "1")
	body := detailBody("Too many requests")
	body["retry_after"] = 1
	f.failBody(w, ep, http.StatusTooManyRequests, body)
}

// fail answers an error status with {"detail": detail}.
func (f *Fake) fail(w http.ResponseWriter, ep Endpoint, status int, detail string) {
	f.failBody(w, ep, status, detailBody(detail))
}

// failBody answers an error status with body, counting 401s and 400/422s.
// On the Images route the body also carries an OpenAI-style "error" object.
func (f *Fake) failBody(w http.ResponseWriter, ep Endpoint, status int, body map[string]any) {
	f.mu.Lock()
	switch status {
	case http.StatusUnauthorized:
		f.stats.Unauthorized++
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		f.stats.Invalid++
	case http.StatusRequestEntityTooLarge:
		f.stats.TooLarge++
	}
	f.mu.Unlock()
	if ep == Images {
		if _, ok := body["error"]; !ok {
			typ := "invalid_request_error"
			switch {
			case status == http.StatusUnauthorized:
				typ = "authentication_error"
			case status == http.StatusTooManyRequests:
				typ = "rate_limit_error"
			case status >= 500:
				typ = "server_error"
			}
			body["error"] = map[string]any{"message": body["detail"], "type": typ}
		}
	}
	writeJSON(w, status, body)
}

func detailBody(detail string) map[string]any { return map[string]any{"detail": detail} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// discardWriter swallows an answer that is never sent (Fault.Reset).
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
