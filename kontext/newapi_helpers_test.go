package kontext

import (
	"errors"
	"time"
)

// The names the provider tests (issue 10) use from the API this package
// gained for them, in one place.

var errForbidden = ErrForbidden

// isUnsure reports whether err is a create that may have made a
// prediction and was not re-sent.
func isUnsure(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Unsure
}

// userMessage is the APIError's sentence for the person, "" without one.
func userMessage(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.UserMessage()
	}
	return ""
}

// setPolling sets the first poll and the interval after it.
func setPolling(c *Config, first, interval time.Duration) {
	c.FirstPoll, c.PollInterval = first, interval
}

// setInputLimits sets the data URI size sent as it is, the area an input
// is downscaled to and the decode budget.
func setInputLimits(c *Config, inputMax, pixels int, decodeBudget int64) {
	c.InputMaxBytes, c.InputPixels, c.MaxDecodeBytes = inputMax, pixels, decodeBudget
}
