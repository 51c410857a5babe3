package bot_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"kontextbot/bot"
)

// peakHeap runs f and returns the highest live heap seen meanwhile above
// the heap before it (sampled every millisecond, and at the end), and the
// bytes it allocated.
func peakHeap(f func()) (peak, total uint64) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, before := ms.HeapAlloc, ms.TotalAlloc
	var high uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				runtime.ReadMemStats(&m)
				high = max(high, m.HeapAlloc)
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	runtime.ReadMemStats(&ms)
	high = max(high, ms.HeapAlloc)
	return high - min(high, base), ms.TotalAlloc - before
}

// BenchmarkCheckImagePeakHeap checks the worst inputs CheckImage still
// accepts (the largest pixel formats within MaxImagePixels and
// MaxDecodeBytes) and reports the peak heap of one check, which decodes
// the image once: peak_heap_mb (sampled live heap above the start),
// alloc_mb (all bytes allocated) and budget_mb (DecodeMemory's figure).
func BenchmarkCheckImagePeakHeap(b *testing.B) {
	cases := []struct {
		name string
		data []byte
	}{
		{"RGBA8At33MP", zeroPNG(6600, 5000, 8, 6, false, false)},
		{"RGBA16At16MP", zeroPNG(4000, 4000, 16, 6, false, false)},
		{"RGBA8InterlacedAt16MP", zeroPNG(4000, 4000, 8, 6, true, false)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			budget, err := bot.DecodeMemory(c.data)
			if err != nil || budget > bot.MaxDecodeBytes {
				b.Fatalf("%d bytes (%v): not an accepted input", budget, err)
			}
			var peak, total uint64
			for b.Loop() {
				p, t := peakHeap(func() {
					if err := bot.CheckImage(c.data); err != nil {
						b.Fatal(err)
					}
				})
				peak, total = max(peak, p), max(total, t)
			}
			b.ReportMetric(float64(peak)/1e6, "peak_heap_mb")
			b.ReportMetric(float64(total)/1e6, "alloc_mb")
			b.ReportMetric(float64(budget)/1e6, "budget_mb")
		})
	}
}
