package store

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"os"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"kontextbot/bot"
	"kontextbot/store/storetest"
)

// prefill writes n conversations of two turns ("a", head "b") that share
// one 1 KB image, many per transaction, through the same helpers AddTurn
// uses.
func prefill(b *testing.B, db *DB, n int) {
	b.Helper()
	start := time.Now()
	data := make([]byte, 1024)
	copy(data, "shared bench image")
	sha := shaOf(data)
	const perTx = 10_000
	for lo := 0; lo < n; lo += perTx {
		err := db.bolt.Update(func(tx *bbolt.Tx) error {
			for i := lo; i < min(lo+perTx, n); i++ {
				c := &bot.Conversation{Key: storetest.BenchKey(i), Head: "b", Updated: t0}
				for _, id := range []string{"a", "b"} {
					t := turn(id)
					t.SHA256, t.Bytes = sha, len(data)
					t.Messages = []string{fmt.Sprintf("%d%s", i, id)}
					c.Turns = append(c.Turns, t)
					if _, err := addRef(tx, sha, data); err != nil {
						return err
					}
				}
				if _, err := putConv(tx, c); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("prefilled %d conversations in %v", n, time.Since(start).Round(time.Millisecond))
}

// BenchmarkConversationRead reads random conversations out of 100,000.
func BenchmarkConversationRead(b *testing.B) {
	db := openTest(b, Options{})
	prefill(b, db, storetest.BenchConvs)
	storetest.BenchHeadRead(b, db, storetest.BenchConvs)
}

// BenchmarkHeadWrite moves the head (SetHead, a durable write with fsync)
// of random conversations out of 100,000.
func BenchmarkHeadWrite(b *testing.B) {
	db := openTest(b, Options{})
	prefill(b, db, storetest.BenchConvs)
	storetest.BenchHeadWrite(b, db, storetest.BenchConvs)
}

// fileSizeRing bounds BenchmarkFileSize's disk use: iteration i writes into
// conversation i % fileSizeRing, which keeps one turn (History 1), so past
// the ring's size each write replaces an image and frees the old one's pages.
const fileSizeRing = 100

// BenchmarkFileSize stores conversations that each hold one distinct
// 1.5 MB image (AddTurn of a fresh image per iteration) and reports the
// file size per conversation held.
func BenchmarkFileSize(b *testing.B) {
	ctx := context.Background()
	db := openTest(b, Options{History: 1})
	data := make([]byte, 1536*1024)
	if _, err := crand.Read(data); err != nil {
		b.Fatal(err)
	}
	n := 0
	for b.Loop() {
		binary.BigEndian.PutUint64(data, uint64(n)) // distinct bytes each time
		key := bot.ConvKey{Platform: "discord", Workspace: "g", Channel: fmt.Sprintf("c%d", n%fileSizeRing)}
		if _, err := db.AddTurn(ctx, key, turn(fmt.Sprintf("t%d", n)), data, nil, nil); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.StopTimer()
	fi, err := os.Stat(db.bolt.Path())
	if err != nil {
		b.Fatal(err)
	}
	held := min(n, fileSizeRing)
	if got := db.countKeys(b, bucketImages); got != held {
		b.Fatalf("images held: got %d, want %d", got, held)
	}
	b.ReportMetric(float64(fi.Size())/float64(held), "bytes/conversation")
	b.ReportMetric(float64(fi.Size())/float64(held)/float64(len(data)), "file/image_ratio")
	b.SetBytes(int64(len(data)))
}
