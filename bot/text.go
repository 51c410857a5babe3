package bot

import (
	"strconv"

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
