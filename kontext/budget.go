package kontext

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sync/semaphore"
)

// DefaultImageMemory is the default Budget: what decoding and encoding
// people's images may take at once, sized for a 1 GB container (the rest
// is the Go runtime's headroom, garbage not yet collected, the store and
// everything else).
const DefaultImageMemory = 256 << 20

// ErrOverBudget marks an image that needs more memory than the whole
// Budget: waiting could never let it through.
var ErrOverBudget = errors.New("the image needs more memory than the whole image budget")

// Budget is the memory that decoding and encoding people's images may
// take at once, shared by everything that decodes them (the bot's checks,
// the client's downscaling). Each decode takes its estimate (DecodeMemory)
// before it starts and gives it back when it ends; when the budget is
// spent it waits, rather than fails. A nil *Budget takes nothing and
// never waits. It is safe for concurrent use.
type Budget struct {
	sem  *semaphore.Weighted
	size int64
}

// NewBudget returns a budget of size bytes; nil (no bound) when size is 0
// or less.
func NewBudget(size int64) *Budget {
	if size <= 0 {
		return nil
	}
	return &Budget{sem: semaphore.NewWeighted(size), size: size}
}

// Size is the whole budget in bytes; 0 for a nil budget.
func (b *Budget) Size() int64 {
	if b == nil {
		return 0
	}
	return b.size
}

// Acquire waits until n bytes of the budget are free and takes them; the
// caller must call release exactly once when its decode or encode is
// over. It fails at once, wrapping ErrOverBudget, when n is more than the
// whole budget, and with ctx's error when ctx ends first (then nothing is
// taken).
func (b *Budget) Acquire(ctx context.Context, n int64) (release func(), err error) {
	if b == nil || n <= 0 {
		return func() {}, nil
	}
	if n > b.size {
		return nil, fmt.Errorf("kontext: image memory: %d MiB needed, %d MiB in all: %w", (n+(1<<20)-1)>>20, b.size>>20, ErrOverBudget)
	}
	if err := b.sem.Acquire(ctx, n); err != nil {
		return nil, fmt.Errorf("kontext: image memory: %w", err)
	}
	return b.releaser(n), nil
}

// TryAcquire takes n bytes when they are free now, without waiting; ok
// reports whether it did (then call release once).
func (b *Budget) TryAcquire(n int64) (release func(), ok bool) {
	if b == nil || n <= 0 {
		return func() {}, true
	}
	if n > b.size || !b.sem.TryAcquire(n) {
		return nil, false
	}
	return b.releaser(n), true
}

// ReclaimBytes is the size from which giving a share of the Budget back
// first collects the garbage its decode left. A decoded image is garbage
// the moment its work ends, but the collector would only reach it once
// the heap doubles again (GOGC): six 40 MP JPEG decodes at once, within a
// 384 MiB budget, peaked at 645-725 MB of heap, half of it dead pixels.
// Collecting before the share is handed to the next waiter keeps decoded
// pixels, live or dead, within the budget; a collection with only a small
// live heap costs a few milliseconds, against the 100 ms or more such a
// decode takes.
const ReclaimBytes = 16 << 20

// releaser returns the release func of a share of n bytes: it gives them
// back once, collecting first when n is at least ReclaimBytes.
func (b *Budget) releaser(n int64) func() {
	released := false
	return func() {
		if released {
			return
		}
		released = true
		if n >= ReclaimBytes {
			runtime.GC()
		}
		b.sem.Release(n)
	}
}
