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
	"runtime/debug"
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
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "kontextbot:", err)
		}
		var ue usageError
		if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// usageError marks a mistake in the command line itself.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

const usage = `kontextbot: FLUX.1 Kontext image generation and editing for team chat.

Usage:
  kontextbot [serve]                 run the bot (the default)
  kontextbot imagine -prompt TEXT    make one image from text
  kontextbot edit -image IN -prompt TEXT
                                     edit one local image
  kontextbot chat [-out DIR]         a conversation with the bot in the terminal
  kontextbot fakeapi                 run a fake CometAPI on 127.0.0.1:8787
  kontextbot healthcheck             ask a running bot's /healthz (for Docker)
  kontextbot version                 print the version

Configuration comes from the environment, then from .env (see .env.example).
Run "kontextbot COMMAND -h" for a command's flags.
`

// run is the whole program behind main, with its inputs and outputs passed
// in, so tests drive exactly what a user runs.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	env, err := withDotenv(getenv)
	if err != nil {
		return err
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, env, stdout, stderr)
	case "imagine":
		return runImagine(ctx, args, env, stdout, stderr)
	case "edit":
		return runEdit(ctx, args, env, stdout, stderr)
	case "chat":
		return runChat(ctx, args, env, os.Stdin, stdout, stderr)
	case "fakeapi":
		return runFakeAPI(ctx, args, env, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args, env, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "kontextbot", version())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("kontextbot "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
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

// version is the module version or VCS revision the binary was built from.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := info.Main.Version
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			if v == "" || v == "(devel)" {
				v = s.Value[:12]
			}
		}
	}
	if v == "" {
		v = "dev"
	}
	return v
}
