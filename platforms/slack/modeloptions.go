package slack

import (
	slackgo "github.com/slack-go/slack"

	"kontextbot/kontext"
)

// modelOptions are the settings' default-model choices: "Default (env)"
// first, then the models this process serves (kontext.Available,
// KONTEXT_MODELS), as the models table labels them, within Slack's
// limits (maxSelectOptions, maxOptionText).
func modelOptions(envModel string) []*slackgo.OptionBlockObject {
	out := []*slackgo.OptionBlockObject{
		slackgo.NewOptionBlockObject(modelDefault, plain(truncate("Default ("+envModel+")", maxOptionText)), nil),
	}
	for _, m := range kontext.Available() {
		if len(out) == maxSelectOptions {
			break
		}
		out = append(out, slackgo.NewOptionBlockObject(m.Name, plain(truncate(m.Label, maxOptionText)), nil))
	}
	return out
}
