package hooks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// Instance is what a hook runs against: a Spot Fleet instance and, once it
// registered, its Nomad node.
//
// Every awx launch carries these fixed extra_vars (plus the hook's own):
// instance_id, instance_type, availability_zone, spot_fleet_request_id,
// nomad_node_id, nomad_node_name, private_ip, private_dns_name. Every exec
// command gets the same facts as SPOTFLEET_* environment variables.
type Instance struct {
	ID, Type, Zone, PrivateIP, PrivateDNS, FleetID string
	// NodeID and NodeName are the instance's Nomad node; terminate hooks may
	// get "" when no node ever registered.
	NodeID, NodeName string
	// NodeMeta is the node's meta, for {{node.meta.<key>}}.
	NodeMeta map[string]string
	// LaunchTime is when EC2 launched the instance. An awx_callback hook
	// accepts only a callback job created at or after LaunchTime minus one
	// minute (clock skew): an older job for the same host is of an earlier
	// instance that had the same address. Zero means unknown: the hook then
	// accepts jobs created up to 30 minutes before its step started.
	LaunchTime time.Time
}

// NomadAPI is the part of the Nomad API the nomad hook uses.
type NomadAPI interface {
	// NodeInfo returns one node.
	NodeInfo(ctx context.Context, nodeID string) (*api.Node, error)
	// ApplyMeta sets dynamic node metadata (POST /v1/client/metadata); a
	// nil value removes a key.
	ApplyMeta(ctx context.Context, nodeID string, meta map[string]*string) error
}

// Runner runs hooks. Its fields are read only; one Runner may run the hooks
// of many instances at once.
type Runner struct {
	// Agent holds the AWX settings; nil means AWX is not configured.
	Agent *Agent
	// Nomad serves the nomad hooks.
	Nomad NomadAPI
	// Logger receives one line when a hook starts and one when it ends;
	// nil means no logs.
	Logger hclog.Logger
	// HTTP is the client for AWX; nil means a default client that trusts
	// awx_ca_file.
	HTTP *http.Client
	// Now is the clock of the record; nil means time.Now.
	Now func() time.Time
	// Poll is the interval of AWX job and Nomad node polls; 0 means 2s.
	Poll time.Duration
	// Redact are more secrets (AWS keys, the Nomad token) to hide from
	// logged output and errors, besides the Agent's and the values of the
	// plugin's environment variables whose names contain SECRET, TOKEN,
	// PASSWORD, KEY or CREDENTIAL (6 characters or more), which are always
	// hidden.
	Redact []string

	// Retry timing of AWX requests; 0 means the defaults (tests shorten
	// them).
	retryBase, retryMax, attemptTimeout time.Duration
}

// Outcome is the result of running a list of hooks.
type Outcome struct {
	// OK is true when every hook of the list succeeded.
	OK bool
	// Hook is the hook that failed (the first one, for terminate hooks);
	// nil when OK.
	Hook *Hook
	// Err says why; it never contains a secret. It wraps:
	//   - the context's error (errors.Is(err, context.Canceled)) when the
	//     context was cancelled: the hook's step was left started, or reset
	//     for an exec command the runner stopped;
	//   - ErrNotRecorded when a save failed: the failure is the record's,
	//     not the hook's (retry later);
	//   - an error for which IsConfigError is true when the hook failed
	//     through the configuration's or AWX's fault: its step was removed
	//     from the record, so that a later call runs the hook again.
	// For Terminate it joins the errors of every hook that failed, and
	// errors.Is and IsConfigError report whether any of them is such.
	Err error
	// Record is the final record: what was last saved, except that when
	// the save after a hook ended failed (ErrNotRecorded) it holds that
	// hook's outcome (ok or failed) all the same. Give it to the next call,
	// which then saves it with the next step.
	Record Record
}

// ErrNotRecorded is wrapped by Outcome.Err when the Saver failed, before a
// hook started (the hook did not run) or after it ended (Outcome.Record
// holds its outcome, which the saved record lacks). It is the record's
// failure, never the hook's: retry later with Outcome.Record.
var ErrNotRecorded = errors.New("the hook record could not be saved")

// IsConfigError reports whether err (an Outcome.Err, or any error that
// wraps one of these) is a failure that is the configuration's or AWX's
// fault rather than the instance's: AWX refusing the token (401), the
// permission (403) or knowing no such job template or job (404), refusing a
// launch (400), ignoring the limit or the variables (ignored_fields, the
// job that AWX started anyway being cancelled), an AWX TLS certificate that
// is not trusted, a job template name that matches no template or several,
// an AWX token that cannot be read, AWX not configured in the agent. The
// runner never records such a hook as failed: it removes its step from the
// record, so that a later call runs the hook again once the problem is
// fixed.
func IsConfigError(err error) bool {
	var ce *configError
	if errors.As(err, &ce) {
		return true
	}
	var ae *apiError
	return errors.As(err, &ae) && ae.config
}

// configError marks a failure as the configuration's or AWX's fault (see
// IsConfigError); its message is the wrapped error's.
type configError struct {
	err error
	// jobEnded says the AWX job the hook launched was ended by the hook
	// itself (cancelled after ignored_fields): there is nothing to follow.
	jobEnded bool
}

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

// notRecordedError is a failing save: errors.Is(err, ErrNotRecorded) is
// true, and the Saver's error stays reachable.
type notRecordedError struct{ err error }

func (e *notRecordedError) Error() string        { return "saving the hook record: " + e.err.Error() }
func (e *notRecordedError) Unwrap() error        { return e.err }
func (e *notRecordedError) Is(target error) bool { return target == ErrNotRecorded }

const (
	defaultPoll = 2 * time.Second
	// resumeSlack is how much earlier than its step's start a job may have
	// been created and still be the job that step launched (clock skew
	// between AWX and the plugin). A job whose extra_vars name another
	// instance is never taken for the step's, whatever its time.
	resumeSlack = 5 * time.Minute
	// resetSaveTimeout bounds the save that resets the step of an exec
	// command the runner stopped because the plugin is stopping.
	resetSaveTimeout = 10 * time.Second
	// maxOutputLines is how many lines of a command's or job's output are
	// logged and put in an error.
	maxOutputLines = 20
)

// errHookTimeout is the cause of a hook's context ending at its Timeout.
var errHookTimeout = errors.New("hook timeout")

// Launch runs the launch hooks of one instance in order and stops at the
// first failure. For each hook, depending on its step in rec:
//   - ok: skipped (its job id stays available to {{hook.<name>.job_id}});
//   - failed: that failure is returned at once, the hook is never re-run;
//   - none: the step is saved started before any side effect (a failing
//     save means the hook does not run), the hook runs, and the step is
//     saved ok or failed;
//   - started (the plugin restarted while it ran): awx follows the job it
//     launched (the job id in the step or, when the step has none, the
//     newest job of the template for the same limit created at most 5
//     minutes before the step started, preferring one whose extra_vars
//     name the instance and never one whose extra_vars name another) or
//     launches one if there is none; awx_callback and nomad run again;
//     exec fails, since the outcome of the command that ran is unknown
//     (the process that ran it died: a command that the runner stopped
//     because ctx was cancelled has its step removed, and runs again).
//
// A hook that fails through the configuration's or AWX's fault
// (IsConfigError) is not recorded as failed: its step is removed, and the
// next call runs it again.
//
// A save that fails is not a failure of the hook: Outcome.Err wraps
// ErrNotRecorded. When it is the save before a hook starts, the hook does
// not run; when it is the save after a hook ended, Outcome.Record holds the
// hook's outcome all the same (ok: the next call given that record skips
// the hook and saves the record with its next step).
func (r *Runner) Launch(ctx context.Context, hooks []*Hook, inst Instance, rec Record, save Saver) Outcome {
	return r.runList(ctx, hooks, inst, rec, save, true)
}

// Terminate runs every terminate hook of one instance once, like Launch but
// going on after a failure; the Outcome names the first failure and its Err
// joins them all. A cancelled ctx stops it at once. rec holds the terminate
// steps only: a terminate hook may use {{hook.<name>.job_id}} of an earlier
// terminate hook, never of a launch hook.
func (r *Runner) Terminate(ctx context.Context, hooks []*Hook, inst Instance, rec Record, save Saver) Outcome {
	return r.runList(ctx, hooks, inst, rec, save, false)
}

func (r *Runner) runList(ctx context.Context, hooks []*Hook, inst Instance, rec Record, save Saver, launch bool) Outcome {
	rec = rec.clone()
	var failed *Hook
	var errs []error
	for _, h := range hooks {
		st, found := rec.Steps[h.Name]
		var err error
		switch {
		case found && st.State == StateOK:
			continue
		case found && st.State == StateFailed:
			err = r.hookError(h, fmt.Errorf("failed in an earlier run (started %s); a failed hook is not run again", st.At.UTC().Format(time.RFC3339)))
		default:
			err = r.step(ctx, h, inst, &rec, save, found, st)
		}
		if err == nil {
			continue
		}
		if failed == nil {
			failed = h
		}
		errs = append(errs, err)
		if launch || ctx.Err() != nil {
			break
		}
	}
	if failed == nil {
		return Outcome{OK: true, Record: rec}
	}
	out := Outcome{Hook: failed, Record: rec, Err: errs[0]}
	if len(errs) > 1 {
		out.Err = multiError(errs)
	}
	return out
}

// step runs one hook and records its progress in rec.
func (r *Runner) step(ctx context.Context, h *Hook, inst Instance, rec *Record, save Saver, resume bool, prev Step) error {
	log := r.logger().With("hook", h.Name, "type", h.Type, "instance_id", inst.ID, "node_id", inst.NodeID)
	if save == nil {
		save = func(context.Context, Record) error { return nil }
	}
	if ctx.Err() != nil {
		return r.interrupted(h, ctx)
	}

	st := prev
	if !resume {
		st = Step{State: StateStarted, At: r.now().UTC().Truncate(time.Second)}
	}
	p, renderErr := r.prepare(h, facts{inst: inst, rec: *rec})
	if renderErr != nil {
		// Nothing ran: record the failure directly.
		done := st
		done.State = StateFailed
		err := r.hookError(h, renderErr)
		if serr := r.saveStep(ctx, rec, save, h.Name, &done, true); serr != nil {
			err = r.hookError(h, fmt.Errorf("%w (and the failure could not be recorded: %w)", renderErr, serr))
		}
		log.Warn("hook failed", "error", err.Error())
		return err
	}
	if !resume {
		if err := r.saveStep(ctx, rec, save, h.Name, &st, false); err != nil {
			err = r.hookError(h, fmt.Errorf("its start could not be recorded, so it was not run: %w", err))
			log.Warn("hook failed", "error", err.Error())
			return err
		}
	}
	log.Info("hook started", append(p.logFields(), "resumed", resume, "timeout", h.timeout().String())...)

	hctx, cancel := context.WithTimeoutCause(ctx, h.timeout(), errHookTimeout)
	defer cancel()
	begin := time.Now()
	noteJob := func(id int) {
		// Remember the launched job at once, so that a restart follows it
		// rather than searching for it; the search still works if this
		// save fails.
		st.JobID = id
		if err := r.saveStep(ctx, rec, save, h.Name, &st, false); err != nil {
			log.Warn("could not record the AWX job id of the running hook; a restart will look the job up", "job_id", id, "error", r.redactor().apply(err.Error()))
		}
	}
	jobID, runErr := r.execute(hctx, h, p, resume, st, noteJob, log)
	if jobID != 0 {
		st.JobID = jobID
	}
	dur := time.Since(begin).Round(time.Millisecond)

	if runErr != nil {
		if ctx.Err() != nil {
			if errors.Is(runErr, errCommandStopped) {
				return r.resetStopped(ctx, h, rec, save, log, dur)
			}
			// The plugin is stopping: leave the step started (rec holds
			// what was last saved).
			err := r.interrupted(h, ctx)
			log.Warn("hook interrupted; its step stays started and resumes in the next run", "duration", dur, "job_id", st.JobID)
			return err
		}
		if IsConfigError(runErr) && st.JobID != 0 && !jobEnded(runErr) && !isNotFound(runErr) {
			// A job runs already (AWX refused a later read, a token
			// rotated mid-playbook): keep the step started with its job,
			// so that the next attempt follows it rather than launching a
			// second playbook against the host.
			err := r.hookError(h, fmt.Errorf("%w (a problem of the configuration or of AWX, not of the instance: AWX job %d is followed again at the next attempt, never launched twice)", runErr, st.JobID))
			if serr := r.saveStep(ctx, rec, save, h.Name, &st, true); serr != nil {
				err = r.hookError(h, fmt.Errorf("%w (and its step could not be recorded: %w)", err, serr))
			}
			log.Debug("hook refused through the configuration or AWX while following its job; the job is followed again at the next attempt", "duration", dur, "job_id", st.JobID, "error", err.Error())
			return err
		}
		if IsConfigError(runErr) {
			// Not the instance's fault: forget the step, so that the hook
			// runs again once the configuration or AWX is fixed.
			err := r.hookError(h, fmt.Errorf("%w (a problem of the configuration or of AWX, not of the instance: the hook is not recorded as failed and runs again at the next attempt)", runErr))
			if serr := r.saveStep(ctx, rec, save, h.Name, nil, true); serr != nil {
				err = r.hookError(h, fmt.Errorf("%w (a problem of the configuration or of AWX, not of the instance; removing its step from the record failed: %w)", runErr, serr))
			}
			// Debug: the caller retries and reports a configuration
			// error once per change, not at every attempt.
			log.Debug("hook failed through the configuration or AWX; its step is removed and it runs again at the next attempt", "duration", dur, "job_id", st.JobID, "error", err.Error())
			return err
		}
		done := st
		done.State = StateFailed
		err := r.hookError(h, runErr)
		if serr := r.saveStep(ctx, rec, save, h.Name, &done, true); serr != nil {
			err = r.hookError(h, fmt.Errorf("%w (and the failure could not be recorded: %w)", runErr, serr))
		}
		log.Warn("hook failed", "duration", dur, "job_id", st.JobID, "error", err.Error())
		return err
	}

	done := st
	done.State = StateOK
	if err := r.saveStep(ctx, rec, save, h.Name, &done, true); err != nil {
		err = r.hookError(h, fmt.Errorf("it succeeded but its state could not be recorded (%w); the record given back holds it as ok: give that record to the next attempt, which skips the hook and saves it", err))
		log.Warn("hook succeeded but its state could not be recorded", "duration", dur, "job_id", st.JobID, "error", err.Error())
		return err
	}
	log.Info("hook finished", "duration", dur, "job_id", st.JobID)
	return nil
}

// resetStopped removes the step of an exec command that the runner stopped
// because ctx was cancelled: the command did not complete, so the next run
// runs it again from the start. The save gets a fresh context (ctx has
// ended) bounded by resetSaveTimeout; when it fails the step stays started,
// and the next run fails it as unknown.
func (r *Runner) resetStopped(ctx context.Context, h *Hook, rec *Record, save Saver, log hclog.Logger, dur time.Duration) error {
	cause := ctx.Err()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resetSaveTimeout)
	defer cancel()
	if serr := r.saveStep(sctx, rec, save, h.Name, nil, false); serr != nil {
		err := &hookError{
			msg:  r.redactor().apply(fmt.Sprintf("hook %s (%s) was interrupted (%v): its command was stopped, but resetting its step failed (%v), so it stays started and the next run fails it as unknown", h.Name, h.Type, cause, serr)),
			errs: []error{cause},
		}
		log.Warn("hook interrupted; its command was stopped but its step could not be reset", "duration", dur, "error", err.Error())
		return err
	}
	log.Warn("hook interrupted; its command was stopped, so its step was reset and the next run runs it again", "duration", dur)
	return &hookError{
		msg:  fmt.Sprintf("hook %s (%s) was interrupted (%v): the plugin stopped its command, so its step was reset and the next run runs it again from the start", h.Name, h.Type, cause),
		errs: []error{cause},
	}
}

// saveStep sets one step in rec (st nil removes it) and saves rec. When the
// save fails, rec keeps the new step if keep is true (the hook ended: its
// outcome is known) and the previous one otherwise; the error wraps
// ErrNotRecorded.
func (r *Runner) saveStep(ctx context.Context, rec *Record, save Saver, name string, st *Step, keep bool) error {
	prev, had := rec.Steps[name]
	if st == nil {
		delete(rec.Steps, name)
	} else {
		rec.Steps[name] = *st
	}
	if err := save(ctx, rec.clone()); err != nil { // the Saver may keep what it gets
		if !keep {
			if had {
				rec.Steps[name] = prev
			} else {
				delete(rec.Steps, name)
			}
		}
		return &notRecordedError{err: err}
	}
	return nil
}

// execute runs the hook's side effects and returns the AWX job id, if any.
func (r *Runner) execute(ctx context.Context, h *Hook, p *prepared, resume bool, st Step, noteJob func(int), log hclog.Logger) (int, error) {
	switch h.Type {
	case TypeAWX:
		c, err := r.awx(log)
		if err != nil {
			return 0, err
		}
		return c.runLaunch(ctx, h, p, resume, st, noteJob)
	case TypeAWXCallback:
		c, err := r.awx(log)
		if err != nil {
			return 0, err
		}
		return c.runCallback(ctx, h, p, st)
	case TypeNomad:
		return 0, r.runNomad(ctx, h, p, log)
	case TypeExec:
		if resume {
			return 0, errors.New("the plugin restarted while the command ran; its outcome is unknown, so it is not run a second time")
		}
		return 0, r.runExec(ctx, h, p, log)
	}
	return 0, fmt.Errorf("unknown hook type %s, want one of %s", shown(h.Type), strings.Join(hookTypes, ", "))
}

// interrupted is the error of a hook whose run was stopped by ctx.
func (r *Runner) interrupted(h *Hook, ctx context.Context) error {
	cause := ctx.Err()
	return &hookError{
		msg:  fmt.Sprintf("hook %s (%s) was interrupted (%v): its step stays started and the next run resumes it", h.Name, h.Type, cause),
		errs: []error{cause},
	}
}

// hookError is the error of one hook: its message names the hook and has
// every secret redacted.
type hookError struct {
	msg  string
	errs []error
}

func (e *hookError) Error() string   { return e.msg }
func (e *hookError) Unwrap() []error { return e.errs }

func (r *Runner) hookError(h *Hook, err error) error {
	return &hookError{msg: r.redactor().apply(fmt.Sprintf("hook %s (%s): %v", h.Name, h.Type, err)), errs: []error{err}}
}

// redactor hides the Agent's secrets, Redact and the secrets of the
// plugin's environment (see envSecrets).
func (r *Runner) redactor() redactor {
	var agent []string
	if r.Agent != nil {
		agent = r.Agent.Secrets()
	}
	return newRedactor(agent, r.Redact, envSecrets())
}

func (r *Runner) logger() hclog.Logger {
	if r.Logger == nil {
		return hclog.NewNullLogger()
	}
	return r.Logger
}

func (r *Runner) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

func (r *Runner) poll() time.Duration {
	if r.Poll <= 0 {
		return defaultPoll
	}
	return r.Poll
}

// timedOut reports whether ctx ended because its hook's Timeout passed
// (rather than because the plugin is stopping).
func timedOut(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errHookTimeout)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jobEnded reports whether err says the hook's AWX job was ended by the
// hook itself.
func jobEnded(err error) bool {
	var ce *configError
	return errors.As(err, &ce) && ce.jobEnded
}
