// Package bot is kontextbot's platform-free core: requests, conversations,
// jobs, quotas and the errors users see. It defines the small interfaces it
// needs (a Generator, a Store, a Reporter) where it uses them; the kontext
// and store packages satisfy them, and each chat platform adapts its events
// into Requests.
package bot
