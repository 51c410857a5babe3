package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"kontextbot/kontext"
)

// TestConfigProviderSettings covers the provider settings of issue 10:
// create-then-poll by default, CometAPI's prices, the request and job
// timeouts (the job above one whole create), the first poll and the input
// size sent as it is.
func TestConfigProviderSettings(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantProblem string // the variable named in the error; "" for none
		check       func(t *testing.T, c config)
	}{
		{name: "Defaults", env: map[string]string{}, check: func(t *testing.T, c config) {
			cc := c.clientConfig()
			if cc.Wait >= 0 {
				t.Errorf("wait %v: want Prefer: wait off (create, store the id, poll)", cc.Wait)
			}
			if cc.RequestTimeout != 60*time.Second || cc.JobTimeout != 5*time.Minute || cc.FirstPoll != 0 || cc.InputMaxBytes != kontext.DefaultInputMaxBytes {
				t.Errorf("got %+v", cc)
			}
			if c.Prices[kontext.ModelMax] != 0.192 || c.Prices[kontext.ModelPro] != 0.096 {
				t.Errorf("prices %v, want CometAPI's 0.192 and 0.096", c.Prices)
			}
			if _, err := kontext.NewClient(cc); err != nil {
				t.Errorf("the default client config is refused: %v", err)
			}
		}},
		{name: "AllSet", env: map[string]string{"KONTEXT_REQUEST_TIMEOUT": "90s", "KONTEXT_JOB_TIMEOUT": "10m",
			"KONTEXT_FIRST_POLL": "2500ms", "KONTEXT_INPUT_MAX_BYTES": "500000", "KONTEXT_WAIT": "30"},
			check: func(t *testing.T, c config) {
				cc := c.clientConfig()
				if cc.RequestTimeout != 90*time.Second || cc.JobTimeout != 10*time.Minute || cc.FirstPoll != 2500*time.Millisecond ||
					cc.InputMaxBytes != 500000 || cc.Wait != 30*time.Second {
					t.Errorf("got %+v", cc)
				}
			}},
		{name: "BaseURLWithV1", env: map[string]string{"COMETAPI_BASE_URL": "https://api.cometapi.com/v1/"}, check: func(t *testing.T, c config) {
			if _, err := kontext.NewClient(c.clientConfig()); err != nil {
				t.Errorf("NewClient: %v", err)
			}
		}},
		{name: "JobNotAboveRequest", env: map[string]string{"KONTEXT_REQUEST_TIMEOUT": "60s", "KONTEXT_JOB_TIMEOUT": "45s"}, wantProblem: "KONTEXT_JOB_TIMEOUT"},
		{name: "JobNotAboveRequestPlusWait", env: map[string]string{"KONTEXT_JOB_TIMEOUT": "100s", "KONTEXT_WAIT": "60"}, wantProblem: "KONTEXT_JOB_TIMEOUT"},
		{name: "RequestTimeoutTooSmall", env: map[string]string{"KONTEXT_REQUEST_TIMEOUT": "10ms"}, wantProblem: "KONTEXT_REQUEST_TIMEOUT"},
		{name: "InputMaxBytesOutOfRange", env: map[string]string{"KONTEXT_INPUT_MAX_BYTES": "100"}, wantProblem: "KONTEXT_INPUT_MAX_BYTES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"COMETAPI_API_KEY": "sk-1"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := loadConfig(envMap(env))
			if tt.wantProblem == "" {
				if err != nil {
					t.Fatalf("loadConfig: %v", err)
				}
				tt.check(t, c)
				return
			}
			var ce *configError
			if !errors.As(err, &ce) || len(ce.problems) != 1 || !strings.HasPrefix(ce.problems[0], tt.wantProblem) {
				t.Errorf("got %v, want one problem naming %s", err, tt.wantProblem)
			}
		})
	}
}
