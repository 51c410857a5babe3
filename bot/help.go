package bot

import "strings"

// HelpStyle is how one platform writes the help: its markup and the
// spelling of its commands. The content is the same everywhere.
type HelpStyle struct {
	// Bold marks a name: "**%s**" on Discord, "*%s*" on Slack, "%s" in a
	// terminal.
	Bold string
	// Imagine, Edit and Usage are the commands as a person types them,
	// with their arguments.
	Imagine, Edit, Usage, Help string
	// Options says how the options of Imagine are given.
	Options string
	// Menu is where the Edit image menu is; "" when there is none.
	Menu string
	// Buttons is true where results carry Reroll, Undo and Edit buttons;
	// false where the same are typed (/reroll, /undo).
	Buttons bool
	// Thread is where follow-ups go: "the picture's thread".
	Thread string
	// Reply and Mention are the platform's other ways in, each a sentence;
	// "" when there is none.
	Reply, Mention string
	// Settings is the admins' settings command; "" where there is none.
	Settings string
	// Details and Delete are the typed commands where there are no
	// buttons ("/details [N]"); with Buttons they are buttons.
	Details, Delete string
	// History is how the history is asked for ("/history", "/history or
	// the History button"), Use how an image of it is picked; "" where
	// there is none.
	History, Use string
	// Variations is how Imagine asks for several images ("count:4",
	// "--n 4"); "" where it cannot.
	Variations string
}

// Help is what /help (Discord), /imagine help (Slack) and /help in the
// terminal chat answer: every command, button and the Edit image menu, and
// an example conversation. It stays under Discord's 2,000 characters.
func Help(s HelpStyle) string {
	b := func(x string) string {
		if s.Bold == "" {
			return x
		}
		return strings.Replace(s.Bold, "%s", x, 1)
	}
	var w strings.Builder
	line := func(parts ...string) { w.WriteString(strings.Join(parts, "") + "\n") }
	line("I make and edit pictures with FLUX.1 Kontext, and I remember the current picture of each ", s.Thread,
		", so you can refine it turn after turn.")
	line()
	line(b(s.Imagine), ": make a picture. ", s.Options)
	if s.Variations != "" {
		use := "Use N"
		if !s.Buttons {
			use = "/use N"
		}
		line(b(s.Imagine+" "+s.Variations), ": up to 4 variations with different seeds, in one message; follow-ups edit image 1 until ", b(use), " picks another.")
	}
	line(b(s.Edit), ": edit the image you attach, or else the current picture here.")
	line("Any message in ", s.Thread, ": edits its current picture.", prefixed(" ", s.Reply))
	if s.Mention != "" {
		line(s.Mention)
	}
	if s.Menu != "" {
		line(b("Edit image"), " (", s.Menu, "): asks what to change in a dialog, then edits that message's image.")
	}
	if s.Buttons {
		line(b("Reroll"), ": same prompt and starting image, new seed. ", b("Undo"), ": back to the previous picture (no new image, no charge). ",
			b("Edit"), ": type a change in a dialog. ", b("Cancel"), ": drop a job still waiting.")
	} else {
		line(b("/reroll"), ": same prompt and starting image, new seed. ", b("/undo"), ": back to the previous picture (no new image, no charge).")
	}
	if s.Buttons {
		line(b("Details"), ": prompt, seed, model, the image it came from, who asked, the cost, only to you; ",
			b("Use these settings"), " there opens Edit with them filled in. ",
			b("Delete"), ": removes the post and its image (for whoever asked, and admins).")
	} else if s.Details != "" {
		line(b(s.Details), ": prompt, seed, model, the image it was made from and the cost. ",
			b(s.Delete), ": deletes the current image.")
	}
	if s.History != "" {
		line(b(s.History), ": this conversation's pictures as one numbered sheet, the current one framed; ", s.Use,
			" to make it current again or open it in a new thread (no charge).")
	}
	line(b(s.Usage), ": your images today and this workspace's spend this month, only to you. ", b(s.Help), ": this help.")
	if s.Settings != "" {
		line(b(s.Settings), ": for admins, this workspace's daily limit, budget, default model and channels.")
	}
	line()
	undo := "Undo"
	if !s.Buttons {
		undo = "/undo"
	}
	line(b("Example"))
	line("> ", strings.SplitN(s.Imagine, " ", 2)[0], " a lighthouse on a cliff at dusk    → a picture")
	line("> add a rainbow over the sea    → edits it")
	line("> make it snow    → edits the rainbow picture")
	line("> ", undo, "    → back to the rainbow picture")
	w.WriteString("> turn it into night with stars    → edits the rainbow picture again")
	return w.String()
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
