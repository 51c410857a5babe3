package bot

import (
	"context"
	"maps"
)

// storedKey is the context key of the function Submit calls once a
// request's job is durably stored.
type storedKey struct{}

// WithStored returns a context under which Submit calls stored once the
// request's job (or every job of a group) is in the store, before it is
// queued. An adapter acknowledges the request to its platform there:
// from then on a replica that dies leaves a stored job that another
// replica adopts (Core.Adopt), so an acknowledged request is never lost.
// stored gets a copy of the (first) job; should it change its Origin
// (what the acknowledgement made, such as the id of Discord's response),
// Submit stores every job of the request again with that origin before
// it queues them. stored must be idempotent and not block long: it runs
// inside Submit.
func WithStored(ctx context.Context, stored func(j *Job)) context.Context {
	return context.WithValue(ctx, storedKey{}, stored)
}

// Stored calls the function WithStored put in ctx, if any, with a copy of
// j, and returns the copy: its Origin is what the caller must store. Core
// calls it inside Submit; another implementation of Submit (a test
// double) calls it where its job is stored.
func Stored(ctx context.Context, j *Job) *Job {
	cp := *j
	cp.Origin = maps.Clone(cp.Origin)
	if f, ok := ctx.Value(storedKey{}).(func(*Job)); ok && f != nil {
		f(&cp)
	}
	return &cp
}

// markStored calls the function WithStored put in ctx, if any, with a
// copy of jobs[0], and stores jobs again with the origin it set.
func (c *Core) markStored(ctx context.Context, jobs ...*Job) {
	if len(jobs) == 0 {
		return
	}
	cp := Stored(ctx, jobs[0])
	if maps.Equal(cp.Origin, jobs[0].Origin) {
		return
	}
	for _, j := range jobs {
		j.Origin = maps.Clone(cp.Origin)
		if err := c.store.PutJob(ctx, j); err != nil {
			// Stored already, with its first origin: it runs with that.
			c.log.Warn("bot: submit: store the acknowledged origin", "job", j.ID, "err", err)
		}
	}
}
