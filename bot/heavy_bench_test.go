package bot_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"path/filepath"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
	"kontextbot/store"
)

// heavyPNG18MiB is an 8-bit RGB PNG stored without compression, of about
// 18 MiB: 2560×2457 pixels (25 MB decoded as RGBA).
func heavyPNG18MiB(tb testing.TB) []byte {
	tb.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 2560, 2457))
	for i := range img.Pix {
		img.Pix[i] = byte(i*7 + i>>11)
	}
	for i := 3; i < len(img.Pix); i += 4 {
		img.Pix[i] = 0xff // opaque: PNG color type 2 (RGB)
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.NoCompression}).Encode(&buf, img); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// heavyPNG40MP is an 8-bit gray PNG of 7300×5479 pixels (40 MP, 40 MB
// decoded) in a file of 1.05 MiB (a gradient, with noise on one row in
// eight): a small file of many pixels, but too big to send as it is, so
// the client downscales it. (Go decodes 8-bit RGB PNGs as 4 bytes a pixel:
// at 40 MP they are over MaxDecodeBytes and refused from the header.)
func heavyPNG40MP(tb testing.TB) []byte {
	tb.Helper()
	img := image.NewGray(image.Rect(0, 0, 7300, 5479))
	for y := 0; y < 5479; y++ {
		for x := 0; x < 7300; x++ {
			img.Pix[y*img.Stride+x] = byte(x/29 + y/31 + (x*7^y*13)%3*((y%8+1)/8))
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// heavyJPEG40MP is a baseline 4:2:0 JPEG of 7300×5479 pixels (60 MB
// decoded as YCbCr): a format decoded whole, to check it and to
// downscale it, inside the image budget.
func heavyJPEG40MP(tb testing.TB) []byte {
	tb.Helper()
	img := image.NewYCbCr(image.Rect(0, 0, 7300, 5479), image.YCbCrSubsampleRatio420)
	for i := range img.Y {
		img.Y[i] = byte(i/29 + i%7300/31)
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = byte(i/97), byte(i%3650)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkHeavyInputs runs six edits at once of the same large input,
// each uploaded with its request, through the real core, store, queue and
// provider client (sharing the default image Budget, as the app does)
// against the fake provider (in this process: its own
// decoding of the 1 MP inputs it receives counts too), and reports the
// peak heap above the start while they run (peak_heap_mb, sampled every
// millisecond: HeapAlloc, garbage not yet collected included), that peak
// per job (heap_per_job_mb) and per job as a multiple of the input file
// (per_job_x_file).
func BenchmarkHeavyInputs(b *testing.B) {
	cases := []struct {
		name string
		data func(testing.TB) []byte
	}{
		{"18MiB", heavyPNG18MiB},
		{"40MP", heavyPNG40MP},
		{"40MPJPEG", heavyJPEG40MP},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			data := c.data(b)
			const jobs = 6
			var peak uint64
			for b.Loop() {
				p := heavyRun(b, data, jobs)
				peak = max(peak, p)
			}
			b.ReportMetric(float64(len(data))/(1<<20), "file_mib")
			b.ReportMetric(float64(peak)/1e6, "peak_heap_mb")
			b.ReportMetric(float64(peak)/jobs/1e6, "heap_per_job_mb")
			b.ReportMetric(float64(peak)/jobs/float64(len(data)), "per_job_x_file")
		})
	}
}

// heavyRun submits jobs edits of data at once and waits for every one to
// be delivered; it returns the peak heap meanwhile.
func heavyRun(b *testing.B, data []byte, jobs int) uint64 {
	b.Helper()
	fake := kontexttest.NewServer(kontexttest.Options{APIKey: "k", Latency: 200 * time.Millisecond, Pixels: 128 * 128})
	defer fake.Close()
	db, err := store.Open(filepath.Join(b.TempDir(), "k.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	images := kontext.NewBudget(kontext.DefaultImageMemory) // as the app shares it
	client, err := kontext.NewClient(kontext.Config{BaseURL: fake.URL, APIKey: "k", Wait: -1, Budget: images,
		PollInterval: 10 * time.Millisecond, MaxPollInterval: 20 * time.Millisecond, RetryBase: 5 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	queue := kontext.NewQueue(kontext.QueueOptions{Slots: jobs, UserRunning: jobs})
	core := bot.New(bot.Config{Prices: map[string]float64{kontext.ModelMax: 0.08}, ImageBudget: images}, db, client, bot.NewLocalScheduler(queue))
	rec := newRecorder()
	core.Register(rec)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		core.Close(ctx)
	}()
	peak, _ := peakHeap(func() {
		errs := make(chan error, jobs)
		ids := make(chan string, jobs)
		for i := range jobs {
			go func() {
				key := bot.ConvKey{Platform: "test", Workspace: "w", Channel: fmt.Sprintf("c%d", i), Thread: "t"}
				j, err := core.Submit(context.Background(), &bot.Request{Kind: bot.KindEdit, Conv: key, User: fmt.Sprintf("u%d", i), Prompt: "make it winter", Image: data})
				if err != nil {
					errs <- err
					return
				}
				ids <- j.ID
			}()
		}
		for range jobs {
			select {
			case err := <-errs:
				b.Fatal(err)
			case <-ids:
			}
		}
		timeout := time.After(2 * time.Minute)
		for done := 0; done < jobs; {
			select {
			case <-rec.ended:
				done++
			case <-timeout:
				b.Fatal("the edits did not end")
			}
		}
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.delivered) != jobs {
		b.Fatalf("delivered %d of %d edits; failed: %v", len(rec.delivered), jobs, rec.failed)
	}
	return peak
}
