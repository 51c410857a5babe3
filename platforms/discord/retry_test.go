package discord

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
	"kontextbot/platforms/discord/discordtest"
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

// TestDeliveryErrorHidesTheToken: a failed post's error, which the core
// logs, does not carry the interaction's token.
func TestDeliveryErrorHidesTheToken(t *testing.T) {
	const token = "aW50ZXJhY3Rpb246c2VjcmV0"
	err := classify(&url.Error{Op: "Patch", URL: "https://discord.com/api/v9/webhooks/123/" + token + "/messages/@original",
		Err: &badGatewayError{method: "PATCH"}})
	if msg := err.Error(); strings.Contains(msg, token) || !strings.Contains(msg, "/webhooks/123/") || !strings.Contains(msg, "502") {
		t.Errorf("error %q", msg)
	}
}

// TestFindPost: the lookup behind a Repost finds the bot's message with
// the image's file among many messages (reading page after page, from
// the job's creation on), and nothing for a file it never posted or a
// message of someone else's.
func TestFindPost(t *testing.T) {
	b, dc, _ := started(t, stubCore{submitted: make(chan *bot.Request, 1)})
	ctx := context.Background()
	since := time.Now()
	theirs := dc.Upload("10", "kontext-t2.png", "image/png", testPNG(t))
	for i := range 150 {
		say := discordtest.Say{ChannelID: "10", UserID: "5", Content: fmt.Sprint("chatter ", i)}
		if i == 0 {
			say.Attachments = []discordtest.Attachment{theirs} // a person's file of the same name
		}
		if _, err := dc.Say(say); err != nil {
			t.Fatal(err)
		}
	}
	posted, err := b.send(ctx, "10", text("a picture"), &outFile{Name: "kontext-t1.png", ContentType: "image/png", Data: testPNG(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, file, want string
	}{
		{"PastTwoPages", "kontext-t1.png", posted.ID},
		{"SomeoneElses", "kontext-t2.png", ""},
		{"NeverPosted", "kontext-t3.png", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := b.findPost(ctx, "10", since, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if m != nil {
				got = m.ID
			}
			if got != tc.want {
				t.Errorf("found %q, want %q", got, tc.want)
			}
		})
	}
	if got := strings.Count(strings.Join(dc.Requests(), "\n"), "GET /channels/10/messages"); got < 2 {
		t.Errorf("%d pages read, want at least 2", got)
	}
}
