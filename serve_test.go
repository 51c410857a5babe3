package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"kontextbot/kontext/kontexttest"
	"kontextbot/platforms/discord/discordtest"
	"kontextbot/platforms/slack/slackfake"
)

// bothHarness is serve with Discord and Slack at once, over one fake
// provider.
type bothHarness struct {
	*dcHarness
	slack *slackfake.Server
	addr  string
}

func bothStart(t *testing.T, provider kontexttest.Options, env map[string]string) *bothHarness {
	t.Helper()
	h := dcFakes(t, dcOptions{provider: provider, env: env})
	sf := slackfake.New(slackfake.Options{})
	t.Cleanup(sf.Close)
	o := sf.Options()
	h.env["SLACK_BOT_TOKEN"], h.env["SLACK_APP_TOKEN"], h.env["SLACK_API_URL"] = o.BotToken, o.AppToken, sf.APIURL()
	addr := slFreeAddr(t)
	h.env["HTTP_ADDR"] = addr
	b := &bothHarness{dcHarness: h, slack: sf, addr: addr}
	h.serve()
	h.wait("Slack's Socket Mode connection", sf.Connected)
	return b
}

// get fetches a path of the bot's HTTP listener.
func (b *bothHarness) get(path string) (int, string) {
	b.t.Helper()
	resp, err := http.Get("http://" + b.addr + path)
	if err != nil {
		b.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metrics scrapes /metrics and parses it as Prometheus does.
func (b *bothHarness) metrics() map[string]*dto.MetricFamily {
	b.t.Helper()
	code, body := b.get("/metrics")
	if code != http.StatusOK {
		b.t.Fatalf("/metrics: %d", code)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		b.t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// value is the value of the metric in family name whose labels include
// want, or -1 when there is none.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
next:
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// TestServeBothPlatforms runs one process for Discord and Slack: one job
// from each goes through the one shared slot, /healthz follows the
// platforms' connections, and /metrics counts what happened.
func TestServeBothPlatforms(t *testing.T) {
	b := bothStart(t, kontexttest.Options{Latency: 300 * time.Millisecond, Pixels: 96 * 96},
		map[string]string{"KONTEXT_SLOTS": "1"})
	// The fake sees Slack's connection a moment before the adapter has
	// marked itself started: /healthz turns ok once both platforms are.
	b.wait("/healthz to answer 200 ok", func() bool {
		code, body := b.get("/healthz")
		return code == http.StatusOK && strings.TrimSpace(body) == "ok"
	})

	slackChannel := b.slack.CreateChannel("pictures", true)
	in := b.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "a lighthouse"))
	env := b.slack.Slash("U0SLACK1", slackChannel, "/imagine", "a windmill")
	if !env.Acked(4 * time.Second) {
		t.Fatal("the Slack command was not acknowledged")
	}
	if p := dcProv(t, b.result(in)); p.Prompt != "a lighthouse" {
		t.Errorf("Discord delivered %+v", p)
	}
	var slackImage []byte
	b.wait("the Slack image", func() bool {
		for _, m := range b.slack.TopLevel(slackChannel) {
			if len(m.Files) > 0 && !m.Deleted {
				slackImage = b.slack.FileData(m.Files[0].ID)
				return slackImage != nil
			}
		}
		return false
	})
	if p, err := kontexttest.ReadProvenance(slackImage); err != nil || p.Prompt != "a windmill" {
		t.Errorf("Slack delivered %+v (%v)", p, err)
	}
	if st := b.prov.Stats(); st.MaxActive != 1 || st.Succeeded != 2 || st.SlotLimit429 != 0 {
		t.Errorf("provider saw %+v, want both jobs through the one shared slot", st)
	}

	// The job-end hooks run as the job finishes, a moment after the post.
	var m map[string]*dto.MetricFamily
	b.wait("both jobs in /metrics", func() bool {
		m = b.metrics()
		return value(m, "kontextbot_jobs_total", map[string]string{"kind": "imagine", "outcome": "delivered"}) == 2
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"kontextbot_images_delivered_total", map[string]string{"platform": "discord"}, 1},
		{"kontextbot_images_delivered_total", map[string]string{"platform": "slack"}, 1},
		{"kontextbot_spend_usd_total", map[string]string{"model": "flux-kontext-max"}, 2 * 0.192}, // CometAPI's price
		{"kontextbot_provider_seconds", map[string]string{"outcome": "delivered"}, 2},
		{"kontextbot_queue_wait_seconds", nil, 2},
		{"kontextbot_slots", nil, 1},
		{"kontextbot_slots_busy", nil, 0},
		{"kontextbot_queue_waiting", nil, 0},
	} {
		if got := value(m, c.name, c.labels); fmt.Sprintf("%.4f", got) != fmt.Sprintf("%.4f", c.want) {
			t.Errorf("%s%v: got %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(m, "kontextbot_provider_requests_total", map[string]string{"op": "create", "code": "201"}); got < 2 {
		t.Errorf("provider create requests: got %v, want at least 2", got)
	}

	// A provider 429 shows up as a retry and a 429.
	b.prov.Inject(kontexttest.Create, kontexttest.Fault{Status: 429, RetryAfter: 10 * time.Millisecond})
	b.result(b.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "a kite")))
	m = b.metrics()
	if got := value(m, "kontextbot_provider_429_total", nil); got != 1 {
		t.Errorf("429s: got %v, want 1", got)
	}
	if got := value(m, "kontextbot_provider_retries_total", map[string]string{"op": "create"}); got != 1 {
		t.Errorf("retries: got %v, want 1", got)
	}

	// Discord's gateway goes down: /healthz says so; it comes back.
	b.dc.SetGatewayDown(true)
	var body string
	b.wait("/healthz to report the outage", func() bool {
		var code int
		code, body = b.get("/healthz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "discord") || strings.Contains(body, "slack") {
		t.Errorf("/healthz during the outage: %q, want only discord named", body)
	}
	b.dc.SetGatewayDown(false)
	b.wait("/healthz to recover", func() bool {
		code, _ := b.get("/healthz")
		return code == http.StatusOK
	})
}

// TestServeShutdownKeepsWaitingJobs stops serve while one job runs and one
// waits: the running one is delivered before the process ends, new
// requests meanwhile hear the bot is restarting, and the waiting one is
// delivered after the next start.
func TestServeShutdownKeepsWaitingJobs(t *testing.T) {
	h := dcFakes(t, dcOptions{
		provider: kontexttest.Options{Latency: 2 * time.Second, Pixels: 64 * 64},
		env:      map[string]string{"KONTEXT_SLOTS": "1", "SHUTDOWN_TIMEOUT": "20s"},
	})
	h.serve()
	running := h.slash(dcArt, dcAda, "imagine", discordtest.String("prompt", "the running one"))
	h.wait("the first job at the provider", func() bool { return h.prov.Stats().Active == 1 })
	waiting := h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "the waiting one"))
	h.wait("the second job to queue", func() bool {
		m, _ := h.dc.Original(waiting.ID)
		return strings.Contains(m.Content, "Queued")
	})

	// A signal: serve stops taking work but lets the running job finish.
	h.cancel()
	h.cancel = nil
	h.wait("the shutdown to begin", func() bool { return strings.Contains(h.logs.String(), "shutting down") })
	time.Sleep(50 * time.Millisecond) // the core closes right after that log line
	late := h.slash(dcArt, dcBob, "imagine", discordtest.String("prompt", "too late"))
	h.wait("the late request's answer", func() bool {
		m, ok := h.dc.Original(late.ID)
		if ok && strings.Contains(m.Content, "restarting") {
			return true
		}
		for _, f := range h.dc.Followups(late.ID) {
			if strings.Contains(f.Content, "restarting") {
				return true
			}
		}
		return false
	})
	select {
	case err := <-h.done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if p := dcProv(t, h.result(running)); p.Prompt != "the running one" {
		t.Errorf("running job delivered %+v", p)
	}
	if m, _ := h.dc.Original(waiting.ID); len(m.Attachments) != 0 {
		t.Fatal("the waiting job was delivered although it never ran")
	}
	if got := h.prov.Stats().Creates; got != 1 {
		t.Errorf("creates before the restart: got %d, want 1", got)
	}

	h.serve()
	if p := dcProv(t, h.result(waiting)); p.Prompt != "the waiting one" {
		t.Errorf("waiting job delivered %+v", p)
	}
	if got := h.prov.Stats().Creates; got != 2 {
		t.Errorf("creates: got %d, want 2", got)
	}
}
