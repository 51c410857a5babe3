// Package slack is kontextbot's Slack adapter, on slack-go: slash
// commands, thread follow-ups, mentions, the "Edit image" shortcut and
// buttons, in Socket Mode or over HTTP, with results posted back.
package slack

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"kontextbot/bot"
)

// Platform is the name Slack conversations and jobs carry.
const Platform = "slack"

// Config configures the adapter.
type Config struct {
	// BotToken is the bot token, xoxb-...
	BotToken string
	// AppToken, xapp-..., selects Socket Mode.
	AppToken string
	// SigningSecret selects HTTP mode: Handler serves /slack/events,
	// /slack/commands and /slack/interactive, verifying every request.
	SigningSecret string
	// APIURL, when set, sends Web API traffic to another host (proxies,
	// tests) instead of https://slack.com/api/.
	APIURL string
	// Logger receives the adapter's logs; nil discards.
	Logger *slog.Logger
	// Out receives setup notices for the operator; nil discards.
	Out io.Writer
}

// Core is what the adapter needs of the bot core.
type Core interface {
	Submit(ctx context.Context, req *bot.Request) (*bot.Job, error)
}

// Bot is the Slack adapter.
type Bot struct{}

// New returns an adapter; Start connects it.
func New(cfg Config, core Core) (*Bot, error) {
	return nil, errors.New("slack: not built yet")
}

// Name is the platform name.
func (b *Bot) Name() string { return Platform }

// Reporter reports on job in Slack, from what job.Origin says.
func (b *Bot) Reporter(job *bot.Job) bot.Reporter { return nil }

// Start checks the token and, in Socket Mode, connects; it returns once
// events flow.
func (b *Bot) Start(ctx context.Context) error { return errors.New("slack: not built yet") }

// Handler serves Slack's HTTP mode routes; nil in Socket Mode.
func (b *Bot) Handler() http.Handler { return nil }

// Close disconnects.
func (b *Bot) Close() error { return nil }

// Healthy is nil while the adapter can receive events.
func (b *Bot) Healthy() error { return errors.New("slack: not built yet") }
