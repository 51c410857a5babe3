package slackfake

import (
	"context"
	"errors"
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

// The fake answers as Slack does for what issue 11 names: injected
// faults (5xx, 429 with Retry-After, a completion that shared the file
// and still failed), message_not_found for a deleted message,
// conversations.history, Slack Connect stubs with files.info, count and
// page of files.info, and JSON without a charset.
func TestIssue11Behaviours(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := New(Options{ShareDelay: time.Millisecond})
	defer s.Close()
	api := slackgo.New(s.Options().BotToken, slackgo.OptionAPIURL(s.APIURL()), slackgo.OptionHTTPClient(bearer{}))
	ctx := context.Background()
	ch := s.CreateChannel("c", true)

	s.Inject("chat.postMessage", Fault{Status: 503}, Fault{Status: 429, RetryAfter: 2 * time.Second})
	_, _, err := api.PostMessageContext(ctx, ch, slackgo.MsgOptionText("hi", false))
	var sc slackgo.StatusCodeError
	if !errors.As(err, &sc) || sc.Code != 503 {
		t.Errorf("first post: %v, want a 503", err)
	}
	_, _, err = api.PostMessageContext(ctx, ch, slackgo.MsgOptionText("hi", false))
	var rl *slackgo.RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 2*time.Second {
		t.Errorf("second post: %v, want a 429 asking for 2s", err)
	}
	_, ts, err := api.PostMessageContext(ctx, ch, slackgo.MsgOptionText("hi", false))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := api.DeleteMessageContext(ctx, ch, ts); err != nil {
		t.Fatal(err)
	}
	_, _, err = api.DeleteMessageContext(ctx, ch, ts)
	var se slackgo.SlackErrorResponse
	if !errors.As(err, &se) || se.Err != "message_not_found" {
		t.Errorf("second delete: %v, want message_not_found", err)
	}
	if n := s.Deletes(ch, ts); n != 2 {
		t.Errorf("Deletes: %d, want 2", n)
	}

	// A completion that shares the file and answers 500.
	s.Inject("files.completeUploadExternal", Fault{Status: 500, Applied: true})
	_, err = api.UploadFileContext(ctx, slackgo.UploadFileParameters{Reader: strings.NewReader("abc"), FileSize: 3, Filename: "a.txt", Channel: ch})
	if !errors.As(err, &sc) || sc.Code != 500 {
		t.Errorf("upload: %v, want a 500", err)
	}
	if !s.Wait(2*time.Second, func() bool { return len(s.TopLevel(ch)) == 1 }) {
		t.Fatal("the failed completion did not share the file")
	}
	if _, _, err := api.PostMessageContext(ctx, ch, slackgo.MsgOptionText("later", false)); err != nil {
		t.Fatal(err)
	}
	res, err := api.GetConversationHistoryContext(ctx, &slackgo.GetConversationHistoryParameters{ChannelID: ch, Limit: 1})
	if err != nil || len(res.Messages) != 1 || !res.HasMore || res.Messages[0].Text != "later" {
		t.Fatalf("history: %v %v, want the newest message and more", res, err)
	}
	res, err = api.GetConversationHistoryContext(ctx, &slackgo.GetConversationHistoryParameters{ChannelID: ch, Limit: 1, Cursor: res.ResponseMetaData.NextCursor})
	if err != nil || len(res.Messages) != 1 || res.HasMore || len(res.Messages[0].Files) != 1 || res.Messages[0].Files[0].Name != "a.txt" {
		t.Errorf("history, page 2: %v %v, want the file's message, the last", res, err)
	}
	if _, err = api.GetConversationHistoryContext(ctx, &slackgo.GetConversationHistoryParameters{ChannelID: ch, Oldest: "x"}); err == nil {
		t.Error("history with a bad oldest: no error")
	}

	// A stub reaches events without name or URL; files.info has it.
	stub := s.StubFile("U1", "p.png", "image/png", []byte("png"), "")
	hidden := s.StubFile("U1", "q.png", "image/png", []byte("png"), "file_not_found")
	msg := s.Say("U1", ch, "", "look", stub)
	s.mu.Lock()
	files := s.messageJSON(s.findMsg(ch, msg.TS))["files"].([]map[string]any)
	s.mu.Unlock()
	if files[0]["file_access"] != "check_file_info" || files[0]["url_private"] != nil || files[0]["name"] != nil {
		t.Errorf("stub in the event: %v", files[0])
	}
	if f, _, _, err := api.GetFileInfoContext(ctx, stub.ID, 100, 1); err != nil || f.Name != "p.png" || f.URLPrivate == "" {
		t.Errorf("files.info of a stub: %+v %v", f, err)
	}
	if _, _, _, err := api.GetFileInfoContext(ctx, hidden.ID, 100, 1); !errors.As(err, &se) || se.Err != "file_not_found" {
		t.Errorf("files.info of a file not shared with the bot: %v", err)
	}
	before := len(s.Problems())
	_, _, _, _ = api.GetFileInfoContext(ctx, stub.ID, 0, 0)
	if p := s.Problems()[before:]; len(p) != 2 || !strings.Contains(p[0], "count") {
		t.Errorf("files.info count=0&page=0: problems %q", p)
	}

	// JSON without charset: read, with Slack's warning, and recorded.
	before = len(s.Problems())
	req, _ := http.NewRequest(http.MethodPost, s.APIURL()+"auth.test", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Options().BotToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"warning":"missing_charset"`) || len(s.Problems()) != before+1 {
		t.Errorf("JSON without charset: %s, problems %q", body, s.Problems()[before:])
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestUploadSeveralFiles: one files.completeUploadExternal shares several
// uploaded files in one message; more than MaxFilesPerMessage, a file
// listed twice, or a file completed a second time is refused.
func TestUploadSeveralFiles(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	ch := s.CreateChannel("c", true)
	api := slackgo.New(s.Options().BotToken, slackgo.OptionAPIURL(s.APIURL()), slackgo.OptionHTTPClient(&bearer{}))
	ctx := context.Background()
	upload := func(n int) []slackgo.FileSummary {
		var out []slackgo.FileSummary
		for i := range n {
			name := "f" + strconv.Itoa(i) + ".png"
			u, err := api.GetUploadURLExternalContext(ctx, slackgo.GetUploadURLExternalParameters{FileName: name, FileSize: 4})
			if err != nil {
				t.Fatal(err)
			}
			if err := api.UploadToURL(ctx, slackgo.UploadToURLParameters{UploadURL: u.UploadURL, Reader: strings.NewReader("data"), Filename: name}); err != nil {
				t.Fatal(err)
			}
			out = append(out, slackgo.FileSummary{ID: u.FileID, Title: name})
		}
		return out
	}
	four := upload(4)
	if _, err := api.CompleteUploadExternalContext(ctx, slackgo.CompleteUploadExternalParameters{Files: four, Channel: ch}); err != nil {
		t.Fatal(err)
	}
	if !s.Wait(5*time.Second, func() bool { return len(s.TopLevel(ch)) == 1 }) {
		t.Fatal("the files were never shared")
	}
	if got := len(s.TopLevel(ch)[0].Files); got != 4 {
		t.Errorf("files in the message: %d, want 4", got)
	}
	for _, tc := range []struct {
		name  string
		files []slackgo.FileSummary
	}{
		{"Eleven", upload(MaxFilesPerMessage + 1)},
		{"ListedTwice", func() []slackgo.FileSummary { f := upload(1); return append(f, f[0]) }()},
		{"CompletedTwice", four[:1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := api.CompleteUploadExternalContext(ctx, slackgo.CompleteUploadExternalParameters{Files: tc.files, Channel: ch})
			var se slackgo.SlackErrorResponse
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a Slack error", err)
			}
		})
	}
	if p := s.Problems(); len(p) != 3 {
		t.Errorf("problems: %q, want one per refusal", p)
	}
}
