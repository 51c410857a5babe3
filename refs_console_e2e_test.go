package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext/kontexttest"
)

// refImages writes n distinct PNGs into dir and returns their paths and
// digests.
func refImages(t *testing.T, dir string, n int) (paths, sums []string) {
	t.Helper()
	for i := range n {
		p := filepath.Join(dir, string(rune('a'+i))+".png")
		data := writeTestPNG(t, p, 40+8*i, 30+4*i)
		s := sha256.Sum256(data)
		paths, sums = append(paths, p), append(sums, hex.EncodeToString(s[:]))
	}
	return paths, sums
}

// readOutputs reads the provenance of every image in dir, by file name.
func readOutputs(t *testing.T, dir string) []kontexttest.Provenance {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.png"))
	slices.Sort(files)
	var out []kontexttest.Provenance
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		p, err := kontexttest.ReadProvenance(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, p)
	}
	return out
}

// TestChatEditWithSeveralImages drives `kontextbot chat` through stdin:
// an edit from two local images, its reroll, four images, and five
// (refused with a sentence, nothing charged).
func TestChatEditWithSeveralImages(t *testing.T) {
	s, env := fakeEnv(t, kontexttest.Options{Pixels: 128 * 128})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	paths, sums := refImages(t, t.TempDir(), 5)
	images := func(n int) string {
		var b strings.Builder
		for _, p := range paths[:n] {
			b.WriteString("--image " + p + " ")
		}
		return b.String()
	}
	out := t.TempDir()
	script := strings.Join([]string{
		"/edit " + images(2) + "put the dog from the second picture on the beach in the first --seed 5",
		"/reroll",
		"/edit " + images(4) + "a collage of all four",
		"/edit " + images(5) + "five is too many",
		"/edit --with " + paths[4] + " put the thing from this picture in the collage",
		"/quit",
	}, "\n")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := binary(ctx, env, "chat", "-out", out, "-user", "ada")
	cmd.Stdin = strings.NewReader(script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chat: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	prov := readOutputs(t, out)
	if len(prov) != 4 {
		t.Fatalf("got %d images, want 4 (edit, reroll, four, with):\n%s", len(prov), stdout.String())
	}
	files, _ := filepath.Glob(filepath.Join(out, "*.png"))
	slices.Sort(files)
	collage, err := os.ReadFile(files[2])
	if err != nil {
		t.Fatal(err)
	}
	collageSum := sha256.Sum256(collage)
	tests := []struct {
		name   string
		got    kontexttest.Provenance
		prompt string
		inputs []string
	}{
		{"TwoImages", prov[0], "put the dog from the second picture on the beach in the first", sums[:2]},
		{"RerollKeepsThem", prov[1], "put the dog from the second picture on the beach in the first", sums[:2]},
		{"FourImages", prov[2], "a collage of all four", sums[:4]},
		{"CurrentImageWithAFile", prov[3], "put the thing from this picture in the collage", []string{hex.EncodeToString(collageSum[:]), sums[4]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got.Prompt != tt.prompt || !slices.Equal(tt.got.Inputs, tt.inputs) {
				t.Errorf("got prompt %q inputs %v, want %q from %v in order", tt.got.Prompt, tt.got.Inputs, tt.prompt, tt.inputs)
			}
		})
	}
	if prov[1].Seed == prov[0].Seed {
		t.Errorf("reroll kept the seed %d", prov[0].Seed)
	}
	for _, want := range []string{bot.ErrTooManyImages.Msg, "from your image 1 + your image 2 ·"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	// Charged: the four images, not the refused five.
	usage := binary(ctx, env, "chat", "-out", out, "-user", "ada")
	usage.Stdin = strings.NewReader("/usage\n/history\n")
	var stdout2 bytes.Buffer
	usage.Stdout, usage.Stderr = &stdout2, io.Discard
	if err := usage.Run(); err != nil || !strings.Contains(stdout2.String(), "You have made 4 images today") {
		t.Errorf("usage after: %v\n%s", err, stdout2.String())
	}
	// /history names every image an edit was made from.
	if !regexp.MustCompile(`edit +i[a-z2-7]+ "a collage of all four" · seed \d+ \(from i[a-z2-7]+ \+ i[a-z2-7]+ \+ i[a-z2-7]+ \+ i[a-z2-7]+\)`).MatchString(stdout2.String()) {
		t.Errorf("/history does not list the four images of the collage:\n%s", stdout2.String())
	}
	if got, want := s.Stats().Creates, 4; got != want {
		t.Errorf("provider creates: got %d, want %d (nothing for five images)", got, want)
	}
}

// TestChatRestartKeepsReferences kills `kontextbot chat` while an edit
// from two images is with the provider and checks the next start
// delivers it from the same two images.
func TestChatRestartKeepsReferences(t *testing.T) {
	s, env := fakeEnv(t, kontexttest.Options{Latency: 1500 * time.Millisecond, Pixels: 128 * 128})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	env["KONTEXT_WAIT"] = "0"
	paths, sums := refImages(t, t.TempDir(), 2)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	first := binary(ctx, env, "chat", "-out", out)
	stdin, _ := first.StdinPipe()
	stdout, _ := first.StdoutPipe()
	first.Stderr = io.Discard
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(stdin, "/edit --image "+paths[0]+" --image "+paths[1]+" the cat from the second on the sofa in the first\n")
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && !strings.Contains(lines.Text(), "generating") {
	}
	for deadline := time.Now().Add(5 * time.Second); s.Stats().Active == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the prediction never started")
		}
	}
	time.Sleep(100 * time.Millisecond) // let the prediction id reach the store
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()

	second := binary(ctx, env, "chat", "-out", out)
	second.Stdin = strings.NewReader("/reroll\n")
	var stdout2 bytes.Buffer
	second.Stdout, second.Stderr = &stdout2, io.Discard
	if err := second.Run(); err != nil {
		t.Fatalf("second run: %v\n%s", err, stdout2.String())
	}
	prov := readOutputs(t, out)
	if len(prov) != 2 {
		t.Fatalf("got %d images after the restart, want the edit and its reroll:\n%s", len(prov), stdout2.String())
	}
	for i, p := range prov {
		if !slices.Equal(p.Inputs, sums) {
			t.Errorf("image %d: inputs %v, want %v in order", i+1, p.Inputs, sums)
		}
	}
	if got, want := s.Stats().Creates, 2; got != want {
		t.Errorf("creates: got %d, want %d (the prediction followed, then the reroll)", got, want)
	}
}

// TestRunEditSeveralImages: `kontextbot edit -image A -image B` sends
// both, in order; five -image flags are refused before any call.
func TestRunEditSeveralImages(t *testing.T) {
	s, env := fakeEnv(t, kontexttest.Options{})
	os.WriteFile(env["KONTEXT_ENV_FILE"], nil, 0o600)
	dir := t.TempDir()
	paths, sums := refImages(t, dir, 5)
	out := filepath.Join(dir, "out.png")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"edit", "-image", paths[0], "-image", paths[1], "-prompt", "the hat from the second on the first", "-o", out}, envMap(env), &stdout, &stderr)
	if err != nil {
		t.Fatalf("edit: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kontexttest.ReadProvenance(data)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Inputs, sums[:2]) {
		t.Errorf("inputs: got %v, want %v in order", p.Inputs, sums[:2])
	}
	var args []string
	for _, p := range paths {
		args = append(args, "-image", p)
	}
	err = run(context.Background(), append(append([]string{"edit"}, args...), "-prompt", "five"), envMap(env), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "at most 4 images") {
		t.Errorf("five images: got %v, want a usage error saying at most 4", err)
	}
	if got := s.Stats().Creates; got != 1 {
		t.Errorf("creates: got %d, want 1", got)
	}
}
