package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/platforms/discord"
)

// envFunc reads one configuration variable; "" means unset.
type envFunc func(string) string

// withDotenv layers a .env file under the process environment: a variable
// set in the environment always wins. The file is KONTEXT_ENV_FILE, or
// .env in the working directory; a missing file is not an error.
func withDotenv(getenv envFunc) (envFunc, error) {
	path := getenv("KONTEXT_ENV_FILE")
	explicit := path != ""
	if !explicit {
		path = ".env"
	}
	file, err := godotenv.Read(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && !explicit:
		return getenv, nil
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return file[k]
	}, nil
}

// config is everything the bot reads from its environment.
type config struct {
	APIKey  string
	BaseURL string
	Model   string
	Models  []string // KONTEXT_MODELS: the models served; nil: all of kontext.Models
	Route   string
	Wait    time.Duration

	RequestTimeout time.Duration
	JobTimeout     time.Duration
	FirstPoll      time.Duration
	InputMaxBytes  int
	ImageMemory    int

	Slots       int            // KONTEXT_SLOTS: the account's active tasks
	Pools       map[string]int // KONTEXT_SLOTS_<MODEL>: each model's pool inside Slots
	UserRunning int
	UserWaiting int
	QueueMax    int

	DB            string
	DatabaseURL   string        // KONTEXT_DATABASE_URL: PostgreSQL instead of the bbolt file DB
	Lease         time.Duration // KONTEXT_LEASE: how long a dead replica keeps its jobs (shared queue)
	History       int
	RetentionDays int
	Prices        map[string]float64
	UserDaily     int
	Budget        float64
	Channels      []string
	Admins        []string
	LogLevel      slog.Level
	LogFormat     string

	HTTPAddr        string
	MetricsAddr     string // "": /metrics is on HTTPAddr
	ShutdownTimeout time.Duration
	PostRetry       time.Duration

	DiscordToken  string
	DiscordGuild  string
	DiscordAPIURL string
	DiscordShards int   // DISCORD_SHARDS: gateway shards, spread over the replicas
	DiscordShard  []int // DISCORD_SHARD_ID: the one shard this replica may hold; nil: any
	// DiscordPublicKey (DISCORD_PUBLIC_KEY, hex): interactions come over
	// HTTP to HTTP_ADDR's /discord/interactions instead of the gateway.
	DiscordPublicKey string

	ReplicaID    string        // KONTEXT_REPLICA_ID, else the host name: names this process in metrics and pg_stat_activity
	GatewayRetry time.Duration // DISCORD_GATEWAY_RETRY: how often a replica tries to take a free gateway shard
	GatewayCheck time.Duration // DISCORD_GATEWAY_CHECK: how often the connection holding the gateway leases is checked

	SlackBotToken      string
	SlackAppToken      string
	SlackSigningSecret string
	SlackAPIURL        string
}

// discordEnabled reports whether Discord is configured.
func (c config) discordEnabled() bool { return c.DiscordToken != "" }

// slackEnabled reports whether Slack is configured.
func (c config) slackEnabled() bool { return c.SlackBotToken != "" }

// configError lists every problem found in the configuration at once.
type configError struct{ problems []string }

func (e *configError) Error() string {
	if len(e.problems) == 1 {
		return "configuration: " + e.problems[0]
	}
	return "configuration has " + strconv.Itoa(len(e.problems)) + " problems:\n  - " + strings.Join(e.problems, "\n  - ")
}

// parser reads variables and collects every problem instead of stopping at
// the first.
type parser struct {
	getenv   envFunc
	problems []string
}

func (p *parser) fail(format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf(format, args...))
}

func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) required(name, what string) string {
	v := p.str(name, "")
	if v == "" {
		p.fail("%s is not set: %s", name, what)
	}
	return v
}

func (p *parser) intIn(name string, def, lo, hi int) int {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail("%s=%q is not valid: use a whole number from %d to %d (default %d)", name, v, lo, hi, def)
		return def
	}
	return n
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v := p.str(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail("%s=%q is not valid: use one of %s (default %s)", name, v, strings.Join(allowed, ", "), def)
	return def
}

func (p *parser) price(name string, def float64) float64 {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimPrefix(v, "$"), 64)
	if err != nil || f < 0 || f > 1e6 {
		p.fail("%s=%q is not valid: use a price in USD such as %.3f (default %.3f)", name, v, def, def)
		return def
	}
	return f
}

// models reads a comma-separated list of model names (short names, ids
// or max/pro), each one of kontext.Models, and returns their short names
// in the table's order; nil when unset.
func (p *parser) models(name string) []string {
	list := p.list(name)
	if len(list) == 0 {
		return nil
	}
	var want []string
	for _, n := range list {
		var found bool
		for _, m := range kontext.Models {
			if n == m.Name || n == m.ID {
				want, found = append(want, m.Name), true
			}
		}
		if !found {
			p.fail("%s: %q is not a model: use a comma-separated list of %s (default all)", name, n, strings.Join(modelNames(kontext.Models), ", "))
		}
	}
	var out []string
	for _, m := range kontext.Models {
		if slices.Contains(want, m.Name) {
			out = append(out, m.Name)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func modelNames(models []kontext.Model) []string {
	out := make([]string, len(models))
	for i, m := range models {
		out[i] = m.Name
	}
	return out
}

// restrictModels makes the process serve only c.Models (KONTEXT_MODELS),
// when set: the pickers, the option parsers and the client ignore the
// others (kontext.Restrict).
func (c config) restrictModels() error {
	return kontext.Restrict(c.Models) // none: every model, whatever an earlier run in this process said
}

// list reads a comma-separated list of ids, ignoring blanks.
func (p *parser) list(name string) []string {
	var out []string
	for _, f := range strings.Split(p.str(name, ""), ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (p *parser) logLevel(name string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(p.str(name, "info"))); err != nil {
		p.fail("%s=%q is not valid: use debug, info, warn or error", name, p.str(name, ""))
		return slog.LevelInfo
	}
	return l
}

func (p *parser) duration(name string, def time.Duration) time.Duration {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		p.fail("%s=%q is not valid: use a duration such as 30s or 2m (default %s)", name, v, def)
		return def
	}
	return d
}

// positiveDuration reads a duration that must be more than zero.
func (p *parser) positiveDuration(name string, def time.Duration) time.Duration {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		p.fail("%s=%q is not valid: use a duration above zero such as 3s or 500ms (default %s)", name, v, def)
		return def
	}
	return d
}

// optionalURL reads an http(s) URL that may be left unset.
func (p *parser) optionalURL(name string) string {
	if p.str(name, "") == "" {
		return ""
	}
	return p.httpURL(name, "http://127.0.0.1:8081")
}

func isSnowflake(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

func (p *parser) httpURL(name, def string) string {
	v := p.str(name, def)
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.fail("%s=%q is not valid: use an http(s) URL such as %s", name, v, def)
		return def
	}
	return strings.TrimRight(v, "/")
}

// databaseURL reads an optional PostgreSQL URL. The value may hold a
// password, so a problem names the variable but never repeats the value.
func (p *parser) databaseURL(name string) string {
	v := p.str(name, "")
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || (u.Host == "" && u.Query().Get("host") == "") {
		p.fail("%s is not valid: use a PostgreSQL URL such as postgres://kontextbot:PASSWORD@db-host:5432/kontextbot, or leave it empty for the bbolt file KONTEXT_DB", name)
		return ""
	}
	return v
}

func (p *parser) err() error {
	if len(p.problems) == 0 {
		return nil
	}
	return &configError{problems: p.problems}
}

// loadConfig reads and validates the configuration, reporting every
// problem at once, each naming its variable and what a valid value is.
func loadConfig(getenv envFunc) (config, error) {
	p := &parser{getenv: getenv}
	c := config{
		APIKey:  p.required("COMETAPI_API_KEY", "set it to your CometAPI key (sk-...), or to try the bot without one run `kontextbot chat -fake`"),
		BaseURL: p.httpURL("COMETAPI_BASE_URL", "https://api.cometapi.com"),
	}
	c.Models = p.models("KONTEXT_MODELS")
	served := c.Models
	if served == nil {
		served = modelNames(kontext.Models)
	}
	c.Model = p.oneOf("KONTEXT_MODEL", served[0], served...)
	c.Route = p.oneOf("KONTEXT_ROUTE", kontext.RouteModels, kontext.RouteModels, kontext.RoutePredictions, kontext.RouteImages)
	c.Wait = time.Duration(p.intIn("KONTEXT_WAIT", 0, 0, 60)) * time.Second
	// BFL: 24 active tasks per account, of which flux-kontext-max may use
	// 6 (kontext.Models' PoolSlots); a model without its own limit has the
	// account's.
	c.Slots = p.intIn("KONTEXT_SLOTS", 24, 1, 64)
	c.Pools = map[string]int{}
	for _, m := range kontext.Models {
		def := m.PoolSlots
		if def <= 0 {
			def = c.Slots
		}
		c.Pools[m.Pool] = min(p.intIn("KONTEXT_SLOTS_"+m.EnvName(), min(def, c.Slots), 1, 64), c.Slots)
	}
	c.UserRunning = p.intIn("KONTEXT_USER_RUNNING", 2, 1, 64)
	c.UserWaiting = p.intIn("KONTEXT_USER_WAITING", 5, 0, 10000)
	c.QueueMax = p.intIn("KONTEXT_QUEUE_MAX", 200, 1, 100000)
	c.RequestTimeout = p.duration("KONTEXT_REQUEST_TIMEOUT", kontext.DefaultRequestTimeout)
	c.JobTimeout = p.duration("KONTEXT_JOB_TIMEOUT", kontext.DefaultJobTimeout)
	if c.RequestTimeout < time.Second {
		p.fail("KONTEXT_REQUEST_TIMEOUT=%s is not valid: use at least 1s (default %s; CometAPI has taken over 45s to answer a query)", c.RequestTimeout, kontext.DefaultRequestTimeout)
	} else if held := c.RequestTimeout + c.Wait; c.JobTimeout <= held {
		p.fail("KONTEXT_JOB_TIMEOUT=%s is not valid: it must be longer than KONTEXT_REQUEST_TIMEOUT plus KONTEXT_WAIT (%s), the longest one create request may take (default %s)", c.JobTimeout, held, kontext.DefaultJobTimeout)
	}
	c.FirstPoll = p.duration("KONTEXT_FIRST_POLL", 0)
	c.InputMaxBytes = p.intIn("KONTEXT_INPUT_MAX_BYTES", kontext.DefaultInputMaxBytes, 64<<10, 64<<20)
	c.ImageMemory = p.intIn("KONTEXT_IMAGE_MEMORY", kontext.DefaultImageMemory, 64<<20, 64<<30)
	c.DB = p.str("KONTEXT_DB", "data/kontextbot.db")
	c.DatabaseURL = p.databaseURL("KONTEXT_DATABASE_URL")
	c.Lease = time.Duration(p.intIn("KONTEXT_LEASE", 10, 1, 3600)) * time.Second
	c.History = p.intIn("KONTEXT_HISTORY", 20, 2, 1000)
	c.RetentionDays = p.intIn("KONTEXT_RETENTION_DAYS", 30, 1, 3650)
	// Prices: KONTEXT_PRICE_<MODEL> (KONTEXT_PRICE_FLUX_2_PRO...), the
	// table's price by default (kontext.Models cites where each comes
	// from); KONTEXT_PRICE_MAX and KONTEXT_PRICE_PRO, the names of old,
	// still set the Kontext ones.
	c.Prices = map[string]float64{}
	for _, m := range kontext.Models {
		c.Prices[m.Name] = p.price("KONTEXT_PRICE_"+m.EnvName(), m.Price)
	}
	c.Prices[kontext.ModelMax] = p.price("KONTEXT_PRICE_MAX", c.Prices[kontext.ModelMax])
	c.Prices[kontext.ModelPro] = p.price("KONTEXT_PRICE_PRO", c.Prices[kontext.ModelPro])
	c.UserDaily = p.intIn("KONTEXT_USER_DAILY", 0, 0, 1000000)
	c.Budget = p.price("KONTEXT_WORKSPACE_BUDGET", 0)
	c.Channels = p.list("KONTEXT_CHANNELS")
	c.Admins = p.list("KONTEXT_ADMINS")
	c.LogLevel = p.logLevel("LOG_LEVEL")
	c.LogFormat = p.oneOf("LOG_FORMAT", "text", "text", "json")
	c.HTTPAddr = p.str("HTTP_ADDR", "127.0.0.1:8080")
	c.MetricsAddr = p.str("METRICS_ADDR", "")
	c.ShutdownTimeout = p.duration("SHUTDOWN_TIMEOUT", 30*time.Second)
	c.PostRetry = p.duration("KONTEXT_POST_RETRY", bot.DefaultPostRetry)
	if c.PostRetry == 0 {
		c.PostRetry = -1 // bot.Config: negative disables the retries
	}
	c.DiscordToken = strings.TrimPrefix(p.str("DISCORD_BOT_TOKEN", ""), "Bot ")
	c.DiscordGuild = p.str("DISCORD_GUILD_ID", "")
	c.DiscordAPIURL = p.optionalURL("DISCORD_API_URL")
	c.DiscordShards = p.intIn("DISCORD_SHARDS", 1, 1, 4096)
	if p.str("DISCORD_SHARD_ID", "") != "" {
		c.DiscordShard = []int{p.intIn("DISCORD_SHARD_ID", 0, 0, c.DiscordShards-1)}
	}
	c.DiscordPublicKey = p.str("DISCORD_PUBLIC_KEY", "")
	if c.DiscordPublicKey != "" {
		if _, err := discord.ParsePublicKey(c.DiscordPublicKey); err != nil {
			p.fail("%s", strings.TrimPrefix(err.Error(), "discord: "))
		}
	}
	c.ReplicaID = p.str("KONTEXT_REPLICA_ID", "")
	if c.ReplicaID == "" {
		c.ReplicaID, _ = os.Hostname()
	}
	if c.ReplicaID == "" {
		c.ReplicaID = "kontextbot"
	}
	c.GatewayRetry = p.positiveDuration("DISCORD_GATEWAY_RETRY", 3*time.Second)
	c.GatewayCheck = p.positiveDuration("DISCORD_GATEWAY_CHECK", time.Second)
	c.SlackBotToken = p.str("SLACK_BOT_TOKEN", "")
	c.SlackAppToken = p.str("SLACK_APP_TOKEN", "")
	c.SlackSigningSecret = p.str("SLACK_SIGNING_SECRET", "")
	c.SlackAPIURL = p.optionalURL("SLACK_API_URL")
	switch {
	case c.SlackBotToken != "" && !strings.HasPrefix(c.SlackBotToken, "xoxb-"):
		p.fail("SLACK_BOT_TOKEN is not valid: use the Bot User OAuth Token, which starts with xoxb-")
	case c.SlackBotToken != "" && c.SlackAppToken == "" && c.SlackSigningSecret == "":
		p.fail("SLACK_BOT_TOKEN is set but neither SLACK_APP_TOKEN (Socket Mode, xapp-...) nor SLACK_SIGNING_SECRET (HTTP mode) is: set one")
	case c.SlackAppToken != "" && !strings.HasPrefix(c.SlackAppToken, "xapp-"):
		p.fail("SLACK_APP_TOKEN is not valid: use an app-level token with connections:write, which starts with xapp-")
	case c.SlackBotToken == "" && (c.SlackAppToken != "" || c.SlackSigningSecret != ""):
		p.fail("SLACK_BOT_TOKEN is not set: Slack needs it (xoxb-...) besides SLACK_APP_TOKEN or SLACK_SIGNING_SECRET")
	}
	if c.DiscordGuild != "" && !isSnowflake(c.DiscordGuild) {
		p.fail("DISCORD_GUILD_ID=%q is not valid: use the server's numeric id (Developer Mode, right-click the server, Copy Server ID)", c.DiscordGuild)
	}
	if c.Wait == 0 {
		c.Wait = -1 // kontext.Config: negative disables Prefer: wait
	}
	return c, p.err()
}

// clientConfig is the kontext client's part of c.
func (c config) clientConfig() kontext.Config {
	return kontext.Config{BaseURL: c.BaseURL, APIKey: c.APIKey, Model: c.Model, Route: c.Route, Wait: c.Wait,
		RequestTimeout: c.RequestTimeout, JobTimeout: c.JobTimeout, FirstPoll: c.FirstPoll, InputMaxBytes: c.InputMaxBytes}
}
