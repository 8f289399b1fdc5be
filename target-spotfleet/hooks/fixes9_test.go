package hooks

// Tests of the changes made after the ninth review: failing saves
// (ErrNotRecorded), configuration errors (IsConfigError), the instance's
// launch time bounding callback jobs, limits that name one host, terminate
// hooks and the launch record, the record budgets, the environment and
// redaction of exec commands, exec commands the plugin stops, and the
// adoption of AWX jobs by instance id.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// --- 1. ErrNotRecorded ------------------------------------------------------

// failOnce returns a memSaver whose save number n fails once.
func failOnce(n int, msg string) *memSaver {
	var mu sync.Mutex
	failed := false
	return &memSaver{fail: func(i int, _ Record) error {
		mu.Lock()
		defer mu.Unlock()
		if i == n && !failed {
			failed = true
			return errors.New(msg)
		}
		return nil
	}}
}

func TestASaveFailingAfterAFailureIsNotRecordedAndTheRecordHoldsTheFailure(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	h := execHook("first", "echo run >> '"+marker+"'; exit 3")
	r, _ := newTestRunner(t, nil)
	s := failOnce(2, "CreateTags: throttled")

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.ErrorIs(t, out.Err, ErrNotRecorded)
	require.ErrorContains(t, out.Err, `hook first (exec): command "/bin/sh" exited with code 3 (no output) (and the failure could not be recorded: saving the hook record: CreateTags: throttled)`)
	require.False(t, IsConfigError(out.Err))
	require.Equal(t, StateFailed, out.Record.Steps["first"].State, "the record given back holds the failure")
	require.Equal(t, []string{"started/0"}, s.states("first"))

	// Given that record, the next call reports the failure without running
	// the command again.
	out = r.Launch(context.Background(), []*Hook{h}, testInstance(), out.Record, s.save)
	require.ErrorContains(t, out.Err, "failed in an earlier run")
	require.False(t, errors.Is(out.Err, ErrNotRecorded))
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "run\n", string(b))
}

func TestASaveFailingAfterARenderFailureIsNotRecorded(t *testing.T) {
	h, hookRan := touchHook(t, "first")
	h.Env = map[string]string{"ZONE": "{{node.meta.zone}}"}
	r, _ := newTestRunner(t, nil)
	s := failOnce(1, "CreateTags: throttled")

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.ErrorIs(t, out.Err, ErrNotRecorded)
	require.ErrorContains(t, out.Err, "{{node.meta.zone}} is empty: the node has no meta key zone (and the failure could not be recorded: saving the hook record: CreateTags: throttled)")
	require.Equal(t, StateFailed, out.Record.Steps["first"].State)
	require.False(t, ran(hookRan))
}

// --- 2. IsConfigError -------------------------------------------------------

func TestIsConfigErrorTellsTheConfigurationsFaultsFromTheInstances(t *testing.T) {
	cases := []struct {
		name   string
		policy func(f *fakeAWX) map[string]string
		setup  func(t *testing.T, f *fakeAWX, r *Runner, tokenPath string)
		rec    Record
		want   bool
		errSub string
	}{
		{
			name: "template name matching no template", want: true,
			policy: func(*fakeAWX) map[string]string { return awxPolicy("nosuch") },
			errSub: `AWX has no job template named "nosuch"`,
		},
		{
			name: "template name matching several templates", want: true,
			policy: func(f *fakeAWX) map[string]string {
				f.addTemplate(8, "configure")
				return awxPolicy("configure")
			},
			errSub: `AWX has 2 job templates named "configure"`,
		},
		{
			name: "a job AWX no longer knows", want: true,
			policy: func(*fakeAWX) map[string]string { return awxPolicy("7") },
			rec:    Record{Steps: map[string]Step{"configure": {State: StateStarted, JobID: 4242, At: time.Now().UTC().Truncate(time.Second)}}},
			errSub: "AWX has no job 4242 (404 Not Found for GET /api/v2/jobs/4242/)",
		},
		{
			name: "an AWX token that cannot be read", want: true,
			policy: func(*fakeAWX) map[string]string { return awxPolicy("7") },
			setup: func(t *testing.T, _ *fakeAWX, _ *Runner, tokenPath string) {
				require.NoError(t, os.Remove(tokenPath))
			},
			errSub: "awx_token_file is",
		},
		{
			name: "a job that fails", want: false,
			policy: func(f *fakeAWX) map[string]string {
				f.templates[7].outcome = jobFailed
				return awxPolicy("7")
			},
			errSub: "AWX job 1001 ended failed",
		},
		{
			name: "a job that runs past the timeout", want: false,
			policy: func(f *fakeAWX) map[string]string {
				f.templates[7].outcome = "hang"
				return awxPolicy("7", "hook_configure_timeout", "100ms")
			},
			errSub: "did not finish within 100ms",
		},
		{
			name: "an AWX that keeps answering 500", want: false,
			policy: func(f *fakeAWX) map[string]string {
				for i := 0; i < 500; i++ {
					f.fail(routeLaunch, fault500)
				}
				return awxPolicy("7", "hook_configure_timeout", "100ms")
			},
			errSub: "launching job template 7",
		},
		{
			name: "an empty template value", want: false,
			policy: func(*fakeAWX) map[string]string {
				return awxPolicy("7", "hook_configure_extra_vars", "zone={{node.meta.zone}}")
			},
			errSub: "{{node.meta.zone}} is empty",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWX(t)
			f.addTemplate(7, "configure")
			agent, tokenPath := agentFor(t, f)
			r, _ := newTestRunner(t, agent)
			spec := mustPolicy(t, tc.policy(f), agent)
			if tc.setup != nil {
				tc.setup(t, f, r, tokenPath)
			}

			out := r.Launch(context.Background(), spec.Launch, testInstance(), tc.rec, (&memSaver{}).save)

			require.False(t, out.OK)
			require.NotNil(t, out.Hook)
			require.ErrorContains(t, out.Err, tc.errSub)
			require.Equal(t, tc.want, IsConfigError(out.Err), "%v", out.Err)
			if tc.want {
				require.NotContains(t, out.Record.Steps, "configure")
			} else {
				require.Equal(t, StateFailed, out.Record.Steps["configure"].State)
			}
		})
	}
}

func TestAnUntrustedAWXCertificateIsAConfigurationError(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{})
	}))
	t.Cleanup(srv.Close)
	path := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(path, []byte(fakeToken), 0o600))
	agent, err := ParseAgent(map[string]string{"awx_url": srv.URL, "awx_token_file": path})
	require.NoError(t, err)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "AWX's TLS certificate is not trusted")
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.NotContains(t, out.Record.Steps, "configure")
}

func TestAnAWXHookWithoutAWXIsAConfigurationError(t *testing.T) {
	r, _ := newTestRunner(t, nil)
	h := &Hook{Name: "configure", Type: TypeAWX, JobTemplate: "7", Limit: "{{private_ip}}", Timeout: time.Second}

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.Same(t, h, out.Hook)
	require.ErrorContains(t, out.Err, "AWX is not configured in the agent")
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.NotContains(t, out.Record.Steps, "configure")
}

func TestAConfigurationErrorIsNotRecordedAndTheHookRunsAgainOnceFixed(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure").forbidden = true
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7"), agent)
	r, logs := newTestRunner(t, agent)
	s := &memSaver{}

	out := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.Same(t, spec.Launch[0], out.Hook)
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.ErrorContains(t, out.Err, "403 Forbidden")
	require.ErrorContains(t, out.Err, "not recorded as failed and runs again at the next attempt")
	require.Equal(t, []string{"started/0", "-"}, s.states("configure"), "the step is removed, never saved failed")
	require.Contains(t, logs.String(), "its step is removed and it runs again at the next attempt")

	// The permission is granted: the next call runs the hook.
	f.mu.Lock()
	f.templates[7].forbidden = false
	f.mu.Unlock()
	out = r.Launch(context.Background(), spec.Launch, testInstance(), out.Record, s.save)

	require.True(t, out.OK, "%v", out.Err)
	require.Equal(t, 1001, out.Record.Steps["configure"].JobID)
}

func TestAConfigurationErrorWhoseStepCannotBeRemovedIsNotRecorded(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure").forbidden = true
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)
	s := failOnce(2, "CreateTags: throttled")

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.ErrorIs(t, out.Err, ErrNotRecorded)
	require.ErrorContains(t, out.Err, "removing its step from the record failed: saving the hook record: CreateTags: throttled")
	require.NotContains(t, out.Record.Steps, "configure", "the record given back has the step removed")
}

func TestTerminateGoesOnAfterAConfigurationError(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(9, "forget").forbidden = true
	agent, _ := agentFor(t, f)
	marker := filepath.Join(t.TempDir(), "bye")
	spec := mustPolicy(t, map[string]string{
		"terminate_hooks":          "forget, bye",
		"hook_forget_type":         "awx",
		"hook_forget_job_template": "9",
		"hook_bye_type":            "exec",
		"hook_bye_command":         "/bin/sh -c 'echo bye > " + marker + "'",
	}, agent)
	r, _ := newTestRunner(t, agent)

	out := r.Terminate(context.Background(), spec.Terminate, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.Equal(t, "forget", out.Hook.Name)
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.NotContains(t, out.Record.Steps, "forget")
	require.Equal(t, StateOK, out.Record.Steps["bye"].State)
	require.True(t, ran(marker))
}

func TestIsConfigErrorOfOtherErrors(t *testing.T) {
	require.False(t, IsConfigError(nil))
	require.False(t, IsConfigError(errors.New("boom")))
	require.False(t, IsConfigError(&apiError{status: http.StatusBadRequest, msg: "a 400 on a listing"}))
	require.True(t, IsConfigError(fmt.Errorf("wrapped: %w", &apiError{status: http.StatusUnauthorized, config: true})))
	require.True(t, IsConfigError(errNotConfigured))
	require.True(t, IsConfigError(multiError{errors.New("boom"), &configError{err: errors.New("x")}}), "a joined error is one when any of its errors is")
}

// --- 3. The instance's launch time bounds callback jobs ----------------------

func TestCallbackJobsAreBoundedByTheInstancesLaunchTime(t *testing.T) {
	now := time.Now().UTC()
	cases := []struct {
		name    string
		launch  time.Time
		created time.Time
		wantOK  bool
	}{
		// Without a launch time: 30 minutes before the step started.
		{name: "unknown launch time, job 10 minutes old", created: now.Add(-10 * time.Minute), wantOK: true},
		{name: "unknown launch time, job 40 minutes old", created: now.Add(-40 * time.Minute), wantOK: false},
		// With one: from a minute before the launch.
		{name: "job 30s before the launch (clock skew)", launch: now.Add(-10 * time.Minute), created: now.Add(-10*time.Minute - 30*time.Second), wantOK: true},
		{name: "job 2 minutes before the launch", launch: now.Add(-10 * time.Minute), created: now.Add(-12 * time.Minute), wantOK: false},
		{name: "job of an instance launched 45 minutes ago", launch: now.Add(-45 * time.Minute), created: now.Add(-40 * time.Minute), wantOK: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWX(t)
			f.addTemplate(8, "enroll")
			f.addJob(8, "10.0.0.5", "callback", tc.created, jobSuccessful)
			agent, _ := agentFor(t, f)
			r, _ := newTestRunner(t, agent)
			in := testInstance()
			in.LaunchTime = tc.launch

			out := r.Launch(context.Background(), mustPolicy(t, callbackPolicy("hook_enroll_timeout", "200ms"), agent).Launch, in, Record{}, (&memSaver{}).save)

			require.Equal(t, tc.wantOK, out.OK, "%v", out.Err)
		})
	}
}

// --- 4. A limit names one host: the instance --------------------------------

func TestParsePolicyLimitMustNameOneInstance(t *testing.T) {
	agent := awxAgent(t)
	for _, limit := range []string{
		"{{private_ip}}", "{{ private_dns_name }}", "{{instance_id}}", "{{node_id}}", "{{node_name}}",
		"{{node.meta.awx_host}}", "web-{{instance_id}}.example.com", "{{instance_id}}-{{availability_zone}}",
	} {
		for _, cfg := range []map[string]string{
			awxPolicy("7", "hook_configure_limit", limit),
			callbackPolicy("hook_enroll_limit", limit),
		} {
			_, err := ParsePolicy(cfg, agent)
			require.NoError(t, err, limit)
		}
	}

	noInstance := "which names no instance: want a single AWX host written with at least one of {{instance_id}}, {{private_ip}}, {{private_dns_name}}, {{node_id}}, {{node_name}} or {{node.meta.<key>}}, such as {{private_ip}}"
	operator := func(c string) string {
		return "whose text has " + c + ", an Ansible host-pattern operator or separator: want a single AWX host, without , : ! & * ? [ ] ~ or whitespace, such as {{private_ip}}"
	}
	cases := map[string][]string{
		"all":                     {`hook_configure_limit is "all", ` + noInstance},
		"{{instance_type}}":       {`hook_configure_limit is "{{instance_type}}", ` + noInstance},
		"{{fleet_id}}":            {noInstance},
		"{{private_ip}} extra":    {`hook_configure_limit is "{{private_ip}} extra", ` + operator("a space")},
		"{{private_ip}}\tx":       {operator(`whitespace '\t'`)},
		"{{private_ip}},all":      {operator("','")},
		"{{private_ip}}:web":      {operator("':'")},
		"!{{private_ip}}":         {operator("'!'")},
		"&{{private_ip}}":         {operator("'&'")},
		"{{private_ip}}*":         {operator("'*'")},
		"{{private_ip}}?":         {operator("'?'")},
		"web[1]{{instance_id}}":   {operator("'['")},
		"{{instance_id}}]":        {operator("']'")},
		"~{{private_dns_name}}":   {operator("'~'")},
		"*":                       {operator("'*'"), noInstance},
		"webservers:&{{node_id}}": {operator("':'")},
	}
	for limit, wants := range cases {
		_, err := ParsePolicy(awxPolicy("7", "hook_configure_limit", limit), agent)
		for _, want := range wants {
			require.ErrorContains(t, err, want, limit)
		}
	}
	_, err := ParsePolicy(callbackPolicy("hook_enroll_limit", "all"), agent)
	require.ErrorContains(t, err, `hook_enroll_limit is "all", `+noInstance)
}

func TestARenderedLimitThatIsNotOneHostIsAHookFailureNamingTheValue(t *testing.T) {
	for _, tc := range []struct{ value, char string }{
		{"web01:all", "':'"}, {"web01 all", "a space"}, {"web*", "'*'"}, {"~web", "'~'"}, {"!web01", "'!'"}, {"web[1:3]", "'['"},
	} {
		for _, cfg := range []map[string]string{
			awxPolicy("7", "hook_configure_limit", "{{node.meta.awx_host}}"),
			callbackPolicy("hook_enroll_limit", "{{node.meta.awx_host}}"),
		} {
			f := newFakeAWX(t)
			f.addTemplate(7, "configure")
			f.addTemplate(8, "enroll")
			agent, _ := agentFor(t, f)
			spec := mustPolicy(t, cfg, agent)
			r, _ := newTestRunner(t, agent)
			in := testInstance()
			in.NodeMeta = map[string]string{"awx_host": tc.value}

			out := r.Launch(context.Background(), spec.Launch, in, Record{}, (&memSaver{}).save)

			name := spec.Launch[0].Name
			require.False(t, out.OK)
			require.ErrorContains(t, out.Err, fmt.Sprintf(`hook_%s_limit is "{{node.meta.awx_host}}", whose {{node.meta.awx_host}} is %q, which has %s: the limit must render to a single AWX host, without , : ! & * ? [ ] ~ or whitespace`, name, tc.value, tc.char))
			require.False(t, IsConfigError(out.Err), "it depends on the instance")
			require.Equal(t, StateFailed, out.Record.Steps[name].State)
			require.Empty(t, f.callsTo(`^(POST|GET) /api/v2/job`), "nothing was asked of AWX")
		}
	}
}

func TestALimitWithAPatternInItsTextIsRefusedAtRunTimeToo(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)
	// Not through ParsePolicy.
	h := &Hook{Name: "configure", Type: TypeAWX, JobTemplate: "7", Limit: "{{private_ip}},all", Timeout: time.Second}

	out := r.Launch(context.Background(), []*Hook{h}, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, `hook_configure_limit is "{{private_ip}},all", whose text has ',': a limit must be a single AWX host`)
	require.Empty(t, f.callsTo(`launch/$`))
}

// --- 5. Terminate hooks see their own record only ---------------------------

func TestTerminateHooksMayNotUseTheJobIDOfALaunchHook(t *testing.T) {
	agent := awxAgent(t)
	base := map[string]string{
		"launch_hooks":                 "configure",
		"hook_configure_type":          "awx",
		"hook_configure_job_template":  "7",
		"terminate_hooks":              "deregister, report",
		"hook_deregister_type":         "awx",
		"hook_deregister_job_template": "9",
		"hook_report_type":             "exec",
	}
	with := func(kv ...string) map[string]string {
		cfg := map[string]string{}
		for k, v := range base {
			cfg[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			cfg[kv[i]] = kv[i+1]
		}
		return cfg
	}

	_, err := ParsePolicy(with("hook_report_command", "/bin/echo {{hook.configure.job_id}}"), agent)
	require.ErrorContains(t, err, "hook_report_command uses {{hook.configure.job_id}}, but configure is a launch hook: terminate hooks only see their own list's record (terminate_hooks), which is kept apart from the launch hooks' one; want an earlier terminate hook of type awx or awx_callback")

	_, err = ParsePolicy(with("hook_report_command", "/bin/echo {{hook.deregister.job_id}}"), agent)
	require.NoError(t, err, "an earlier terminate hook")

	_, err = ParsePolicy(with("hook_report_command", "/bin/true", "hook_deregister_extra_vars", "r={{hook.report.job_id}}"), agent)
	require.ErrorContains(t, err, "hook_deregister_extra_vars uses {{hook.report.job_id}}, but report is a exec hook, which has no AWX job: want an earlier terminate hook")

	_, err = ParsePolicy(with("hook_report_command", "/bin/true", "terminate_hooks", "report, deregister, again",
		"hook_again_type", "exec", "hook_again_command", "/bin/true", "hook_report_command", "/bin/echo {{hook.deregister.job_id}}"), agent)
	require.ErrorContains(t, err, "hook_report_command uses {{hook.deregister.job_id}}, but deregister does not run before report (terminate_hooks runs in order)")
}

// --- 6. Record budgets ------------------------------------------------------

// terminatePolicy is a policy whose terminate hooks have these names.
func terminatePolicy(names ...string) map[string]string {
	cfg := map[string]string{"terminate_hooks": strings.Join(names, ",")}
	for _, n := range names {
		cfg["hook_"+n+"_type"] = "awx"
		cfg["hook_"+n+"_job_template"] = "7"
	}
	return cfg
}

func TestTerminateRecordFitsItsShareOfTheTag(t *testing.T) {
	require.Equal(t, 140, MaxTerminateRecordLen)
	agent := awxAgent(t)

	// Four hooks whose names take 17 characters together: the most.
	names := []string{"aaaa", "bbbb", "cccc", "ddddd"}
	spec, err := ParsePolicy(terminatePolicy(names...), agent)
	require.NoError(t, err)
	rec := Record{Steps: map[string]Step{}}
	for _, n := range names {
		rec.Steps[n] = Step{State: StateStarted, JobID: 9999999999, At: time.Unix(1999999999, 0)}
	}
	require.Equal(t, MaxTerminateRecordLen, len(rec.String()), "the worst case fills the budget exactly")
	require.Equal(t, recordLen(spec.Terminate), len(rec.String()))

	_, err = ParsePolicy(terminatePolicy("aaaa", "bbbb", "cccc", "dddddd"), agent)
	require.ErrorContains(t, err, `terminate_hooks is "aaaa,bbbb,cccc,dddddd", whose progress record could reach 141 characters, more than the 140 it may use (the plugin keeps it with the instance's details in one 256-character EC2 tag): use shorter hook names (at most 17 characters for these 4 names together)`)

	_, err = ParsePolicy(terminatePolicy("a", "b", "c", "d", "e"), agent)
	require.ErrorContains(t, err, "whose progress record could reach 159 characters, more than the 140 it may use (the plugin keeps it with the instance's details in one 256-character EC2 tag): list at most 4 hooks (each step of the record takes 31 characters besides its hook's name)")

	// The launch list keeps the whole tag.
	_, err = ParsePolicy(map[string]string{
		"launch_hooks": "aaaa,bbbb,cccc,dddddd,eeeee", "hook_aaaa_type": "nomad", "hook_bbbb_type": "nomad",
		"hook_cccc_type": "nomad", "hook_dddddd_type": "nomad", "hook_eeeee_type": "nomad",
	}, nil)
	require.NoError(t, err)
}

func TestLaunchRecordBudgetAssumesTenDigitJobIDs(t *testing.T) {
	// Six names of 72 characters together: their record with 10-digit job
	// ids would not fit in a tag.
	var names []string
	cfg := map[string]string{}
	for i := 0; i < 6; i++ {
		n := fmt.Sprintf("%c%s", 'a'+i, strings.Repeat("x", 11))
		names = append(names, n)
		cfg["hook_"+n+"_type"] = "nomad"
	}
	cfg["launch_hooks"] = strings.Join(names, ",")

	_, err := ParsePolicy(cfg, nil)

	require.ErrorContains(t, err, "whose progress record could reach 257 characters, more than the 256 an EC2 tag value holds: use shorter hook names (at most 71 characters for these 6 names together)")
}

// --- 7. exec: environment, redaction, a command the plugin stops ------------

func TestExecCommandGetsAMinimalEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
	t.Setenv("NOMAD_TOKEN", "0d1c4a3e-nomad-token")
	t.Setenv("SOME_PLUGIN_SETTING", "x")
	t.Setenv("TZ", "UTC")
	t.Setenv("LANG", "C.UTF-8")
	spec := execSpec(t, `/bin/sh -c 'env > "$OUT"'`, "hook_run_env", "OUT="+out+", EXTRA=passed by the hook")
	r, _ := newTestRunner(t, nil)

	res := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, nil)

	require.True(t, res.OK, "%v", res.Err)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	var names []string
	for k := range got {
		switch {
		case strings.HasPrefix(k, "SPOTFLEET_"), k == "OUT", k == "EXTRA":
		case k == "PWD", k == "SHLVL", k == "_", k == "OLDPWD": // the shell's own
		default:
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		require.Contains(t, passedEnv, k, "%s comes from the plugin's environment", k)
	}
	require.Equal(t, os.Getenv("PATH"), got["PATH"])
	require.Equal(t, "UTC", got["TZ"])
	require.Equal(t, "C.UTF-8", got["LANG"])
	require.Equal(t, "passed by the hook", got["EXTRA"])
	require.Equal(t, "i-0abc123", got["SPOTFLEET_INSTANCE_ID"])
	require.NotContains(t, got, "AWS_SECRET_ACCESS_KEY")
	require.NotContains(t, got, "NOMAD_TOKEN")
	require.NotContains(t, got, "SOME_PLUGIN_SETTING")
}

func TestExecHookEnvWinsOverThePluginsVariables(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tz")
	t.Setenv("TZ", "UTC")
	spec := execSpec(t, `/bin/sh -c 'echo "$TZ" > "$OUT"'`, "hook_run_env", "OUT="+out+", TZ=Europe/Paris")
	r, _ := newTestRunner(t, nil)

	res := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, nil)

	require.True(t, res.OK, "%v", res.Err)
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, "Europe/Paris\n", string(b))
}

func TestExecOutputHidesTheSecretsOfThePluginsEnvironment(t *testing.T) {
	secrets := map[string]string{
		"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
		"NOMAD_TOKEN":           "0d1c4a3e-nomad-token",
		"db_Password":           "hunter22",
		"GCP_CREDENTIALS":       "gcp-credential-blob",
		"API_KEY":               "123456",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	t.Setenv("SHORT_TOKEN", "abcde")         // under 6 characters: not hidden
	t.Setenv("GREETING", "visible-greeting") // not a secret's name
	var words []string
	for _, k := range sortedKeys(secrets) {
		words = append(words, secrets[k])
	}
	script := "echo " + strings.Join(words, " ") + " abcde visible-greeting; exit $1"
	for _, code := range []string{"0", "1"} {
		t.Run("exit "+code, func(t *testing.T) {
			spec := execSpec(t, `/bin/sh -c '`+script+`' sh {{node.meta.code}}`)
			r, logs := newTestRunner(t, nil)
			inst := testInstance()
			inst.NodeMeta = map[string]string{"code": code}

			res := r.Launch(context.Background(), spec.Launch, inst, Record{}, nil)

			require.Equal(t, code == "0", res.OK)
			text := logs.String()
			if res.Err != nil {
				text += res.Err.Error()
			}
			require.Contains(t, text, "[redacted] [redacted] [redacted] [redacted] [redacted] abcde visible-greeting")
			for _, v := range secrets {
				require.NotContains(t, logs.String(), v)
				if res.Err != nil {
					require.NotContains(t, res.Err.Error(), v)
				}
			}
		})
	}
}

// ctxSaver is a memSaver that also checks the context of each save.
type ctxSaver struct {
	memSaver
	mu   sync.Mutex
	ctxs []string
}

func (c *ctxSaver) save(ctx context.Context, rec Record) error {
	c.mu.Lock()
	desc := "live"
	if ctx.Err() != nil {
		desc = "ended"
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= resetSaveTimeout {
		desc += ", bounded"
	}
	c.ctxs = append(c.ctxs, desc)
	c.mu.Unlock()
	return c.memSaver.save(ctx, rec)
}

func TestAnExecCommandThePluginStopsIsResetAndRunAgain(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	h := execHook("slow", "echo run >> '"+marker+"'; sleep 10")
	r, logs := newTestRunner(t, nil)
	s := &ctxSaver{}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)

	out := r.Launch(ctx, []*Hook{h}, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.ErrorIs(t, out.Err, context.Canceled)
	require.False(t, errors.Is(out.Err, ErrNotRecorded))
	require.ErrorContains(t, out.Err, "hook slow (exec) was interrupted (context canceled): the plugin stopped its command, so its step was reset and the next run runs it again from the start")
	require.NotContains(t, out.Record.Steps, "slow")
	require.Equal(t, []string{"started/0", "-"}, s.states("slow"), "started, then reset; never failed")
	require.Equal(t, []string{"live", "live, bounded"}, s.ctxs, "the reset is saved with a fresh context bounded to 10s")
	require.Contains(t, logs.String(), "its step was reset and the next run runs it again")

	h.Command = []string{"/bin/sh", "-c", "echo run >> '" + marker + "'"}
	out = r.Launch(context.Background(), []*Hook{h}, testInstance(), out.Record, s.save)

	require.True(t, out.OK, "%v", out.Err)
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "run\nrun\n", string(b), "the stopped command ran again from the start")
}

func TestAnExecCommandWhoseResetCannotBeSavedStaysStarted(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "runs")
	h := execHook("slow", "echo run >> '"+marker+"'; sleep 10")
	r, _ := newTestRunner(t, nil)
	s := failOnce(2, "CreateTags: throttled")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)

	out := r.Launch(ctx, []*Hook{h}, testInstance(), Record{}, s.save)

	require.ErrorIs(t, out.Err, context.Canceled)
	require.ErrorContains(t, out.Err, "hook slow (exec) was interrupted (context canceled): its command was stopped, but resetting its step failed (saving the hook record: CreateTags: throttled), so it stays started and the next run fails it as unknown")
	require.Equal(t, StateStarted, out.Record.Steps["slow"].State)
	require.Equal(t, []string{"started/0"}, s.states("slow"))

	out = r.Launch(context.Background(), []*Hook{h}, testInstance(), out.Record, s.save)

	require.ErrorContains(t, out.Err, "the plugin restarted while the command ran; its outcome is unknown, so it is not run a second time")
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	require.Equal(t, "run\n", string(b))
}

// --- 8. Adopting AWX jobs: the window and the instance id -------------------

func TestResumedAWXHookAdoptsTheJobThatNamesTheInstance(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second)
	all := []string{"running", jobSuccessful}
	cases := []struct {
		name       string
		setup      func(f *fakeAWX)
		wantJob    int
		wantLaunch int
	}{
		{
			name: "the newest job naming the instance wins over newer ones",
			setup: func(f *fakeAWX) {
				f.addJobFor(7, "10.0.0.5", "i-0abc123", start.Add(-2*time.Minute), all...)    // 1001
				f.addJobFor(7, "10.0.0.5", "i-0previous", start.Add(-time.Minute), all...)    // 1002
				f.addJob(7, "10.0.0.5", "manual", start.Add(-30*time.Second), all...)         // 1003: no instance
				f.addJobFor(7, "10.0.0.5", "i-0previous", start.Add(-10*time.Second), all...) // 1004
			},
			wantJob: 1001,
		},
		{
			name: "without a job naming it, the newest naming no instance",
			setup: func(f *fakeAWX) {
				f.addJob(7, "10.0.0.5", "manual", start.Add(-4*time.Minute), all...)       // 1001
				f.addJobFor(7, "10.0.0.5", "i-0previous", start.Add(-time.Minute), all...) // 1002
			},
			wantJob: 1001,
		},
		{
			name: "AWX's clock 4 minutes behind",
			setup: func(f *fakeAWX) {
				f.addJobFor(7, "10.0.0.5", "i-0abc123", start.Add(-4*time.Minute), all...)
			},
			wantJob: 1001,
		},
		{
			name: "only jobs of another instance: launch",
			setup: func(f *fakeAWX) {
				f.addJobFor(7, "10.0.0.5", "i-0previous", start.Add(time.Second), all...)
			},
			wantJob: 1002, wantLaunch: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWX(t)
			f.addTemplate(7, "configure")
			tc.setup(f)
			agent, _ := agentFor(t, f)
			r, _ := newTestRunner(t, agent)
			rec := Record{Steps: map[string]Step{"configure": {State: StateStarted, At: start}}}

			out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), rec, (&memSaver{}).save)

			require.True(t, out.OK, "%v", out.Err)
			require.Equal(t, tc.wantJob, out.Record.Steps["configure"].JobID)
			require.Len(t, f.callsTo(`launch/$`), tc.wantLaunch)
		})
	}
}

func TestResumedAWXHookReadsExtraVarsTheListingLeavesOut(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second)
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	f.listOmitsExtraVars = true
	f.addJobFor(7, "10.0.0.5", "i-0previous", start, "running", jobSuccessful) // 1001
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)
	rec := Record{Steps: map[string]Step{"configure": {State: StateStarted, At: start}}}

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), rec, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.NotEmpty(t, f.callsTo(`^GET /api/v2/jobs/1001/$`), "the candidate was read")
	require.Equal(t, 1002, out.Record.Steps["configure"].JobID, "the other instance's job was not adopted")
	require.Len(t, f.callsTo(`launch/$`), 1)
}

func TestAnAmbiguousLaunchFailureDoesNotAdoptAnotherInstancesJob(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	// The previous instance at this address was configured a minute ago.
	f.addJobFor(7, "10.0.0.5", "i-0previous", time.Now().UTC().Add(-time.Minute), jobSuccessful) // 1001
	f.fail(routeLaunch, fault500)                                                                // creates nothing
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.Equal(t, 1002, out.Record.Steps["configure"].JobID)
	require.Len(t, f.callsTo(`launch/$`), 2)
}

func TestJobOwnerIsReadFromExtraVars(t *testing.T) {
	cases := map[string]struct {
		raw   string
		owner string
		known bool
	}{
		"absent":         {raw: "", known: false},
		"null":           {raw: `null`, known: false},
		"JSON string":    {raw: `"{\"instance_id\": \"i-1\", \"x\": 1}"`, owner: "i-1", known: true},
		"empty object":   {raw: `"{}"`, owner: "", known: true},
		"object":         {raw: `{"instance_id": "i-2"}`, owner: "i-2", known: true},
		"YAML string":    {raw: `"---\nrole: web\ninstance_id: i-3\n"`, owner: "i-3", known: true},
		"quoted YAML":    {raw: `"'instance_id': 'i-4'"`, owner: "i-4", known: true},
		"something else": {raw: `"not vars"`, owner: "", known: true},
	}
	for name, tc := range cases {
		j := awxJob{}
		if tc.raw != "" {
			j.ExtraVars = []byte(tc.raw)
		}
		owner, known := j.owner()
		require.Equal(t, tc.owner, owner, name)
		require.Equal(t, tc.known, known, name)
	}
}
