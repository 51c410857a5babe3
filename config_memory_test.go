package main

import (
	"errors"
	"strings"
	"testing"

	"kontextbot/kontext"
)

// TestConfigImageMemory: KONTEXT_IMAGE_MEMORY defaults to
// kontext.DefaultImageMemory, takes a size in bytes, and refuses one
// outside its range by name.
func TestConfigImageMemory(t *testing.T) {
	tests := []struct {
		name        string
		value       string // "" leaves it unset
		want        int
		wantProblem bool
	}{
		{name: "Default", want: kontext.DefaultImageMemory},
		{name: "Set", value: "268435456", want: 256 << 20},
		{name: "TooSmall", value: "1000", wantProblem: true},
		{name: "NotANumber", value: "lots", wantProblem: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"COMETAPI_API_KEY": "sk-1"}
			if tt.value != "" {
				env["KONTEXT_IMAGE_MEMORY"] = tt.value
			}
			c, err := loadConfig(envMap(env))
			if tt.wantProblem {
				var ce *configError
				if !errors.As(err, &ce) || len(ce.problems) != 1 || !strings.HasPrefix(ce.problems[0], "KONTEXT_IMAGE_MEMORY") {
					t.Errorf("got %v, want one problem naming KONTEXT_IMAGE_MEMORY", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if c.ImageMemory != tt.want {
				t.Errorf("got %d, want %d", c.ImageMemory, tt.want)
			}
		})
	}
}
