package bot

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"kontextbot/kontext"
)

// WorkspaceSettings are a workspace's overrides of the environment's
// limits, kept in the store. Each field is optional: nil (or "" for
// Model) means "use the environment".
type WorkspaceSettings struct {
	// DailyLimit caps each user's images per UTC day; 0 means no cap.
	DailyLimit *int `json:"daily_limit,omitempty"`
	// Budget caps the workspace's spend per UTC month in USD; 0 means none.
	Budget *float64 `json:"budget,omitempty"`
	// Channels, when not nil, are the only channels the bot answers in;
	// an empty, non-nil list means every channel.
	Channels []string `json:"channels"`
	// Model is the default model.
	Model string `json:"model,omitempty"`
	// UpdatedBy and Updated say who changed them last, and when.
	UpdatedBy string    `json:"updated_by,omitempty"`
	Updated   time.Time `json:"updated,omitzero"`
}

// Empty reports whether s overrides nothing.
func (s WorkspaceSettings) Empty() bool {
	return s.DailyLimit == nil && s.Budget == nil && s.Channels == nil && s.Model == ""
}

// Limits for settings values.
const (
	MaxSettingsDailyLimit = 1000000
	MaxSettingsBudget     = 1000000.0
	MaxSettingsChannels   = 100
)

// ErrNotSettingsAdmin refuses a settings change to someone who may not
// make it.
var ErrNotSettingsAdmin = &UserError{Msg: "Only admins can change the bot's settings: on Discord, members with the Manage Server permission; on Slack, workspace admins and owners; and the people listed in KONTEXT_ADMINS."}

// ErrSettingsNoWorkspace refuses settings outside a server or workspace.
var ErrSettingsNoWorkspace = &UserError{Msg: "Settings belong to a server or workspace: use this command in one of its channels, not in a direct message."}

// Validate checks the values of s and returns a sentence for the first bad one.
func (s WorkspaceSettings) Validate() error {
	if s.DailyLimit != nil && (*s.DailyLimit < 0 || *s.DailyLimit > MaxSettingsDailyLimit) {
		return Userf("The daily limit must be a whole number from 0 (no limit) to %d.", MaxSettingsDailyLimit)
	}
	if s.Budget != nil && (math.IsNaN(*s.Budget) || *s.Budget < 0 || *s.Budget > MaxSettingsBudget) {
		return Userf("The monthly budget must be an amount in US dollars from 0 (no budget) to %.0f.", MaxSettingsBudget)
	}
	if s.Model != "" && !kontext.ValidModel(s.Model) {
		return UnknownModel(s.Model)
	}
	if len(s.Channels) > MaxSettingsChannels {
		return Userf("At most %d channels can be allowed; leave the list empty to allow every channel.", MaxSettingsChannels)
	}
	for _, ch := range s.Channels {
		if ch == "" || strings.ContainsAny(ch, "/ \t\n") || len(ch) > 64 {
			return Userf("%q is not a channel I can allow: pick channels from the list.", ch)
		}
	}
	return nil
}

// Defaults are the environment's values of the settings.
type Defaults struct {
	DailyLimit int
	Budget     float64
	Channels   []string
	Model      string
}

// Effective is what applies in a workspace: each value from the
// workspace's overrides when set, else from the environment.
type Effective struct {
	Defaults
	// Overrides are the workspace's stored overrides (zero when none).
	Overrides WorkspaceSettings
	// Env are the environment's values, which apply where Overrides has none.
	Env Defaults
}

// effective reads the settings that apply to platform/workspace.
func (c *Core) effective(ctx context.Context, platform, workspace string) (Effective, error) {
	env := Defaults{DailyLimit: c.cfg.UserDaily, Budget: c.cfg.WorkspaceBudget, Channels: c.cfg.Channels, Model: c.cfg.Model}
	e := Effective{Defaults: env, Env: env}
	if workspace == "" {
		return e, nil
	}
	s, err := c.store.Settings(ctx, platform, workspace)
	if err != nil {
		return e, fmt.Errorf("bot: settings %s/%s: %w", platform, workspace, err)
	}
	e.Overrides = s
	if s.DailyLimit != nil {
		e.DailyLimit = *s.DailyLimit
	}
	if s.Budget != nil {
		e.Budget = *s.Budget
	}
	if s.Channels != nil {
		e.Channels = s.Channels
	}
	if s.Model != "" && kontext.ValidModel(s.Model) {
		e.Model = s.Model
	}
	return e, nil
}

// canSet reports whether req's user may see and change settings: the
// platform says they administer the workspace, or KONTEXT_ADMINS lists them.
func (c *Core) canSet(req *Request) bool { return req.Admin || c.isAdmin(req.User) }

// Settings returns the settings that apply in the workspace of req.Conv,
// for an admin only.
func (c *Core) Settings(ctx context.Context, req *Request) (Effective, error) {
	if req.Conv.Workspace == "" {
		return Effective{}, ErrSettingsNoWorkspace
	}
	if !c.canSet(req) {
		return Effective{}, ErrNotSettingsAdmin
	}
	return c.effective(ctx, req.Conv.Platform, req.Conv.Workspace)
}

// SetSettings replaces the overrides of req.Conv's workspace with s (zero
// fields: back to the environment) for an admin, after checking every
// value. It applies from the next request on.
func (c *Core) SetSettings(ctx context.Context, req *Request, s WorkspaceSettings) (Effective, error) {
	if req.Conv.Workspace == "" {
		return Effective{}, ErrSettingsNoWorkspace
	}
	if !c.canSet(req) {
		c.log.Info("bot: settings change refused", "platform", req.Conv.Platform, "workspace", req.Conv.Workspace, "user", req.User)
		return Effective{}, ErrNotSettingsAdmin
	}
	if err := s.Validate(); err != nil {
		return Effective{}, err
	}
	s.UpdatedBy, s.Updated = req.User, c.now().UTC()
	if err := c.store.PutSettings(ctx, req.Conv.Platform, req.Conv.Workspace, s); err != nil {
		return Effective{}, fmt.Errorf("bot: set settings: %w", err)
	}
	c.log.Info("bot: settings changed", "platform", req.Conv.Platform, "workspace", req.Conv.Workspace, "user", req.User)
	return c.effective(ctx, req.Conv.Platform, req.Conv.Workspace)
}

// Text describes the effective settings in a few lines, marking those
// that come from the workspace's overrides.
func (e Effective) Text() string {
	src := func(over bool) string {
		if over {
			return " (set here)"
		}
		return " (default)"
	}
	var b strings.Builder
	b.WriteString("Daily limit per person: ")
	if e.DailyLimit > 0 {
		fmt.Fprintf(&b, "%d images", e.DailyLimit)
	} else {
		b.WriteString("none")
	}
	b.WriteString(src(e.Overrides.DailyLimit != nil))
	b.WriteString("\nMonthly budget: ")
	if e.Budget > 0 {
		fmt.Fprintf(&b, "$%.2f", e.Budget)
	} else {
		b.WriteString("none")
	}
	b.WriteString(src(e.Overrides.Budget != nil))
	fmt.Fprintf(&b, "\nDefault model: %s%s", e.Model, src(e.Overrides.Model != ""))
	b.WriteString("\nChannels: ")
	if len(e.Channels) == 0 {
		b.WriteString("all")
	} else {
		for i, ch := range e.Channels {
			if i > 0 {
				b.WriteString(" ")
			}
			b.WriteString("<#" + ch + ">")
		}
	}
	b.WriteString(src(e.Overrides.Channels != nil))
	return b.String()
}

// allowedIn reports whether channel is allowed by e.
func (e Effective) allowedIn(channel string) bool {
	return len(e.Channels) == 0 || slices.Contains(e.Channels, channel)
}

// UnknownModel is the sentence refusing model name s: it lists the models
// this process serves (kontext.ModelNames, KONTEXT_MODELS).
func UnknownModel(s string) error {
	return Userf("Unknown model %q: use %s.", s, orList(kontext.ModelNames()))
}

// orList joins names as a sentence does: "a", "a or b", "a, b or c".
func orList(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
