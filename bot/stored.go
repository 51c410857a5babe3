package bot

import "context"

// storedKey is the context key of the function Submit calls once a
// request's job is durably stored.
type storedKey struct{}

// WithStored returns a context under which Submit calls stored once the
// request's job (or every job of a group) is in the store, before it is
// queued. An adapter acknowledges the request to its platform there:
// from then on a replica that dies leaves a stored job that another
// replica adopts (Core.Adopt), so an acknowledged request is never lost.
// stored may be called more than once (the adapter makes it idempotent)
// and must not block long: it runs inside Submit.
func WithStored(ctx context.Context, stored func()) context.Context {
	return context.WithValue(ctx, storedKey{}, stored)
}

// markStored calls the function WithStored put in ctx, if any.
func markStored(ctx context.Context) {
	if f, ok := ctx.Value(storedKey{}).(func()); ok && f != nil {
		f()
	}
}
