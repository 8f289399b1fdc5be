package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

const (
	// maxOutputBytes is how much of a command's combined output is kept
	// (the end of it).
	maxOutputBytes = 64 << 10
	// killGrace is how long a command's process group has between SIGTERM
	// and SIGKILL.
	killGrace = 2 * time.Second
	// pipeGrace is how long Wait waits for the output pipes after the
	// command exited (a background child may hold them open).
	pipeGrace = 3 * time.Second
)

// passedEnv are the variables of the plugin's environment that an exec
// command gets (each only when set): nothing else of it, which holds AWS
// keys and tokens.
var passedEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"}

// errCommandStopped is wrapped by the error of an exec command that the
// runner killed because the plugin is stopping (not because its hook timed
// out).
var errCommandStopped = errors.New("the command was stopped")

// commandEnv is the environment of an exec command: passedEnv from the
// plugin's environment, then the SPOTFLEET_* variables and the hook's env
// (added, which win over the plugin's).
func commandEnv(added []string) []string {
	env := make([]string, 0, len(passedEnv)+len(added))
	for _, k := range passedEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, added...)
}

// runExec runs an exec hook: the argv (no shell) with a minimal environment
// (see commandEnv), in its own process group. When ctx ends the whole group
// gets SIGTERM, then SIGKILL after killGrace.
func (r *Runner) runExec(ctx context.Context, h *Hook, p *prepared, log hclog.Logger) error {
	if len(p.argv) == 0 {
		return errors.New("no command is set")
	}
	path, err := exec.LookPath(p.argv[0])
	if err != nil {
		// The same on every instance: a configuration error.
		return &configError{err: fmt.Errorf("command %s cannot be run: %v", shown(p.argv[0]), unwrapExecError(err))}
	}
	out := &tailBuffer{max: maxOutputBytes}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        p.argv,
		Env:         commandEnv(p.env),
		Stdout:      out,
		Stderr:      out,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		WaitDelay:   pipeGrace,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %v", shown(path), err)
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var waitErr error
	killed := false
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		killed = true
		waitErr = killGroup(pgid, done)
	}

	text := p.red.apply(out.String())
	lines := lastLines(text, maxOutputLines)
	if killed {
		if !timedOut(ctx) {
			return fmt.Errorf("%w (%w)", errCommandStopped, ctx.Err())
		}
		return fmt.Errorf("command %s did not finish within %s; its process group was killed (SIGTERM, then SIGKILL after %s)%s",
			shown(p.argv[0]), h.timeout(), killGrace, linesSuffix(lines))
	}
	if errors.Is(waitErr, exec.ErrWaitDelay) {
		// The command exited 0 but a child kept its output open.
		log.Warn("the command exited but a process it started kept its output open; that process was left running")
		waitErr = nil
	}
	// A failure's output is in its error, which the "hook failed" line logs.
	if waitErr != nil {
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return fmt.Errorf("command %s was killed by signal %s%s", shown(p.argv[0]), ws.Signal(), linesSuffix(lines))
			}
			return fmt.Errorf("command %s exited with code %d%s", shown(p.argv[0]), ee.ExitCode(), linesSuffix(lines))
		}
		return fmt.Errorf("waiting for command %s: %v", shown(p.argv[0]), waitErr)
	}
	if len(lines) > 0 {
		log.Info("command output", "output", strings.Join(lines, "\n"))
	}
	return nil
}

// killGroup stops a process group: SIGTERM, then SIGKILL to whatever of the
// group still runs killGrace later (children that ignore SIGTERM or outlive
// the leader included). It returns the leader's Wait result.
func killGroup(pgid int, done <-chan error) error {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(killGrace)
	defer grace.Stop()
	var waitErr error
	exited := false
	select {
	case waitErr = <-done:
		exited = true
	case <-grace.C:
	}
	if exited {
		// The leader is gone; give the rest of the group what is left of
		// the grace period.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
	wait:
		for syscall.Kill(-pgid, 0) == nil {
			select {
			case <-grace.C:
				break wait
			case <-tick.C:
			}
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	if !exited {
		waitErr = <-done // returns: the leader is dead, and WaitDelay bounds the pipes
	}
	return waitErr
}

// linesSuffix appends output lines to an error message.
func linesSuffix(lines []string) string {
	if len(lines) == 0 {
		return " (no output)"
	}
	return "; last lines of its output:\n" + strings.Join(lines, "\n")
}

func unwrapExecError(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		err = ee.Err
	}
	return unwrapPathError(err)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	// Compact only once twice the limit is held, so that a chatty command
	// does not cost a copy per write.
	if over := len(b.buf) - b.max; over > b.max {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.cut = true
	}
	return len(p), nil
}

// String returns the last max bytes; when the start was dropped, the first
// (partial) line is dropped too.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := string(b.buf)
	cut := b.cut
	if len(s) > b.max {
		s, cut = s[len(s)-b.max:], true
	}
	if cut {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return s
}
