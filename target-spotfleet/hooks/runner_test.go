package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// execHook is an exec hook that runs /bin/sh -c script.
func execHook(name, script string) *Hook {
	return &Hook{Name: name, Type: TypeExec, Timeout: 5 * time.Second, OnFailure: FailTerminate, Command: []string{"/bin/sh", "-c", script}}
}

// touchHook is an exec hook that creates a file, so a test can tell
// whether it ran.
func touchHook(t *testing.T, name string) (*Hook, string) {
	path := filepath.Join(t.TempDir(), name+".ran")
	return execHook(name, "echo ran >> '"+path+"'"), path
}

func ran(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestLaunchSkipsHooksThatAreAlreadyOK(t *testing.T) {
	first, firstRan := touchHook(t, "first")
	second, secondRan := touchHook(t, "second")
	r, _ := newTestRunner(t, nil)
	at := time.Unix(1733100000, 0).UTC()
	rec := Record{Steps: map[string]Step{"first": {State: StateOK, At: at}}}
	s := &memSaver{}

	out := r.Launch(context.Background(), []*Hook{first, second}, testInstance(), rec, s.save)

	require.True(t, out.OK, "%v", out.Err)
	require.False(t, ran(firstRan))
	require.True(t, ran(secondRan))
	require.Equal(t, Step{State: StateOK, At: at}, out.Record.Steps["first"])
	require.Equal(t, StateOK, out.Record.Steps["second"].State)
	require.Equal(t, []string{"started/0", "ok/0"}, s.states("second"))
	require.True(t, out.Record.Done([]*Hook{first, second}))
	require.Equal(t, Step{State: StateOK, At: at}, rec.Steps["first"], "the caller's record is not changed")
	require.NotContains(t, rec.Steps, "second")
}

func TestLaunchNeverRerunsAFailedHook(t *testing.T) {
	first, firstRan := touchHook(t, "first")
	second, secondRan := touchHook(t, "second")
	r, _ := newTestRunner(t, nil)
	rec := Record{Steps: map[string]Step{"first": {State: StateFailed, At: time.Unix(1733100000, 0)}}}
	s := &memSaver{}

	out := r.Launch(context.Background(), []*Hook{first, second}, testInstance(), rec, s.save)

	require.False(t, out.OK)
	require.Same(t, first, out.Hook)
	require.ErrorContains(t, out.Err, "hook first (exec): failed in an earlier run (started 2024-12-02T00:40:00Z); a failed hook is not run again")
	require.False(t, ran(firstRan))
	require.False(t, ran(secondRan))
	require.Empty(t, s.saved)
}

func TestLaunchStopsAtTheFirstFailure(t *testing.T) {
	failing := execHook("first", "echo boom; exit 3")
	second, secondRan := touchHook(t, "second")
	r, logs := newTestRunner(t, nil)

	out := r.Launch(context.Background(), []*Hook{failing, second}, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.Same(t, failing, out.Hook)
	require.ErrorContains(t, out.Err, "hook first (exec): command \"/bin/sh\" exited with code 3; last lines of its output:\nboom")
	require.False(t, ran(secondRan))
	require.Equal(t, StateFailed, out.Record.Steps["first"].State)
	require.Contains(t, logs.String(), "[WARN]  hook failed: hook=first")
}

func TestAFailingSaveBeforeAHookMeansTheHookDoesNotRun(t *testing.T) {
	h, hookRan := touchHook(t, "first")
	r, _ := newTestRunner(t, nil)
	s := &memSaver{fail: func(int, Record) error { return errors.New("CreateTags: RequestLimitExceeded") }}

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "hook first (exec): its start could not be recorded, so it was not run: saving the hook record: CreateTags: RequestLimitExceeded")
	require.ErrorIs(t, out.Err, ErrNotRecorded)
	require.False(t, IsConfigError(out.Err))
	require.False(t, ran(hookRan))
	require.NotContains(t, out.Record.Steps, "first")
}

func TestAFailingSaveAfterSuccessIsNotRecordedButTheRecordHoldsTheStepOK(t *testing.T) {
	h, hookRan := touchHook(t, "first")
	second, secondRan := touchHook(t, "second")
	r, _ := newTestRunner(t, nil)
	failed := false
	s := &memSaver{fail: func(n int, _ Record) error {
		if n == 2 && !failed {
			failed = true // once: the next save succeeds
			return errors.New("CreateTags: throttled")
		}
		return nil
	}}

	out := r.Launch(context.Background(), []*Hook{h, second}, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.Same(t, h, out.Hook)
	require.ErrorContains(t, out.Err, "hook first (exec): it succeeded but its state could not be recorded (saving the hook record: CreateTags: throttled)")
	require.ErrorIs(t, out.Err, ErrNotRecorded)
	require.True(t, ran(hookRan))
	require.False(t, ran(secondRan))
	require.Equal(t, StateOK, out.Record.Steps["first"].State, "the record given back holds the outcome")
	require.Equal(t, []string{"started/0"}, s.states("first"), "what was saved")

	// The next call, given that record, skips the hook and saves it ok.
	require.NoError(t, os.Remove(hookRan))
	out = r.Launch(context.Background(), []*Hook{h, second}, testInstance(), out.Record, s.save)

	require.True(t, out.OK, "%v", out.Err)
	require.False(t, ran(hookRan), "the hook did not run a second time")
	require.True(t, ran(secondRan))
	require.Equal(t, []string{"started/0", "ok/0", "ok/0"}, s.states("first"))
}

func TestAResumedExecWhosePluginDiedIsNotRunAgain(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	h := execHook("slow", "echo run >> '"+marker+"'")
	r, _ := newTestRunner(t, nil)
	s := &memSaver{}
	require.NoError(t, os.WriteFile(marker, []byte("run\n"), 0o600)) // the run of the process that died

	// The process that ran the command died (kill -9): its step is started.
	rec := Record{Steps: map[string]Step{"slow": {State: StateStarted, At: time.Now().UTC().Truncate(time.Second)}}}
	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), rec, s.save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "hook slow (exec): the plugin restarted while the command ran; its outcome is unknown, so it is not run a second time")
	require.Equal(t, StateFailed, out.Record.Steps["slow"].State)
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "run\n", string(b), "the command ran once")
}

func TestAContextCancelledBeforeAHookSavesNothing(t *testing.T) {
	h, hookRan := touchHook(t, "first")
	r, _ := newTestRunner(t, nil)
	s := &memSaver{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	out := r.Launch(ctx, []*Hook{h}, testInstance(), Record{}, s.save)

	require.True(t, errors.Is(out.Err, context.Canceled))
	require.False(t, ran(hookRan))
	require.Empty(t, s.saved)
}

func TestAnEmptyTemplateValueIsAFailureThatNamesTheExpression(t *testing.T) {
	h, hookRan := touchHook(t, "first")
	h.Env = map[string]string{"ZONE": "{{ node.meta.zone }}"}
	r, _ := newTestRunner(t, nil)
	s := &memSaver{}

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "hook first (exec): hook_first_env ZONE: {{node.meta.zone}} is empty: the node has no meta key zone")
	require.False(t, ran(hookRan))
	require.Equal(t, []string{"failed/0"}, s.states("first"))
}

func TestTerminateRunsEveryHookOnceAndReportsEveryFailure(t *testing.T) {
	a := execHook("a", "exit 3")
	b, bRan := touchHook(t, "b")
	c := execHook("c", "echo gone >&2; exit 4")
	d, dRan := touchHook(t, "d")
	for _, h := range []*Hook{a, b, c, d} {
		h.OnFailure = ""
	}
	inst := testInstance()
	inst.NodeID, inst.NodeName = "", "" // no node ever registered
	r, _ := newTestRunner(t, nil)
	rec := Record{Steps: map[string]Step{"d": {State: StateOK}}}

	out := r.Terminate(context.Background(), []*Hook{a, b, c, d}, inst, rec, (&memSaver{}).save)

	require.False(t, out.OK)
	require.Same(t, a, out.Hook)
	require.ErrorContains(t, out.Err, `hook a (exec): command "/bin/sh" exited with code 3 (no output); hook c (exec): command "/bin/sh" exited with code 4; last lines of its output:`+"\ngone")
	require.True(t, ran(bRan))
	require.False(t, ran(dRan), "an ok step is skipped")
	require.Equal(t, StateFailed, out.Record.Steps["a"].State)
	require.Equal(t, StateOK, out.Record.Steps["b"].State)
	require.Equal(t, StateFailed, out.Record.Steps["c"].State)

	// A second call runs nothing again.
	again := r.Terminate(context.Background(), []*Hook{a, b, c, d}, inst, out.Record, (&memSaver{}).save)
	require.False(t, again.OK)
	require.ErrorContains(t, again.Err, "hook a (exec): failed in an earlier run")
}

func TestEveryStepIsLoggedWhenItStartsAndEnds(t *testing.T) {
	h := execHook("hello", "echo hello from the hook")
	r, logs := newTestRunner(t, nil)

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, nil)

	require.True(t, out.OK, "%v", out.Err)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	require.Regexp(t, `\[INFO\]  hook started: hook=hello instance_id=i-0abc123 node_id=node-1 type=exec command="/bin/sh -c echo hello from the hook"`, lines[0])
	require.Contains(t, logs.String(), "command output: hook=hello")
	require.Contains(t, logs.String(), "output=\"hello from the hook\"")
	require.Regexp(t, `\[INFO\]  hook finished: hook=hello .*duration=`, lines[len(lines)-1])
}
