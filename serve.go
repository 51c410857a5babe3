package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"kontextbot/bot"
	"kontextbot/platforms/discord"
	"kontextbot/platforms/slack"
)

// platform is a chat adapter as serve runs it.
type platform interface {
	bot.Platform
	// Start connects and returns once events flow.
	Start(ctx context.Context) error
	// Close disconnects.
	Close() error
	// Healthy is nil while the platform is connected.
	Healthy() error
}

var (
	_ platform = (*discord.Bot)(nil)
	_ platform = (*slack.Bot)(nil)
)

// noPlatform is serve's problem when no chat platform is configured.
const noPlatform = `no chat platform is configured. Set, in the environment or .env:
      Discord: DISCORD_BOT_TOKEN (and optionally DISCORD_GUILD_ID for instant commands in one server)
      Slack:   SLACK_BOT_TOKEN (xoxb-...) and either SLACK_APP_TOKEN (xapp-..., Socket Mode)
               or SLACK_SIGNING_SECRET (HTTP mode on HTTP_ADDR)
    To try the bot without either, run: kontextbot chat -fake`

// serveConfig is loadConfig plus what serve alone needs, a platform, with
// every problem reported at once.
func serveConfig(env envFunc) (config, error) {
	cfg, err := loadConfig(env)
	platformSet := false
	for _, k := range []string{"DISCORD_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"} {
		platformSet = platformSet || strings.TrimSpace(env(k)) != ""
	}
	if platformSet {
		return cfg, err // what is missing for that platform is already said
	}
	var ce *configError
	if errors.As(err, &ce) {
		ce.problems = append(ce.problems, noPlatform)
		return cfg, err
	}
	return cfg, errors.Join(err, &configError{problems: []string{noPlatform}})
}

// runServe runs the bot on every configured platform over one core, one
// queue and one store, until ctx ends; then it shuts down in order.
func runServe(ctx context.Context, args []string, env envFunc, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := serveConfig(env)
	if err != nil {
		return err
	}
	if err := cfg.restrictModels(); err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	a, err := openApp(cfg, log)
	if err != nil {
		return err
	}
	leaser, closeLeases := setupReplica(cfg, a, log)
	defer closeLeases() // after shutdown: the platforms are closed by then
	platforms, handlers, err := newPlatforms(cfg, a.core, leaser, log, stdout)
	if err != nil {
		return errors.Join(err, a.close(context.Background()))
	}
	for _, p := range platforms {
		a.core.Register(p)
		a.met.watchPlatform(p.Name(), p.Healthy)
	}
	srv, serveErr, err := listen("HTTP_ADDR", cfg.HTTPAddr, newMux(a, platforms, handlers, cfg.MetricsAddr == ""), log)
	if err != nil {
		return errors.Join(err, a.close(context.Background()))
	}
	servers := []*http.Server{srv}
	var metricsErr <-chan error // nil, so never ready, without METRICS_ADDR
	if cfg.MetricsAddr != "" {
		msrv, errc, err := listen("METRICS_ADDR", cfg.MetricsAddr, newMux(a, platforms, nil, true), log)
		if err != nil {
			return errors.Join(err, srv.Close(), a.close(context.Background()))
		}
		servers, metricsErr = append(servers, msrv), errc
	}
	started := 0
	for _, p := range platforms {
		if err = p.Start(ctx); err != nil {
			err = fmt.Errorf("starting %s: %w", p.Name(), err)
			break
		}
		started++
	}
	if err == nil {
		var ids []string
		if ids, err = a.core.Recover(ctx); err == nil {
			log.Info("kontextbot ready", "platforms", names(platforms), "http", srv.Addr, "metrics", servers[len(servers)-1].Addr, "resumed_jobs", len(ids))
			select {
			case <-ctx.Done():
				log.Info("shutting down: no new requests; running jobs may finish", "timeout", cfg.ShutdownTimeout)
			case err = <-serveErr:
				err = fmt.Errorf("http listener: %w", err)
			case err = <-metricsErr:
				err = fmt.Errorf("metrics listener: %w", err)
			}
		}
	}
	return errors.Join(err, shutdown(a, platforms[:started], servers, cfg.ShutdownTimeout))
}

// shutdown stops in order: the core takes no new work and running jobs get
// timeout to finish (waiting ones stay on disk); then the HTTP listeners
// stop taking connections and finish the requests they have, so a load
// balancer sends the next ones (Discord's interactions, Slack's HTTP
// events) to another replica instead of one whose platforms are closed;
// then the platforms close, then the store.
func shutdown(a *app, platforms []platform, servers []*http.Server, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := []error{a.drain(ctx)}
	hctx, hcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer hcancel()
	for _, srv := range servers {
		errs = append(errs, srv.Shutdown(hctx))
	}
	for _, p := range platforms {
		if err := p.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing %s: %w", p.Name(), err))
		}
	}
	errs = append(errs, a.closeStore())
	return errors.Join(errs...)
}

// discordWait, when set (by tests only), spends Discord's rate-limit
// waits on a fake clock instead of a real timer.
var discordWait func(ctx context.Context, d time.Duration) error

// newPlatforms builds the adapter of every configured platform, and the
// HTTP routes of those that serve some.
func newPlatforms(cfg config, core *bot.Core, leaser discord.Leaser, log *slog.Logger, out io.Writer) ([]platform, map[string]http.Handler, error) {
	var ps []platform
	handlers := map[string]http.Handler{}
	if cfg.discordEnabled() {
		d, err := discord.New(discord.Config{Token: cfg.DiscordToken, GuildID: cfg.DiscordGuild, APIURL: cfg.DiscordAPIURL,
			Logger: log.With("platform", discord.Platform), Out: out, Wait: discordWait,
			Shards: cfg.DiscordShards, ShardIDs: cfg.DiscordShard, Leaser: leaser, LeaseRetry: cfg.GatewayRetry,
			PublicKey: cfg.DiscordPublicKey}, core)
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, d)
		if h := d.Handler(); h != nil {
			handlers[discord.EndpointPath] = h
		}
	}
	if cfg.slackEnabled() {
		s, err := slack.New(slack.Config{BotToken: cfg.SlackBotToken, AppToken: cfg.SlackAppToken, SigningSecret: cfg.SlackSigningSecret,
			APIURL: cfg.SlackAPIURL, Logger: log.With("platform", slack.Platform), Out: out}, core)
		if err != nil {
			return nil, nil, err
		}
		ps = append(ps, s)
		if h := s.Handler(); h != nil {
			handlers["/slack/"] = h
		}
	}
	return ps, handlers, nil
}

func names(ps []platform) string {
	var n []string
	for _, p := range ps {
		n = append(n, p.Name())
	}
	return strings.Join(n, ",")
}

// newMux serves /healthz, the platforms' own routes, and /metrics unless
// METRICS_ADDR serves it apart.
func newMux(a *app, platforms []platform, handlers map[string]http.Handler, withMetrics bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := health(r.Context(), a, platforms); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if withMetrics {
		mux.Handle("GET /metrics", a.met.handler())
	}
	for pattern, h := range handlers {
		mux.Handle(pattern, h)
	}
	return mux
}

// health is nil when the store answers and every platform is connected.
func health(ctx context.Context, a *app, platforms []platform) error {
	var errs []error
	if err := a.db.Ping(ctx); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	for _, p := range platforms {
		if err := p.Healthy(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p.Name(), err))
		}
	}
	return errors.Join(errs...)
}

// listen starts an HTTP listener on addr, the value of the variable name;
// its serve error arrives on the returned channel.
func listen(name, addr string, h http.Handler, log *slog.Logger) (*http.Server, <-chan error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", name, addr, err)
	}
	srv := &http.Server{Addr: ln.Addr().String(), Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
		close(errc)
	}()
	return srv, errc, nil
}

// runHealthcheck asks the running bot's /healthz on HTTP_ADDR and fails
// unless it answers 200. The Docker image's HEALTHCHECK runs it, so the
// image needs no shell or curl.
func runHealthcheck(ctx context.Context, args []string, env envFunc, stdout, stderr io.Writer) error {
	fs := newFlagSet("healthcheck", stderr)
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	addr := env("HTTP_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8080"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("HTTP_ADDR=%q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy (HTTP %d): %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Fprint(stdout, string(body))
	return nil
}
