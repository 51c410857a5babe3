package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"kontextbot/kontext"
)

// TestConfigModels covers issue 13's models settings: KONTEXT_MODELS
// hides models, KONTEXT_MODEL must be a served one, and every model's
// price is configurable (KONTEXT_PRICE_<MODEL>, the old MAX/PRO names too).
func TestConfigModels(t *testing.T) {
	all := []string{kontext.ModelMax, kontext.ModelPro, kontext.ModelFlux2Pro, kontext.ModelFlux2Flex}
	tests := []struct {
		name        string
		env         map[string]string
		wantProblem string
		models      []string // c.Models
		model       string
		prices      map[string]float64 // checked entries
	}{
		{name: "Defaults", env: map[string]string{}, model: kontext.ModelMax,
			prices: map[string]float64{kontext.ModelMax: 0.192, kontext.ModelPro: 0.096, kontext.ModelFlux2Pro: 0.072, kontext.ModelFlux2Flex: 0.192}},
		{name: "Subset", env: map[string]string{"KONTEXT_MODELS": " flux-2-pro, black-forest-labs/flux-kontext-pro "},
			models: []string{kontext.ModelPro, kontext.ModelFlux2Pro}, model: kontext.ModelPro},
		{name: "SubsetWithDefaultModel", env: map[string]string{"KONTEXT_MODELS": "flux-2-pro,flux-2-flex", "KONTEXT_MODEL": "flux-2-flex"},
			models: []string{kontext.ModelFlux2Pro, kontext.ModelFlux2Flex}, model: kontext.ModelFlux2Flex},
		{name: "PricePerModel", env: map[string]string{"KONTEXT_PRICE_FLUX_2_PRO": "0.05", "KONTEXT_PRICE_FLUX_KONTEXT_PRO": "0.1", "KONTEXT_PRICE_MAX": "$0.2"},
			model: kontext.ModelMax, prices: map[string]float64{kontext.ModelFlux2Pro: 0.05, kontext.ModelPro: 0.1, kontext.ModelMax: 0.2, kontext.ModelFlux2Flex: 0.192}},
		{name: "AllListed", env: map[string]string{"KONTEXT_MODELS": strings.Join(all, ",")}, models: all, model: kontext.ModelMax},
		{name: "UnknownModel", env: map[string]string{"KONTEXT_MODELS": "flux-kontext-max,flux-3"}, wantProblem: "KONTEXT_MODELS"},
		{name: "DefaultModelHidden", env: map[string]string{"KONTEXT_MODELS": "flux-2-pro", "KONTEXT_MODEL": "flux-kontext-max"}, wantProblem: "KONTEXT_MODEL="},
		{name: "BadPrice", env: map[string]string{"KONTEXT_PRICE_FLUX_2_FLEX": "cheap"}, wantProblem: "KONTEXT_PRICE_FLUX_2_FLEX"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"COMETAPI_API_KEY": "sk-1"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := loadConfig(envMap(env))
			if tt.wantProblem != "" {
				var ce *configError
				if !errors.As(err, &ce) || len(ce.problems) != 1 || !strings.HasPrefix(ce.problems[0], tt.wantProblem) {
					t.Errorf("got %v, want one problem naming %s", err, tt.wantProblem)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if !reflect.DeepEqual(c.Models, tt.models) {
				t.Errorf("models = %v, want %v", c.Models, tt.models)
			}
			if got, want := c.Model, tt.model; got != want {
				t.Errorf("model = %q, want %q", got, want)
			}
			for m, want := range tt.prices {
				if got := c.Prices[m]; got != want {
					t.Errorf("price of %s = %v, want %v", m, got, want)
				}
			}
		})
	}
}

// TestConfigSlots: KONTEXT_SLOTS is the account's pool (24 by default),
// KONTEXT_SLOTS_<MODEL> a model's pool inside it (flux-kontext-max 6 by
// default; never above the account's).
func TestConfigSlots(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantProblem string
		slots       int
		pools       map[string]int
	}{
		{name: "Defaults", env: map[string]string{}, slots: 24,
			pools: map[string]int{kontext.ModelMax: 6, kontext.ModelPro: 24, kontext.ModelFlux2Pro: 24, kontext.ModelFlux2Flex: 24}},
		{name: "PerModel", env: map[string]string{"KONTEXT_SLOTS": "30", "KONTEXT_SLOTS_FLUX_KONTEXT_MAX": "8", "KONTEXT_SLOTS_FLUX_2_PRO": "10"}, slots: 30,
			pools: map[string]int{kontext.ModelMax: 8, kontext.ModelPro: 30, kontext.ModelFlux2Pro: 10, kontext.ModelFlux2Flex: 30}},
		{name: "AccountBelowModel", env: map[string]string{"KONTEXT_SLOTS": "4"}, slots: 4,
			pools: map[string]int{kontext.ModelMax: 4, kontext.ModelPro: 4}},
		{name: "ModelAboveAccount", env: map[string]string{"KONTEXT_SLOTS": "4", "KONTEXT_SLOTS_FLUX_2_FLEX": "9"}, slots: 4,
			pools: map[string]int{kontext.ModelFlux2Flex: 4}},
		{name: "BadModelSlots", env: map[string]string{"KONTEXT_SLOTS_FLUX_KONTEXT_PRO": "0"}, wantProblem: "KONTEXT_SLOTS_FLUX_KONTEXT_PRO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"COMETAPI_API_KEY": "sk-1"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := loadConfig(envMap(env))
			if tt.wantProblem != "" {
				var ce *configError
				if !errors.As(err, &ce) || len(ce.problems) != 1 || !strings.HasPrefix(ce.problems[0], tt.wantProblem) {
					t.Errorf("got %v, want one problem naming %s", err, tt.wantProblem)
				}
				return
			}
			if err != nil {
				t.Fatalf("loadConfig: %v", err)
			}
			if c.Slots != tt.slots {
				t.Errorf("slots = %d, want %d", c.Slots, tt.slots)
			}
			for p, want := range tt.pools {
				if got := c.Pools[p]; got != want {
					t.Errorf("pool %s = %d, want %d", p, got, want)
				}
			}
		})
	}
}
