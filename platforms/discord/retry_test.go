package discord

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
)

// TestClassifyTransient: what Deliver returns is bot.Transient exactly
// when Discord or the network may answer differently later, with a rate
// limit's retry_after as the wait.
func TestClassifyTransient(t *testing.T) {
	rl := &discordgo.RateLimitError{RateLimit: &discordgo.RateLimit{TooManyRequests: &discordgo.TooManyRequests{RetryAfter: 7 * time.Second}}}
	for _, tc := range []struct {
		name      string
		err       error
		transient bool
		after     time.Duration
	}{
		{"RateLimited", rl, true, 7 * time.Second},
		{"ServerError", restErr(500, 0), true, 0},
		{"Unavailable", restErr(503, 0), true, 0},
		{"BadGatewayFromTheEdge", &url.Error{Op: "Post", URL: "https://discord.com/api", Err: &badGatewayError{method: "POST"}}, true, 0},
		{"Reset", &url.Error{Op: "Post", URL: "https://discord.com/api", Err: errors.New("connection reset by peer")}, true, 0},
		{"TooLarge", restErr(413, codeTooLarge), false, 0},
		{"MissingAccess", restErr(403, codeMissingAccess), false, 0},
		{"BadRequest", restErr(400, 50035), false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, after := bot.IsTransient(classify(tc.err))
			if got != tc.transient || after != tc.after {
				t.Errorf("IsTransient(classify(%v)) = %v, %v; want %v, %v", tc.err, got, after, tc.transient, tc.after)
			}
		})
	}
}

// TestLimitsTurnsA502IntoAnError: a 502 from the edge to a write becomes
// a typed error before discordgo sees it (discordgo would re-send the
// request blindly and then return an untyped error); reads are left to
// discordgo.
func TestLimitsTurnsA502IntoAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		_, _ = w.Write([]byte("<html><center>cloudflare</center></html>"))
	}))
	defer srv.Close()
	c := &http.Client{Transport: &limits{next: http.DefaultTransport}}
	defer c.CloseIdleConnections()
	_, err := c.Post(srv.URL, "application/json", strings.NewReader("{}"))
	var bg *badGatewayError
	if !errors.As(err, &bg) || !Temporary(err) {
		t.Errorf("POST answered 502: %v, want a temporary *badGatewayError", err)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("GET answered 502: %v, want the answer", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Errorf("GET: %d", resp.StatusCode)
	}
}
