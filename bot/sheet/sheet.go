// Package sheet draws a conversation's history as a picture: a contact
// sheet of numbered thumbnails laid out as a tree, left to right by
// generation, with branches (an undo followed by a new edit) stacked
// below each other and joined by lines, and the current image framed.
//
// It is a pure function of the conversation's images: no platform, no
// store. Numbers are the images' places in creation order, 1..N, the
// numbers menus and the terminal's "/use N" use.
package sheet

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"runtime"
	"strconv"
	"sync"

	// Decoders for every format the bot stores.
	_ "image/gif"
	_ "image/jpeg"

	_ "golang.org/x/image/webp"

	"golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/font/sfnt"
	"golang.org/x/image/math/fixed"

	"kontextbot/kontext"
)

// Geometry of a sheet, in pixels.
const (
	// ThumbSize is the side of the square box each thumbnail is fitted in.
	ThumbSize = 200
	// PerBand is the number of generations side by side: a longer chain
	// continues in a band below, so the sheet stays narrow enough for a
	// phone.
	PerBand = 4
	// Margin is the space around the sheet.
	Margin = 40
	// ColGap is the space between two generations (where the lines run).
	ColGap = 56
	// RowGap is the space between two stacked branches.
	RowGap = 28
	// BandGap is the space between two bands.
	BandGap = 56
	// HeadBorder is the width of the frame around the current image.
	HeadBorder = 8
	// LineWidth is the width of the lines joining an image to its parent.
	LineWidth = 4
	// NumberSize is the height of the numbers' font.
	NumberSize = 44
)

// Colours of a sheet. Tests read them back from the decoded picture.
var (
	Background = color.RGBA{0x23, 0x24, 0x28, 0xff}
	BoxColor   = color.RGBA{0x34, 0x36, 0x3c, 0xff}
	LineColor  = color.RGBA{0x8e, 0x92, 0x9a, 0xff}
	HeadColor  = color.RGBA{0xff, 0xb0, 0x00, 0xff}
	BadgeColor = color.RGBA{0x10, 0x10, 0x12, 0xff}
	TextColor  = color.RGBA{0xff, 0xff, 0xff, 0xff}
)

// Node is one image of a conversation, given in creation order.
type Node struct {
	// ID is the image's turn id.
	ID string
	// Parent is the turn it was made from; "" (or an id not on the
	// sheet, an ancestor no longer kept) starts a tree of its own.
	Parent string
	// Image is the encoded image (PNG, JPEG, GIF or WebP). One that is
	// missing or does not decode is drawn as an empty box.
	Image []byte
	// Load, when Image is nil, reads the image when it is needed: only
	// when its thumbnail is neither in Options.Cache nor in
	// Options.Store, a few at a time, so a
	// sheet holds at most one image per worker in memory. A nil result
	// with no error is drawn as an empty box; an error fails the render.
	Load func(ctx context.Context) ([]byte, error)
	// Key names the image's bytes (their SHA-256) for Options.Cache and
	// Options.Store; "" is never cached.
	Key string
}

// Thumb is where one image is on the sheet.
type Thumb struct {
	// Number is the image's place in creation order, from 1.
	Number int
	ID     string
	// Rect is the thumbnail's box, ThumbSize a side; the image is fitted
	// inside it, centred.
	Rect image.Rectangle
	// Gen is the image's generation (0 for an image made from no other
	// on the sheet); Band and Col are where Gen lands (Gen =
	// Band*PerBand + Col), and Row is its row among the branches stacked
	// in its band, from 0 at the top.
	Gen, Row, Band, Col int
	// ParentNumber is the parent's number; 0 for none on the sheet.
	ParentNumber int
	// Head is set on the current image.
	Head bool
}

// Layout is a sheet's geometry.
type Layout struct {
	// Size is the picture's width and height.
	Size image.Point
	// Thumbs are the images, Thumbs[n-1] being number n.
	Thumbs []Thumb
	// Rows is the number of rows of the tallest band, Bands the number
	// of bands.
	Rows, Bands int

	bandBottom []int // where each band ends
}

// Head returns the current image's thumb, or nil.
func (l Layout) Head() *Thumb {
	for i := range l.Thumbs {
		if l.Thumbs[i].Head {
			return &l.Thumbs[i]
		}
	}
	return nil
}

// Plan lays nodes out without drawing them. The first child of an image
// continues on its row; every further child (a branch) starts a new row
// below everything drawn so far.
func Plan(nodes []Node, head string) Layout {
	index := make(map[string]int, len(nodes))
	for i, n := range nodes {
		if _, dup := index[n.ID]; !dup {
			index[n.ID] = i
		}
	}
	parent := make([]int, len(nodes))
	children := make([][]int, len(nodes))
	var roots []int
	for i, n := range nodes {
		p, ok := index[n.Parent]
		if n.Parent == "" || !ok || p >= i {
			parent[i] = -1
			roots = append(roots, i)
			continue
		}
		parent[i] = p
		children[p] = append(children[p], i)
	}
	l := Layout{Thumbs: make([]Thumb, len(nodes))}
	rows := 0
	var place func(i, gen, row int)
	place = func(i, gen, row int) {
		t := &l.Thumbs[i]
		t.Number, t.ID, t.Gen, t.Row, t.Head = i+1, nodes[i].ID, gen, row, head != "" && nodes[i].ID == head
		t.Band, t.Col = gen/PerBand, gen%PerBand
		if parent[i] >= 0 {
			t.ParentNumber = parent[i] + 1
		}
		for k, c := range children[i] {
			r := row
			if k > 0 {
				r = rows
				rows++
			}
			place(c, gen+1, r)
		}
	}
	for _, r := range roots {
		row := rows
		rows++
		place(r, 0, row)
	}
	if len(nodes) == 0 {
		l.Size = image.Pt(2*Margin+ThumbSize, 2*Margin+ThumbSize)
		return l
	}
	cols := 0
	for _, t := range l.Thumbs {
		cols = max(cols, t.Gen+1)
		l.Bands = max(l.Bands, t.Band+1)
	}
	cols = min(cols, PerBand)
	// Each band is as tall as the rows it uses: rows are renumbered
	// within their band, keeping their order.
	used := make([]map[int]bool, l.Bands)
	for i := range used {
		used[i] = map[int]bool{}
	}
	for _, t := range l.Thumbs {
		used[t.Band][t.Row] = true
	}
	rowIn := make([]map[int]int, l.Bands)
	l.bandBottom = make([]int, l.Bands)
	top := Margin
	for band, rs := range used {
		rowIn[band] = map[int]int{}
		for r := range rows {
			if rs[r] {
				rowIn[band][r] = len(rowIn[band])
			}
		}
		n := len(rowIn[band])
		l.Rows = max(l.Rows, n)
		l.bandBottom[band] = top + n*ThumbSize + (n-1)*RowGap
		top = l.bandBottom[band] + BandGap
	}
	for i := range l.Thumbs {
		t := &l.Thumbs[i]
		t.Row = rowIn[t.Band][t.Row]
		x := Margin + t.Col*(ThumbSize+ColGap)
		y := Margin + t.Row*(ThumbSize+RowGap)
		if t.Band > 0 {
			y = l.bandBottom[t.Band-1] + BandGap + t.Row*(ThumbSize+RowGap)
		}
		t.Rect = image.Rect(x, y, x+ThumbSize, y+ThumbSize)
	}
	l.Size = image.Pt(2*Margin+cols*ThumbSize+(cols-1)*ColGap, l.bandBottom[l.Bands-1]+Margin)
	return l
}

// Options bound the work of Render.
type Options struct {
	// Budget, when set, is the memory decoding the images may take at
	// once (each decode takes kontext.DecodeMemory of it).
	Budget *kontext.Budget
	// Workers is how many images are decoded at once; 0 means
	// GOMAXPROCS, at most 4.
	Workers int
	// Cache, when set, keeps thumbnails between renders (by Node.Key).
	Cache *Cache
	// Store, when set, keeps encoded thumbnails beyond the process (by
	// Node.Key): a node's thumbnail is read from it, after Cache and
	// before the node's image, and one made from the image is put in it.
	Store Store
}

// Render draws nodes, the current one being head, as a PNG. Each image is
// decoded once and scaled down to its thumbnail straight away.
func Render(ctx context.Context, nodes []Node, head string, opts Options) ([]byte, Layout, error) {
	l := Plan(nodes, head)
	thumbs, err := thumbnails(ctx, nodes, opts)
	if err != nil {
		return nil, l, err
	}
	dst := image.NewRGBA(image.Rectangle{Max: l.Size})
	draw.Draw(dst, dst.Bounds(), image.NewUniform(Background), image.Point{}, draw.Src)
	for _, t := range l.Thumbs {
		if t.ParentNumber > 0 {
			connect(dst, l, l.Thumbs[t.ParentNumber-1], t)
		}
	}
	face, err := numberFace()
	if err != nil {
		return nil, l, err
	}
	defer face.Close()
	for i, t := range l.Thumbs {
		if t.Head {
			fill(dst, t.Rect.Inset(-HeadBorder), HeadColor)
		}
		fill(dst, t.Rect, BoxColor)
		if th := thumbs[i]; th != nil {
			b := th.Bounds()
			at := t.Rect.Min.Add(image.Pt((ThumbSize-b.Dx())/2, (ThumbSize-b.Dy())/2))
			draw.Draw(dst, image.Rectangle{Min: at, Max: at.Add(b.Size())}, th, b.Min, draw.Over)
		}
		badge(dst, face, t)
	}
	out, err := encodePNG(dst, workers(opts))
	if err != nil {
		return nil, l, fmt.Errorf("sheet: encode: %w", err)
	}
	return out, l, nil
}

// workers is how many images are decoded, or parts of the sheet
// compressed, at once.
func workers(opts Options) int {
	if opts.Workers > 0 {
		return opts.Workers
	}
	return min(runtime.GOMAXPROCS(0), 4)
}

// thumbnails finds every node's thumbnail, a few at a time: in the
// cache, else in the store, else by decoding the node's image once and
// scaling it to fit ThumbSize (and keeping it in both). An image that
// does not decode is nil.
func thumbnails(ctx context.Context, nodes []Node, opts Options) ([]*image.RGBA, error) {
	out := make([]*image.RGBA, len(nodes))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for range min(workers(opts), len(nodes)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if th := opts.Cache.get(nodes[i].Key); th != nil {
					out[i] = th
					continue
				}
				th, err := stored(ctx, opts.Store, nodes[i])
				if err == nil && th != nil {
					out[i] = th
					opts.Cache.put(nodes[i].Key, th)
					continue
				}
				data := nodes[i].Image
				if err == nil && data == nil && nodes[i].Load != nil {
					data, err = nodes[i].Load(ctx)
				}
				if err == nil {
					th, err = thumbnail(ctx, data, opts.Budget, true)
				}
				if err == nil {
					keep(ctx, opts.Store, nodes[i], th)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					continue
				}
				out[i] = th
				opts.Cache.put(nodes[i].Key, th)
			}
		}()
	}
	for i := range nodes {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sheet: %w", err)
	}
	if first != nil {
		return nil, first
	}
	return out, nil
}

// thumbnail decodes data and scales it to fit a ThumbSize box; nil, with
// no error, when data is not an image it can read.
//
// It waits for budget to have the decode's memory, or, when wait is
// false, makes nothing (nil, no error) unless the memory is free now.
func thumbnail(ctx context.Context, data []byte, budget *kontext.Budget, wait bool) (*image.RGBA, error) {
	var ok bool
	if len(data) == 0 {
		return nil, nil
	}
	mem, err := kontext.DecodeMemory(data)
	if err != nil {
		return nil, nil
	}
	var release func()
	if wait {
		if release, err = budget.Acquire(ctx, mem); err != nil {
			return nil, fmt.Errorf("sheet: decode: %w", err)
		}
	} else if release, ok = budget.TryAcquire(mem); !ok {
		return nil, nil
	}
	defer release()
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, nil
	}
	b := src.Bounds()
	if b.Empty() {
		return nil, nil
	}
	w, h := ThumbSize, ThumbSize
	if b.Dx() >= b.Dy() {
		h = max(1, b.Dy()*ThumbSize/b.Dx())
	} else {
		w = max(1, b.Dx()*ThumbSize/b.Dy())
	}
	return shrink(src, w, h), nil
}

// fill paints r.
func fill(dst *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(dst, r, image.NewUniform(c), image.Point{}, draw.Src)
}

// connect draws the line from parent p to child c: straight along a row,
// with an elbow in the gap between the generations for a branch, and
// through the gap between bands for a chain that continues in the next
// band.
func connect(dst *image.RGBA, l Layout, p, c Thumb) {
	x1, y1 := p.Rect.Max.X, (p.Rect.Min.Y+p.Rect.Max.Y)/2
	x2, y2 := c.Rect.Min.X, (c.Rect.Min.Y+c.Rect.Max.Y)/2
	if c.Band == p.Band {
		mid := x1 + ColGap/2
		polyline(dst, image.Pt(x1, y1), image.Pt(mid, y1), image.Pt(mid, y2), image.Pt(x2, y2))
		return
	}
	gutter := l.bandBottom[p.Band] + BandGap/2
	right := x1 + min(ColGap, Margin)/2
	left := x2 - Margin/2
	polyline(dst, image.Pt(x1, y1), image.Pt(right, y1), image.Pt(right, gutter),
		image.Pt(left, gutter), image.Pt(left, y2), image.Pt(x2, y2))
}

// polyline draws axis-aligned segments joining pts, LineWidth wide.
func polyline(dst *image.RGBA, pts ...image.Point) {
	h := LineWidth / 2
	for i := 1; i < len(pts); i++ {
		a, b := pts[i-1], pts[i]
		r := image.Rect(min(a.X, b.X)-h, min(a.Y, b.Y)-h, max(a.X, b.X)+LineWidth-h, max(a.Y, b.Y)+LineWidth-h)
		fill(dst, r, LineColor)
	}
}

// badge writes t's number in the top-left corner of its box, white on
// black (black on the head colour for the current image).
func badge(dst *image.RGBA, face font.Face, t Thumb) {
	s := strconv.Itoa(t.Number)
	adv := font.MeasureString(face, s).Ceil()
	m := face.Metrics()
	pad := 8
	h := (m.Ascent + m.Descent).Ceil()
	r := image.Rect(t.Rect.Min.X, t.Rect.Min.Y, t.Rect.Min.X+adv+2*pad, t.Rect.Min.Y+h+pad)
	bg, fg := BadgeColor, TextColor
	if t.Head {
		bg, fg = HeadColor, BadgeColor
	}
	fill(dst, r, bg)
	d := font.Drawer{Dst: dst, Src: image.NewUniform(fg), Face: face,
		Dot: fixed.P(r.Min.X+pad, r.Min.Y+pad/2+m.Ascent.Ceil())}
	d.DrawString(s)
}

var (
	boldOnce sync.Once
	bold     *sfnt.Font
	boldErr  error
)

// numberFace is a new face of Go Bold at NumberSize (a face is not safe
// for concurrent use; the parsed font is).
func numberFace() (font.Face, error) {
	boldOnce.Do(func() { bold, boldErr = opentype.Parse(gobold.TTF) })
	if boldErr != nil {
		return nil, fmt.Errorf("sheet: font: %w", boldErr)
	}
	f, err := opentype.NewFace(bold, &opentype.FaceOptions{Size: NumberSize, DPI: 72, Hinting: font.HintingFull})
	if err != nil {
		return nil, fmt.Errorf("sheet: font: %w", err)
	}
	return f, nil
}
