package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// awxPolicy is a policy with one awx launch hook "configure" on template
// tmpl, plus extra settings.
func awxPolicy(tmpl string, extra ...string) map[string]string {
	cfg := map[string]string{
		"launch_hooks":                "configure",
		"hook_configure_type":         "awx",
		"hook_configure_job_template": tmpl,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i]] = extra[i+1]
	}
	return cfg
}

func TestAWXHookLaunchesWithLimitAndExtraVarsAndFollowsTheJobToSuccess(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7", "hook_configure_extra_vars", "role=web, rack={{ node.meta.rack }}"), agent)
	r, logs := newTestRunner(t, agent)
	s := &memSaver{}

	out := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, s.save)

	require.True(t, out.OK, "%v", out.Err)
	launches := f.callsTo(`^POST /api/v2/job_templates/7/launch/$`)
	require.Len(t, launches, 1)
	require.Equal(t, "10.0.0.5", launches[0].Body["limit"])
	require.Equal(t, map[string]any{
		"instance_id": "i-0abc123", "instance_type": "c5.large", "availability_zone": "us-east-1a",
		"spot_fleet_request_id": "sfr-1234", "nomad_node_id": "node-1", "nomad_node_name": "client-1",
		"private_ip": "10.0.0.5", "private_dns_name": "ip-10-0-0-5.ec2.internal",
		"role": "web", "rack": "r1",
	}, launches[0].Body["extra_vars"])
	require.Len(t, f.callsTo(`^GET /api/v2/jobs/1001/$`), 5, "new, pending, waiting, running, successful")
	require.Equal(t, Step{State: StateOK, JobID: 1001, At: out.Record.Steps["configure"].At}, out.Record.Steps["configure"])
	require.Equal(t, []string{"started/0", "started/1001", "ok/1001"}, s.states("configure"))
	require.Regexp(t, `\[INFO\]  hook started: hook=configure .*instance_id=i-0abc123 node_id=node-1 type=awx job_template=7 limit=10.0.0.5`, logs.String())
	require.Contains(t, logs.String(), "hook finished: hook=configure")
	require.Contains(t, logs.String(), "job_id=1001")
	require.NotContains(t, logs.String(), fakeToken)
}

func TestAWXTemplateNameIsResolvedOnceForTwoLaunches(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(3, "other")
	f.addTemplate(7, "configure nodes")
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("configure nodes"), agent)
	r, _ := newTestRunner(t, agent)

	for _, ip := range []string{"10.0.0.5", "10.0.0.6"} {
		inst := testInstance()
		inst.PrivateIP = ip
		out := r.Launch(context.Background(), spec.Launch, inst, Record{}, (&memSaver{}).save)
		require.True(t, out.OK, "%v", out.Err)
	}

	lookups := f.callsTo(`^GET /api/v2/job_templates/$`)
	require.Len(t, lookups, 1)
	require.Equal(t, "configure nodes", lookups[0].Query["name"])
	require.Len(t, f.callsTo(`^POST /api/v2/job_templates/7/launch/$`), 2)
}

func TestAWXTemplateNameMustMatchExactlyOneTemplate(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	f.addTemplate(8, "configure")
	f.ignoreListFilters = true // AWX answering more than asked must not confuse the lookup
	f.addTemplate(9, "configure-v2")
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("configure"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)
	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, `AWX has 2 job templates named "configure" (ids 7, 8): give the numeric id`)

	out = r.Launch(context.Background(), mustPolicy(t, awxPolicy("configure-v3"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)
	require.ErrorContains(t, out.Err, `AWX has no job template named "configure-v3"`)
	require.Empty(t, f.callsTo(`launch/$`))
}

func TestAWXIgnoredFieldsIsAConfigurationErrorAndTheJobIsCancelled(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure").noPrompt = true
	agent, _ := agentFor(t, f)
	r, logs := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "job template 7 ignored extra_vars, limit: enable 'Prompt on launch' for Limit and Variables in the template")
	require.ErrorContains(t, out.Err, "AWX started job 1001 anyway; it was cancelled")
	require.Len(t, f.callsTo(`^POST /api/v2/jobs/1001/cancel/$`), 1)
	require.Equal(t, jobCanceled, f.jobStatus(1001))
	require.True(t, IsConfigError(out.Err), "%v", out.Err)
	require.Equal(t, "configure", out.Hook.Name)
	require.NotContains(t, out.Record.Steps, "configure", "a configuration error is not recorded as failed")
	require.Contains(t, logs.String(), "cancelled the AWX job that ignored the limit or variables")
}

func TestAWXRefusalsAreClearAndNotRetried(t *testing.T) {
	cases := []struct {
		name    string
		tmpl    string
		setup   func(f *fakeAWX)
		wantErr string
	}{
		{
			name:    "bad token",
			tmpl:    "7",
			setup:   func(f *fakeAWX) { f.setToken("the-token-awx-expects") },
			wantErr: "AWX refused the credentials (401 Unauthorized): check the token that awx_token/awx_token_file/awx_token_env gives",
		},
		{
			name:    "no execute permission",
			tmpl:    "7",
			setup:   func(f *fakeAWX) { f.templates[7].forbidden = true },
			wantErr: "AWX denied POST /api/v2/job_templates/7/launch/ (403 Forbidden): the token's user lacks permission on job template 7 (launching a job template needs the execute role on it",
		},
		{
			name:    "unknown template id",
			tmpl:    "99",
			wantErr: "AWX has no job template 99 (404 Not Found for POST /api/v2/job_templates/99/launch/)",
		},
		{
			name:    "survey answer missing",
			tmpl:    "7",
			setup:   func(f *fakeAWX) { f.templates[7].survey = true },
			wantErr: `AWX rejected POST /api/v2/job_templates/7/launch/ (400 Bad Request): variables_needed_to_start: ["'region' value missing"]`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWX(t)
			f.addTemplate(7, "configure")
			if tc.setup != nil {
				tc.setup(f)
			}
			agent, _ := agentFor(t, f)
			r, logs := newTestRunner(t, agent)

			out := r.Launch(context.Background(), mustPolicy(t, awxPolicy(tc.tmpl), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

			require.False(t, out.OK)
			require.ErrorContains(t, out.Err, tc.wantErr)
			require.NotContains(t, out.Err.Error(), fakeToken)
			require.NotContains(t, logs.String(), fakeToken)
			require.Len(t, f.callsTo(`launch/$`), 1, "a refusal is not retried")
			require.Equal(t, 0, f.jobCount())
			require.True(t, IsConfigError(out.Err), "%v", out.Err)
			require.NotContains(t, out.Record.Steps, "configure", "a configuration error is not recorded as failed")
		})
	}
}

func TestAWXServerErrorsAndResetsAreRetried(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	f.fail(routeLaunch, fault429, faultReset, fault500)
	f.fail(routeJob, fault500, faultReset, fault502)
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.Equal(t, 1, f.jobCount(), "no failed attempt created a job, and exactly one launch did")
	require.Len(t, f.callsTo(`launch/$`), 4)
	// The reset and the 500 were ambiguous: each was followed by a look for
	// a job they might have created.
	require.Len(t, f.callsTo(`^GET /api/v2/jobs/$`), 2)
	require.Equal(t, 1001, out.Record.Steps["configure"].JobID)
}

func TestAWXAmbiguousLaunchFailureAdoptsTheJobItCreated(t *testing.T) {
	for _, flt := range []fault{faultCreateThenReset, faultCreateThen500} {
		t.Run(fmt.Sprint(flt), func(t *testing.T) {
			f := newFakeAWX(t)
			f.addTemplate(7, "configure")
			f.fail(routeLaunch, flt)
			agent, _ := agentFor(t, f)
			r, logs := newTestRunner(t, agent)

			out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

			require.True(t, out.OK, "%v", out.Err)
			require.Equal(t, 1, f.jobCount(), "no second job")
			require.Len(t, f.callsTo(`launch/$`), 1)
			require.Equal(t, 1001, out.Record.Steps["configure"].JobID)
			require.Contains(t, logs.String(), "AWX launch failed ambiguously but created a job; following it")
		})
	}
}

func TestAWXJobThatEndsBadlyIsAFailureWithExplanationAndRedactedOutputTail(t *testing.T) {
	for _, status := range []string{jobFailed, jobError, jobCanceled} {
		t.Run(status, func(t *testing.T) {
			f := newFakeAWX(t)
			tp := f.addTemplate(7, "configure")
			tp.outcome = status
			tp.explanation = "Previous Task Failed: {\"job_type\": \"project_update\"}"
			var lines []string
			for i := 1; i <= 30; i++ {
				lines = append(lines, fmt.Sprintf("line %02d", i))
			}
			lines[24] = "TASK [debug] token=" + fakeToken + " aws=AKIAEXAMPLEKEY"
			tp.stdout = strings.Join(lines, "\n") + "\n"
			agent, _ := agentFor(t, f)
			r, logs := newTestRunner(t, agent)
			r.Redact = []string{"AKIAEXAMPLEKEY", ""}

			out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

			require.False(t, out.OK)
			require.Equal(t, "configure", out.Hook.Name)
			msg := out.Err.Error()
			require.Contains(t, msg, "hook configure (awx): AWX job 1001 ended "+status+": Previous Task Failed")
			require.Contains(t, msg, "line 11\nline 12")
			require.Contains(t, msg, "line 30")
			require.NotContains(t, msg, "line 10")
			require.Contains(t, msg, "TASK [debug] token=[redacted] aws=[redacted]")
			require.NotContains(t, msg, fakeToken)
			require.NotContains(t, msg, "AKIAEXAMPLEKEY")
			require.NotContains(t, logs.String(), "AKIAEXAMPLEKEY")
			require.Equal(t, Step{State: StateFailed, JobID: 1001, At: out.Record.Steps["configure"].At}, out.Record.Steps["configure"])
		})
	}
}

func TestAWXStdoutThatCannotBeReadDoesNotHideTheFailure(t *testing.T) {
	f := newFakeAWX(t)
	tp := f.addTemplate(7, "configure")
	tp.outcome, tp.explanation, tp.stdoutDenied = jobFailed, "playbook failed", true
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "AWX job 1001 ended failed: playbook failed (its output could not be read: AWX denied GET /api/v2/jobs/1001/stdout/ (403 Forbidden)")
}

func TestAWXJobThatRunsPastTheTimeoutIsCancelled(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure").outcome = "hang"
	agent, _ := agentFor(t, f)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7", "hook_configure_timeout", "150ms"), agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "AWX job 1001 did not finish within 150ms (last status running; it was cancelled)")
	require.False(t, errors.Is(out.Err, context.Canceled))
	require.Len(t, f.callsTo(`^POST /api/v2/jobs/1001/cancel/$`), 1)
	require.Equal(t, jobCanceled, f.jobStatus(1001))
	require.Equal(t, StateFailed, out.Record.Steps["configure"].State)
}

func TestAWXResumeOfAStartedStep(t *testing.T) {
	start := time.Now().UTC().Truncate(time.Second)
	all := []string{"running", jobSuccessful}
	cases := []struct {
		name        string
		step        Step
		setup       func(f *fakeAWX)
		wantJob     int
		wantLaunch  int
		wantListing bool
	}{
		{
			name:        "the job the interrupted run launched is adopted",
			step:        Step{State: StateStarted, At: start},
			setup:       func(f *fakeAWX) { f.addJob(7, "10.0.0.5", "manual", start.Add(2*time.Second), all...) },
			wantJob:     1001,
			wantListing: true,
		},
		{
			name:    "a job id in the step is followed without a search",
			step:    Step{State: StateStarted, At: start, JobID: 1001},
			setup:   func(f *fakeAWX) { f.addJob(7, "10.0.0.5", "manual", start, all...) },
			wantJob: 1001,
		},
		{
			name: "a job of the same host for another instance is not the interrupted run's: launch",
			step: Step{State: StateStarted, At: start},
			setup: func(f *fakeAWX) {
				f.addJobFor(7, "10.0.0.5", "i-0previous", start.Add(-time.Minute), all...)
			},
			wantJob: 1002, wantLaunch: 1, wantListing: true,
		},
		{
			name: "a job created more than 5 minutes before the step is not the interrupted run's: launch",
			step: Step{State: StateStarted, At: start},
			setup: func(f *fakeAWX) {
				f.addJobFor(7, "10.0.0.5", "i-0abc123", start.Add(-6*time.Minute), all...)
			},
			wantJob: 1002, wantLaunch: 1, wantListing: true,
		},
		{
			name: "jobs of other hosts or templates do not count, even when AWX ignores the filters",
			step: Step{State: StateStarted, At: start},
			setup: func(f *fakeAWX) {
				f.ignoreListFilters = true
				f.addTemplate(8, "other")
				f.addJob(7, "10.0.0.6", "manual", start, all...)
				f.addJob(8, "10.0.0.5", "manual", start, all...)
			},
			wantJob: 1003, wantLaunch: 1, wantListing: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWX(t)
			f.addTemplate(7, "configure")
			tc.setup(f)
			agent, _ := agentFor(t, f)
			r, _ := newTestRunner(t, agent)
			rec := Record{Steps: map[string]Step{"configure": tc.step}}

			out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), agent).Launch, testInstance(), rec, (&memSaver{}).save)

			require.True(t, out.OK, "%v", out.Err)
			require.Equal(t, tc.wantJob, out.Record.Steps["configure"].JobID)
			require.Equal(t, tc.step.At, out.Record.Steps["configure"].At, "the step keeps its start")
			require.Len(t, f.callsTo(`launch/$`), tc.wantLaunch)
			require.Equal(t, tc.wantListing, len(f.callsTo(`^GET /api/v2/jobs/$`)) > 0)
		})
	}
}

func TestAWXPluginStopLeavesTheStepStartedAndTheNextRunFollowsTheSameJob(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure").outcome = "hang"
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7"), agent)
	r, _ := newTestRunner(t, agent)
	s := &memSaver{}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	out := r.Launch(ctx, spec.Launch, testInstance(), Record{}, s.save)

	require.False(t, out.OK)
	require.True(t, errors.Is(out.Err, context.Canceled), "%v", out.Err)
	require.Equal(t, StateStarted, out.Record.Steps["configure"].State)
	require.Equal(t, []string{"started/0", "started/1001"}, s.states("configure"), "failed is never saved")
	require.Equal(t, "running", f.jobStatus(1001), "the job is left running for the next run")
	require.Empty(t, f.callsTo(`cancel/$`))

	// The next process resumes from the saved record.
	saved, err := ParseRecord(s.strings()[len(s.saved)-1])
	require.NoError(t, err)
	f.finish(1001, jobSuccessful)
	r2, _ := newTestRunner(t, agent)
	out = r2.Launch(context.Background(), spec.Launch, testInstance(), saved, s.save)

	require.True(t, out.OK, "%v", out.Err)
	require.Len(t, f.callsTo(`launch/$`), 1, "exactly one launch in total")
	require.Equal(t, 1001, out.Record.Steps["configure"].JobID)
}

func TestAWXRotatedTokenIsReadAtEachCall(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	agent, path := agentFor(t, f)
	spec := mustPolicy(t, awxPolicy("7"), agent)
	r, logs := newTestRunner(t, agent)
	out := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, (&memSaver{}).save)
	require.True(t, out.OK, "%v", out.Err)

	const rotated = "tok-rotated-77aa"
	require.NoError(t, os.WriteFile(path, []byte(rotated), 0o600))
	f.setToken(rotated)
	out = r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	require.Contains(t, agent.Secrets(), rotated)
	require.NotContains(t, logs.String(), rotated)
}

// callbackPolicy is a policy with one awx_callback launch hook "enroll" on
// template 8.
func callbackPolicy(extra ...string) map[string]string {
	cfg := map[string]string{
		"launch_hooks":             "enroll",
		"hook_enroll_type":         "awx_callback",
		"hook_enroll_job_template": "8",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		cfg[extra[i]] = extra[i+1]
	}
	return cfg
}

func TestAWXCallbackHookWaitsForTheHostsJob(t *testing.T) {
	now := time.Now().UTC()
	cases := []struct {
		name    string
		timeout string
		world   func(f *fakeAWX)
		later   func(f *fakeAWX) // after 50ms
		wantJob int
		wantErr string
		cancels bool
	}{
		{
			name: "a successful callback job ends the hook ok",
			world: func(f *fakeAWX) {
				f.addJob(8, "10.0.0.5", "callback", now.Add(-time.Minute), "pending", "running", jobSuccessful)
			},
			wantJob: 1001,
		},
		{
			name:    "a callback that comes later is waited for",
			later:   func(f *fakeAWX) { f.addJob(8, "10.0.0.5", "callback", time.Now(), "running", jobSuccessful) },
			wantJob: 1001,
		},
		{
			name:    "a newer job after a failed one decides",
			world:   func(f *fakeAWX) { f.addJob(8, "10.0.0.5", "callback", now.Add(-time.Minute), jobFailed) },
			later:   func(f *fakeAWX) { f.addJob(8, "10.0.0.5", "callback", time.Now(), "running", jobSuccessful) },
			wantJob: 1002,
		},
		{
			name:    "a failed job and no newer one fail at the timeout",
			timeout: "200ms",
			world:   func(f *fakeAWX) { f.addJob(8, "10.0.0.5", "callback", now.Add(-time.Minute), jobFailed) },
			wantErr: `hook enroll (awx_callback): the callback job of host "10.0.0.5" failed and no newer one came within 200ms: ` +
				"AWX job 1001 ended failed: host unreachable; last lines of its output:\nPLAY [all]\nfatal: [10.0.0.5]: UNREACHABLE!",
		},
		{
			name:    "no job at all says what to check",
			timeout: "100ms",
			world: func(f *fakeAWX) {
				f.addJob(8, "10.0.0.6", "callback", now, jobSuccessful)                   // another host
				f.addJob(8, "10.0.0.5", "callback", now.Add(-2*time.Hour), jobSuccessful) // an earlier instance at that address
			},
			wantErr: `no AWX job of job template 8 for host "10.0.0.5" appeared within 100ms: the instance's user-data must call back (POST /api/v2/job_templates/8/callback/ with the template's host_config_key)`,
		},
		{
			name:    "a job still running at the timeout is cancelled",
			timeout: "100ms",
			world:   func(f *fakeAWX) { f.addJob(8, "10.0.0.5", "callback", now, "running") },
			wantErr: "AWX job 1001 did not finish within 100ms (last status running; it was cancelled)",
			cancels: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAWX(t)
			tp := f.addTemplate(8, "enroll")
			tp.explanation, tp.stdout = "host unreachable", "PLAY [all]\nfatal: [10.0.0.5]: UNREACHABLE!\n"
			if tc.world != nil {
				tc.world(f)
			}
			if tc.later != nil {
				timer := time.AfterFunc(50*time.Millisecond, func() { tc.later(f) })
				defer timer.Stop()
			}
			agent, _ := agentFor(t, f)
			r, _ := newTestRunner(t, agent)
			cfg := callbackPolicy()
			if tc.timeout != "" {
				cfg["hook_enroll_timeout"] = tc.timeout
			}

			out := r.Launch(context.Background(), mustPolicy(t, cfg, agent).Launch, testInstance(), Record{}, (&memSaver{}).save)

			require.Empty(t, f.callsTo(`launch/$`), "a callback hook launches nothing")
			require.Equal(t, tc.cancels, len(f.callsTo(`cancel/$`)) == 1)
			if tc.wantErr != "" {
				require.False(t, out.OK)
				require.ErrorContains(t, out.Err, tc.wantErr)
				return
			}
			require.True(t, out.OK, "%v", out.Err)
			require.Equal(t, tc.wantJob, out.Record.Steps["enroll"].JobID)
		})
	}
}

func TestAWXJobIDOfAnEarlierHookIsRenderedIntoALaterOne(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	f.addTemplate(9, "report")
	agent, _ := agentFor(t, f)
	spec := mustPolicy(t, map[string]string{
		"launch_hooks":                "configure, report",
		"hook_configure_type":         "awx",
		"hook_configure_job_template": "7",
		"hook_report_type":            "awx",
		"hook_report_job_template":    "9",
		"hook_report_extra_vars":      "configure_job={{hook.configure.job_id}}",
	}, agent)
	r, _ := newTestRunner(t, agent)

	out := r.Launch(context.Background(), spec.Launch, testInstance(), Record{}, (&memSaver{}).save)

	require.True(t, out.OK, "%v", out.Err)
	launches := f.callsTo(`^POST /api/v2/job_templates/9/launch/$`)
	require.Len(t, launches, 1)
	require.Equal(t, "1001", launches[0].Body["extra_vars"].(map[string]any)["configure_job"])
}
