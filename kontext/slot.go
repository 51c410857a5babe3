package kontext

import "context"

// WithSlotRelease returns a context under which Client.Run and
// Client.Resume call release once the job's prediction is final (it no
// longer occupies one of the provider's active tasks, only its download
// remains): a scheduler other than Queue (a queue shared by several
// processes) gives its slot to the next job then, as Queue does. release
// may be called more than once and must be safe for that.
func WithSlotRelease(ctx context.Context, release func()) context.Context {
	return context.WithValue(ctx, slotKey{}, release)
}
