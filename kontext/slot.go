package kontext

import (
	"context"
	"time"
)

// WithSlotRelease returns a context under which Client.Run and
// Client.Resume call release once the job's prediction is final (it no
// longer occupies one of the provider's active tasks, only its download
// remains): a scheduler other than Queue (a queue shared by several
// processes) gives its slot to the next job then, as Queue does. release
// may be called more than once and must be safe for that.
func WithSlotRelease(ctx context.Context, release func()) context.Context {
	return context.WithValue(ctx, slotKey{}, release)
}

// limitKey is the context key under which a running job finds the function
// that slows its pool down after a 429 (Queue.SlowPool).
type limitKey struct{}

// WithSlotLimited returns a context under which Client.Run calls limited
// with the provider's wait when a create is answered 429 (the account's or
// the model's limit of active tasks): a scheduler other than Queue slows
// the job's pool down then, as Queue does. It is called from the job's own
// goroutine, which waits for it before it sleeps the wait out: it may
// take a moment (a database write), never long.
func WithSlotLimited(ctx context.Context, limited func(wait time.Duration)) context.Context {
	return context.WithValue(ctx, limitKey{}, limited)
}

// slotLimited tells the scheduler running under ctx, if any, that a create
// was answered 429 and will be retried after wait.
func slotLimited(ctx context.Context, wait time.Duration) {
	if f, ok := ctx.Value(limitKey{}).(func(time.Duration)); ok {
		f(wait)
	}
}
