package bot_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/store"
	"kontextbot/store/postgres"
	"kontextbot/store/postgres/pgtest"
)

// photo is a w×h JPEG with detail everywhere, like a generated image.
func photo(b testing.TB, w, h int, seed uint64) []byte {
	b.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			n := uint8(r.IntN(48))
			img.SetRGBA(x, y, color.RGBA{uint8(x*255/w) ^ n, uint8(y*255/h) + n, uint8((x+y)*127/(w+h)) + n, 0xff})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHistory20Stored draws the history of a conversation of 20
// images of 1 MP (1024×1024 JPEGs, as the provider returns; branched
// every few images) with a new core each time: an empty thumbnail cache
// over a store that holds the thumbnails, what a restarted process or
// another replica sees. Per sheet: cpu-ms/op and wall-ms/op (the
// conversation and 20 thumbnails read from the store, the sheet drawn
// and encoded); first_cpu_ms and first_wall_ms are the one sheet that
// found no thumbnail stored (images stored before thumbnails were) and
// made and stored all 20.
func BenchmarkHistory20Stored(b *testing.B) {
	backends := []struct {
		name string
		open func(b *testing.B) bot.Store
	}{
		{"bbolt", func(b *testing.B) bot.Store {
			db, err := store.Open(filepath.Join(b.TempDir(), "k.db"), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			return db
		}},
		{"postgres", func(b *testing.B) bot.Store {
			db, err := postgres.Open(context.Background(), pgtest.Schema(b), postgres.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { db.Close() })
			return db
		}},
	}
	images := make([][]byte, 20)
	for i := range images {
		images[i] = photo(b, 1024, 1024, uint64(i))
	}
	for _, be := range backends {
		b.Run(be.name, func(b *testing.B) {
			ctx := context.Background()
			st := be.open(b)
			key := bot.ConvKey{Platform: "test", Workspace: "w", Channel: "c", Thread: "t"}
			for i, img := range images {
				t := bot.Turn{ID: fmt.Sprintf("n%d", i+1), Kind: bot.KindEdit, Prompt: "an edit", Format: "jpeg", Width: 1024, Height: 1024}
				if i > 0 {
					t.Parent = fmt.Sprintf("n%d", i)
					if i%5 == 0 {
						t.Parent = fmt.Sprintf("n%d", i-1)
					}
				}
				if _, err := st.AddTurn(ctx, key, t, img, nil, nil); err != nil {
					b.Fatal(err)
				}
			}
			req := &bot.Request{Kind: bot.KindHistory, Conv: key, User: "ada"}
			cpu0, wall0 := cpuTime(b), time.Now()
			if _, err := bot.New(bot.Config{}, st, nil, nil).History(ctx, req); err != nil {
				b.Fatal(err)
			}
			firstCPU, firstWall := cpuTime(b)-cpu0, time.Since(wall0)
			for i, img := range images {
				if _, err := st.Thumbnail(ctx, digest(img)); err != nil {
					b.Fatalf("image %d: thumbnail not stored by the first sheet: %v", i+1, err)
				}
			}
			b.ReportAllocs()
			var cpu, wall time.Duration
			n := 0
			for b.Loop() {
				n++
				core := bot.New(bot.Config{}, st, nil, nil) // an empty cache
				c0, w0 := cpuTime(b), time.Now()
				hs, err := core.History(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				cpu, wall = cpu+cpuTime(b)-c0, wall+time.Since(w0)
				if len(hs.Items) != len(images) {
					b.Fatalf("got %d images on the sheet, want %d", len(hs.Items), len(images))
				}
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n), "cpu-ms/op")
			b.ReportMetric(float64(wall.Microseconds())/1000/float64(n), "wall-ms/op")
			b.ReportMetric(float64(firstCPU.Microseconds())/1000, "first_cpu_ms")
			b.ReportMetric(float64(firstWall.Microseconds())/1000, "first_wall_ms")
		})
	}
}
