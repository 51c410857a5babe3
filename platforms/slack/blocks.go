package slack

import (
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	slackgo "github.com/slack-go/slack"

	"kontextbot/bot"
)

// Action ids of the buttons, callback ids of the shortcut and the modal,
// and the modal's input. The shortcut's callback id is also in
// manifest.yaml.
const (
	actReroll      = "kontext_reroll"
	actUndo        = "kontext_undo"
	actEdit        = "kontext_edit"
	actCancel      = "kontext_cancel"
	actDetails     = "kontext_details"
	actDelete      = "kontext_delete"
	actUseSettings = "kontext_use_settings" // in the Details: the Edit modal pre-filled
	actUse         = "kontext_use"          // under one image of variations: make it the current image
	blockImage     = "kontext_image"
	blockMore      = "kontext_more"
	blockUse       = "kontext_use"
	blockStatus    = "kontext_status"

	cbShortcut  = "kontext_edit_image"
	cbEditModal = "kontext_edit_modal"
	blockPrompt = "prompt"
	actPrompt   = "prompt"
)

// turnRef is what an image's buttons carry: the image and the thread of
// its conversation ("" when the message is itself the thread's root).
type turnRef struct {
	Turn   string `json:"i"`
	Thread string `json:"t,omitempty"`
}

func (r turnRef) value() string {
	b, _ := json.Marshal(r)
	return string(b)
}

func parseTurnRef(s string) (turnRef, bool) {
	var r turnRef
	if json.Unmarshal([]byte(s), &r) != nil || r.Turn == "" {
		return r, false
	}
	return r, true
}

// editMeta is the modal's private_metadata: everything its submission
// needs, since nothing is kept in memory between the two.
type editMeta struct {
	Team    string   `json:"w"`
	Channel string   `json:"c"`
	Thread  string   `json:"t,omitempty"`
	Turn    string   `json:"i,omitempty"` // Edit button: the image to edit
	Msg     string   `json:"m,omitempty"` // shortcut: the message, channel:ts
	Own     bool     `json:"o,omitempty"` // shortcut: the message is the bot's
	File    *fileRef `json:"f,omitempty"` // shortcut: its image
	// More are the message's further images (shortcut), used after File.
	More []fileRef `json:"fs,omitempty"`
}

type fileRef struct {
	URL  string `json:"u"`
	Name string `json:"n,omitempty"`
	Mime string `json:"m,omitempty"`
	Size int    `json:"s,omitempty"`
}

// escape makes text safe in Slack's mrkdwn and in a message's text: &, <
// and > are the only characters Slack gives meaning to (<!channel>,
// <@U123>, links), so a prompt echoed back can never ping anyone.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// unescape undoes Slack's escaping of message and command text.
func unescape(s string) string {
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(s)
}

// truncate shortens s to at most n runes, with an ellipsis.
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func plain(text string) *slackgo.TextBlockObject {
	return slackgo.NewTextBlockObject(slackgo.PlainTextType, text, true, false)
}

// imageBlocks are the caption and buttons posted with an image.
func imageBlocks(d *bot.Delivery, thread string) slackgo.Blocks {
	ref := turnRef{Turn: d.Turn.ID, Thread: thread}.value()
	caption := truncate(d.Caption(), 2900)
	var buttons []slackgo.BlockElement
	if d.Turn.Kind != bot.KindUpload {
		buttons = append(buttons, slackgo.NewButtonBlockElement(actReroll, ref, plain("🎲 Reroll")))
	}
	buttons = append(buttons,
		slackgo.NewButtonBlockElement(actUndo, ref, plain("↩️ Undo")),
		slackgo.NewButtonBlockElement(actEdit, ref, plain("✏️ Edit")),
		slackgo.NewButtonBlockElement(actHistory, ref, plain("🕘 History")))
	return slackgo.Blocks{BlockSet: []slackgo.Block{
		slackgo.NewSectionBlock(plain(caption), nil, nil),
		slackgo.NewActionBlock(blockImage, buttons...),
		slackgo.NewActionBlock(blockMore,
			slackgo.NewButtonBlockElement(actDetails, ref, plain("ℹ️ Details")),
			slackgo.NewButtonBlockElement(actDelete, ref, plain("🗑️ Delete"))),
	}}
}

// detailsBlocks are the Details of an image, only to the person who
// asked: the text, and "Use these settings" (ref names the image and its
// conversation's thread) unless it was uploaded.
func detailsBlocks(text string, ref turnRef, upload bool) []slackgo.Block {
	blocks := []slackgo.Block{slackgo.NewSectionBlock(slackgo.NewTextBlockObject(slackgo.MarkdownType, truncate(text, 3000), false, false), nil, nil)}
	if !upload {
		blocks = append(blocks, slackgo.NewActionBlock(blockUse,
			slackgo.NewButtonBlockElement(actUseSettings, ref.value(), plain("Use these settings")).WithStyle(slackgo.StylePrimary)))
	}
	return blocks
}

// groupBlocks are the caption of a variations message and one actions
// block per image (block ids kontext_image_N): Edit N, Reroll N, Use N,
// each carrying the image's turn.
func groupBlocks(d *bot.Delivery, thread string) slackgo.Blocks {
	blocks := []slackgo.Block{slackgo.NewSectionBlock(plain(truncate(d.Caption(), 2900)), nil, nil)}
	for _, v := range d.Group {
		ref := turnRef{Turn: v.Turn.ID, Thread: thread}.value()
		n := strconv.Itoa(v.N)
		blocks = append(blocks, slackgo.NewActionBlock(blockImage+"_"+n,
			slackgo.NewButtonBlockElement(actEdit, ref, plain("✏️ Edit "+n)),
			slackgo.NewButtonBlockElement(actReroll, ref, plain("🎲 Reroll "+n)),
			slackgo.NewButtonBlockElement(actUse, ref, plain("👉 Use "+n)).WithStyle(slackgo.StylePrimary)))
	}
	return slackgo.Blocks{BlockSet: blocks}
}

// statusBlocks are a status message: its line, the prompt, and a Cancel
// button while the job waits.
func statusBlocks(line, prompt, cancelJob string) []slackgo.Block {
	text := line
	if prompt != "" {
		text += " — “" + truncate(prompt, 200) + "”"
	}
	blocks := []slackgo.Block{slackgo.NewSectionBlock(plain(text), nil, nil)}
	if cancelJob != "" {
		blocks = append(blocks, slackgo.NewActionBlock(blockStatus,
			slackgo.NewButtonBlockElement(actCancel, cancelJob, plain("Cancel")).WithStyle(slackgo.StyleDanger)))
	}
	return blocks
}

// maxModalInput is the edit modal's input length: a prompt and its typed
// options (the prompt itself is checked against bot.MaxPromptRunes).
const maxModalInput = bot.MaxPromptRunes + 200

// editModal asks for the prompt of an edit.
func editModal(meta editMeta, title string) slackgo.ModalViewRequest {
	return prefilledModal(meta, title, "")
}

// prefilledModal is the edit modal with value already typed in (the
// settings of "Use these settings"); "" leaves it empty.
func prefilledModal(meta editMeta, title, value string) slackgo.ModalViewRequest {
	m, _ := json.Marshal(meta)
	input := slackgo.NewPlainTextInputBlockElement(plain("e.g. make it night, add a red umbrella --seed 7"), actPrompt)
	input.Multiline = true
	input.MaxLength = maxModalInput
	input.InitialValue = truncate(value, maxModalInput)
	block := slackgo.NewInputBlock(blockPrompt, plain("What should change?"), plain("Options: --ar 16:9, --seed N, --model pro, --enhance"), input)
	return slackgo.ModalViewRequest{
		Type:            slackgo.VTModal,
		Title:           plain(truncate(title, 24)),
		Submit:          plain("Edit"),
		Close:           plain("Cancel"),
		CallbackID:      cbEditModal,
		PrivateMetadata: string(m),
		Blocks:          slackgo.Blocks{BlockSet: []slackgo.Block{block}},
	}
}
