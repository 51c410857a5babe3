package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

// TestServeMetricsPerReplica runs serve on PostgreSQL: Discord's gateway
// is connected under the replica's lease (an advisory lock on its lease
// connection), and /metrics names the replica and shows the shared
// queue's depth and busy slots as the database holds them, jobs submitted
// by another replica included.
func TestServeMetricsPerReplica(t *testing.T) {
	url := pgtest.Schema(t)
	b := bothStart(t, kontexttest.Options{Latency: 10 * time.Minute}, map[string]string{
		"KONTEXT_DATABASE_URL": url, "KONTEXT_REPLICA_ID": "replica-a", "KONTEXT_SLOTS": "4",
	})
	// Discord's gateway is held under the replica's lease.
	b.wait("the gateway", func() bool { return len(b.dc.Sessions()) == 1 })
	other0, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var holders int
	if err := other0.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
		WHERE a.application_name = 'kontextbot-leases/replica-a' AND l.locktype = 'advisory' AND l.mode = 'ExclusiveLock' AND l.granted`).Scan(&holders); err != nil || holders != 1 {
		t.Errorf("advisory locks held by replica-a's lease connection: %d (%v), want 1 (Discord's shard)", holders, err)
	}
	other0.Close()
	m := b.metrics()
	if got := value(m, "kontextbot_replica_info", map[string]string{"replica": "replica-a", "backend": "postgres"}); got != 1 {
		t.Errorf("kontextbot_replica_info{replica=replica-a,backend=postgres} = %v, want 1", got)
	}
	for name, want := range map[string]float64{"kontextbot_shared_queue_up": 1, "kontextbot_shared_slots": 4,
		"kontextbot_shared_queue_waiting": 0, "kontextbot_shared_slots_busy": 0} {
		if got := value(m, name, nil); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}

	// Another replica's jobs: five accepted there, for five people. This
	// replica shares the queue, so it runs them (the provider holds each
	// for minutes): four in the slots, one waiting, whoever accepted them.
	other, err := postgres.Open(context.Background(), url, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	q := other.Queue("replica-b", postgres.QueueOptions{Slots: 4})
	now := time.Now()
	for i := range 5 {
		j := &bot.Job{ID: fmt.Sprintf("job%d", i), Kind: bot.KindImagine, User: fmt.Sprintf("u%d", i), Prompt: "a slow fox",
			Model: kontext.ModelMax, Conv: bot.ConvKey{Platform: "discord", Workspace: dcGuild, Channel: dcArt},
			State: bot.JobWaiting, Created: now, Updated: now}
		if err := other.PutJob(context.Background(), j); err != nil {
			t.Fatal(err)
		}
		// One serial each, so they may run side by side.
		if _, err := q.Submit(context.Background(), j.ID, j.User, fmt.Sprintf("serial-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]float64{"kontextbot_shared_queue_up": 1, "kontextbot_shared_queue_waiting": 1, "kontextbot_shared_slots_busy": 4}
	b.wait("the other replica's jobs in the shared queue's metrics", func() bool {
		m := b.metrics()
		for name, w := range want {
			if value(m, name, nil) != w {
				return false
			}
		}
		return true
	})
}

// TestSharedQueueMetricsWithoutDatabase: when the database does not
// answer within the timeout, the scrape still succeeds and says so with
// kontextbot_shared_queue_up 0 and no stale figures.
func TestSharedQueueMetricsWithoutDatabase(t *testing.T) {
	m := newMetrics()
	m.watchSharedQueue(func(ctx context.Context) (sharedQueueStats, error) {
		<-ctx.Done() // a database that never answers
		return sharedQueueStats{}, ctx.Err()
	}, 50*time.Millisecond, slog.New(slog.DiscardHandler))
	fams, err := m.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "kontextbot_shared_") {
			got[f.GetName()] = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if want := map[string]float64{"kontextbot_shared_queue_up": 0}; !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// TestReplicaConfig reads the variables of running as several replicas.
func TestReplicaConfig(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		name         string
		env          map[string]string
		wantProblems []string
		check        func(t *testing.T, c config)
	}{
		{name: "defaults", env: map[string]string{}, check: func(t *testing.T, c config) {
			if c.DiscordShards != 1 || c.DiscordShard != nil || c.GatewayRetry != 3*time.Second || c.GatewayCheck != time.Second {
				t.Errorf("got shards %d, shard %v, retry %s, check %s; want 1, any, 3s, 1s", c.DiscordShards, c.DiscordShard, c.GatewayRetry, c.GatewayCheck)
			}
			if host != "" && c.ReplicaID != host {
				t.Errorf("replica id %q, want the host name %q", c.ReplicaID, host)
			}
		}},
		{name: "all set", env: map[string]string{"DISCORD_SHARDS": "4", "DISCORD_SHARD_ID": "3", "KONTEXT_REPLICA_ID": "bot-a",
			"DISCORD_GATEWAY_RETRY": "500ms", "DISCORD_GATEWAY_CHECK": "2s"}, check: func(t *testing.T, c config) {
			if c.DiscordShards != 4 || !slices.Equal(c.DiscordShard, []int{3}) || c.ReplicaID != "bot-a" ||
				c.GatewayRetry != 500*time.Millisecond || c.GatewayCheck != 2*time.Second {
				t.Errorf("got %d %v %q %s %s", c.DiscordShards, c.DiscordShard, c.ReplicaID, c.GatewayRetry, c.GatewayCheck)
			}
		}},
		{name: "shard id past the shards", env: map[string]string{"DISCORD_SHARDS": "2", "DISCORD_SHARD_ID": "2"}, wantProblems: []string{"DISCORD_SHARD_ID"}},
		{name: "no shards", env: map[string]string{"DISCORD_SHARDS": "0"}, wantProblems: []string{"DISCORD_SHARDS"}},
		{name: "zero retry and a bad check", env: map[string]string{"DISCORD_GATEWAY_RETRY": "0s", "DISCORD_GATEWAY_CHECK": "soon"},
			wantProblems: []string{"DISCORD_GATEWAY_RETRY", "DISCORD_GATEWAY_CHECK"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.env["COMETAPI_API_KEY"] = "k"
			c, err := loadConfig(envMap(tt.env))
			if len(tt.wantProblems) == 0 {
				if err != nil {
					t.Fatalf("loadConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			var ce *configError
			if !errors.As(err, &ce) || len(ce.problems) != len(tt.wantProblems) {
				t.Fatalf("got %v, want problems naming %v", err, tt.wantProblems)
			}
			for i, name := range tt.wantProblems {
				if !strings.HasPrefix(ce.problems[i], name) {
					t.Errorf("problem %d: got %q, want it to name %s", i, ce.problems[i], name)
				}
			}
		})
	}
}
