// Command kontextbot brings FLUX.1 Kontext image generation and editing to
// Discord and Slack through CometAPI. main only wires: it reads the
// configuration, builds the core, the queue, the store and the platform
// adapters, and runs them until a signal arrives.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, a second one exits at once (the default
		// handling), even in the middle of a graceful shutdown.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "kontextbot:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError marks a mistake in the command line itself.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// command is one subcommand: its name, its arguments in short, the one
// line the top-level help shows, and what runs it.
type command struct {
	name, args, summary string
	run                 func(ctx context.Context, args []string, env envFunc, stdout, stderr io.Writer) error
}

// commands are every subcommand, in the order the help lists them. init
// fills it: the commands' flag sets read it back for their -h.
var commands []command

func init() {
	commands = []command{
		{"serve", "", "run the bot on every platform whose credentials are set (the default)", runServe},
		{"chat", "[-fake] [-out DIR] [-conv NAME]", "a conversation with the bot in this terminal; -fake needs no API key", func(ctx context.Context, args []string, env envFunc, stdout, stderr io.Writer) error {
			return runChat(ctx, args, env, os.Stdin, stdout, stderr)
		}},
		{"imagine", "-prompt TEXT [-o FILE]", "make one image from a prompt and write it to a file", runImagine},
		{"edit", "-image FILE -prompt TEXT [-o FILE]", "edit one local image and write the result to a file", runEdit},
		{"fakeapi", "[-addr 127.0.0.1:8787]", "serve a fake CometAPI that accepts any key, to try the bot without one", runFakeAPI},
		{"healthcheck", "", "ask a running bot's /healthz and fail unless it is healthy (for Docker)", runHealthcheck},
		{"version", "", "print the version, commit and Go version of this build", runVersion},
		{"help", "[COMMAND]", "show this help, or a command's flags", nil},
	}
}

// lookup finds a command by name.
func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// usage is the top-level help: every command with one line.
func usage() string {
	var b strings.Builder
	b.WriteString("kontextbot: FLUX.1 Kontext image generation and editing for team chat.\n\n")
	b.WriteString("Usage:\n  kontextbot [COMMAND] [FLAGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.summary)
	}
	b.WriteString(`
Configuration comes from the environment, then from .env (see .env.example).
Run "kontextbot COMMAND -h" for a command's flags; "kontextbot --version" for
the version. To try the bot without an API key or a chat platform:
  kontextbot chat -fake
`)
	return b.String()
}

// run is the whole program behind main, with its inputs and outputs passed
// in, so tests drive exactly what a user runs. Asking for help is not an
// error: it prints the help and returns nil.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			fmt.Fprint(stdout, usage())
			return nil
		case "-version", "--version", "-v":
			return runVersion(ctx, args[1:], getenv, stdout, stderr)
		}
		if args[0] != "" && args[0][0] != '-' {
			cmd, args = args[0], args[1:]
		}
	}
	if cmd == "help" {
		if len(args) == 0 {
			fmt.Fprint(stdout, usage())
			return nil
		}
		cmd, args = args[0], []string{"-h"}
	}
	c, ok := lookup(cmd)
	if !ok || c.run == nil {
		return usageError{fmt.Sprintf("unknown command %q: run \"kontextbot -h\" for the list of commands", cmd)}
	}
	env, err := withDotenv(getenv)
	if err != nil && !wantsHelp(args) {
		return err
	}
	if err != nil {
		env = getenv // -h needs no configuration
	}
	err = c.run(ctx, args, env, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// wantsHelp reports whether args ask for a command's help.
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// newFlagSet returns a flag set that reports errors instead of exiting;
// its -h names the command, what it does and its flags.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("kontextbot "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		c, _ := lookup(name)
		fmt.Fprintf(fs.Output(), "Usage: %s\n\n%s.\n", strings.TrimSpace("kontextbot "+name+" "+c.args), upperFirst(c.summary))
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return fs
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// parseFlags parses args, turning a flag mistake into a usageError.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q (flags go before it? see %s -h)", fs.Arg(0), fs.Name())}
	}
	return nil
}

// version and revision are stamped at build time, e.g. by the Dockerfile:
//
//	go build -ldflags "-X main.version=v1.2.0 -X main.revision=$(git rev-parse HEAD)"
//
// Without them the module version and VCS information Go records in the
// binary are used.
var version, revision string

// buildInfo says what this binary was built from.
type buildInfo struct {
	Version   string // a release such as v1.2.0, a pseudo-version, or "devel"
	Revision  string // the commit, "" when unknown
	Time      string // the commit time (RFC 3339), "" when unknown
	Modified  bool   // built from a work tree with uncommitted changes
	GoVersion string
}

// readBuildInfo combines the stamped version with what the Go toolchain
// recorded (module version, vcs.revision, vcs.time, vcs.modified).
func readBuildInfo() buildInfo {
	b := buildInfo{Version: version, Revision: revision, GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		if v := info.Main.Version; b.Version == "" && v != "" && v != "(devel)" {
			b.Version = v
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if b.Revision == "" {
					b.Revision = s.Value
				}
			case "vcs.time":
				b.Time = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	return b
}

// String is the line `kontextbot version` prints after the name.
func (b buildInfo) String() string {
	var parts []string
	if b.Revision != "" {
		rev := b.Revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		parts = append(parts, "commit "+rev)
	}
	if b.Time != "" {
		parts = append(parts, b.Time)
	}
	if b.Modified {
		parts = append(parts, "with uncommitted changes")
	}
	if b.Revision == "" && b.Version == "devel" {
		parts = append(parts, "no version stamped: build from a git clone, or with -ldflags \"-X main.version=...\"")
	}
	parts = append(parts, b.GoVersion+" "+runtime.GOOS+"/"+runtime.GOARCH)
	return b.Version + " (" + strings.Join(parts, ", ") + ")"
}

func runVersion(_ context.Context, args []string, _ envFunc, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "kontextbot", readBuildInfo())
	return nil
}
