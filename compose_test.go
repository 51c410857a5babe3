package main

import (
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// composeFile is the part of docker-compose.yml the test reads.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Build       string            `yaml:"build"`
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Hostname    string            `yaml:"hostname"`
	EnvFile     string            `yaml:"env_file"`
	Environment map[string]string `yaml:"environment"`
	Profiles    []string          `yaml:"profiles"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
		Required  *bool  `yaml:"required"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
		Disable  bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// interpolate applies compose's ${VAR:-default} with no variable set.
func interpolate(s string) string {
	return regexp.MustCompile(`\$\{[A-Z_]+:-([^}]*)\}`).ReplaceAllString(s, "$1")
}

// TestDockerCompose checks docker-compose.yml (no Docker daemon runs on
// the project's machines, so `docker compose config` cannot): PostgreSQL
// with a health check, two bot replicas built from the Dockerfile that
// wait for it to be healthy, reach it by its service name, check their own
// health with the image's healthcheck command, have distinct replica ids
// and ports, and get longer than SHUTDOWN_TIMEOUT to stop; and that the
// bot's configuration accepts their environment.
func TestDockerCompose(t *testing.T) {
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	pg, ok := f.Services["postgres"]
	if !ok {
		t.Fatal("no postgres service")
	}
	if !strings.HasPrefix(pg.Image, "postgres:") || pg.Healthcheck == nil || !slices.Contains(pg.Healthcheck.Test, "CMD-SHELL") ||
		!strings.Contains(strings.Join(pg.Healthcheck.Test, " "), "pg_isready") {
		t.Errorf("postgres: image %q, healthcheck %+v; want postgres:N checked with pg_isready", pg.Image, pg.Healthcheck)
	}
	if _, ok := f.Volumes["pgdata"]; !ok {
		t.Error("postgres data has no named volume")
	}
	pgEnv := map[string]string{}
	for k, v := range pg.Environment {
		pgEnv[k] = interpolate(v)
	}
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defaults, err := loadConfig(envMap(map[string]string{"COMETAPI_API_KEY": "k"}))
	if err != nil {
		t.Fatal(err)
	}

	var bots []string
	hosts, ports := map[string]bool{}, map[string]bool{}
	for name, s := range f.Services {
		if name == "postgres" || len(s.Profiles) > 0 {
			continue
		}
		bots = append(bots, name)
		t.Run(name, func(t *testing.T) {
			if s.Build != "." || !slices.Equal(s.Command, []string{"serve"}) {
				t.Errorf("build %q, command %v; want the Dockerfile here and serve", s.Build, s.Command)
			}
			if s.EnvFile != ".env" {
				t.Errorf("env_file %q, want .env", s.EnvFile)
			}
			if d := s.DependsOn["postgres"]; d.Condition != "service_healthy" {
				t.Errorf("depends_on postgres: %q, want service_healthy", d.Condition)
			}
			for dep, d := range s.DependsOn {
				if svc, ok := f.Services[dep]; !ok || len(svc.Profiles) > 0 && (d.Required == nil || *d.Required) {
					t.Errorf("depends_on %s: not a service, or only in a profile and required", dep)
				}
			}
			hc := s.Healthcheck
			if hc == nil || !slices.Equal(hc.Test, []string{"CMD", "/kontextbot", "healthcheck"}) || hc.Disable {
				t.Errorf("healthcheck %+v, want the image's /kontextbot healthcheck", hc)
			} else if !strings.Contains(string(dockerfile), "COPY --from=build /out/kontextbot /kontextbot") {
				t.Error("the Dockerfile no longer puts the binary at /kontextbot")
			}
			grace, err := time.ParseDuration(s.StopGracePeriod)
			if err != nil || grace <= defaults.ShutdownTimeout {
				t.Errorf("stop_grace_period %q, want more than SHUTDOWN_TIMEOUT's default %s", s.StopGracePeriod, defaults.ShutdownTimeout)
			}
			id := s.Environment["KONTEXT_REPLICA_ID"]
			if id == "" || hosts[id] {
				t.Errorf("KONTEXT_REPLICA_ID %q: every replica needs its own (.env must not decide it for both)", id)
			}
			hosts[id] = true
			env := map[string]string{"COMETAPI_API_KEY": "k", "DISCORD_BOT_TOKEN": "t"}
			for k, v := range s.Environment {
				env[k] = interpolate(v)
			}
			cfg, err := loadConfig(envMap(env))
			if err != nil {
				t.Fatalf("the bot refuses the service's environment: %v", err)
			}
			u, err := url.Parse(cfg.DatabaseURL)
			if err != nil || u.Hostname() != "postgres" || strings.TrimPrefix(u.Path, "/") != pgEnv["POSTGRES_DB"] ||
				u.User.Username() != pgEnv["POSTGRES_USER"] {
				t.Errorf("KONTEXT_DATABASE_URL %q does not name the postgres service's database and user (%v)", cfg.DatabaseURL, pgEnv)
			}
			if pw, _ := u.User.Password(); pw != pgEnv["POSTGRES_PASSWORD"] {
				t.Error("KONTEXT_DATABASE_URL's password is not postgres's")
			}
			if !strings.HasSuffix(cfg.HTTPAddr, ":8080") || !strings.HasPrefix(cfg.HTTPAddr, "0.0.0.0") {
				t.Errorf("HTTP_ADDR %q, want 0.0.0.0:8080 (reachable by the health check and the port mapping)", cfg.HTTPAddr)
			}
			for _, p := range s.Ports {
				host, target, _ := strings.Cut(p, ":")
				if target != "8080" || ports[host] {
					t.Errorf("port %q: want a host port of its own mapped to 8080", p)
				}
				ports[host] = true
			}
		})
	}
	if len(bots) != 2 {
		t.Errorf("bot services %v, want two replicas", bots)
	}
	fake, ok := f.Services["fakeapi"]
	if !ok || !slices.Equal(fake.Profiles, []string{"fake"}) || len(fake.Command) == 0 || fake.Command[0] != "fakeapi" ||
		!slices.Contains(fake.Command, "0.0.0.0:8787") {
		t.Errorf("fakeapi: %+v; want `fakeapi -addr 0.0.0.0:8787` in the profile fake", fake)
	}
	if !strings.Contains(string(raw), "COMETAPI_BASE_URL=http://fakeapi:8787") {
		t.Error("the file does not say how to point the bot at the fake provider")
	}
}
