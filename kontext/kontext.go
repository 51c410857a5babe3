// Package kontext calls FLUX.1 Kontext through CometAPI: it creates
// predictions, waits for them, downloads and verifies the result, and
// schedules that work through a fair queue of a fixed number of slots (the
// provider's limit of active tasks per API key). It knows nothing of chat.
package kontext

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// Models served by CometAPI for FLUX.1 Kontext (the rest are in models.go).
const (
	ModelMax = "flux-kontext-max"
	ModelPro = "flux-kontext-pro"
)

// AspectMatchInput keeps the input image's aspect ratio; it is the
// provider's default.
const AspectMatchInput = "match_input_image"

// AspectRatios lists every aspect_ratio value FLUX.1 Kontext accepts, the
// default first; every other model's Aspects are among them.
var AspectRatios = []string{
	AspectMatchInput, "1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3",
	"4:5", "5:4", "21:9", "9:21", "2:1", "1:2",
}

// ValidAspect reports whether s is an aspect ratio some model accepts
// (Model.ValidAspect says whether a given one does).
func ValidAspect(s string) bool {
	for _, a := range AspectRatios {
		if a == s {
			return true
		}
	}
	return false
}

// ValidModel reports whether s is the short name of an available model
// (see Restrict).
func ValidModel(s string) bool {
	for _, m := range Available() {
		if m.Name == s {
			return true
		}
	}
	return false
}

// Request is one text-to-image generation (no InputImage) or one edit.
type Request struct {
	// Prompt is the instruction; required.
	Prompt string
	// Model is the short name of one of Models; empty means the client's
	// default.
	Model string
	// AspectRatio is one of the model's Aspects; empty means the input's
	// (match_input_image) for an edit and the provider's default otherwise.
	AspectRatio string
	// Seed makes the result reproducible; nil lets the provider choose.
	Seed *int64
	// InputImage is the image to edit, as encoded bytes; nil for text-to-image.
	InputImage []byte
	// References are further reference images after InputImage (the
	// second, third... reference, in order), as encoded bytes; the model's
	// entry in the models table says how many it takes and in which field.
	References [][]byte
	// PromptUpsampling asks the model to enhance the prompt first (BFL's
	// prompt_upsampling); off by default.
	PromptUpsampling bool
	// OutputFormat is "png" (default, on every model) or "jpg".
	OutputFormat string
	// SafetyTolerance is within the model's SafetyMin..SafetyMax (Kontext:
	// 0..6, at most 2 with an input image; FLUX.2: 1..5); nil is the
	// provider's default.
	SafetyTolerance *int
	// OnCreated, when set, is called with the prediction id as soon as the
	// provider has accepted the request, so a caller can persist it and
	// resume after a restart. It is called at most once, synchronously.
	OnCreated func(predictionID string)
	// BeforeCreate, when set, is called once right before the create is
	// first sent (its inputs encoded): from then on a prediction may
	// exist, so a caller can persist that and never send the create again
	// after a crash. An error stops the run before anything is sent.
	BeforeCreate func(ctx context.Context) error
}

// beforeCreate calls BeforeCreate, if set.
func (r Request) beforeCreate(ctx context.Context) error {
	if r.BeforeCreate == nil {
		return nil
	}
	return r.BeforeCreate(ctx)
}

// Result is a finished image, downloaded and verified to decode.
type Result struct {
	// Data is the image exactly as the provider served it.
	Data []byte
	// Format is "png", "jpeg", "gif" or "webp", sniffed from Data.
	Format string
	// Width and Height are the decoded image's size in pixels.
	Width, Height int
	// Seed is the seed the provider used, when known.
	Seed *int64
	// PredictionID is the provider's id, empty on routes that have none.
	PredictionID string
	// Model is the model that made the image.
	Model string
}

// Error kinds. Every error the client returns for a provider outcome wraps
// exactly one of these, so callers decide with errors.Is.
var (
	// ErrContentRefused: the provider's moderation refused the prompt or
	// image. Not retried, and not charged.
	ErrContentRefused = errors.New("content refused by the provider's moderation")
	// ErrUnauthorized: the API key was rejected (401).
	ErrUnauthorized = errors.New("the API key was rejected")
	// ErrForbidden: the key is valid, but the request or the model is not
	// allowed for it (403). Not the same fix as a bad key: the account's
	// model access or group, not COMETAPI_API_KEY itself.
	ErrForbidden = errors.New("the request or model is not allowed for this API key")
	// ErrOutOfCredits: the account has no credits left (402).
	ErrOutOfCredits = errors.New("the provider account is out of credits")
	// ErrInvalidRequest: the provider refused the request as invalid
	// (400/422, an error code such as invalid_request whatever the status,
	// or 413 even after the input image was made smaller), or the client
	// refused it before sending. APIError.UserMessage says why, when the
	// reason concerns the person's own input.
	ErrInvalidRequest = errors.New("the provider refused the request as invalid")
	// ErrRateLimited: still 429 after every retry.
	ErrRateLimited = errors.New("the provider is rate limiting requests")
	// ErrTimeout: a request or the whole job ran past its deadline, or the
	// answer to a create was lost (a timeout, a connection reset after the
	// request was sent, a 502/504/524): that create may have made a
	// prediction, so it is never sent again (APIError.Unsure is set), and no
	// image comes of it.
	ErrTimeout = errors.New("the provider did not answer in time")
	// ErrProviderFailure: 5xx after retries, a failed, aborted or canceled
	// prediction, an expired or undecodable result, or an answer that does
	// not follow the API.
	ErrProviderFailure = errors.New("the provider failed")
)

// APIError describes one failed provider call in full, for logs. Kind is one
// of the Err* values above; errors.Is(err, kontext.ErrX) matches it.
type APIError struct {
	// Op is what was being done: "create", "poll", "download", "images".
	Op string
	// Kind is the error kind (ErrUnauthorized, ...).
	Kind error
	// StatusCode is the HTTP status, 0 when there was none.
	StatusCode int
	// PredictionID is set once the provider has accepted the prediction.
	PredictionID string
	// Message is the provider's own words, when it gave any, or the
	// client's description of what went wrong.
	Message string
	// Code, Type and Param are the fields of CometAPI's error envelope
	// {"error":{"message","type","param","code"}}, when the answer had one.
	Code, Type, Param string
	// Unsure reports a create whose answer was lost after the request was
	// sent: the provider may have made (and may bill) a prediction whose id
	// the client never learnt. It was not re-sent.
	Unsure bool
	// Attempts is how many HTTP requests were made for Op.
	Attempts int
	// Err is the underlying cause, if any (a network error, a context error).
	Err error
}

func (e *APIError) Error() string {
	s := "kontext: " + e.Op
	if e.PredictionID != "" {
		s += " " + e.PredictionID
	}
	s += ": " + e.Kind.Error()
	if e.StatusCode != 0 {
		s += " (HTTP " + strconv.Itoa(e.StatusCode) + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.Code != "" {
		s += " (code " + e.Code + ")"
	}
	if e.Unsure {
		s += " [the create may have made a prediction; not re-sent]"
	}
	if e.Attempts > 1 {
		s += fmt.Sprintf(" after %d attempts", e.Attempts)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// UserMessage returns the reason for the refusal in one short line safe to
// show the person who asked, when it concerns their own input: the
// provider's message (or the client's own) for ErrInvalidRequest and
// ErrContentRefused. It is "" for every other kind, whose details are for
// logs only. Control characters are removed and the text is cut to 200
// characters.
func (e *APIError) UserMessage() string {
	if e.Kind != ErrInvalidRequest && e.Kind != ErrContentRefused {
		return ""
	}
	msg := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, e.Message)
	msg = strings.Join(strings.Fields(msg), " ")
	msg = strings.TrimRight(msg, ".")
	if r := []rune(msg); len(r) > 200 {
		msg = string(r[:200]) + "…"
	}
	return msg
}

// Unwrap returns both the kind and the cause, so errors.Is matches either
// (for example ErrTimeout and context.DeadlineExceeded).
func (e *APIError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}
