package main

import (
	"strings"
	"testing"
	"time"

	"kontextbot/kontext/kontexttest"
)

// TestSlackVariations: /imagine … --n 4 posts four images with different
// seeds in one message (one files.completeUploadExternal of four files),
// with one actions block per image (Edit N, Reroll N, Use N), each image
// charged once; "Use 3" shows image 3 in the picture's thread and the
// next message there edits it; after a restart the group's buttons still
// work.
func TestSlackVariations(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", map[string]string{"KONTEXT_USER_RUNNING": "4"})
	e.slack.AddUser(slAda, "ada")
	e.slack.AddUser(slBob, "bob")
	ch := e.slack.CreateChannel("variations", true)
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "a lighthouse at dusk --n 4"))
	grid := e.waitImages(ch, "", 1)[0]
	if got := len(grid.Files); got != 4 {
		t.Fatalf("files in the message: %d, want 4", got)
	}
	completes := 0
	for _, c := range e.slack.Calls() {
		if c.Method == "files.completeUploadExternal" {
			completes++
		}
	}
	if completes != 1 {
		t.Errorf("files.completeUploadExternal calls: %d, want 1 for the group", completes)
	}
	seeds := map[int64]bool{}
	var shas []string
	for i, f := range grid.Files {
		data := e.slack.FileData(f.ID)
		p, err := kontexttest.ReadProvenance(data)
		if err != nil {
			t.Fatalf("image %d: %v", i+1, err)
		}
		if p.Prompt != "a lighthouse at dusk" {
			t.Errorf("image %d: prompt %q", i+1, p.Prompt)
		}
		seeds[p.Seed] = true
		shas = append(shas, slSHA(data))
	}
	if len(seeds) != 4 {
		t.Errorf("seeds: %d different, want 4", len(seeds))
	}
	for _, want := range []string{"Edit 4", "Reroll 4", "Use 4", "4 variations"} {
		if !strings.Contains(string(grid.Blocks), want) {
			t.Errorf("the message lacks %q: %s", want, grid.Blocks)
		}
	}
	if got := e.kx.Stats().Created; got != 4 {
		t.Errorf("predictions created: %d, want 4", got)
	}
	e.acked(e.slack.Slash(slAda, ch, "/usage", ""))
	e.waitEphemeral(slAda, "You have made 4 images today")
	e.waitEphemeral(slAda, "costing $0.77")

	use := func(n string) {
		t.Helper()
		env, err := e.slack.ClickIn(slBob, grid, "kontext_image_"+n, "kontext_use")
		if err != nil {
			t.Fatal(err)
		}
		e.acked(env)
	}
	use("3")
	shown := e.waitImages(ch, grid.TS, 2)[1]
	if got := slSHA(e.data(shown)); got != shas[2] {
		t.Errorf("Use 3 showed %s, want image 3 %s", got, shas[2])
	}
	e.slack.Say(slAda, ch, grid.TS, "make it snow")
	edit := e.waitImages(ch, grid.TS, 3)[2]
	if p := e.prov(edit); p.Prompt != "make it snow" || p.InputSHA256 != shas[2] {
		t.Errorf("the edit after Use 3: %q from %s, want image 3 %s", p.Prompt, p.InputSHA256, shas[2])
	}

	// After a restart, the group's buttons still work.
	e.stopBot()
	e.startBot()
	use("2")
	e.waitImages(ch, grid.TS, 4)
	e.slack.Say(slAda, ch, grid.TS, "add a moon")
	moon := e.waitImages(ch, grid.TS, 5)[4]
	if p := e.prov(moon); p.Prompt != "add a moon" || p.InputSHA256 != shas[1] {
		t.Errorf("the edit after a restart and Use 2: %q from %s, want image 2 %s", p.Prompt, p.InputSHA256, shas[1])
	}
	env, err := e.slack.ClickIn(slAda, grid, "kontext_image_4", "kontext_reroll")
	if err != nil {
		t.Fatal(err)
	}
	e.acked(env)
	re := e.waitImages(ch, grid.TS, 6)[5]
	if p := e.prov(re); p.Prompt != "a lighthouse at dusk" || seeds[p.Seed] {
		t.Errorf("Reroll 4: %+v, want the prompt with a new seed", p)
	}
	e.checkClean()
	if p := e.slack.Problems(); len(p) > 0 {
		t.Errorf("fake Slack problems: %q", p)
	}
}

// TestSlackVariationsRestartMidGroup: the bot stops while a group's jobs
// run and wait (one slot); after the restart the group is posted once,
// as one message with its three files, each image made once.
func TestSlackVariationsRestartMidGroup(t *testing.T) {
	slNoLeaks(t)
	e := slStart(t, "socket", map[string]string{"KONTEXT_SLOTS": "1", "SHUTDOWN_TIMEOUT": "200ms"})
	e.slack.AddUser(slAda, "ada")
	ch := e.slack.CreateChannel("variations-restart", true)
	e.kx.Inject(kontexttest.Create, kontexttest.Fault{Delay: 2 * time.Second})
	e.acked(e.slack.Slash(slAda, ch, "/imagine", "a windmill --n 3"))
	e.wait("the first variation at the provider", func() bool { return e.kx.Stats().Creates >= 1 })
	e.stopBot()
	if got := len(e.images(ch, "")); got != 0 {
		t.Fatalf("images before the restart: %d, want none (the group is not complete)", got)
	}
	e.startBot()
	grid := e.waitImages(ch, "", 1)[0]
	if got := len(grid.Files); got != 3 {
		t.Errorf("files in the message: %d, want 3", got)
	}
	e.wait("the status message to go", func() bool { return len(e.statuses(ch, "")) == 0 })
	if got := len(e.images(ch, "")); got != 1 {
		t.Errorf("messages with images: %d, want 1", got)
	}
	if got := e.kx.Stats().Created; got != 3 {
		t.Errorf("predictions created: %d, want 3", got)
	}
	e.checkClean()
}
