package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"kontextbot/bot"
)

// testSettings: per-workspace overrides round-trip field by field (nil
// stays "use the environment", an empty channel list stays "every
// channel"), are kept apart per platform and workspace, survive a
// restart, and go when replaced with the zero value.
func testSettings(t *testing.T, open OpenFunc) {
	ctx := context.Background()
	db := open(t, Options{})
	ten, zero, budget := 10, 0, 12.5
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ws   string
		s    bot.WorkspaceSettings
	}{
		{"daily limit only", "W1", bot.WorkspaceSettings{DailyLimit: &ten}},
		{"zero limit is an override", "W2", bot.WorkspaceSettings{DailyLimit: &zero}},
		{"every field", "W3", bot.WorkspaceSettings{DailyLimit: &ten, Budget: &budget, Channels: []string{"C1", "C2"},
			Model: "flux-kontext-pro", UpdatedBy: "U1", Updated: at}},
		{"every channel", "W4", bot.WorkspaceSettings{Channels: []string{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := db.PutSettings(ctx, "slack", tc.ws, tc.s); err != nil {
				t.Fatal(err)
			}
			got, err := db.Settings(ctx, "slack", tc.ws)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.s) {
				t.Errorf("got %+v, want %+v", got, tc.s)
			}
		})
	}
	t.Run("none stored", func(t *testing.T) {
		for _, k := range [][2]string{{"slack", "W9"}, {"discord", "W1"}, {"slack", ""}} {
			got, err := db.Settings(ctx, k[0], k[1])
			if err != nil || !reflect.DeepEqual(got, bot.WorkspaceSettings{}) {
				t.Errorf("Settings(%s, %s): got %+v, %v; want the zero value", k[0], k[1], got, err)
			}
		}
	})
	db = db.Reopen(t, Options{})
	if got, err := db.Settings(ctx, "slack", "W3"); err != nil || !reflect.DeepEqual(got, tests[2].s) {
		t.Errorf("after reopen: got %+v, %v; want %+v", got, err, tests[2].s)
	}
	t.Run("replace", func(t *testing.T) {
		s := bot.WorkspaceSettings{Model: "flux-kontext-max"}
		if err := db.PutSettings(ctx, "slack", "W3", s); err != nil {
			t.Fatal(err)
		}
		if got, err := db.Settings(ctx, "slack", "W3"); err != nil || !reflect.DeepEqual(got, s) {
			t.Errorf("got %+v, %v; want %+v", got, err, s)
		}
	})
	t.Run("reset to none", func(t *testing.T) {
		if err := db.PutSettings(ctx, "slack", "W1", bot.WorkspaceSettings{}); err != nil {
			t.Fatal(err)
		}
		if got, err := db.Settings(ctx, "slack", "W1"); err != nil || !reflect.DeepEqual(got, bot.WorkspaceSettings{}) {
			t.Errorf("got %+v, %v; want the zero value", got, err)
		}
	})
	t.Run("invalid key", func(t *testing.T) {
		if err := db.PutSettings(ctx, "", "W1", bot.WorkspaceSettings{DailyLimit: &ten}); err == nil {
			t.Error("PutSettings with no platform: no error")
		}
		if err := db.PutSettings(ctx, "slack", "a/b", bot.WorkspaceSettings{DailyLimit: &ten}); err == nil {
			t.Error("PutSettings with a / in the workspace: no error")
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := db.PutSettings(cctx, "slack", "W5", bot.WorkspaceSettings{DailyLimit: &ten}); err == nil {
			t.Error("PutSettings with a cancelled context: no error")
		}
		if _, err := db.Settings(cctx, "slack", "W3"); err == nil {
			t.Error("Settings with a cancelled context: no error")
		}
	})
	check(t, db)
}
