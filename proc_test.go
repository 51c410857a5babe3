package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The real binary, run as a separate process: this test binary, which is
// kontextbot itself when KONTEXTBOT_TEST_MAIN=1 (see TestMain). Every test
// that starts the binary (chat, serve) does it through startProc.

// binary runs this test binary as kontextbot with args and env.
func binary(ctx context.Context, env map[string]string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = []string{"KONTEXTBOT_TEST_MAIN=1", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	return cmd
}

// proc is a running kontextbot process: its stdin is a pipe, its stdout
// and stderr are collected line by line as they come.
type proc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout lines
	stderr lines
	done   chan struct{} // closed once the process has exited
	err    error         // its exit, once done is closed
}

// startProc starts `kontextbot args...` with env. The process is killed
// (if still running) at the end of the test, and its output logged when
// the test failed; a data race the race detector reported in it fails
// the test.
func startProc(t testing.TB, ctx context.Context, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: strings.Join(args, " "), cmd: binary(ctx, env, args...), done: make(chan struct{})}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting kontextbot %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.stdout.flush()
		p.stderr.flush()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if p.stderr.has("WARNING: DATA RACE") {
			t.Errorf("kontextbot %s (pid %d) reported a data race:\n%s", p.name, p.pid(), p.stderr.String())
		} else if t.Failed() {
			t.Logf("kontextbot %s (pid %d) stdout:\n%s\nstderr:\n%s", p.name, p.pid(), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// pid is the process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// signal sends sig to the process.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to pid %d: %v", sig, p.pid(), err)
	}
}

// wait waits for the process to exit and returns how it ended.
func (p *proc) wait() error {
	<-p.done
	return p.err
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// run closes stdin (after writing input) and waits for the process to end.
func (p *proc) run(input string) error {
	if input != "" {
		_, _ = io.WriteString(p.stdin, input)
	}
	_ = p.stdin.Close()
	return p.wait()
}

// waitFor waits up to timeout for cond, failing the test (with what it
// waited for) when the time runs out or the process ends first.
func (p *proc) waitFor(timeout time.Duration, what string, cond func() bool) {
	p.t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if p.exited() {
			p.t.Fatalf("kontextbot %s ended (%v) while waiting for %s", p.name, p.err, what)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// lines collects a process's output lines as they come; it is an
// io.Writer.
type lines struct {
	mu      sync.Mutex
	all     []string
	partial bytes.Buffer
}

// Write takes output, split into lines.
func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial.Write(p)
	for {
		line, err := l.partial.ReadString('\n')
		if err != nil { // no newline yet: keep the start
			rest := line
			l.partial.Reset()
			l.partial.WriteString(rest)
			return len(p), nil
		}
		l.all = append(l.all, strings.TrimSuffix(line, "\n"))
	}
}

// flush keeps a last line without a newline.
func (l *lines) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.partial.Len() > 0 {
		l.all = append(l.all, l.partial.String())
		l.partial.Reset()
	}
}

// has reports whether a line contains s.
func (l *lines) has(s string) bool {
	return l.count(s) > 0
}

// count counts the lines that contain s.
func (l *lines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.all {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// String is every line so far.
func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}
