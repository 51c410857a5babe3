package sheet

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/adler32"
	"hash/crc32"
	"image"
	"sync"
)

// encodePNG writes an opaque img as an 8-bit RGB PNG. It is image/png's
// job done faster for a sheet: every row takes the Sub filter (image/png
// tries five filters a row), and the rows are deflated in segments side
// by side, one per worker, joined as one zlib stream (each segment ends
// in a sync flush, the last in the final block: what pigz does), which
// any PNG decoder reads as usual.
func encodePNG(img *image.RGBA, workers int) ([]byte, error) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	rowLen := 1 + 3*w
	raw := make([]byte, rowLen*h)
	for y := range h {
		src := img.Pix[img.PixOffset(img.Rect.Min.X, img.Rect.Min.Y+y):]
		row := raw[y*rowLen : (y+1)*rowLen]
		row[0] = 1 // Sub: each byte minus the one a pixel to its left
		var pr, pg, pb byte
		for x := range w {
			r, g, b := src[4*x], src[4*x+1], src[4*x+2]
			row[1+3*x], row[2+3*x], row[3+3*x] = r-pr, g-pg, b-pb
			pr, pg, pb = r, g, b
		}
	}
	workers = max(1, min(workers, h))
	parts := make([][]byte, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		lo, hi := h*i/workers*rowLen, h*(i+1)/workers*rowLen
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			zw, err := flate.NewWriter(&buf, flate.BestSpeed)
			if err == nil {
				_, err = zw.Write(raw[lo:hi])
			}
			if err == nil && i < workers-1 {
				err = zw.Flush()
			} else if err == nil {
				err = zw.Close()
			}
			parts[i], errs[i] = buf.Bytes(), err
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	var z bytes.Buffer
	z.Write([]byte{0x78, 0x01}) // zlib: deflate, 32 KiB window, fastest
	for _, p := range parts {
		z.Write(p)
	}
	z.Write(binary.BigEndian.AppendUint32(nil, adler32.Checksum(raw)))

	var out bytes.Buffer
	out.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], uint32(w))
	binary.BigEndian.PutUint32(ihdr[4:], uint32(h))
	ihdr[8], ihdr[9] = 8, 2 // 8 bits, RGB; deflate, adaptive filters, no interlace
	chunk(&out, "IHDR", ihdr)
	chunk(&out, "IDAT", z.Bytes())
	chunk(&out, "IEND", nil)
	return out.Bytes(), nil
}

// chunk writes one PNG chunk: length, type, data, CRC of type and data.
func chunk(out *bytes.Buffer, typ string, data []byte) {
	out.Write(binary.BigEndian.AppendUint32(nil, uint32(len(data))))
	crc := crc32.NewIEEE()
	crc.Write([]byte(typ))
	crc.Write(data)
	out.WriteString(typ)
	out.Write(data)
	out.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
}
