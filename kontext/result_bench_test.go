package kontext

import (
	"bytes"
	"image"
	"image/png"
	"testing"
)

// BenchmarkVerifyResult reports the memory verify allocates per result
// (B/op): a real 1 MP result is decoded in full; an 8192×8192 16-bit one
// (512 MB decoded) is refused from its header.
func BenchmarkVerifyResult(b *testing.B) {
	var onemp bytes.Buffer
	if err := png.Encode(&onemp, image.NewNRGBA(image.Rect(0, 0, 1024, 1024))); err != nil {
		b.Fatal(err)
	}
	c := &Client{cfg: Config{MaxResultPixels: DefaultMaxResultPixels}}
	for _, bc := range []struct {
		name   string
		data   []byte
		accept bool
	}{
		{"1MP-8bit-accepted", onemp.Bytes(), true},
		{"8192x8192-16bit-refused", pngHeaderOnly(8192, 8192, 16, 6), false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := c.verify(bc.data); (err == nil) != bc.accept {
					b.Fatalf("verify: %v, want accepted %v", err, bc.accept)
				}
			}
		})
	}
}
