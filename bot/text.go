package bot

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"kontextbot/kontext"
)

// Ordinal writes n as "1st", "2nd", "3rd", "4th", "11th", "21st", ...
func Ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// InLine is a waiting job's place as shown to people: "3rd in line", or
// "over 50 in line" for kontext.PositionBeyond (and anything further).
func InLine(pos int) string {
	if pos >= kontext.PositionBeyond {
		return "over " + strconv.Itoa(kontext.ExactPositions) + " in line"
	}
	return Ordinal(pos) + " in line"
}

// QueuedText is the status shown while a job waits: "Queued · 3rd in line"
// or "Queued · over 50 in line".
func QueuedText(pos int) string { return "Queued · " + InLine(pos) }

// CleanPrompt is the one cleaner and check every prompt passes, whatever
// the entry point (chat platforms, the terminal chat, the command line),
// before anything is stored or sent. It
//
//   - turns line breaks and tabs (\n, \r\n, \r, \t, \v, \f, NEL, U+2028,
//     U+2029) into a space, as a prompt is one line;
//   - removes every other C0 and C1 control character and DEL (ESC, BEL, ...),
//     so terminal escapes never reach the provider or a log;
//   - keeps what real writing needs: ZWNJ (Persian, Hindi), ZWJ (Indic
//     conjuncts, emoji families), variation selectors, emoji tag sequences
//     (the England flag), bidi marks (LRM, RLM, ALM), and bidi embeddings,
//     overrides and isolates that are closed within the prompt;
//   - removes invisible characters that carry no writing: unmatched bidi
//     embeddings, overrides, isolates and pops (they would reorder the
//     caption the prompt is shown in), tag characters outside an emoji tag
//     sequence (they can hide text a reader never sees), zero-width space,
//     word joiner, invisible math operators, deprecated format characters,
//     the byte order mark and interlinear annotation marks;
//   - replaces invalid UTF-8, trims, and checks that the prompt is neither
//     empty nor longer than MaxPromptRunes.
func CleanPrompt(s string) (string, error) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "")
	}
	s = strings.ReplaceAll(s, "\r\n", "\n")
	runes := []rune(s)
	drop := unmatchedBidi(runes)
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(runes); i++ {
		r := runes[i]
		switch {
		case isLineBreak(r):
			b.WriteByte(' ')
		case unicode.IsControl(r), drop[i]:
		case isTag(r):
			n := tagSequence(runes, i)
			for _, t := range runes[i : i+n] {
				b.WriteRune(t)
			}
			for i+1 < len(runes) && isTag(runes[i+1]) {
				i++ // the whole run of tags goes, or the valid sequence was written
			}
		case invisible(r):
		default:
			b.WriteRune(r)
		}
	}
	s = strings.TrimSpace(b.String())
	switch {
	case s == "":
		return "", ErrEmptyPrompt
	case utf8.RuneCountInString(s) > MaxPromptRunes:
		return "", ErrPromptTooLong
	}
	return s, nil
}

func isLineBreak(r rune) bool {
	switch r {
	case '\n', '\r', '\t', '\v', '\f', '\u0085', '\u2028', '\u2029':
		return true
	}
	return false
}

// invisible reports the format characters CleanPrompt removes (see there).
// Bidi controls and tags are decided by context, elsewhere.
func invisible(r rune) bool {
	switch {
	case r == '\u200b', // zero-width space
		r >= '\u2060' && r <= '\u2064', // word joiner, invisible operators
		r >= '\u206a' && r <= '\u206f', // deprecated format characters
		r == '\ufeff',                  // byte order mark / ZWNBSP
		r >= '\ufff9' && r <= '\ufffb': // interlinear annotation
		return true
	}
	return false
}

// Tag characters (U+E0020..U+E007F) spell emoji tag sequences: U+1F3F4
// WAVING BLACK FLAG, a subdivision code in tag letters and digits, then
// U+E007F CANCEL TAG (England: 🏴 + "gbeng" + cancel). That is the only
// kind of emoji tag sequence Unicode defines (UTS #51, ED-14a).
const (
	tagFirst  = 0xE0020
	tagCancel = 0xE007F
	tagBase   = 0x1F3F4
	maxTagLen = 7 // the longest subdivision code: a 2-letter region and up to 3 more, with margin
)

func isTag(r rune) bool { return r >= tagFirst && r <= tagCancel }

// tagSequence returns how many runes of the tag run starting at runes[i]
// form a valid emoji tag sequence with the rune before it, or 0.
func tagSequence(runes []rune, i int) int {
	if i == 0 || runes[i-1] != tagBase {
		return 0
	}
	for n := 0; i+n < len(runes) && n <= maxTagLen; n++ {
		switch r := runes[i+n]; {
		case r == tagCancel:
			if n == 0 {
				return 0
			}
			return n + 1
		case r >= 0xE0030 && r <= 0xE0039, r >= 0xE0061 && r <= 0xE007A: // tag digits, tag small letters
		default:
			return 0
		}
	}
	return 0
}

// Bidi controls. Marks (LRM, RLM, ALM) are always kept; the others open
// or close a range and are kept only when matched.
const (
	lre, rle, pdf, lro, rlo = '\u202a', '\u202b', '\u202c', '\u202d', '\u202e'
	lri, rli, fsi, pdi      = '\u2066', '\u2067', '\u2068', '\u2069'
)

// unmatchedBidi marks the bidi embeddings, overrides and isolates of runes
// that are never closed, and the pops (PDF, PDI) that close nothing, as
// the Unicode Bidirectional Algorithm pairs them (UAX #9, BD8, BD9): a PDF
// closes the innermost open embedding or override unless an isolate is
// open inside it; a PDI closes the innermost open isolate and whatever
// embeddings are open inside that isolate. The prompt is one paragraph
// (CleanPrompt turns paragraph breaks into spaces).
func unmatchedBidi(runes []rune) map[int]bool {
	type open struct {
		i       int
		isolate bool
	}
	var stack []open
	drop := map[int]bool{}
	for i, r := range runes {
		switch r {
		case lre, rle, lro, rlo:
			stack = append(stack, open{i, false})
		case lri, rli, fsi:
			stack = append(stack, open{i, true})
		case pdf:
			if n := len(stack); n > 0 && !stack[n-1].isolate {
				stack = stack[:n-1]
			} else {
				drop[i] = true
			}
		case pdi:
			j := len(stack) - 1
			for j >= 0 && !stack[j].isolate {
				j--
			}
			if j < 0 {
				drop[i] = true
			} else {
				stack = stack[:j] // the isolate and the embeddings inside it end here
			}
		}
	}
	for _, o := range stack {
		drop[o.i] = true
	}
	return drop
}

// PostDelayedText is the status a DelayReporter shows while posting a
// finished image is retried.
const PostDelayedText = "Posting is delayed; retrying…"

// PostHeldText tells the requester that a finished image could not be
// posted in this run and waits for the next start.
const PostHeldText = "I made the image but could not post it here. I will try again when I restart."
