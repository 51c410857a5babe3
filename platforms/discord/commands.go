package discord

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/bwmarrin/discordgo"

	"kontextbot/bot"
	"kontextbot/kontext"
)

// Command names.
const (
	cmdImagine   = "imagine"
	cmdEdit      = "edit"
	cmdUsage     = "usage"
	cmdHelp      = "help"
	cmdHistory   = "history"
	cmdEditImage = "Edit image" // message context menu
	cmdKontext   = "kontext"    // /kontext settings show|set|reset
)

// helpText is the answer to /help, only to the person who asked.
var helpText = bot.Help(bot.HelpStyle{Bold: "**%s**", Imagine: "/imagine prompt", Edit: "/edit prompt [image] [image2…image4]",
	Usage: "/usage", Help: "/help", Options: "Options: aspect_ratio, seed (same seed + same prompt = same image), model, enhance (the model enhances your prompt).",
	Menu: "Apps → Edit image on a message with an image: right-click, or long-press on mobile", Buttons: true, Settings: "/kontext settings",
	History: "/history", Use: "pick one in its menu",
	Thread: "the picture's thread", Reply: "A reply to any message with an image edits that image.",
	Mention:    "**@kontextbot prompt**: makes a picture, also where slash commands are not at hand.",
	Variations: "count:4"})

// maxSeed is the largest seed the commands accept.
const maxSeed = math.MaxUint32

// commands are the application commands the bot registers.
func commands() []*discordgo.ApplicationCommand {
	contexts := &[]discordgo.InteractionContextType{discordgo.InteractionContextGuild, discordgo.InteractionContextBotDM}
	install := &[]discordgo.ApplicationIntegrationType{discordgo.ApplicationIntegrationGuildInstall}
	zero := 0.0
	prompt := func(desc string) *discordgo.ApplicationCommandOption {
		return &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionString, Name: "prompt",
			Description: desc, Required: true, MaxLength: bot.MaxPromptRunes}
	}
	aspect := func(withMatch bool) *discordgo.ApplicationCommandOption {
		o := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionString, Name: "aspect_ratio",
			Description: "Shape of the image (default: square, or the input's shape for an edit)"}
		for _, a := range kontext.AspectRatios {
			name := a
			if a == kontext.AspectMatchInput {
				if !withMatch {
					continue
				}
				name = "match the input image"
			}
			o.Choices = append(o.Choices, &discordgo.ApplicationCommandOptionChoice{Name: name, Value: a})
		}
		return o
	}
	seed := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionInteger, Name: "seed",
		Description: "Same seed + same prompt = same image", MinValue: &zero, MaxValue: maxSeed}
	model := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionString, Name: "model",
		Description: "Which model: FLUX.1 Kontext (max, pro) or FLUX.2",
		Choices:     modelChoices()}
	enhance := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionBoolean, Name: "enhance",
		Description: "Let the model enhance your prompt first (off by default); shown in Details"}
	one := 1.0
	count := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionInteger, Name: "count",
		Description: "Variations: 1 to 4 images with different seeds, in one message; Use N picks one (default 1)",
		MinValue:    &one, MaxValue: bot.MaxVariations}
	image := &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionAttachment, Name: "image",
		Description: "Image to edit (PNG, JPEG, WebP or GIF); without it, the current image here"}
	// image2..image4: further images the edit uses after the first.
	more := make([]*discordgo.ApplicationCommandOption, 0, bot.MaxImages-1)
	for n := 2; n <= bot.MaxImages; n++ {
		more = append(more, &discordgo.ApplicationCommandOption{Type: discordgo.ApplicationCommandOptionAttachment,
			Name: fmt.Sprintf("image%d", n), Description: fmt.Sprintf("Image %d to use too, e.g. \"put the dog from image 2 on the sofa\"", n)})
	}
	return []*discordgo.ApplicationCommand{
		{Name: cmdImagine, Description: "Make an image from a prompt with FLUX.1 Kontext",
			Contexts: contexts, IntegrationTypes: install,
			Options: []*discordgo.ApplicationCommandOption{prompt("What to make"), aspect(false), seed, model, count, enhance}},
		{Name: cmdEdit, Description: "Edit an image: the one you attach, or the current one here",
			Contexts: contexts, IntegrationTypes: install,
			Options: append(append([]*discordgo.ApplicationCommandOption{prompt("What to change"), image}, more...), aspect(true), seed, model, enhance)},
		{Name: cmdUsage, Description: "Your images today and this server's image spend this month",
			Contexts: contexts, IntegrationTypes: install},
		{Name: cmdEditImage, Type: discordgo.MessageApplicationCommand,
			Contexts: contexts, IntegrationTypes: install},
		{Name: cmdHelp, Description: "What each command, button and the Edit image menu does, with an example",
			Contexts: contexts, IntegrationTypes: install},
		{Name: cmdHistory, Description: historyDescription,
			Contexts: contexts, IntegrationTypes: install},
		settingsCommand(install),
	}
}

// slashArgs are the options of /imagine or /edit.
type slashArgs struct {
	Prompt  string
	Aspect  string
	Model   string
	Seed    *int64
	Enhance bool
	Image   *discordgo.MessageAttachment
	// More are image2..image4, in that order (the ones given).
	More []*discordgo.MessageAttachment
	// Count is how many variations /imagine asks for; 0 when not given.
	Count int
}

// parseSlash reads the options of /imagine or /edit. Discord checks types
// and choices, but the values are checked again: a stale client or a
// changed command must not send junk on.
func parseSlash(data discordgo.ApplicationCommandInteractionData) (a slashArgs, err error) {
	more := make([]*discordgo.MessageAttachment, bot.MaxImages+1)
	defer func() {
		a.More = slices.DeleteFunc(more, func(m *discordgo.MessageAttachment) bool { return m == nil })
	}()
	for _, o := range data.Options {
		switch o.Name {
		case "prompt":
			s, ok := o.Value.(string)
			if !ok {
				return a, bot.ErrEmptyPrompt
			}
			a.Prompt = s
		case "aspect_ratio":
			s, _ := o.Value.(string)
			if !kontext.ValidAspect(s) {
				return a, bot.Userf("%q is not an aspect ratio I know.", s)
			}
			a.Aspect = s
		case "model":
			s, _ := o.Value.(string)
			if !kontext.ValidModel(s) {
				return a, bot.UnknownModel(s)
			}
			a.Model = s
		case "seed":
			f, ok := o.Value.(float64)
			if !ok || f < 0 || f > maxSeed || f != math.Trunc(f) {
				return a, bot.Userf("The seed must be a whole number from 0 to %d.", uint64(maxSeed))
			}
			n := int64(f)
			a.Seed = &n
		case "enhance":
			v, ok := o.Value.(bool)
			if !ok {
				return a, bot.Userf("enhance must be true or false.")
			}
			a.Enhance = v
		case "count":
			f, ok := o.Value.(float64)
			if !ok || f < 1 || f > bot.MaxVariations || f != math.Trunc(f) {
				return a, bot.Userf("count is how many variations to make: a whole number from 1 to %d.", bot.MaxVariations)
			}
			a.Count = int(f)
		case "image":
			id, _ := o.Value.(string)
			if data.Resolved == nil || data.Resolved.Attachments[id] == nil {
				return a, bot.Userf("I could not find the attached image. Try attaching it again.")
			}
			a.Image = data.Resolved.Attachments[id]
		case "image2", "image3", "image4":
			id, _ := o.Value.(string)
			if data.Resolved == nil || data.Resolved.Attachments[id] == nil {
				return a, bot.Userf("I could not find the attached %s. Try attaching it again.", o.Name)
			}
			n, _ := strconv.Atoi(strings.TrimPrefix(o.Name, "image"))
			more[n] = data.Resolved.Attachments[id]
		}
	}
	return a, nil
}

// Custom id actions. A custom id is "k:<action>:<id>", where id is the
// image (turn) a button was shown with, the job a Cancel button cancels,
// or the message an "Edit image" modal edits: all on disk, so buttons
// work after a restart. "Use these settings" and the modal it opens add
// the result message the Details came from: "k:useset:<turn>:<message>",
// "k:editm:<turn>:<message>".
const (
	actReroll      = "reroll"  // button: same prompt and parent, new seed
	actUndo        = "undo"    // button: back to the parent image
	actEdit        = "edit"    // button: opens the edit modal
	actCancel      = "cancel"  // button on a waiting job's status
	actEditTurn    = "editm"   // modal opened by actEdit
	actEditMsg     = "editmsg" // modal opened by the "Edit image" menu
	actDetails     = "details" // button: the image's details, only to the presser
	actDelete      = "delete"  // button: deletes the post and the image
	actUseSettings = "useset"  // button in the details: the Edit modal pre-filled
	actUse         = "use"     // button under one image of variations: make it the current image
)

var idArg = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

// customID builds a custom id.
func customID(action, id string) string { return "k:" + action + ":" + id }

// editMsgID is the custom id of an "Edit image" modal: the target
// message and its channel, "k:editmsg:<message>:<channel>" (at most 50
// characters), so the submit needs nothing kept in memory.
func editMsgID(channelID, messageID string) string {
	return customID(actEditMsg, messageID) + ":" + channelID
}

var snowflake = regexp.MustCompile(`^[0-9]{1,20}$`)

// parseEditMsgID reads an "Edit image" modal's custom id: the target
// message, and its channel ("" in ids made before the channel was carried).
func parseEditMsgID(s string) (messageID, channelID string, ok bool) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 4 && parts[0] == "k" && parts[1] == actEditMsg && snowflake.MatchString(parts[2]) && snowflake.MatchString(parts[3]):
		return parts[2], parts[3], true
	case len(parts) == 3 && parts[0] == "k" && parts[1] == actEditMsg && snowflake.MatchString(parts[2]):
		return parts[2], "", true
	}
	return "", "", false
}

// parseCustomID splits a custom id the bot made.
func parseCustomID(s string) (action, id string, err error) {
	if msg, _, ok := parseEditMsgID(s); ok {
		return actEditMsg, msg, nil
	}
	parts := strings.Split(s, ":")
	if _, _, ok := parseTurnMsgID(s); ok {
		return parts[1], parts[2], nil
	}
	if len(parts) != 3 || parts[0] != "k" || !idArg.MatchString(parts[2]) {
		return "", "", fmt.Errorf("discord: unknown custom id %q", s)
	}
	switch parts[1] {
	case actReroll, actUndo, actEdit, actCancel, actEditTurn, actEditMsg, actDetails, actDelete, actHistory, actUse:
		return parts[1], parts[2], nil
	}
	return "", "", fmt.Errorf("discord: unknown custom id action in %q", s)
}

// turnMsgID is the custom id "k:<action>:<turn>:<message>" of a "Use
// these settings" button or the modal it opens (at most 45 characters).
func turnMsgID(action, turn, messageID string) string {
	return customID(action, turn) + ":" + messageID
}

// parseTurnMsgID reads a turnMsgID: the turn, and the result message
// whose Details it came from.
func parseTurnMsgID(s string) (turn, messageID string, ok bool) {
	parts := strings.Split(s, ":")
	if len(parts) == 4 && parts[0] == "k" && (parts[1] == actUseSettings || parts[1] == actEditTurn) &&
		idArg.MatchString(parts[2]) && snowflake.MatchString(parts[3]) {
		return parts[2], parts[3], true
	}
	return "", "", false
}

// promptInput is the custom id of the modal's text input; linkInput the
// one of the "Edit image" modal's optional second image.
const (
	promptInput = "prompt"
	linkInput   = "image2"
)

// editModal is the modal asking for an edit prompt; withLink adds an
// optional field for a link to a message whose image the edit uses too.
func editModal(id string, withLink bool) *discordgo.InteractionResponse {
	return prefilledModal(id, "", withLink)
}

// maxModalInput is the edit modal's input length: a prompt and its typed
// options (the prompt itself is checked against bot.MaxPromptRunes).
const maxModalInput = bot.MaxPromptRunes + 200

// prefilledModal is the edit modal with value already typed in (the
// settings of "Use these settings"); "" leaves it empty.
func prefilledModal(id, value string, withLink bool) *discordgo.InteractionResponse {
	rows := []discordgo.MessageComponent{discordgo.ActionsRow{Components: []discordgo.MessageComponent{
		discordgo.TextInput{CustomID: promptInput, Label: "What should change?", Style: discordgo.TextInputParagraph,
			Placeholder: "make it night, add snow… (options: --ar 16:9 --seed 7 --model pro --enhance)",
			Value:       truncate(value, maxModalInput), Required: true, MaxLength: maxModalInput},
	}}}
	if withLink {
		rows = append(rows, discordgo.ActionsRow{Components: []discordgo.MessageComponent{
			discordgo.TextInput{CustomID: linkInput, Label: "Second image (optional): a message link", Style: discordgo.TextInputShort,
				Placeholder: "Right-click a message with an image → Copy Message Link", MaxLength: 200},
		}})
	}
	return &discordgo.InteractionResponse{Type: discordgo.InteractionResponseModal, Data: &discordgo.InteractionResponseData{
		CustomID: id, Title: "Edit image", Components: rows,
	}}
}

// modalPrompt reads the prompt from a modal submit.
func modalPrompt(data discordgo.ModalSubmitInteractionData) (string, error) {
	if v, ok := modalValue(data, promptInput); ok {
		return v, nil
	}
	return "", errors.New("discord: the modal carried no prompt")
}

// modalValue reads the text input id of a modal submit.
func modalValue(data discordgo.ModalSubmitInteractionData, id string) (string, bool) {
	for _, c := range data.Components {
		row, ok := c.(*discordgo.ActionsRow)
		if !ok {
			continue
		}
		for _, cc := range row.Components {
			if in, ok := cc.(*discordgo.TextInput); ok && in.CustomID == id {
				return in.Value, true
			}
		}
	}
	return "", false
}

// messageLinkRE matches a link to a Discord message, as "Copy Message Link"
// gives it: the server ("@me" in a DM), the channel, the message.
var messageLinkRE = regexp.MustCompile(`^https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(@me|[0-9]{1,20})/([0-9]{1,20})/([0-9]{1,20})/?$`)

// parseMessageLink reads a message link given in guild ("" in a DM): a
// link to another server's message is refused.
func parseMessageLink(link, guild string) (channelID, messageID string, err error) {
	m := messageLinkRE.FindStringSubmatch(strings.TrimSpace(link))
	if m == nil {
		return "", "", bot.Userf("%q is not a message link: right-click (or long-press) a message with an image and choose Copy Message Link.", truncate(strings.TrimSpace(link), 80))
	}
	if g := strings.TrimPrefix(m[1], "@me"); g != guild {
		return "", "", bot.Userf("That link is to a message in another server or DM: link a message from this one.")
	}
	return m[2], m[3], nil
}

// textOptions splits "--ar 16:9 --seed 7 --model pro" options out of a
// typed prompt (messages and modals). --image names a local file, which
// only the terminal chat may read.
func textOptions(text string) (string, bot.Options, error) {
	prompt, o, err := bot.ParseOptions(text)
	if err != nil {
		return "", o, err
	}
	if o.Image != "" || len(o.With) > 0 {
		return "", o, bot.Userf("--image and --with only work in the terminal chat: attach the images to your message instead.")
	}
	return prompt, o, nil
}
