package hooks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// callbackLookback is how long before its step started a callback job may
// have been created and still count, when the instance's launch time is not
// known: the instance usually calls back while it boots, before (or soon
// after) its Nomad node registers. Older jobs for the same host are of an
// earlier instance that had the same address.
const callbackLookback = 30 * time.Minute

// launchSkew is how much earlier than the instance's launch time (EC2's
// clock) a callback job may have been created (AWX's clock) and still be
// the instance's.
const launchSkew = time.Minute

// callbackSince returns the oldest creation time of a callback job that can
// be the instance's: its launch time less launchSkew when known, else the
// step's start less callbackLookback.
func callbackSince(p *prepared, st Step) time.Time {
	if !p.launchTime.IsZero() {
		return p.launchTime.Add(-launchSkew)
	}
	return st.At.Add(-callbackLookback)
}

// templateLabel names a job template for messages: its name and id, or its
// id.
func templateLabel(ref string, id int) string {
	if isDigits(ref) {
		return fmt.Sprintf("job template %d", id)
	}
	return fmt.Sprintf("job template %s (id %d)", shown(ref), id)
}

// runLaunch runs an awx hook: launch the job template with the limit and
// extra_vars (or, on resume, find the job the interrupted run launched) and
// follow the job until it ends.
func (c *awxClient) runLaunch(ctx context.Context, h *Hook, p *prepared, resume bool, st Step, noteJob func(int)) (int, error) {
	tmpl, err := c.resolveTemplate(ctx, h.JobTemplate)
	if err != nil {
		return 0, err
	}
	what := templateLabel(h.JobTemplate, tmpl)

	jobID := 0
	if resume {
		if st.JobID > 0 {
			jobID = st.JobID
			c.log.Info("resuming: following the AWX job the interrupted run launched", "job_id", jobID)
		} else {
			job, err := c.findJob(ctx, tmpl, p.limit, p.instanceID, st.At.Add(-resumeSlack))
			if err != nil {
				return 0, fmt.Errorf("resuming: looking for the job the interrupted run may have launched: %w", err)
			}
			if job != nil {
				jobID = job.ID
				c.log.Info("resuming: found the AWX job the interrupted run launched; following it", "job_id", jobID, "status", job.Status)
				noteJob(jobID)
			} else {
				c.log.Info("resuming: the interrupted run launched no AWX job; launching it now")
			}
		}
	}

	if jobID == 0 {
		res, err := c.launch(ctx, tmpl, what, p.limit, p.instanceID, p.extraVars)
		if err != nil {
			if isNotFound(err) && !isDigits(h.JobTemplate) {
				c.agent.cacheTemplate(h.JobTemplate, 0) // renamed or deleted: look it up again next time
			}
			return 0, err
		}
		jobID = res.job
		noteJob(jobID)
		if len(res.ignored) > 0 {
			// AWX launched the job anyway, without the limit (the whole
			// inventory) or without the variables: stop it at once.
			cerr := c.cancelJob(ctx, jobID)
			if cerr != nil {
				c.log.Warn("could not cancel the AWX job that ignored the limit or variables", "job_id", jobID, "error", c.red.apply(cerr.Error()))
			} else {
				c.log.Warn("cancelled the AWX job that ignored the limit or variables", "job_id", jobID)
			}
			cancelled := "it was cancelled"
			if cerr != nil {
				cancelled = fmt.Sprintf("cancelling it failed: %v", cerr)
			}
			return jobID, &configError{jobEnded: true, err: fmt.Errorf("%s ignored %s: enable 'Prompt on launch' for Limit and Variables in the template (AWX started job %d anyway; %s)",
				what, strings.Join(res.ignored, ", "), jobID, cancelled)}
		}
	}
	return jobID, c.follow(ctx, jobID, h.timeout())
}

// follow polls a job until it ends. A job that ends other than successful
// is a failure with AWX's explanation and the tail of its output. When the
// hook's time runs out the job is cancelled; when the plugin stops it is
// left running (the next run follows it).
func (c *awxClient) follow(ctx context.Context, id int, timeout time.Duration) error {
	last := "unknown"
	for {
		job, err := c.getJob(ctx, id)
		switch {
		case err != nil && ctx.Err() != nil:
			return c.jobTimeout(ctx, id, timeout, last)
		case err != nil:
			return err
		}
		last = job.Status
		if job.final() {
			if job.Status == jobSuccessful {
				return nil
			}
			return c.jobFailure(ctx, job)
		}
		if !sleep(ctx, c.poll) {
			return c.jobTimeout(ctx, id, timeout, last)
		}
	}
}

// jobTimeout is the error of a follow that ctx ended: the hook's timeout
// (the job is cancelled) or the plugin stopping (it is not).
func (c *awxClient) jobTimeout(ctx context.Context, id int, timeout time.Duration, last string) error {
	if !timedOut(ctx) {
		return ctx.Err()
	}
	note := "it was cancelled"
	if err := c.cancelJob(ctx, id); err != nil {
		note = fmt.Sprintf("cancelling it failed: %v", err)
		c.log.Warn("could not cancel the AWX job that ran out of time", "job_id", id, "error", c.red.apply(err.Error()))
	}
	return fmt.Errorf("AWX job %d did not finish within %s (last status %s; %s)", id, timeout, last, note)
}

// jobFailure explains a job that ended failed, error or canceled.
func (c *awxClient) jobFailure(ctx context.Context, job *awxJob) error {
	msg := fmt.Sprintf("AWX job %d ended %s", job.ID, job.Status)
	if e := strings.TrimSpace(job.JobExplanation); e != "" {
		msg += ": " + c.red.apply(e)
	}
	lines, err := c.stdoutTail(ctx, job.ID)
	switch {
	case err != nil:
		msg += fmt.Sprintf(" (its output could not be read: %v)", err)
	case len(lines) > 0:
		msg += "; last lines of its output:\n" + strings.Join(lines, "\n")
	}
	return errors.New(c.red.apply(msg))
}

// runCallback runs an awx_callback hook: the instance itself asks AWX for
// its configuration (provisioning callback), so the hook launches nothing
// and waits for that job. The rule: among the jobs of the template whose
// limit is the host (whatever their launch type) and that were created at
// or after the instance's launch time less launchSkew (when it is unknown:
// at most callbackLookback before the step started), the newest one decides:
// successful ends the hook ok; new, pending, waiting or running is followed;
// failed, error or canceled is a failure unless a newer job appears before
// the hook's timeout (the instance may call back again). No job at all by
// the timeout is a failure that says what to check.
func (c *awxClient) runCallback(ctx context.Context, h *Hook, p *prepared, st Step) (int, error) {
	tmpl, err := c.resolveTemplate(ctx, h.JobTemplate)
	if err != nil {
		return 0, err
	}
	what := templateLabel(h.JobTemplate, tmpl)
	since := callbackSince(p, st)
	var newest *awxJob
	for {
		jobs, err := c.listJobs(ctx, tmpl, p.limit, since)
		switch {
		case err != nil && ctx.Err() != nil:
			// Ran out of time while listing: judge on the last listing.
		case err != nil:
			return 0, err
		case len(jobs) > 0:
			newest = &jobs[0]
			if newest.Status == jobSuccessful {
				return newest.ID, nil
			}
		}
		if ctx.Err() != nil || !sleep(ctx, c.poll) {
			break
		}
	}
	if !timedOut(ctx) {
		id := 0
		if newest != nil {
			id = newest.ID
		}
		return id, ctx.Err()
	}
	timeout := h.timeout()
	switch {
	case newest == nil:
		return 0, fmt.Errorf("no AWX job of %s for host %s appeared within %s: the instance's user-data must call back (POST /api/v2/job_templates/%d/callback/ with the template's host_config_key), and AWX's inventory must know the host as %s",
			what, shown(p.limit), timeout, tmpl, shown(p.limit))
	case newest.final():
		err := c.jobFailure(ctx, newest)
		return newest.ID, fmt.Errorf("the callback job of host %s failed and no newer one came within %s: %w", shown(p.limit), timeout, err)
	default:
		return newest.ID, c.jobTimeout(ctx, newest.ID, timeout, newest.Status)
	}
}
