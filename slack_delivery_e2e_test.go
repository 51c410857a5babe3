package main

// End-to-end tests of issue 11's Slack items through run: posting that
// retries in the process and never posts twice, Slack Connect stub
// files, one status delete, ssl_check, repeated deliveries, and a
// restart in the middle of a burst.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/slack/slackfake"
	"kontextbot/store"
)

// waitLog waits until the running bot's log has text (polling: the log
// is not the fake's to signal).
func (e *slEnv) waitLog(text string) {
	e.t.Helper()
	for deadline := time.Now().Add(slWait); !strings.Contains(e.logs.String(), text); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %q in the log", text)
		}
	}
}

// statusText returns every version of the bot's status messages in
// channel's top level (deleted ones included) mentioning prompt.
func (e *slEnv) statusTexts(channel, prompt string) []string {
	var out []string
	for _, m := range e.slack.AllMessages(channel) {
		if m.BotID == "" || len(m.Files) != 0 || !strings.Contains(string(m.Blocks), prompt) && !strings.Contains(m.Text, prompt) {
			continue
		}
		out = append(out, m.Text)
		for _, ed := range m.Edits {
			out = append(out, ed.Text)
		}
	}
	return out
}

// statusMessage returns the bot's status message (deleted or not) about
// prompt in channel's top level.
func (e *slEnv) statusMessage(channel, prompt string) (slackfake.Message, bool) {
	for _, m := range e.slack.AllMessages(channel) {
		if m.BotID != "" && len(m.Files) == 0 && strings.Contains(string(m.Blocks), prompt) {
			return m, true
		}
	}
	return slackfake.Message{}, false
}

// TestSlackPostRetriesInProcess: one failure of any step of Slack's
// upload (a 503 from the upload URL, a 500 from
// files.getUploadURLExternal, a reset connection, a 429, a 500 from
// files.completeUploadExternal after it did share the file) no longer
// waits for a restart: the image is posted in the process, exactly once,
// the status line said posting was delayed, and it is charged once.
func TestSlackPostRetriesInProcess(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", nil)
	for _, c := range []struct {
		name   string
		target string
		fault  slackfake.Fault
	}{
		{"UploadURL503", slackfake.Upload, slackfake.Fault{Status: http.StatusServiceUnavailable}},
		{"GetUploadURL500", "files.getUploadURLExternal", slackfake.Fault{Status: http.StatusInternalServerError}},
		{"UploadConnectionReset", slackfake.Upload, slackfake.Fault{Reset: true}},
		// slack-go cannot resend a streamed upload: the core waits the
		// Retry-After.
		{"UploadURL429", slackfake.Upload, slackfake.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second}},
		{"CompleteRateLimited", "files.completeUploadExternal", slackfake.Fault{Status: http.StatusTooManyRequests, RetryAfter: time.Second}},
		{"CompleteSharedThen500", "files.completeUploadExternal", slackfake.Fault{Status: http.StatusInternalServerError, Applied: true}},
		{"CompleteSharedThenReset", "files.completeUploadExternal", slackfake.Fault{Reset: true, Applied: true}},
	} {
		e.run(t, c.name, func(t *testing.T) {
			ch := e.slack.CreateChannel(strings.ToLower(c.name), true)
			creates := e.kx.Stats().Creates
			// The 429 is retried by slack-go itself (Retry-After) as well;
			// three of them reach the core.
			faults := []slackfake.Fault{c.fault}
			slackgoRetries := c.fault.Status == http.StatusTooManyRequests && c.target != slackfake.Upload
			if slackgoRetries {
				faults = []slackfake.Fault{c.fault, c.fault, c.fault, c.fault}
			}
			e.slack.Inject(c.target, faults...)
			prompt := "flaky " + c.name
			e.acked(e.slack.Slash(slAda, ch, "/imagine", prompt))
			root := e.waitImages(ch, "", 1)[0]
			e.wait("the status message to go", func() bool { return len(e.statuses(ch, "")) == 0 })
			if p := e.prov(root); p.Prompt != prompt {
				t.Errorf("posted %q", p.Prompt)
			}
			if got := e.kx.Stats().Creates - creates; got != 1 {
				t.Errorf("%d predictions, want 1", got)
			}
			for _, m := range e.slack.Ephemerals(slAda) {
				if strings.Contains(m.Text, "restart") {
					t.Errorf("told %q, although the image was posted in this run", m.Text)
				}
			}
			if !slackgoRetries {
				delayed := false
				for _, line := range e.statusTexts(ch, prompt) {
					delayed = delayed || strings.Contains(line, "Posting is delayed; retrying")
				}
				if !delayed {
					t.Errorf("the status never said posting was delayed: %q", e.statusTexts(ch, prompt))
				}
			}
			// The post was recorded: its thread continues the picture.
			e.slack.Say(slAda, ch, root.TS, "make it blue")
			if p := e.prov(e.waitImages(ch, root.TS, 2)[1]); p.InputSHA256 != slSHA(e.data(root)) {
				t.Errorf("the follow-up edited %s, want the posted image", p.InputSHA256)
			}
			// Whatever the failure, one image. (A post returns once its
			// share is seen, and a share from the failed attempt shows a
			// moment after it: both are in by the time the follow-up is.)
			if imgs := e.images(ch, ""); len(imgs) != 1 {
				t.Errorf("%d images in the channel, want 1", len(imgs))
			}
		})
	}
	e.checkClean()
}

// TestSlackPostHeldThenRestart: when posting keeps failing past
// KONTEXT_POST_RETRY the status line says the image waits for the next
// start (and stays); after the restart the image is posted once, and the
// status message is deleted once (chat.delete is called once for it).
// With a completion that did share the file before failing, the next
// start finds that post and posts nothing again.
func TestSlackPostHeldThenRestart(t *testing.T) {
	slNoLeaks(t)
	for _, c := range []struct {
		name   string
		target string
		fault  slackfake.Fault
		retry  string
	}{
		{"UploadDown", slackfake.Upload, slackfake.Fault{Status: http.StatusServiceUnavailable}, "1500ms"},
		// No retries in the process: the restart must find the post the
		// ambiguous completion made, by the image's file name.
		{"CompleteSharedThen502", "files.completeUploadExternal", slackfake.Fault{Status: http.StatusBadGateway, Applied: true}, "0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := slStart(t, "socket", map[string]string{"KONTEXT_POST_RETRY": c.retry})
			ch := e.slack.CreateChannel("held", true)
			faults := make([]slackfake.Fault, 100)
			for i := range faults {
				faults[i] = c.fault
			}
			e.slack.Inject(c.target, faults...)
			e.acked(e.slack.Slash(slAda, ch, "/imagine", "a held picture"))
			held := func() bool {
				for _, line := range e.statusTexts(ch, "a held picture") {
					if strings.Contains(line, "try again when I restart") {
						return true
					}
				}
				return false
			}
			e.wait("the requester to hear that the image waits for a restart", func() bool {
				for _, m := range e.slack.Ephemerals(slAda) {
					if strings.Contains(m.Text, "try again when I restart") {
						return true
					}
				}
				return held()
			})
			status, ok := e.statusMessage(ch, "a held picture")
			if !ok {
				t.Fatal("no status message was posted")
			}
			if status.Deleted || !held() {
				t.Errorf("the status message was removed (%v) or does not say the image waits (%q); it should say so until the image is posted",
					status.Deleted, e.statusTexts(ch, "a held picture"))
			}
			if c.fault.Applied {
				// The completion did share the file, a moment later (a real
				// restart takes longer than that).
				e.waitImages(ch, "", 1)
			}
			e.checkClean() // every event so far acknowledged before the stop
			e.stopBot()
			e.slack.ClearFaults()
			shared := len(e.images(ch, ""))
			e.startBot()
			// The job ends once its image is posted and its status removed.
			e.waitLog("outcome=delivered")
			if m, _ := e.slack.Message(ch, status.TS); !m.Deleted {
				t.Error("the status message was not removed")
			}
			if imgs := e.images(ch, ""); len(imgs) != 1 {
				t.Errorf("%d images after the restart (%d before it), want 1", len(imgs), shared)
			}
			if n := e.slack.Deletes(ch, status.TS); n != 1 {
				t.Errorf("chat.delete called %d times for the status message, want 1", n)
			}
			if e.kx.Stats().Creates != 1 {
				t.Errorf("%d predictions, want 1", e.kx.Stats().Creates)
			}
			e.checkClean()
		})
	}
}

// TestSlackConnectStubFiles: files that reach the bot as Slack Connect
// stubs are looked up with files.info; one the bot cannot read, or too
// big, gets a sentence that says why.
func TestSlackConnectStubFiles(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", nil)
	ch := e.slack.CreateChannel("connect", true)
	photo := slPNG(t, 72, 48, 9)

	e.run(t, "MentionWithStub", func(t *testing.T) {
		f := e.slack.StubFile(slBob, "partner.png", "image/png", photo, "")
		msg := e.slack.Say(slBob, ch, "", e.slack.Mention("add a hat"), f)
		if p := e.prov(e.waitImages(ch, msg.TS, 1)[0]); p.InputSHA256 != slSHA(photo) || p.Prompt != "add a hat" {
			t.Errorf("edit of a stub file: %+v, want an edit of %s", p, slSHA(photo))
		}
	})
	e.run(t, "ThreadMessageWithStub", func(t *testing.T) {
		root := e.imagine(slAda, ch, "a garden")
		f := e.slack.StubFile(slBob, "their.png", "image/png", photo, "")
		e.slack.Say(slBob, ch, root.TS, "put this in the garden", f)
		// The thread's image first, then the file (issue 13).
		if p, want := e.prov(e.waitImages(ch, root.TS, 2)[1]), []string{slSHA(e.data(root)), slSHA(photo)}; !slices.Equal(p.Inputs, want) {
			t.Errorf("thread edit with a stub file: inputs %v, want %v", p.Inputs, want)
		}
	})
	e.run(t, "ShortcutOnStub", func(t *testing.T) {
		f := e.slack.StubFile(slBob, "shortcut.png", "image/png", photo, "")
		post := e.slack.Say(slBob, ch, "", "from our partners", f)
		views := len(e.slack.Views())
		env, err := e.slack.Shortcut(slAda, post, "kontext_edit_image")
		if err != nil {
			t.Fatal(err)
		}
		e.acked(env)
		e.wait("the edit modal", func() bool { return len(e.slack.Views()) > views })
		vs := e.slack.Views()
		e.acked(e.slack.Submit(vs[len(vs)-1], map[string]map[string]string{"prompt": {"prompt": "in watercolor"}}))
		if p := e.prov(e.waitImages(ch, post.TS, 1)[0]); p.InputSHA256 != slSHA(photo) {
			t.Errorf("shortcut on a stub file: %+v", p)
		}
	})
	for _, c := range []struct {
		name, infoErr string
		data          []byte
		want          string
	}{
		{"NotShared", "file_not_found", photo, "it was not shared with me"},
		{"NoPermission", "no_permission", photo, "Slack does not let me open that file"},
		{"TooBig", "", append(append([]byte(nil), photo...), make([]byte, 21<<20)...), "too large"},
	} {
		e.run(t, c.name, func(t *testing.T) {
			creates := e.kx.Stats().Creates
			f := e.slack.StubFile(slBob, strings.ToLower(c.name)+".png", "image/png", c.data, c.infoErr)
			e.slack.Say(slBob, ch, "", e.slack.Mention("make it pop"), f)
			e.waitEphemeral(slBob, c.want)
			if got := e.kx.Stats().Creates - creates; got != 0 {
				t.Errorf("%d predictions for a file the bot cannot use", got)
			}
		})
	}
	e.run(t, "External", func(t *testing.T) {
		f := e.slack.ExternalFile(slBob, "drive.png", "image/png", "https://drive.example.com/drive.png", 200)
		f.Stub = true
		e.slack.Say(slBob, ch, "", e.slack.Mention("make it pop"), f)
		e.waitEphemeral(slBob, "only edit images uploaded to Slack")
	})
	e.checkClean()
}

// TestSlackSSLCheck: Slack's ssl_check to the command URL, unsigned or
// signed, is answered 200 and does nothing else.
func TestSlackSSLCheck(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "http", nil)
	base := "http://" + e.addr
	calls := len(e.slack.Calls())
	status, err := e.slack.SSLCheck(base)
	if err != nil || status != http.StatusOK {
		t.Errorf("unsigned ssl_check: %d %v, want 200", status, err)
	}
	body := []byte("ssl_check=1&token=fake-verification-token")
	status, _, err = e.slack.SignedRequest(base+"/slack/commands", "application/x-www-form-urlencoded", body, time.Now(), "")
	if err != nil || status != http.StatusOK {
		t.Errorf("signed ssl_check: %d %v, want 200", status, err)
	}
	// A command after them is handled; nothing came of the checks.
	ch := e.slack.CreateChannel("ssl", true)
	e.acked(e.slack.Slash(slAda, ch, "/usage", ""))
	e.waitEphemeral(slAda, "You have made")
	for _, c := range e.slack.Calls()[calls:] {
		if c.Method == "chat.postEphemeral" && c.Params["channel"] != ch {
			t.Errorf("an ssl_check led to chat.postEphemeral %v", c.Params)
		}
	}
	e.checkClean()
}

// TestSlackRepeatedDeliveries: the same signed slash command (same
// trigger_id) delivered twice, and the same button press twice, run
// once, also when the repeat comes after a restart.
func TestSlackRepeatedDeliveries(t *testing.T) {
	slNoLeaks(t)
	for _, mode := range []string{"socket", "http"} {
		t.Run(mode, func(t *testing.T) {
			e := slStart(t, mode, nil)
			ch := e.slack.CreateChannel("twice", true)
			cmd := e.slack.Slash(slAda, ch, "/imagine", "only once --seed 4")
			e.acked(cmd)
			e.acked(e.slack.Resend(cmd))
			root := e.waitImages(ch, "", 1)[0]
			// An edit first: once it is posted, the thread is the picture's.
			e.slack.Say(slAda, ch, root.TS, "make it red")
			red := e.waitImages(ch, root.TS, 2)[1]
			click, err := e.slack.Click(slBob, red, "kontext_reroll")
			if err != nil {
				t.Fatal(err)
			}
			e.acked(click)
			e.acked(e.slack.Resend(click))
			e.waitImages(ch, root.TS, 3)

			e.stopBot()
			e.startBot()
			e.acked(e.slack.Resend(cmd))
			e.acked(e.slack.Resend(click))
			// Markers behind the repeats (events of one channel, and of one
			// thread, are handled in order), so the repeats had their chance.
			e.slack.Say(slAda, ch, root.TS, "make it green")
			e.waitImages(ch, root.TS, 4)
			e.imagine(slAda, ch, "a marker")
			if imgs := e.images(ch, ""); len(imgs) != 2 {
				t.Errorf("%d pictures in the channel, want 2 (the command once, and the marker)", len(imgs))
			}
			if imgs := e.images(ch, root.TS); len(imgs) != 4 {
				t.Errorf("%d images in the thread, want 4 (root, red, one reroll, green)", len(imgs))
			}
			if got := e.kx.Stats().Creates; got != 5 {
				t.Errorf("%d predictions, want 5", got)
			}
			e.stopBot()
			day := slUsage(t, e)
			if day != 5 {
				t.Errorf("charged %d images, want 5", day)
			}
			e.startBot()
			e.checkClean()
		})
	}
}

// slUsage reads the workspace's images this month from the stopped bot's
// store.
func slUsage(t *testing.T, e *slEnv) int {
	t.Helper()
	db, err := store.Open(e.env["KONTEXT_DB"], store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, month, err := db.Usage(context.Background(), "slack", e.slack.Options().TeamID, slAda, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return month.Images
}

// TestSlackRestartMidBurst: a burst of commands, the bot stopped while
// some run, some wait and some are done, then started again on the same
// store: every accepted job is delivered exactly once and charged once,
// and no prediction is made twice.
func TestSlackRestartMidBurst(t *testing.T) {
	slNoLeaks(t)
	const n = 8
	e := slStart(t, "socket", map[string]string{"KONTEXT_SLOTS": "2", "KONTEXT_USER_WAITING": "20", "SHUTDOWN_TIMEOUT": "300ms"})
	chans := []string{e.slack.CreateChannel("burst-a", true), e.slack.CreateChannel("burst-b", true)}
	delays := make([]kontexttest.Fault, n)
	for i := range delays {
		delays[i] = kontexttest.Fault{Delay: time.Duration(300+100*i) * time.Millisecond}
	}
	e.kx.Inject(kontexttest.Create, delays...)
	prompts := map[string]string{} // prompt -> channel
	for i := range n {
		ch := chans[i%2]
		p := fmt.Sprintf("burst picture %d", i)
		prompts[p] = ch
		e.acked(e.slack.Slash(slAda, ch, "/imagine", p))
	}
	e.wait("every command accepted (a status message each)", func() bool {
		for p, ch := range prompts {
			if _, ok := e.statusMessage(ch, p); !ok {
				return false
			}
		}
		return true
	})
	e.wait("a first image", func() bool { return len(e.images(chans[0], ""))+len(e.images(chans[1], "")) >= 1 })
	e.stopBot()
	before := len(e.images(chans[0], "")) + len(e.images(chans[1], ""))
	e.startBot()
	got := map[string]int{}
	e.wait(fmt.Sprintf("all %d images", n), func() bool { return len(e.images(chans[0], ""))+len(e.images(chans[1], "")) >= n })
	// Each job's status goes once its post returned (which waits for the
	// post's share): then every delivery, and any second one, is in.
	e.wait("every status message to go", func() bool { return len(e.statuses(chans[0], ""))+len(e.statuses(chans[1], "")) == 0 })
	for _, ch := range chans {
		for _, m := range e.images(ch, "") {
			p := e.prov(m)
			got[p.Prompt]++
			if prompts[p.Prompt] != ch {
				t.Errorf("%q posted in %s, want %s", p.Prompt, ch, prompts[p.Prompt])
			}
		}
	}
	for p := range prompts {
		if got[p] != 1 {
			t.Errorf("%q delivered %d times, want once", p, got[p])
		}
	}
	if len(got) != n {
		t.Errorf("delivered %v", got)
	}
	if c := e.kx.Stats().Creates; c != n {
		t.Errorf("%d predictions for %d jobs (%d delivered before the restart)", c, n, before)
	}
	e.stopBot()
	if day := slUsage(t, e); day != n {
		t.Errorf("charged %d images, want %d", day, n)
	}
	e.startBot()
	e.checkClean()
}
