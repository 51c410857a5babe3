package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"kontextbot/bot"
	"kontextbot/kontext"
	"kontextbot/kontext/kontexttest"
)

// oneShotFlags are the flags imagine and edit share.
type oneShotFlags struct {
	prompt, aspect, seed, model, out, format string
}

func (o *oneShotFlags) register(fs *flag.FlagSet, defaultAspect string) {
	fs.StringVar(&o.prompt, "prompt", "", "what to make or change (required)")
	fs.StringVar(&o.aspect, "aspect", defaultAspect, "aspect ratio: "+strings.Join(kontext.AspectRatios, ", "))
	fs.StringVar(&o.seed, "seed", "", "seed for a reproducible result (default: random)")
	fs.StringVar(&o.model, "model", "", "model: "+strings.Join(kontext.ModelNames(), ", ")+" (default: KONTEXT_MODEL)")
	fs.StringVar(&o.out, "o", "", "file to write (default: kontext-TIME.png in this folder)")
	fs.StringVar(&o.format, "format", "png", "png or jpg")
}

// request checks the flags and turns them into a kontext.Request.
func (o *oneShotFlags) request() (kontext.Request, error) {
	var problems []string
	req := kontext.Request{Model: o.model, AspectRatio: o.aspect, OutputFormat: o.format}
	// The same cleaner and limits as every chat platform: what a chat
	// refuses, the command line refuses with the same sentence.
	prompt, err := bot.CleanPrompt(o.prompt)
	switch {
	case strings.TrimSpace(o.prompt) == "":
		problems = append(problems, "-prompt is required")
	case err != nil:
		problems = append(problems, "-prompt: "+bot.Explain(err))
	}
	req.Prompt = prompt
	if o.aspect != "" && !kontext.ValidAspect(o.aspect) {
		problems = append(problems, fmt.Sprintf("-aspect %q is not one of %s", o.aspect, strings.Join(kontext.AspectRatios, ", ")))
	}
	if o.model != "" && !kontext.ValidModel(o.model) {
		problems = append(problems, fmt.Sprintf("-model %q is not one of %s", o.model, strings.Join(kontext.ModelNames(), ", ")))
	}
	if o.format != "png" && o.format != "jpg" {
		problems = append(problems, fmt.Sprintf("-format %q is not png or jpg", o.format))
	}
	if o.seed != "" {
		n, err := strconv.ParseInt(o.seed, 10, 64)
		if err != nil {
			problems = append(problems, fmt.Sprintf("-seed %q is not a whole number", o.seed))
		}
		req.Seed = &n
	}
	if len(problems) > 0 {
		return req, usageError{strings.Join(problems, "; ")}
	}
	return req, nil
}

func runImagine(ctx context.Context, args []string, env envFunc, stdout, stderr io.Writer) error {
	var o oneShotFlags
	fs := newFlagSet("imagine", stderr)
	o.register(fs, "1:1")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	req, err := o.request()
	if err != nil {
		return err
	}
	return oneShot(ctx, env, stdout, req, o.out)
}

func runEdit(ctx context.Context, args []string, env envFunc, stdout, stderr io.Writer) error {
	var o oneShotFlags
	var in imagePaths
	fs := newFlagSet("edit", stderr)
	fs.Var(&in, "image", fmt.Sprintf("an image to use: PNG, JPEG, GIF or WebP (required; repeat it, up to %d times, for an edit from several images: the first is the one to edit)", bot.MaxImages))
	o.register(fs, kontext.AspectMatchInput)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	req, err := o.request()
	switch {
	case len(in) == 0:
		err = errors.Join(err, usageError{"-image is required"})
	case len(in) > bot.MaxImages:
		err = errors.Join(err, usageError{fmt.Sprintf("-image is given %d times: one edit uses at most %d images", len(in), bot.MaxImages)})
	}
	if err != nil {
		return err
	}
	for i, path := range in {
		img, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cannot read the image to edit: %w", err)
		}
		if err := bot.CheckImage(img); err != nil {
			return fmt.Errorf("%s: %s", path, bot.Explain(err))
		}
		if i == 0 {
			req.InputImage = img
		} else {
			req.References = append(req.References, img)
		}
	}
	return oneShot(ctx, env, stdout, req, o.out)
}

// imagePaths is a repeatable -image flag: the paths in the order given.
type imagePaths []string

func (p *imagePaths) String() string { return strings.Join(*p, ",") }

func (p *imagePaths) Set(s string) error {
	if s == "" {
		return errors.New("empty path")
	}
	*p = append(*p, s)
	return nil
}

// oneShot makes one image with the configured client and writes it to out.
func oneShot(ctx context.Context, env envFunc, stdout io.Writer, req kontext.Request, out string) error {
	cfg, err := loadConfig(env)
	if err != nil {
		return err
	}
	if err := cfg.restrictModels(); err != nil {
		return err
	}
	client, err := kontext.NewClient(cfg.clientConfig())
	if err != nil {
		return err
	}
	defer client.Close()
	start := time.Now()
	res, err := client.Run(ctx, req)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return errors.New("interrupted; nothing was written")
		}
		return errors.New(oneShotMessage(err))
	}
	if out == "" {
		out = "kontext-" + start.Format("20060102-150405") + "." + extension(res.Format)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return fmt.Errorf("cannot write the image: %w", err)
	}
	if err := os.WriteFile(out, res.Data, 0o644); err != nil {
		return fmt.Errorf("cannot write the image: %w", err)
	}
	seed := "unknown"
	if res.Seed != nil {
		seed = strconv.FormatInt(*res.Seed, 10)
	}
	fmt.Fprintf(stdout, "wrote %s: %d×%d %s, seed %s, model %s, in %s\n",
		out, res.Width, res.Height, res.Format, seed, res.Model, time.Since(start).Round(100*time.Millisecond))
	return nil
}

// oneShotMessage is the one sentence the command line prints for a failed
// call; it names what to change where the operator can act.
func oneShotMessage(err error) string {
	switch {
	case errors.Is(err, kontext.ErrUnauthorized):
		return "the API key was rejected: check COMETAPI_API_KEY (and COMETAPI_BASE_URL)"
	case errors.Is(err, kontext.ErrOutOfCredits):
		return "the CometAPI account is out of credits"
	case errors.Is(err, kontext.ErrContentRefused):
		return "the provider refused this prompt as unsafe"
	}
	var ae *kontext.APIError
	if errors.As(err, &ae) && ae.Kind != kontext.ErrInvalidRequest {
		return strings.TrimSuffix(bot.Explain(err), ".") + " (" + err.Error() + ")"
	}
	return strings.TrimSuffix(bot.Explain(err), ".")
}

func extension(format string) string {
	if format == "jpeg" {
		return "jpg"
	}
	return format
}

// runFakeAPI serves the fake CometAPI on a real address until ctx ends, so
// anyone can run the bot end to end without an API key. It accepts any
// key unless -key names one, and never prints a key.
func runFakeAPI(ctx context.Context, args []string, _ envFunc, stdout, stderr io.Writer) error {
	fs := newFlagSet("fakeapi", stderr)
	addr := fs.String("addr", "127.0.0.1:8787", "address to listen on")
	latency := fs.Duration("latency", 3*time.Second, "time each prediction takes")
	jitter := fs.Duration("jitter", time.Second, "extra random time per prediction, up to this")
	slots := fs.Int("slots", 24, "active predictions allowed at once (the next one gets 429)")
	maxSlots := fs.Int("max-slots", 6, "of those, active flux-kontext-max predictions allowed (BFL's limit)")
	key := fs.String("key", "", "accept only this API key (default: any non-empty key)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	opts := kontexttest.Options{APIKey: *key, Slots: *slots, ModelSlots: map[string]int{kontext.ModelMax: *maxSlots},
		Latency: *latency, Jitter: *jitter, Logger: logger}
	if *key == "" {
		opts.APIKey = kontexttest.DefaultAPIKey
	}
	fake := kontexttest.New(opts)
	defer fake.Close()
	var h http.Handler = fake
	keys, tryKey := "accepts any API key", "test"
	if *key == "" {
		h = acceptAnyKey(fake, opts.APIKey)
	} else {
		keys, tryKey = "accepts only the key given with -key", "YOUR-KEY"
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("fakeapi: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "fake CometAPI listening on http://%s (%s, %d slots, latency %s + up to %s)\n", ln.Addr(), keys, *slots, *latency, *jitter)
	fmt.Fprintf(stdout, "try: COMETAPI_BASE_URL=http://%s COMETAPI_API_KEY=%s kontextbot imagine -prompt \"a red fox\" -o fox.png\n", ln.Addr(), tryKey)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("fakeapi: %w", err)
	case <-ctx.Done():
	}
	fake.Close() // release held requests so Shutdown does not wait for them
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("fakeapi: shutdown: %w", err)
	}
	<-errc
	return nil
}

// acceptAnyKey lets the fake take any key: a request carrying a non-empty
// "Authorization: Bearer KEY" reaches the fake with the fake's own key. A
// request without a key still reaches it unchanged and is refused, as
// CometAPI refuses it.
func acceptAnyKey(h http.Handler, key string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, k, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(k) != "" {
			r = r.Clone(r.Context())
			r.Header.Set("Authorization", "Bearer "+key)
		}
		h.ServeHTTP(w, r)
	})
}
