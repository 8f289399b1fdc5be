package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func execSpec(t *testing.T, command string, extra ...string) *Spec {
	cfg := map[string]string{"launch_hooks": "run", "hook_run_type": "exec", "hook_run_command": command}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i]] = extra[i+1]
	}
	return mustPolicy(t, cfg, nil)
}

func TestExecHookGetsArgvAndEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	t.Setenv("SPOTFLEET_TEST_INHERITED", "inherited")
	spec := execSpec(t, `/bin/sh -c 'echo "$SPOTFLEET_INSTANCE_ID $SPOTFLEET_INSTANCE_TYPE $SPOTFLEET_AVAILABILITY_ZONE $SPOTFLEET_PRIVATE_IP $SPOTFLEET_PRIVATE_DNS_NAME $SPOTFLEET_FLEET_ID $SPOTFLEET_NODE_ID $SPOTFLEET_NODE_NAME|$ROLE|$RACK|$SPOTFLEET_TEST_INHERITED|$1" > "$OUT"' sh "ip {{private_ip}}"`,
		"hook_run_env", "ROLE=web, RACK={{node.meta.rack}}, OUT="+out)
	r, _ := newTestRunner(t, nil)

	res := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, nil)

	require.True(t, res.OK, "%v", res.Err)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "i-0abc123 c5.large us-east-1a 10.0.0.5 ip-10-0-0-5.ec2.internal sfr-1234 node-1 client-1|web|r1||ip 10.0.0.5\n", string(b),
		"the plugin's other variables are not passed on")
}

func TestExecHookExitCodeIsAFailureWithTheLastLines(t *testing.T) {
	spec := execSpec(t, `/bin/sh -c 'i=1; while [ $i -le 30 ]; do echo "line $i"; i=$((i+1)); done; echo "oops" >&2; exit 7'`)
	r, _ := newTestRunner(t, nil)

	res := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, nil)

	require.False(t, res.OK)
	require.ErrorContains(t, res.Err, `hook run (exec): command "/bin/sh" exited with code 7; last lines of its output:`+"\nline 12\n")
	require.ErrorContains(t, res.Err, "line 30\noops")
	require.NotContains(t, res.Err.Error(), "line 11\n")
}

func TestExecHookOutputIsRedacted(t *testing.T) {
	f := newFakeAWX(t)
	agent, _ := agentFor(t, f)
	spec := execSpec(t, `/bin/sh -c 'echo "key=AKIASECRETKEY token=$1"; exit $2' sh `+fakeToken+` {{node.meta.code}}`)
	for _, code := range []string{"0", "1"} {
		t.Run("exit "+code, func(t *testing.T) {
			r, logs := newTestRunner(t, agent)
			r.Redact = []string{"AKIASECRETKEY"}
			inst := testInstance()
			inst.NodeMeta = map[string]string{"code": code}

			res := r.Launch(context.Background(), spec.Launch, inst, Record{}, nil)

			require.Equal(t, code == "0", res.OK)
			require.Contains(t, logs.String(), "key=[redacted] token=[redacted]")
			for _, secret := range []string{"AKIASECRETKEY", fakeToken} {
				require.NotContains(t, logs.String(), secret)
				if res.Err != nil {
					require.NotContains(t, res.Err.Error(), secret)
				}
			}
		})
	}
}

func TestExecHookTimeoutKillsTheWholeProcessGroup(t *testing.T) {
	cases := []struct {
		name   string
		script string
	}{
		{name: "children that obey SIGTERM", script: `sleep 30 & echo $! > "$PIDFILE"; wait`},
		{name: "children that ignore SIGTERM get SIGKILL", script: `trap "" TERM; sleep 30 & echo $! > "$PIDFILE"; wait; wait`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pid")
			spec := execSpec(t, `/bin/sh -c '`+tc.script+`'`, "hook_run_env", "PIDFILE="+pidFile, "hook_run_timeout", "300ms")
			r, _ := newTestRunner(t, nil)

			begin := time.Now()
			res := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, nil)

			require.False(t, res.OK)
			require.ErrorContains(t, res.Err, `hook run (exec): command "/bin/sh" did not finish within 300ms; its process group was killed (SIGTERM, then SIGKILL after 2s)`)
			require.Less(t, time.Since(begin), 6*time.Second)
			b, err := os.ReadFile(pidFile)
			require.NoError(t, err)
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			require.NoError(t, err)
			require.Eventually(t, func() bool { return processGone(pid) }, 3*time.Second, 20*time.Millisecond, "child %d is still running", pid)
		})
	}
}

// processGone reports whether pid no longer runs (a zombie nobody reaped
// counts as gone).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && s[i+2] == 'Z'
}

func TestExecHookWithAMissingCommandFailsClearly(t *testing.T) {
	cases := map[string]string{
		"/nonexistent/tool --flag":  `command "/nonexistent/tool" cannot be run: no such file or directory`,
		"no-such-tool-4f2a1 --flag": `command "no-such-tool-4f2a1" cannot be run: executable file not found in $PATH`,
	}
	for command, want := range cases {
		t.Run(command, func(t *testing.T) {
			r, _ := newTestRunner(t, nil)
			res := r.Launch(context.Background(), execSpec(t, command).Launch, testInstance(), Record{}, nil)
			require.False(t, res.OK)
			require.ErrorContains(t, res.Err, want)
		})
	}
}

func TestTailBufferKeepsTheEndOfLongOutput(t *testing.T) {
	b := &tailBuffer{max: maxOutputBytes}
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(b, "output line number %05d\n", i)
	}
	s := b.String()
	require.LessOrEqual(t, len(s), maxOutputBytes)
	require.True(t, strings.HasPrefix(s, "output line number "), "starts at a whole line")
	require.True(t, strings.HasSuffix(s, "output line number 19999\n"))
	require.Equal(t, []string{"output line number 19998", "output line number 19999"}, lastLines(s, 2))
}
