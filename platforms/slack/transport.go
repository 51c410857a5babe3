package slack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
)

// tokenTransport is the adapter's only way out to the network. slack-go
// sends the token of most Web API methods as a "token" form field; this
// moves it into an "Authorization: Bearer" header (what Slack recommends),
// and refuses to send any request carrying a token to a host that is not
// Slack's (or SLACK_API_URL's). It also adds the charset slack-go leaves
// out of its JSON posts.
type tokenTransport struct {
	base    http.RoundTripper
	allowed func(*url.URL) bool
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if mt, ps, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err == nil && mt == "application/json" && ps["charset"] == "" {
		// slack-go posts JSON (views.open, apps.connections.open) as
		// "application/json"; Slack wants the charset and warns
		// missing_charset without it.
		req = req.Clone(req.Context())
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if req.Body != nil && req.Method == http.MethodPost && isForm(req.Header.Get("Content-Type")) {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		values, err := url.ParseQuery(string(body))
		if err == nil && values.Has("token") {
			token := values.Get("token")
			values.Del("token")
			body = []byte(values.Encode())
			clone := req.Clone(req.Context())
			if clone.Header.Get("Authorization") == "" && token != "" {
				clone.Header.Set("Authorization", "Bearer "+token)
			}
			req = clone
		} else {
			req = req.Clone(req.Context())
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	if (req.Header.Get("Authorization") != "" || req.URL.Query().Has("token")) && !t.allowed(req.URL) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("slack: refusing to send the bot token to %s: not a Slack host", req.URL.Host)
	}
	return t.base.RoundTrip(req)
}

func isForm(contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return mt == "application/x-www-form-urlencoded"
}

// mayReceiveToken reports whether the bot token may be sent to u: https
// on slack.com, its subdomains (files.slack.com, hooks.slack.com, a
// workspace's own host), slack-files.com, GovSlack's slack-gov.com and
// its subdomains (files.slack-gov.com), or the scheme and host of
// SLACK_API_URL (a proxy, or a fake in tests).
func (b *Bot) mayReceiveToken(u *url.URL) bool {
	if u == nil {
		return false
	}
	if b.apiBase != nil && strings.EqualFold(u.Scheme, b.apiBase.Scheme) && strings.EqualFold(u.Host, b.apiBase.Host) {
		return true
	}
	if u.Scheme != "https" || u.User != nil {
		return false
	}
	if p := u.Port(); p != "" && p != "443" {
		return false
	}
	host := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
	for _, d := range []string{"slack.com", "slack-files.com", "slack-gov.com"} {
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// checkRedirect follows a file download's redirects only to hosts that
// may see the token (Go drops the header on other hosts anyway).
func (b *Bot) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("slack: too many redirects")
	}
	if !b.mayReceiveToken(req.URL) {
		return fmt.Errorf("slack: refusing to follow a redirect to %s", req.URL.Host)
	}
	return nil
}

// Errors of file downloads, each with the sentence people see.
var (
	errNoFilesRead = &bot.UserError{Msg: "I can't read files in this workspace: the Slack app lacks the files:read scope. " +
		"Ask a workspace admin to add files:read under OAuth & Permissions and reinstall the app."}
	errForeignFile = &bot.UserError{Msg: "I can only edit images uploaded to Slack; that file is stored somewhere else."}
	errNoImageHere = &bot.UserError{Msg: "That message has no image I can edit. Use this on a message with a picture, or attach one."}
)

// pickImage returns the first image among files. Files but no image is
// bot.ErrNotImage; an image over the size limit is bot.ErrImageTooLarge,
// refused before anything is downloaded.
func pickImage(files []slackgo.File) (*slackgo.File, error) {
	if len(files) == 0 {
		return nil, errNoImageHere
	}
	for i := range files {
		f := &files[i]
		if !isImageFile(f) {
			continue
		}
		if f.Size > bot.MaxImageBytes {
			return nil, bot.ErrImageTooLarge
		}
		return f, nil
	}
	return nil, bot.ErrNotImage
}

// isStub reports whether f is a stub that only files.info completes:
// Slack Connect sends {"id": "F…", "file_access": "check_file_info"},
// without a name, type or URL.
func isStub(f *slackgo.File) bool {
	return f.ID != "" && (f.FileAccess == "check_file_info" ||
		f.Mimetype == "" && f.Filetype == "" && f.URLPrivate == "" && f.URLPrivateDownload == "")
}

// pickFile is pickImage after stubs are completed with files.info. A
// stub the bot may not read counts as no file; when no image is left,
// the reason the stub could not be read is the answer.
func (b *Bot) pickFile(ctx context.Context, files []slackgo.File) (*slackgo.File, error) {
	var out []slackgo.File
	var unread error
	for _, f := range files {
		if !isStub(&f) {
			out = append(out, f)
			continue
		}
		full, err := b.resolveStub(ctx, f.ID)
		if err != nil {
			if unread == nil {
				unread = err
			}
			continue
		}
		out = append(out, *full)
	}
	f, err := pickImage(out)
	if err != nil && unread != nil && (errors.Is(err, bot.ErrNotImage) || err == errNoImageHere) {
		return nil, unread
	}
	return f, err
}

// pickFiles is every image of files, in order, after stubs are completed
// with files.info; when there is none, the error is pickFile's. An image
// too large to use refuses the lot.
func (b *Bot) pickFiles(ctx context.Context, files []slackgo.File) ([]*slackgo.File, error) {
	var out []*slackgo.File
	for i := range files {
		f := files[i]
		if isStub(&f) {
			full, err := b.resolveStub(ctx, f.ID)
			if err != nil {
				continue
			}
			f = *full
		}
		if !isImageFile(&f) {
			continue
		}
		if f.Size > bot.MaxImageBytes {
			return nil, bot.ErrImageTooLarge
		}
		out = append(out, &f)
	}
	if len(out) == 0 {
		_, err := b.pickFile(ctx, files) // the reason, as for one file
		if err == nil {
			err = bot.ErrNotImage
		}
		return nil, err
	}
	return out, nil
}

// downloadRefs downloads files to use as an edit's further references,
// in order. More than an edit can use is refused before any download.
func (b *Bot) downloadRefs(ctx context.Context, files []*slackgo.File) ([]bot.Ref, error) {
	if 1+len(files) > bot.MaxImages {
		return nil, bot.ErrTooManyImages
	}
	var refs []bot.Ref
	for _, f := range files {
		data, err := b.download(ctx, fileURL(f))
		if err != nil {
			return nil, err
		}
		refs = append(refs, bot.Ref{Image: data})
	}
	return refs, nil
}

// stubIsImage completes a stub and reports whether it is an image; f
// becomes the full file when it can be read.
func (b *Bot) stubIsImage(ctx context.Context, f *slackgo.File) bool {
	full, err := b.resolveStub(ctx, f.ID)
	if err != nil {
		return false
	}
	*f = *full
	return isImageFile(f)
}

// Errors of files.info on a stub, each with the sentence people see.
var (
	errFileNotShared = &bot.UserError{Msg: "I can't open that file: it was not shared with me. " +
		"In a Slack Connect channel, files from another organization can be visible to you but not to apps; upload the picture here yourself, then try again."}
	errFileDenied = &bot.UserError{Msg: "Slack does not let me open that file (its owner's organization keeps it from apps). Upload the picture here yourself, then try again."}
)

// resolveStub completes a stub file with files.info.
func (b *Bot) resolveStub(ctx context.Context, id string) (*slackgo.File, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	f, err := b.fileInfo(ctx, id)
	var se slackgo.SlackErrorResponse
	switch {
	case err == nil:
		return f, nil
	case errors.As(err, &se) && (se.Err == "file_not_found" || se.Err == "file_deleted"):
		return nil, &bot.UserError{Msg: errFileNotShared.Msg, Err: fmt.Errorf("slack: files.info %s: %w", id, err)}
	case errors.As(err, &se) && (se.Err == "no_permission" || se.Err == "access_denied"):
		return nil, &bot.UserError{Msg: errFileDenied.Msg, Err: fmt.Errorf("slack: files.info %s: %w", id, err)}
	case errors.As(err, &se) && se.Err == "missing_scope":
		return nil, &bot.UserError{Msg: errNoFilesRead.Msg, Err: fmt.Errorf("slack: files.info %s: %w", id, err)}
	}
	return nil, fmt.Errorf("slack: files.info %s: %w", id, err)
}

func isImageFile(f *slackgo.File) bool {
	if strings.HasPrefix(strings.ToLower(f.Mimetype), "image/") {
		return true
	}
	switch strings.ToLower(f.Filetype) {
	case "png", "jpg", "jpeg", "gif", "webp":
		return f.Mimetype == ""
	}
	return false
}

// fileURL is the address to download f from.
func fileURL(f *slackgo.File) string {
	if f.URLPrivate != "" {
		return f.URLPrivate
	}
	return f.URLPrivateDownload
}

// download fetches a file people posted, with the bot token, from Slack's
// file hosts only, at most bot.MaxImageBytes, within downloadTimeout. An
// HTML answer means the token cannot read files (no files:read scope).
func (b *Bot) download(ctx context.Context, rawURL string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || rawURL == "" {
		return nil, &bot.UserError{Msg: "I could not read that file's address.", Err: err}
	}
	if !b.mayReceiveToken(u) {
		return nil, fmt.Errorf("%w (refused to send the token to %s)", errForeignFile, u.Host)
	}
	ctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.cfg.BotToken)
	resp, err := b.files.Do(req)
	if err != nil {
		return nil, fmt.Errorf("slack: download %s: %w", u.Host, err)
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode == http.StatusOK && mt == "text/html":
		return nil, errNoFilesRead
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized:
		return nil, &bot.UserError{Msg: "Slack would not let me download that file. Is the bot in this channel, and does the app have the files:read scope?",
			Err: fmt.Errorf("download: HTTP %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("slack: download %s: HTTP %d", u.Host, resp.StatusCode)
	}
	if resp.ContentLength > bot.MaxImageBytes {
		return nil, bot.ErrImageTooLarge
	}
	data, err := bot.ReadImage(resp.Body, resp.ContentLength)
	switch {
	case errors.Is(err, bot.ErrImageTooLarge):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("slack: download %s: %w", u.Host, err)
	}
	return data, nil
}

// transient marks err as bot.Transient when trying again may work: a 5xx
// or 429 from Slack or its upload host (a 429 with its Retry-After), one
// of the Web API's own try-again errors, or a network failure (refused,
// reset, timed out). An error of a context that was cancelled is not.
func transient(err error) error {
	if err == nil || isTransient(err) {
		return err
	}
	var rl *slackgo.RateLimitedError
	if errors.As(err, &rl) {
		return bot.Transient(err, rl.RetryAfter)
	}
	var sc slackgo.StatusCodeError
	if errors.As(err, &sc) {
		if sc.Code >= 500 || sc.Code == http.StatusTooManyRequests {
			return bot.Transient(err, 0)
		}
		return err
	}
	var se slackgo.SlackErrorResponse
	if errors.As(err, &se) {
		switch se.Err {
		case "ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout":
			return bot.Transient(err, 0)
		}
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, context.DeadlineExceeded) {
		return bot.Transient(err, 0)
	}
	return err
}

func isTransient(err error) bool {
	ok, _ := bot.IsTransient(err)
	return ok
}
