package slack

import (
	"fmt"
	"testing"
	"time"

	slackgo "github.com/slack-go/slack"

	"kontextbot/platforms/slack/slackfake"
)

// TestSettingsWithoutUsersRead: an owner whose app lacks users:read is
// told which scope is missing rather than that they are no admin, and no
// modal opens.
func TestSettingsWithoutUsersRead(t *testing.T) {
	h := newHarness(t, harnessOpts{slack: slackfake.Options{NoUsersRead: true}})
	h.fake.AddUser("U0OWN", "own")
	h.fake.SetRole("U0OWN", slackfake.Role{Owner: true})
	ch := h.fake.CreateChannel("art", true)
	env := h.fake.Slash("U0OWN", ch, "/imagine", "settings")
	h.wait("the answer", func() bool { return len(h.fake.Ephemerals("U0OWN")) == 1 })
	if got := h.fake.Ephemerals("U0OWN")[0].Text; got != escape(errNoUsersRead.Msg) {
		t.Errorf("got %q, want %q", got, escape(errNoUsersRead.Msg))
	}
	// Acknowledged when its handling ends, after the answer.
	if acked := env.Acked(5 * time.Second); !acked || len(h.fake.Views()) != 0 {
		t.Errorf("acked %v, %d views; want acked and none", acked, len(h.fake.Views()))
	}
}

// TestSettingsFromState: an empty field is "the default", a filled one an
// override, and what is not a number gets a sentence.
func TestSettingsFromState(t *testing.T) {
	state := func(daily, budget, model string, chans []string) *slackgo.ViewState {
		return &slackgo.ViewState{Values: map[string]map[string]slackgo.BlockAction{
			blockDaily:  {actSetting: {Value: daily}},
			blockBudget: {actSetting: {Value: budget}},
			blockModel:  {actSetting: {SelectedOption: slackgo.OptionBlockObject{Value: model}}},
			blockChans:  {actSetting: {SelectedChannels: chans}},
		}}
	}
	tests := []struct {
		name    string
		st      *slackgo.ViewState
		want    string // Effective-free summary
		wantErr bool
	}{
		{"all empty", state("", "", modelDefault, nil), "daily=nil budget=nil model= channels=nil", false},
		{"no state", nil, "daily=nil budget=nil model= channels=nil", false},
		{"every field", state("0", "12.5", "flux-kontext-pro", []string{"C1"}), "daily=0 budget=12.5 model=flux-kontext-pro channels=[C1]", false},
		{"daily not a number", state("ten", "", "", nil), "", true},
		{"budget not a number", state("", "NaN", "", nil), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := settingsFromState(tc.st)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			got := "daily=" + ptr(s.DailyLimit) + " budget=" + ptr(s.Budget) + " model=" + s.Model + " channels=" + list(s.Channels)
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func ptr[T int | float64](p *T) string {
	if p == nil {
		return "nil"
	}
	return fmtAny(*p)
}

func list(l []string) string {
	if l == nil {
		return "nil"
	}
	return fmtAny(l)
}

func fmtAny(v any) string { return fmt.Sprint(v) }
