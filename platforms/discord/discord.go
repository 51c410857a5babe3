// Package discord is kontextbot's Discord adapter, on discordgo: slash
// commands, the "Edit image" message command, replies, picture threads and
// buttons, turned into bot requests, with results posted back.
package discord

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"kontextbot/bot"
)

// Platform is the name Discord conversations and jobs carry.
const Platform = "discord"

// Config configures the adapter.
type Config struct {
	// Token is the bot token (without the "Bot " prefix).
	Token string
	// GuildID, when set, registers the commands in that server only
	// (instant); otherwise globally.
	GuildID string
	// APIURL, when set, sends REST and gateway traffic to another host
	// (proxies, tests) instead of https://discord.com.
	APIURL string
	// Logger receives the adapter's logs; nil discards.
	Logger *slog.Logger
	// Out receives setup notices for the operator (the invite URL); nil discards.
	Out io.Writer
}

// Core is what the adapter needs of the bot core.
type Core interface {
	Submit(ctx context.Context, req *bot.Request) (*bot.Job, error)
}

// Bot is the Discord adapter.
type Bot struct{}

// New returns an adapter; Start connects it.
func New(cfg Config, core Core) (*Bot, error) {
	return nil, errors.New("discord: not built yet")
}

// Name is the platform name.
func (b *Bot) Name() string { return Platform }

// Reporter reports on job in Discord, from what job.Origin says.
func (b *Bot) Reporter(job *bot.Job) bot.Reporter { return nil }

// Start connects to the gateway, registers the commands and returns once
// events flow.
func (b *Bot) Start(ctx context.Context) error { return errors.New("discord: not built yet") }

// Close disconnects.
func (b *Bot) Close() error { return nil }

// Healthy is nil while the gateway connection is up.
func (b *Bot) Healthy() error { return errors.New("discord: not built yet") }
