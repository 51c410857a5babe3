package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
)

// The settings modal: its callback id, and its blocks and actions.
const (
	cbSettings   = "kontext_settings"
	blockDaily   = "daily_limit"
	blockBudget  = "budget"
	blockModel   = "model"
	blockChans   = "channels"
	actSetting   = "value"
	modelDefault = "default"
)

// channelLink matches an escaped channel mention, <#C123>: the one markup
// ephemeral messages keep (a link, never a ping).
var channelLink = regexp.MustCompile(`&lt;#([CG][A-Z0-9]{1,20})&gt;`)

// escapeLinks is escape, keeping channel mentions as links.
func escapeLinks(s string) string { return channelLink.ReplaceAllString(escape(s), "<#$1>") }

// settingsMeta is the settings modal's private_metadata: where to answer.
type settingsMeta struct {
	Team    string `json:"w"`
	Channel string `json:"c"`
}

// workspaceAdmin asks Slack whether user administers the workspace
// (users.info: is_admin, is_owner or is_primary_owner). A person of
// another organisation (Slack Connect) is not this workspace's admin.
// When Slack cannot say, the answer is no (KONTEXT_ADMINS still apply).
func (b *Bot) workspaceAdmin(ctx context.Context, team, user string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	u, err := b.api.GetUserInfoContext(ctx, user)
	if err != nil {
		b.log.Warn("slack: users.info", "user", user, "err", err)
		return false, err
	}
	if u.Deleted || u.IsBot || u.IsStranger || (u.TeamID != "" && team != "" && u.TeamID != team) {
		return false, nil
	}
	return u.IsAdmin || u.IsOwner || u.IsPrimaryOwner, nil
}

// errNoUsersRead explains a refusal that came from not being able to ask.
var errNoUsersRead = &bot.UserError{Msg: "I can't check who is a workspace admin: the Slack app lacks the users:read scope. Add it under OAuth & Permissions and reinstall the app, or list admins in KONTEXT_ADMINS."}

// settingsRequest is the request of user at p, with Slack's word on
// whether they administer the workspace. When Slack could not say
// because of a missing scope, a refusal names the scope.
func (b *Bot) settingsRequest(ctx context.Context, p place) (*bot.Request, func(error) error) {
	admin, err := b.workspaceAdmin(ctx, p.team, p.user)
	explain := func(e error) error {
		var se slackgo.SlackErrorResponse
		if errors.Is(e, bot.ErrNotSettingsAdmin) && errors.As(err, &se) && se.Err == "missing_scope" {
			return errNoUsersRead
		}
		return e
	}
	return &bot.Request{Conv: p.conv(), User: p.user, Admin: admin}, explain
}

// openSettings answers /imagine settings: the settings modal for an
// admin, a sentence saying who may change settings for anyone else.
func (b *Bot) openSettings(ctx context.Context, p place, trigger string) {
	req, explain := b.settingsRequest(ctx, p)
	eff, err := b.core.Settings(ctx, req)
	if err != nil {
		b.reply(ctx, p, explain(err))
		return
	}
	if _, err := b.api.OpenViewContext(ctx, trigger, settingsModal(settingsMeta{Team: p.team, Channel: p.channel}, eff)); err != nil {
		b.reply(ctx, p, fmt.Errorf("slack: views.open settings: %w", err))
	}
}

// settingsModal shows the effective settings, each prefilled with the
// workspace's override; an empty field means the default.
func settingsModal(meta settingsMeta, eff bot.Effective) slackgo.ModalViewRequest {
	m, _ := json.Marshal(meta)
	o := eff.Overrides
	daily := slackgo.NewNumberInputBlockElement(plain("default"), actSetting, false).
		WithMinValue("0").WithMaxValue(strconv.Itoa(bot.MaxSettingsDailyLimit))
	if o.DailyLimit != nil {
		daily.WithInitialValue(strconv.Itoa(*o.DailyLimit))
	}
	budget := slackgo.NewNumberInputBlockElement(plain("default"), actSetting, true).
		WithMinValue("0").WithMaxValue(strconv.FormatFloat(bot.MaxSettingsBudget, 'f', -1, 64))
	if o.Budget != nil {
		budget.WithInitialValue(strconv.FormatFloat(*o.Budget, 'f', -1, 64))
	}
	models := modelOptions(eff.Env.Model)
	model := slackgo.NewOptionsSelectBlockElement(slackgo.OptTypeStatic, plain("Default"), actSetting, models...)
	model.InitialOption = models[0]
	for _, opt := range models[1:] {
		if opt.Value == o.Model {
			model.InitialOption = opt
		}
	}
	chans := slackgo.NewOptionsMultiSelectBlockElement(slackgo.MultiOptTypeChannels, plain("Default"), actSetting)
	maxChans := bot.MaxSettingsChannels
	chans.MaxSelectedItems = &maxChans
	if len(o.Channels) > 0 {
		chans.WithInitialChannels(o.Channels...)
	}
	input := func(id, label, hint string, e slackgo.BlockElement) *slackgo.InputBlock {
		blk := slackgo.NewInputBlock(id, plain(label), plain(hint), e)
		blk.Optional = true
		return blk
	}
	def := func(v string) string { return "Empty: the default, " + v + "." }
	return slackgo.ModalViewRequest{
		Type:            slackgo.VTModal,
		Title:           plain("kontextbot settings"),
		Submit:          plain("Save"),
		Close:           plain("Cancel"),
		CallbackID:      cbSettings,
		PrivateMetadata: string(m),
		Blocks: slackgo.Blocks{BlockSet: []slackgo.Block{
			input(blockDaily, "Daily limit per person (images)", def(orNone(eff.Env.DailyLimit > 0, strconv.Itoa(eff.Env.DailyLimit)))+" 0: no limit.", daily),
			input(blockBudget, "Monthly budget (US dollars)", def(orNone(eff.Env.Budget > 0, fmt.Sprintf("$%.2f", eff.Env.Budget)))+" 0: no budget.", budget),
			input(blockModel, "Default model", "Used when a request names none.", model),
			input(blockChans, "Only answer in these channels", "Empty: the default list (every channel when none is set).", chans),
		}},
	}
}

func orNone(set bool, v string) string {
	if set {
		return v
	}
	return "none"
}

// onSettingsSubmit stores what an admin saved in the settings modal.
func (b *Bot) onSettingsSubmit(ctx context.Context, cb slackgo.InteractionCallback) {
	var meta settingsMeta
	if err := json.Unmarshal([]byte(cb.View.PrivateMetadata), &meta); err != nil || meta.Channel == "" {
		b.log.Warn("slack: settings modal without metadata", "err", err)
		return
	}
	p := place{team: meta.Team, channel: meta.Channel, user: cb.User.ID}
	if p.team == "" {
		p.team = b.team
	}
	s, err := settingsFromState(cb.View.State)
	if err != nil {
		b.reply(ctx, p, err)
		return
	}
	req, explain := b.settingsRequest(ctx, p)
	eff, err := b.core.SetSettings(ctx, req, s)
	if err != nil {
		b.reply(ctx, p, explain(err))
		return
	}
	b.ephemeral(ctx, p, "Saved: the settings apply from the next request.\n"+eff.Text())
}

// settingsFromState reads the modal's values: an empty field is "use
// the default".
func settingsFromState(st *slackgo.ViewState) (bot.WorkspaceSettings, error) {
	var s bot.WorkspaceSettings
	if st == nil {
		return s, nil
	}
	get := func(block string) slackgo.BlockAction { return st.Values[block][actSetting] }
	if v := get(blockDaily).Value; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return s, bot.Userf("The daily limit must be a whole number, like 10.")
		}
		s.DailyLimit = &n
	}
	if v := get(blockBudget).Value; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return s, bot.Userf("The budget must be an amount in US dollars, like 25 or 12.50.")
		}
		s.Budget = &f
	}
	if v := get(blockModel).SelectedOption.Value; v != "" && v != modelDefault {
		s.Model = v
	}
	if chs := get(blockChans).SelectedChannels; len(chs) > 0 {
		s.Channels = chs
	}
	return s, nil
}
