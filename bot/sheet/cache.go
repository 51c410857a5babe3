package sheet

import (
	"container/list"
	"context"
	"image"
	"sync"

	"kontextbot/kontext"
)

// Cache keeps thumbnails already made, by a key naming the image's bytes
// (its SHA-256), so that a sheet drawn again (after one more edit, say)
// decodes only the images it has not seen. It holds at most its size in
// thumbnails (each at most ThumbSize² × 4 bytes: 128 take 20 MB) and
// drops the least recently used. It is safe for concurrent use; a nil
// *Cache keeps nothing.
type Cache struct {
	mu    sync.Mutex
	size  int
	order *list.List // of *cacheEntry, most recent first
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key   string
	thumb *image.RGBA
}

// NewCache returns a cache of at most size thumbnails.
func NewCache(size int) *Cache {
	return &Cache{size: max(size, 1), order: list.New(), byKey: map[string]*list.Element{}}
}

// get returns the thumbnail under key, or nil.
func (c *Cache) get(key string) *image.RGBA {
	if c == nil || key == "" {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(*cacheEntry).thumb
}

// put keeps thumb under key. Thumbnails are never written to once made,
// so one can be shared by any number of renders.
func (c *Cache) put(key string, thumb *image.RGBA) {
	if c == nil || key == "" || thumb == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.byKey[key] = c.order.PushFront(&cacheEntry{key: key, thumb: thumb})
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*cacheEntry).key)
	}
}

// Len is the number of thumbnails kept.
func (c *Cache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}

// Add makes the thumbnail of data, the image key names, unless the cache
// has it, and returns it encoded as EncodeThumb does, for a Store to
// keep: done as an image is stored, it saves the sheet that shows the
// image the decode, in this process and (through the Store) in any
// other. It never waits for budget: when the decode's memory is not free
// at once, or the image cannot be read, nothing is made (nil, no error;
// the sheet makes it when it needs it). A nil *Cache keeps nothing but
// still returns the encoded thumbnail.
func (c *Cache) Add(ctx context.Context, key string, data []byte, budget *kontext.Budget) ([]byte, error) {
	th := c.get(key)
	if th == nil {
		var err error
		if th, err = thumbnail(ctx, data, budget, false); err != nil || th == nil {
			return nil, err
		}
		c.put(key, th)
	}
	return EncodeThumb(th)
}
