package bot

import "strconv"

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

// QueuedText is the status shown while a job waits: "Queued · 3rd in line".
func QueuedText(pos int) string { return "Queued · " + Ordinal(pos) + " in line" }

// PostDelayedText is the status a DelayReporter shows while posting a
// finished image is retried.
const PostDelayedText = "Posting is delayed; retrying…"

// PostHeldText tells the requester that a finished image could not be
// posted in this run and waits for the next start.
const PostHeldText = "I made the image but could not post it here. I will try again when I restart."
