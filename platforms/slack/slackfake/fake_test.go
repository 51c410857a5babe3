package slackfake

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	slackgo "github.com/slack-go/slack"
	"go.uber.org/goleak"
)

// Sign produces what slack-go's verifier (and so Slack) accepts.
func TestSignMatchesSlackGo(t *testing.T) {
	body := []byte("token=x&command=%2Fimagine&text=a+fox")
	now := time.Now()
	h := http.Header{}
	h.Set("X-Slack-Request-Timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("X-Slack-Signature", Sign("s3cret", now, body))
	sv, err := slackgo.NewSecretsVerifier(h, "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	sv.Write(body)
	if err := sv.Ensure(); err != nil {
		t.Errorf("slack-go refused the fake's signature: %v", err)
	}
}

// Every Web API call needs the bearer token in the header; the token in
// the body is flagged; unknown methods are flagged.
func TestAuthIsStrict(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := New(Options{})
	defer s.Close()
	post := func(method, auth string, form url.Values) string {
		req, _ := http.NewRequest(http.MethodPost, s.APIURL()+method, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := post("auth.test", "", nil); !strings.Contains(got, "not_authed") {
		t.Errorf("no header: %s", got)
	}
	if got := post("auth.test", "Bearer "+s.Options().AppToken, nil); !strings.Contains(got, "invalid_auth") {
		t.Errorf("app token on a bot method: %s", got)
	}
	if got := post("auth.test", "Bearer "+s.Options().BotToken, nil); !strings.Contains(got, `"ok":true`) {
		t.Errorf("good token: %s", got)
	}
	if got := post("apps.connections.open", "Bearer "+s.Options().BotToken, nil); !strings.Contains(got, "invalid_auth") {
		t.Errorf("bot token on apps.connections.open: %s", got)
	}
	post("auth.test", "Bearer "+s.Options().BotToken, url.Values{"token": {s.Options().BotToken}})
	post("users.list", "Bearer "+s.Options().BotToken, nil)
	probs := strings.Join(s.Problems(), "\n")
	for _, want := range []string{"no Authorization header", "wrong token", "sent in the request body", "unknown or unexpected Web API method users.list"} {
		if !strings.Contains(probs, want) {
			t.Errorf("problems lack %q:\n%s", want, probs)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

// url_private serves the bytes with the bot token and Slack's HTML
// sign-in page without it.
func TestFileDownloads(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	f := s.UploadFile("U1", "a.png", "image/png", []byte("\x89PNG fake"))
	get := func(auth string) (string, string) {
		req, _ := http.NewRequest(http.MethodGet, f.URLPrivate, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.Header.Get("Content-Type"), string(b)
	}
	if ct, body := get(""); !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, "Sign in") {
		t.Errorf("without a token: %s %q", ct, body)
	}
	if ct, body := get("Bearer " + s.Options().BotToken); ct != "image/png" || body != "\x89PNG fake" {
		t.Errorf("with the token: %s %q", ct, body)
	}
	s.SetFilesRead(false)
	if ct, _ := get("Bearer " + s.Options().BotToken); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("without files:read: %s", ct)
	}
	if d := s.Downloads(); len(d) != 3 || d[0].Auth != "" || d[1].FileID != f.ID {
		t.Errorf("downloads %+v", d)
	}
	http.DefaultClient.CloseIdleConnections()
}

// The upload flow of slack-go works against the fake, and the file is
// shared in its thread a moment later, visible in files.info.
func TestUploadShares(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	ch := s.CreateChannel("c", true)
	root := s.Say("U1", ch, "", "hello")
	api := slackgo.New(s.Options().BotToken, slackgo.OptionAPIURL(s.APIURL()), slackgo.OptionHTTPClient(&bearer{}))
	f, err := api.UploadFileContext(context.Background(), slackgo.UploadFileParameters{
		Reader: strings.NewReader("data"), FileSize: 4, Filename: "x.png", Channel: ch, ThreadTimestamp: root.TS})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Thread(ch, root.TS)) != 1 {
		t.Error("the file was shared before completeUploadExternal answered")
	}
	if !s.Wait(5*time.Second, func() bool { return len(s.Thread(ch, root.TS)) == 2 }) {
		t.Fatal("the file was never shared")
	}
	info, _, _, err := api.GetFileInfo(f.ID, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	shares := info.Shares.Public[ch]
	if len(shares) != 1 || shares[0].ThreadTs != root.TS || shares[0].Ts != s.Thread(ch, root.TS)[1].TS {
		t.Errorf("shares %+v", info.Shares)
	}
	if p := s.Problems(); len(p) != 0 {
		t.Errorf("problems: %q", p)
	}
}

// bearer moves slack-go's form token into the header, as the adapter's
// transport does.
type bearer struct{}

func (bearer) Do(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" && r.Body != nil && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		b, _ := io.ReadAll(r.Body)
		v, _ := url.ParseQuery(string(b))
		r.Header.Set("Authorization", "Bearer "+v.Get("token"))
		v.Del("token")
		enc := v.Encode()
		r.Body = io.NopCloser(strings.NewReader(enc))
		r.ContentLength = int64(len(enc))
	}
	return http.DefaultClient.Do(r)
}
