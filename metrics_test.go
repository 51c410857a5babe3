package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// startMetrics builds the metrics as serve does right after start, with
// Discord and Slack configured and before any event.
func startMetrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	m := newMetrics()
	m.budget.Set(50)
	m.watchQueue(kontext.NewQueue(kontext.QueueOptions{Slots: 6}))
	m.watchPlatform("discord", func() error { return nil })
	m.watchPlatform("slack", func() error { return nil })
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	return byName
}

// TestMetricsExistFromStart: every documented family, with its known label
// values, is exported before the first event.
func TestMetricsExistFromStart(t *testing.T) {
	families := startMetrics(t)
	tests := []struct {
		family string
		labels map[string]string
	}{
		{"kontextbot_jobs_total", map[string]string{"kind": "imagine", "outcome": "delivered"}},
		{"kontextbot_jobs_total", map[string]string{"kind": "edit", "outcome": "failed"}},
		{"kontextbot_jobs_total", map[string]string{"kind": "reroll", "outcome": "kept"}},
		{"kontextbot_queue_waiting", nil},
		{"kontextbot_slots_busy", nil},
		{"kontextbot_slots", nil},
		{"kontextbot_provider_seconds", map[string]string{"outcome": "delivered"}},
		{"kontextbot_queue_wait_seconds", nil},
		{"kontextbot_provider_requests_total", map[string]string{"op": "create", "code": "200"}},
		{"kontextbot_provider_retries_total", map[string]string{"op": "poll"}},
		{"kontextbot_provider_429_total", nil},
		{"kontextbot_images_delivered_total", map[string]string{"platform": "discord"}},
		{"kontextbot_images_delivered_total", map[string]string{"platform": "slack"}},
		{"kontextbot_spend_usd_total", map[string]string{"model": kontext.ModelMax}},
		{"kontextbot_spend_usd_total", map[string]string{"model": kontext.ModelPro}},
		{"kontextbot_spend_usd_total", map[string]string{"model": kontext.ModelFlux2Pro}},
		{"kontextbot_spend_usd_total", map[string]string{"model": kontext.ModelFlux2Flex}},
		{"kontextbot_platform_up", map[string]string{"platform": "slack"}},
		{"kontextbot_workspace_budget_usd", nil},
		{"kontextbot_build_info", map[string]string{"goversion": readBuildInfo().GoVersion, "version": readBuildInfo().Version}},
	}
	for _, tt := range tests {
		t.Run(tt.family+labelString(tt.labels), func(t *testing.T) {
			if got := value(families, tt.family, tt.labels); got < 0 {
				t.Errorf("%s%s is not exported at start", tt.family, labelString(tt.labels))
			}
		})
	}
	if got := value(families, "kontextbot_build_info", nil); got != 1 {
		t.Errorf("kontextbot_build_info: got %v, want 1", got)
	}
	if got := value(families, "kontextbot_platform_up", map[string]string{"platform": "discord"}); got != 1 {
		t.Errorf("kontextbot_platform_up{platform=discord}: got %v, want 1", got)
	}
}

func labelString(l map[string]string) string {
	if len(l) == 0 {
		return ""
	}
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

var (
	metricName = regexp.MustCompile(`\bkontextbot_[a-z0-9_]+`)
	// selector is a metric name with its label matchers.
	selector = regexp.MustCompile(`\b(kontextbot_[a-z0-9_]+)\{([^}]*)\}`)
	matcher  = regexp.MustCompile(`(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
)

// checkQuery checks every metric an expression names is exported (a
// histogram's _bucket, _sum and _count included), and that every label an
// equality matcher names has that value on some series.
func checkQuery(t *testing.T, where, expr string, families map[string]*dto.MetricFamily) {
	t.Helper()
	names := metricName.FindAllString(expr, -1)
	if len(names) == 0 {
		t.Errorf("%s: %q queries no kontextbot metric", where, expr)
	}
	family := func(name string) *dto.MetricFamily {
		if f := families[name]; f != nil {
			return f
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if f := families[strings.TrimSuffix(name, suffix)]; f != nil && f.GetType() == dto.MetricType_HISTOGRAM && strings.HasSuffix(name, suffix) {
				return f
			}
		}
		return nil
	}
	for _, n := range names {
		if family(n) == nil {
			t.Errorf("%s: %s is not a metric the bot exports (in %q)", where, n, expr)
		}
	}
	for _, sel := range selector.FindAllStringSubmatch(expr, -1) {
		f := family(sel[1])
		if f == nil {
			continue
		}
		for _, m := range matcher.FindAllStringSubmatch(sel[2], -1) {
			label, op, val := m[1], m[2], m[3]
			if label == "job" || label == "instance" { // added by Prometheus
				continue
			}
			found := false
			for _, s := range f.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == label && (op != "=" || l.GetValue() == val) {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("%s: no series of %s has %s%s%q (in %q)", where, sel[1], label, op, val, expr)
			}
		}
	}
}

// TestGrafanaDashboardQueriesExportedMetrics loads the dashboard shipped in
// deploy/grafana and checks every query against the metrics the bot
// exports right after start.
func TestGrafanaDashboardQueriesExportedMetrics(t *testing.T) {
	families := startMetrics(t)
	data, err := os.ReadFile("deploy/grafana/kontextbot.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("the dashboard is not valid JSON: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("the dashboard has no panels")
	}
	queried := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			checkQuery(t, "panel "+p.Title, tg.Expr, families)
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				queried[n] = true
			}
		}
	}
	// What the issue asks the dashboard to show.
	for _, want := range []string{"kontextbot_queue_waiting", "kontextbot_slots_busy", "kontextbot_queue_wait_seconds_bucket",
		"kontextbot_provider_seconds_bucket", "kontextbot_jobs_total", "kontextbot_spend_usd_total"} {
		if !queried[want] {
			t.Errorf("the dashboard does not show %s", want)
		}
	}
}

// TestAlertRulesQueryExportedMetrics checks the Prometheus rules in
// deploy/prometheus the same way.
func TestAlertRulesQueryExportedMetrics(t *testing.T) {
	families := startMetrics(t)
	data, err := os.ReadFile("deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The rule file's shape is simple: "- alert: NAME", then "expr:" either
	// inline or as a "|" block indented below it.
	lines := strings.Split(string(data), "\n")
	rules := map[string]string{}
	var alert string
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if name, ok := strings.CutPrefix(l, "- alert:"); ok {
			alert = strings.TrimSpace(name)
			continue
		}
		expr, ok := strings.CutPrefix(l, "expr:")
		if !ok {
			continue
		}
		expr = strings.TrimSpace(expr)
		if expr == "|" {
			indent := len(lines[i]) - len(strings.TrimLeft(lines[i], " "))
			var block []string
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) > indent) {
				i++
				block = append(block, strings.TrimSpace(lines[i]))
			}
			expr = strings.TrimSpace(strings.Join(block, " "))
		}
		if alert == "" || rules[alert] != "" {
			t.Fatalf("expr %q is not the first of an alert", expr)
		}
		rules[alert] = expr
	}
	for _, want := range []string{"KontextbotProviderFailing", "KontextbotQueueStuck", "KontextbotPlatformDisconnected", "KontextbotBudgetNearlySpent"} {
		if rules[want] == "" {
			t.Errorf("no %s rule", want)
		}
	}
	for alert, expr := range rules {
		if strings.HasPrefix(expr, "up{") {
			continue // Prometheus's own series
		}
		checkQuery(t, "alert "+alert, expr, families)
	}
}

// TestMetricsAddr: with METRICS_ADDR, /metrics is served there and not on
// HTTP_ADDR (where Slack's public endpoints are); /healthz answers on both.
func TestMetricsAddr(t *testing.T) {
	httpAddr, metricsAddr := slFreeAddr(t), slFreeAddr(t)
	h := dcFakes(t, dcOptions{env: map[string]string{"HTTP_ADDR": httpAddr, "METRICS_ADDR": metricsAddr}})
	h.serve()
	get := func(addr, path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", addr, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	tests := []struct {
		name, addr, path string
		code             int
		body             string
	}{
		{name: "MetricsApart", addr: metricsAddr, path: "/metrics", code: http.StatusOK, body: "kontextbot_build_info"},
		{name: "NoMetricsOnHTTPAddr", addr: httpAddr, path: "/metrics", code: http.StatusNotFound},
		{name: "HealthOnMetricsAddr", addr: metricsAddr, path: "/healthz", code: http.StatusOK, body: "ok"},
		{name: "HealthOnHTTPAddr", addr: httpAddr, path: "/healthz", code: http.StatusOK, body: "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(tt.addr, tt.path)
			if code != tt.code || !strings.Contains(body, tt.body) {
				t.Errorf("GET %s: got %d %.80q, want %d with %q", tt.path, code, body, tt.code, tt.body)
			}
		})
	}
}

// TestStoreNotWritable: a database folder the bot may not write (a /data
// volume not owned by uid 65532) gets a sentence saying so and how to fix
// it, not a bare "permission denied".
func TestStoreNotWritable(t *testing.T) {
	db := filepath.Join(t.TempDir(), "ro", "data", "kontextbot.db")
	if os.Getuid() == 0 {
		// root writes anywhere a mode allows nothing; /sys refuses even root.
		db = "/sys/kontextbot-test/kontextbot.db"
	} else {
		ro := filepath.Dir(filepath.Dir(db))
		if err := os.MkdirAll(ro, 0o500); err != nil {
			t.Fatal(err)
		}
		os.Chmod(ro, 0o500)
		t.Cleanup(func() { os.Chmod(ro, 0o700) })
	}
	_, env := fakeEnv(t, kontexttest.Options{})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	env["KONTEXT_DB"] = db
	err := run(context.Background(), []string{"chat", "-out", t.TempDir()}, envMap(env), io.Discard, io.Discard)
	if err == nil {
		t.Fatal("chat started on a database it cannot write")
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Errorf("got %v, want it to wrap fs.ErrPermission", err)
	}
	for _, want := range []string{"is not writable by this process", "65532", "named volume", "KONTEXT_DB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}
