package console

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestClean(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "UpArrow", in: "\x1b[A", want: ""},
		{name: "ArrowsAroundText", in: "\x1b[Amake it\x1b[D blue\x1b[B", want: "make it blue"},
		{name: "ApplicationModeArrow", in: "\x1bOA", want: ""},
		{name: "Delete", in: "\x1b[3~", want: ""},
		{name: "ModifiedArrow", in: "\x1b[1;5C", want: ""},
		{name: "PasteMarkers", in: "\x1b[200~a fox\x1b[201~", want: "a fox"},
		{name: "OSC", in: "\x1b]0;title\x07hi", want: "hi"},
		{name: "C1CSI", in: "\u009bAhi", want: "hi"},
		{name: "LoneEscape", in: "a\x1b", want: "a"},
		{name: "ControlCharsAndTab", in: "a\x00b\tc\x7f", want: "ab c"},
		{name: "PlainBracketTextKept", in: "[A] sign on a door", want: "[A] sign on a door"},
		{name: "Unicode", in: "un café ☕", want: "un café ☕"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clean(tt.in); got != tt.want {
				t.Errorf("clean(%q): got %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestKeyReader(t *testing.T) {
	tests := []struct {
		name, in, want string
		oneByte        bool
		ctrlC          bool
	}{
		{name: "ApplicationArrows", in: "\x1bOA\x1bOB\x1bOC\x1bOD", want: "\x1b[A\x1b[B\x1b[C\x1b[D"},
		{name: "SplitAcrossReads", in: "x\x1bOAy", want: "x\x1b[Ay", oneByte: true},
		{name: "OtherTextKept", in: "OA and O", want: "OA and O"},
		{name: "CtrlC", in: "abc\x03", want: "abc\x03", ctrlC: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = strings.NewReader(tt.in)
			if tt.oneByte {
				r = iotest.OneByteReader(r)
			}
			k := &keyReader{r: r}
			var got []byte
			buf := make([]byte, 64)
			for {
				n, err := k.Read(buf)
				got = append(got, buf[:n]...)
				if n > 0 && k.ctrlC.Load() != tt.ctrlC && !tt.oneByte {
					t.Errorf("ctrlC: got %v, want %v", k.ctrlC.Load(), tt.ctrlC)
				}
				if err != nil {
					break
				}
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
