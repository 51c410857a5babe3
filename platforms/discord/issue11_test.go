package discord

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bwmarrin/discordgo"
)

func restErr(status, code int) error {
	return &discordgo.RESTError{Response: &http.Response{StatusCode: status}, Message: &discordgo.APIErrorMessage{Code: code}}
}

func TestTemporary(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"Nil", nil, false},
		{"RateLimited", &discordgo.RateLimitError{RateLimit: &discordgo.RateLimit{TooManyRequests: &discordgo.TooManyRequests{}}}, true},
		{"ServerError", restErr(500, 0), true},
		{"BadGateway", restErr(502, 0), true},
		{"Unavailable", fmt.Errorf("post: %w", restErr(503, 0)), true},
		{"TooLarge", restErr(413, codeTooLarge), false},
		{"UnknownChannel", restErr(404, codeUnknownChannel), false},
		{"MissingPermissions", restErr(403, codeMissingPermissions), false},
		{"Network", &url.Error{Op: "Post", URL: "https://discord.com", Err: errors.New("connection reset")}, true},
		{"Cancelled", context.Canceled, false},
		{"Other", errors.New("discord: could not make the image fit"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Temporary(tc.err); got != tc.want {
				t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
			}
			if tc.err == nil {
				return
			}
			var tmp interface{ Temporary() bool }
			if !errors.As(classify(tc.err), &tmp) || tmp.Temporary() != tc.want {
				t.Errorf("classify(%v) does not say Temporary() = %v", tc.err, tc.want)
			}
			if !errors.Is(classify(tc.err), tc.err) {
				t.Error("classify hides the error it wraps")
			}
		})
	}
}

func TestThreadErrors(t *testing.T) {
	for _, tc := range []struct {
		name         string
		err          error
		gone, denied bool
		tooLargeToo  bool
	}{
		{"Deleted", restErr(404, codeUnknownChannel), true, false, false},
		{"ArchivedLocked", restErr(400, codeThreadArchived), true, false, false},
		{"Locked", restErr(403, codeThreadLocked), true, false, false},
		{"Denied", restErr(403, codeMissingPermissions), false, true, false},
		{"NoAccess", restErr(403, codeMissingAccess), false, true, false},
		{"TooLarge", restErr(413, codeTooLarge), false, false, true},
		{"UnknownMessage", restErr(404, codeUnknownMessage), false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := threadGone(tc.err); got != tc.gone {
				t.Errorf("threadGone = %v, want %v", got, tc.gone)
			}
			if got := threadsDenied(tc.err); got != tc.denied {
				t.Errorf("threadsDenied = %v, want %v", got, tc.denied)
			}
			if got := tooLarge(tc.err); got != tc.tooLargeToo {
				t.Errorf("tooLarge = %v, want %v", got, tc.tooLargeToo)
			}
		})
	}
}

func TestEditMsgID(t *testing.T) {
	id := editMsgID("80000000000000001000", "12345678901234567890")
	if len(id) > 100 {
		t.Errorf("custom id %q is longer than 100", id)
	}
	for _, tc := range []struct {
		in      string
		msg, ch string
		ok      bool
	}{
		{id, "12345678901234567890", "80000000000000001000", true},
		{"k:editmsg:42", "42", "", true}, // made before the channel was carried
		{"k:editmsg:42:x", "", "", false},
		{"k:editmsg:abc:1", "", "", false},
		{"k:edit:42:1", "", "", false},
		{"k:editmsg:42:1:2", "", "", false},
	} {
		msg, ch, ok := parseEditMsgID(tc.in)
		if msg != tc.msg || ch != tc.ch || ok != tc.ok {
			t.Errorf("parseEditMsgID(%q) = %q %q %v, want %q %q %v", tc.in, msg, ch, ok, tc.msg, tc.ch, tc.ok)
		}
	}
	if a, arg, err := parseCustomID(id); err != nil || a != actEditMsg || arg != "12345678901234567890" {
		t.Errorf("parseCustomID(%q) = %q %q %v", id, a, arg, err)
	}
}

func noisePNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range img.Pix {
		img.Pix[i] = uint8(rng.Uint32())
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestFit(t *testing.T) {
	data := noisePNG(t, 600, 400)
	small := &outFile{Name: "kontext-i1.png", ContentType: "image/png", Data: data}
	if got, err := fit(small, len(data)+uploadMargin); err != nil || got != small {
		t.Errorf("a file that fits was changed: %v", err)
	}
	for _, limit := range []int{len(data)/2 + uploadMargin, 40<<10 + uploadMargin} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			got, err := fit(small, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Data) > limit-uploadMargin || got.ContentType != "image/jpeg" || !strings.HasSuffix(got.Name, "kontext-i1.jpg") {
				t.Errorf("got %s %s of %d bytes, want a JPEG of at most %d", got.Name, got.ContentType, len(got.Data), limit-uploadMargin)
			}
			img, err := jpeg.Decode(bytes.NewReader(got.Data))
			if err != nil {
				t.Fatal(err)
			}
			if b := img.Bounds(); math.Abs(float64(b.Dx())/float64(b.Dy())-1.5) > 0.02 {
				t.Errorf("the copy is %v: the shape changed", b)
			}
			if !bytes.Equal(small.Data, data) {
				t.Error("fit changed the original's bytes")
			}
		})
	}
	if _, err := fit(&outFile{Name: "x.png", Data: bytes.Repeat([]byte{7}, 2*uploadMargin)}, uploadMargin+10); err == nil {
		t.Error("bytes that are no image were posted anyway")
	}
}

func TestUploadLimit(t *testing.T) {
	b := &Bot{uploadLimits: map[string]int{}}
	if got := b.uploadLimit("g1", 0); got != minUploadLimit {
		t.Errorf("unknown server: %d, want the default %d", got, minUploadLimit)
	}
	b.noteUploadLimit("g1", 50<<20)
	b.noteUploadLimit("g2", 8<<20) // below Discord's default: the floor holds
	for _, tc := range []struct {
		guild string
		known int
		want  int
	}{{"g1", 0, 50 << 20}, {"g2", 0, minUploadLimit}, {"g1", 100 << 20, 100 << 20}, {"", 0, minUploadLimit}} {
		if got := b.uploadLimit(tc.guild, tc.known); got != tc.want {
			t.Errorf("uploadLimit(%q, %d) = %d, want %d", tc.guild, tc.known, got, tc.want)
		}
	}
}

// TestLimitsHidesRateLimitHeadersOf429: discordgo would sleep, without a
// context, as long as a 429's X-RateLimit-Reset-After says before the
// route's next request; the transport hides those headers on 429s only.
func TestLimitsHidesRateLimitHeadersOf429(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset-After", "400")
		w.Header().Set("X-RateLimit-Global", "true")
		if r.URL.Path == "/limited" {
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: &limits{next: http.DefaultTransport}}
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		path string
		kept bool
	}{{"/limited", false}, {"/ok", true}} {
		resp, err := c.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-RateLimit-Reset-After") != ""; got != tc.kept {
			t.Errorf("%s: reset header kept %v, want %v", tc.path, got, tc.kept)
		}
	}
}

// TestRetryWaitsWhatDiscordAsks: a 429's retry_after is waited in full
// (not capped at 30 s), on the adapter's wait; a wait that would outlast
// the caller's deadline is not started, and the 429 is returned.
func TestRetryWaitsWhatDiscordAsks(t *testing.T) {
	limited := &discordgo.RateLimitError{RateLimit: &discordgo.RateLimit{TooManyRequests: &discordgo.TooManyRequests{RetryAfter: 400 * time.Second}}}
	for _, tc := range []struct {
		name     string
		deadline time.Duration // 0: none
		wantErr  bool
		waits    []time.Duration
	}{
		{"NoDeadline", 0, false, []time.Duration{400 * time.Second}},
		{"LongDeadline", time.Hour, false, []time.Duration{400 * time.Second}},
		{"ShortDeadline", time.Minute, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var waits []time.Duration
			b := &Bot{log: slog.New(slog.DiscardHandler), now: time.Now,
				wait: func(_ context.Context, d time.Duration) error { waits = append(waits, d); return nil }}
			ctx := context.Background()
			if tc.deadline > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.deadline)
				defer cancel()
			}
			calls := 0
			err := b.retry(ctx, "post", false, func([]discordgo.RequestOption) error {
				calls++
				if calls == 1 {
					return limited
				}
				return nil
			})
			if (err != nil) != tc.wantErr || !slices.Equal(waits, tc.waits) {
				t.Errorf("got err %v after waits %v, want error %v after %v", err, waits, tc.wantErr, tc.waits)
			}
			if tc.wantErr && !Temporary(err) {
				t.Errorf("the 429 handed back (%v) is not temporary", err)
			}
		})
	}
}
