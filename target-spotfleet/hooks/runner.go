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
	// logged output and errors, besides the Agent's.
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
	// Err says why; it never contains a secret. When the context was
	// cancelled it wraps the context's error (errors.Is(err,
	// context.Canceled)) and the hook's step was left started.
	Err error
	// Record is the final record, as last saved.
	Record Record
}

const (
	defaultPoll = 2 * time.Second
	// resumeSlack is how much earlier than its step's start a job may have
	// been created and still be the job that step launched (clock skew
	// between AWX and the plugin).
	resumeSlack = 5 * time.Second
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
//     launched (the newest job of the template for the same limit created
//     since the step started) or launches one if there is none;
//     awx_callback and nomad run again; exec fails, since the outcome of
//     the command that ran is unknown.
//
// A save that fails after the hook succeeded is a failure of that hook: the
// step stays started and resumes at the next call.
func (r *Runner) Launch(ctx context.Context, hooks []*Hook, inst Instance, rec Record, save Saver) Outcome {
	return r.runList(ctx, hooks, inst, rec, save, true)
}

// Terminate runs every terminate hook of one instance once, like Launch but
// going on after a failure; the Outcome names the first failure and its Err
// joins them all. A cancelled ctx stops it at once.
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
		st.State = StateFailed
		err := r.hookError(h, renderErr)
		if serr := r.saveStep(ctx, rec, save, h.Name, st); serr != nil {
			err = r.hookError(h, fmt.Errorf("%v (and the failure could not be recorded: %v)", renderErr, serr))
		}
		log.Warn("hook failed", "error", err.Error())
		return err
	}
	if !resume {
		if err := r.saveStep(ctx, rec, save, h.Name, st); err != nil {
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
		if err := r.saveStep(ctx, rec, save, h.Name, st); err != nil {
			log.Warn("could not record the AWX job id of the running hook; a restart will look the job up", "job_id", id, "error", err.Error())
		}
	}
	jobID, runErr := r.execute(hctx, h, p, resume, st, noteJob, log)
	if jobID != 0 {
		st.JobID = jobID
	}
	dur := time.Since(begin).Round(time.Millisecond)

	if runErr != nil {
		if ctx.Err() != nil {
			// The plugin is stopping: leave the step started (rec holds
			// what was last saved).
			err := r.interrupted(h, ctx)
			log.Warn("hook interrupted; its step stays started and resumes in the next run", "duration", dur, "job_id", st.JobID)
			return err
		}
		done := st
		done.State = StateFailed
		err := r.hookError(h, runErr)
		if serr := r.saveStep(ctx, rec, save, h.Name, done); serr != nil {
			err = r.hookError(h, fmt.Errorf("%w (and the failure could not be recorded: %v)", runErr, serr))
		}
		log.Warn("hook failed", "duration", dur, "job_id", st.JobID, "error", err.Error())
		return err
	}

	done := st
	done.State = StateOK
	if err := r.saveStep(ctx, rec, save, h.Name, done); err != nil {
		rec.Steps[h.Name] = st // stays started, resumes next time
		err = r.hookError(h, fmt.Errorf("it succeeded but its state could not be recorded (%w); it resumes at the next attempt", err))
		log.Warn("hook failed", "duration", dur, "job_id", st.JobID, "error", err.Error())
		return err
	}
	log.Info("hook finished", "duration", dur, "job_id", st.JobID)
	return nil
}

// saveStep sets one step in rec and saves rec; on failure rec keeps the
// step the caller decides on.
func (r *Runner) saveStep(ctx context.Context, rec *Record, save Saver, name string, st Step) error {
	prev, had := rec.Steps[name]
	rec.Steps[name] = st
	if err := save(ctx, rec.clone()); err != nil { // the Saver may keep what it gets
		if had {
			rec.Steps[name] = prev
		} else {
			delete(rec.Steps, name)
		}
		return fmt.Errorf("saving the hook record: %w", err)
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
		msg: fmt.Sprintf("hook %s (%s) was interrupted (%v): its step stays started and the next run resumes it", h.Name, h.Type, cause),
		err: cause,
	}
}

// hookError is the error of one hook: its message names the hook and has
// every secret redacted.
type hookError struct {
	msg string
	err error
}

func (e *hookError) Error() string { return e.msg }
func (e *hookError) Unwrap() error { return e.err }

func (r *Runner) hookError(h *Hook, err error) error {
	return &hookError{msg: r.redactor().apply(fmt.Sprintf("hook %s (%s): %v", h.Name, h.Type, err)), err: err}
}

// redactor hides the Agent's secrets and Redact.
func (r *Runner) redactor() redactor {
	var agent []string
	if r.Agent != nil {
		agent = r.Agent.Secrets()
	}
	return newRedactor(agent, r.Redact)
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
