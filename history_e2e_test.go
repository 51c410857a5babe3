package main

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"testing"

	"kontextbot/bot/sheet"
)

// sheetGrid is what a contact sheet shows, read from its pixels alone:
// which slots (generation column, row) hold a thumbnail, and which one is
// framed as the current image.
type sheetGrid struct {
	cols, rows int
	filled     map[[2]int]bool
	head       [2]int
	heads      int
}

// readSheet decodes a contact sheet PNG and finds its thumbnails on the
// sheet's grid (sheet.Margin, sheet.ThumbSize, sheet.ColGap,
// sheet.RowGap): a slot is filled when its box is not background, and
// framed when the pixels just outside its box have sheet.HeadColor.
func readSheet(t *testing.T, data []byte) sheetGrid {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the history is not a PNG: %v", err)
	}
	b := img.Bounds()
	g := sheetGrid{filled: map[[2]int]bool{}, head: [2]int{-1, -1},
		cols: (b.Dx() - 2*sheet.Margin + sheet.ColGap) / (sheet.ThumbSize + sheet.ColGap),
		rows: (b.Dy() - 2*sheet.Margin + sheet.RowGap) / (sheet.ThumbSize + sheet.RowGap)}
	is := func(x, y int, c color.RGBA) bool {
		r, gg, bb, _ := img.At(x, y).RGBA()
		d := func(a uint32, b uint8) bool { return int(a>>8)-int(b) <= 6 && int(b)-int(a>>8) <= 6 }
		return d(r, c.R) && d(gg, c.G) && d(bb, c.B)
	}
	for col := range g.cols {
		for row := range g.rows {
			x := sheet.Margin + col*(sheet.ThumbSize+sheet.ColGap)
			y := sheet.Margin + row*(sheet.ThumbSize+sheet.RowGap)
			box := image.Rect(x, y, x+sheet.ThumbSize, y+sheet.ThumbSize)
			if is(box.Min.X+sheet.ThumbSize/2, box.Max.Y-sheet.ThumbSize/3, sheet.Background) {
				continue
			}
			g.filled[[2]int{col, row}] = true
			if is(box.Min.X-sheet.HeadBorder/2, box.Max.Y-10, sheet.HeadColor) && is(box.Max.X+sheet.HeadBorder/2, box.Min.Y+10, sheet.HeadColor) {
				g.head = [2]int{col, row}
				g.heads++
			}
		}
	}
	return g
}

// checkBranchSheet checks the sheet of imagine, edit, edit, undo, edit:
// four thumbnails, 1 → 2 → 3 along the top row and 4 below 3 in the same
// generation column (a branch from 2), with 4 framed as current.
func checkBranchSheet(t *testing.T, data []byte) {
	t.Helper()
	g := readSheet(t, data)
	want := map[[2]int]bool{{0, 0}: true, {1, 0}: true, {2, 0}: true, {2, 1}: true}
	if len(g.filled) != len(want) || g.cols != 3 || g.rows != 2 {
		t.Errorf("the sheet shows %d thumbnails on a %d×%d grid (%v), want 4 on 3×2", len(g.filled), g.cols, g.rows, g.filled)
	}
	for slot := range want {
		if !g.filled[slot] {
			t.Errorf("no thumbnail at generation %d, row %d: %v", slot[0], slot[1], g.filled)
		}
	}
	if g.heads != 1 || g.head != [2]int{2, 1} {
		t.Errorf("current image framed at %v (%d framed), want generation 2, row 1 (image 4)", g.head, g.heads)
	}
}
