package bot

import (
	"context"
	"errors"
	"fmt"
	"time"

	"kontextbot/kontext"
)

// UserError is an error the user caused or can act on. Its message is
// written for them: one friendly sentence, safe to show in chat.
type UserError struct {
	// Msg is shown to the user as it is.
	Msg string
	// Err is the underlying cause, for logs; may be nil.
	Err error
}

func (e *UserError) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *UserError) Unwrap() error { return e.Err }

// Userf returns a *UserError with a formatted message.
func Userf(format string, args ...any) error {
	return &UserError{Msg: fmt.Sprintf(format, args...)}
}

// Apology is what the user sees for a failure that is not theirs to fix;
// the details go to the log.
const Apology = "Sorry, something went wrong on our side while making that image. Please try again in a moment."

// Explain returns the one sentence a user should see for err: the message
// of a *UserError, a plain explanation of a provider outcome, or Apology.
func Explain(err error) string {
	var ue *UserError
	var le *kontext.LimitError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ue):
		return ue.Msg
	case errors.As(err, &le) && errors.Is(err, kontext.ErrUserWaitingLimit):
		return fmt.Sprintf("You already have %d images waiting. Wait for one to finish, or cancel one, then try again.", le.Limit)
	case errors.As(err, &le) && errors.Is(err, kontext.ErrQueueFull):
		return fmt.Sprintf("The bot's queue is full (%d images waiting). Please try again in a few minutes.", le.Limit)
	case errors.Is(err, kontext.ErrContentRefused):
		return "The image provider refused this prompt or image as unsafe. Try wording it differently."
	case errors.Is(err, kontext.ErrUnauthorized):
		return "The image provider rejected the bot's API key. Please tell whoever runs the bot (COMETAPI_API_KEY)."
	case errors.Is(err, kontext.ErrForbidden):
		return "The image provider does not allow this request or model for the bot's API key. Please tell whoever runs the bot (the key's model access on CometAPI)."
	case errors.Is(err, kontext.ErrOutOfCredits):
		return "The image provider account is out of credits. Please tell whoever runs the bot."
	case errors.Is(err, kontext.ErrInvalidRequest):
		var ae *kontext.APIError
		if errors.As(err, &ae) && ae.Message != "" {
			return "The image provider refused the request: " + ae.Message + "."
		}
		return "The image provider refused the request as invalid."
	case errors.Is(err, kontext.ErrRateLimited):
		return "The image provider is busy right now. Please try again in a minute."
	case errors.Is(err, kontext.ErrTimeout):
		return "The image provider took too long to answer. Please try again."
	case errors.Is(err, kontext.ErrShutdown):
		return "The bot is restarting. Please try again in a minute."
	case errors.Is(err, kontext.ErrCanceled), errors.Is(err, context.Canceled):
		return "Cancelled."
	case errors.Is(err, kontext.ErrProviderFailure):
		return "The image provider failed to make that image. Please try again."
	}
	return Apology
}

// TransientError marks a failure that may pass if the same thing is tried
// again a little later: a platform's 5xx, a connection that failed, a
// rate limit. Adapters decide what is transient from their SDK's error
// types and wrap it with Transient; the core retries posting a finished
// image only after such an error.
type TransientError struct {
	// Err is the failure.
	Err error
	// After is the wait the platform asked for (a rate limit's
	// Retry-After); 0 leaves the wait to the caller's backoff.
	After time.Duration
}

func (e *TransientError) Error() string { return e.Err.Error() }

// Unwrap returns the failure.
func (e *TransientError) Unwrap() error { return e.Err }

// Transient marks err as transient, asking for a wait of at least after
// before the next try (0: the caller's backoff). A nil err stays nil.
func Transient(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return &TransientError{Err: err, After: after}
}

// IsTransient reports whether err, or an error it wraps, is a
// *TransientError, and the wait it asks for.
func IsTransient(err error) (bool, time.Duration) {
	var te *TransientError
	if errors.As(err, &te) {
		return true, te.After
	}
	return false, 0
}
