package hooks

// Second pass of the ninth review (provisioning hooks). Every test in this
// file fails on the reviewed code; each shows a defect that would hurt a
// production fleet.

import (
	"context"
	"fmt"
	"testing"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/require"
)

// --- b1. A configuration error while following a launched job: launched twice

// The runner treats a 401/403/404 of AWX as a configuration error and removes
// the hook's step from the record "so that it runs again once fixed". That is
// right before anything was launched, but runLaunch also returns such errors
// from follow(), after AWX has created the job and the step holds its id: a
// token rotated (or revoked, or expired) while a 20-minute playbook runs, a
// permission change, an AWX that briefly answers 401 behind a broken SSO
// proxy. The step (with the job id) is then removed, and the next attempt,
// once the token is fixed, finds no step and launches the template again: a
// second playbook run against the host while the first one may still be
// running. The promise is "the job is found again and followed, never
// launched twice".
func TestR9bAConfigurationErrorWhileFollowingAJobDoesNotLaunchItAgain(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure").outcome = "hang" // a long playbook: still running
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7", "hook_configure_timeout", "2s"), agent)
	r, _ := newTestRunner(t, agent)
	rotated := false
	s := &memSaver{fail: func(_ int, rec Record) error {
		// The token is rotated on AWX right after the job was launched
		// (the plugin's token file is updated a little later).
		if st := rec.Steps["configure"]; st.State == StateStarted && st.JobID > 0 && !rotated {
			rotated = true
			f.setToken("tok-rotated-7a6b5c")
		}
		return nil
	}}

	out := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, s.save)
	require.False(t, out.OK)
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.Equal(t, 1, f.jobCount())
	require.NotEqual(t, jobCanceled, f.jobStatus(1001), "the job AWX started goes on running")

	// The operator writes the new token into the file: the next attempt.
	f.setToken(fakeToken)
	f.finish(1001, jobSuccessful)
	f.mu.Lock()
	f.templates[7].outcome = "" // a job launched now ends at once (keeps the test short)
	f.mu.Unlock()
	out = r.Launch(context.Background(), spec.Launch, testInstance(), out.Record, s.save)
	require.True(t, out.OK, "%v", out.Err)
	require.Len(t, f.callsTo(`^POST /api/v2/job_templates/7/launch/$`), 1,
		"the job template was launched a second time for the same instance: its first job (1001) was forgotten when the follow met a configuration error")
}

// --- b2. A nomad hook: one leader election or a missing node:write ---------

// runNomad calls ApplyMeta once and makes any error the hook's failure. A
// Nomad leader election (500 "No cluster leader", a few seconds during every
// server upgrade) at that moment fails the hook, and with the default
// on_failure = terminate the instance is removed, although the admission
// right after it rides out the same error (withNomadRetry). And a token
// without node:write (403) is the configuration's fault, exactly like the
// admission's refusal, which the plugin treats as a configuration error: as
// a hook failure it terminates every new instance, one after the other.
func TestR9bANomadHookRidesOutALeaderElectionAndTellsARefusal(t *testing.T) {
	t.Run("leader election", func(t *testing.T) {
		nomad := &flakyNomad{fakeNomad: newFakeNomad(), errs: []error{codedErr{500, "No cluster leader"}}}
		nomad.addNode("node-1", api.NodeStatusReady)
		r, _ := newTestRunner(t, nil)
		r.Nomad = nomad
		out := r.Launch(context.Background(), nomadSpec(t, "hook_join_meta", "role=web", "hook_join_timeout", "5s").Launch, testInstance(), Record{}, (&memSaver{}).save)
		require.True(t, out.OK, "one 500 from a Nomad electing its leader failed the hook: %v", out.Err)
		require.Equal(t, map[string]string{"role": "web"}, nomad.metaOf("node-1"))
	})
	t.Run("no node:write", func(t *testing.T) {
		nomad := &flakyNomad{fakeNomad: newFakeNomad(), errs: []error{codedErr{403, "Permission denied"}}}
		nomad.addNode("node-1", api.NodeStatusReady)
		r, _ := newTestRunner(t, nil)
		r.Nomad = nomad
		out := r.Launch(context.Background(), nomadSpec(t, "hook_join_meta", "role=web", "hook_join_timeout", "5s").Launch, testInstance(), Record{}, (&memSaver{}).save)
		require.False(t, out.OK)
		require.True(t, IsConfigError(out.Err),
			"Nomad refusing the metadata for want of node:write is recorded as the instance's failure (on_failure applies): %v", out.Err)
	})
}

// flakyNomad returns errs, one per call, from ApplyMeta before it works.
type flakyNomad struct {
	*fakeNomad
	errs []error
}

func (f *flakyNomad) ApplyMeta(ctx context.Context, id string, meta map[string]*string) error {
	f.mu.Lock()
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		f.mu.Unlock()
		return err
	}
	f.mu.Unlock()
	return f.fakeNomad.ApplyMeta(ctx, id, meta)
}

// codedErr is an HTTP answer of Nomad as the API client gives it.
type codedErr struct {
	code int
	msg  string
}

func (e codedErr) Error() string {
	return fmt.Sprintf("Unexpected response code: %d (%s)", e.code, e.msg)
}
func (e codedErr) StatusCode() int { return e.code }
