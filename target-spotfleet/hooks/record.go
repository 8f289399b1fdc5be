package hooks

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// States of a Step.
const (
	// StateStarted: the step was recorded before the hook's first side
	// effect; the hook is running, or the process stopped while it ran.
	StateStarted = "started"
	// StateOK: the hook succeeded; it is never run again.
	StateOK = "ok"
	// StateFailed: the hook failed; it is never run again.
	StateFailed = "failed"
)

// MaxRecordLen is the longest Record.String an EC2 tag value can hold.
// ParsePolicy makes sure that the record of the launch hooks always fits
// (with AWX job ids of up to recordJobDigits digits).
const MaxRecordLen = 256

// MaxTerminateRecordLen is the longest Record.String of the terminate hooks
// that ParsePolicy accepts (with AWX job ids of up to recordJobDigits
// digits): the plugin stores it together with the instance's details (about
// 100 characters) in one 256-character tag.
const MaxTerminateRecordLen = 140

// recordJobDigits and recordAtDigits are the widths the record length check
// of ParsePolicy assumes for a job id (AWX ids grow past 7 digits on a busy
// AWX) and a Unix time, for every hook whatever its type.
const (
	recordJobDigits = 10
	recordAtDigits  = 10
)

// recordStepOverhead is the most characters a step adds besides its name:
// "=started/" + job id + "/" + Unix time + ";".
const recordStepOverhead = 1 + len(StateStarted) + 1 + recordJobDigits + 1 + recordAtDigits + 1

// Record is the progress of the hooks of one instance, by hook name. The
// caller keeps it on an EC2 instance tag (see String) so that a restarted
// plugin resumes where the last one stopped. The zero value is an empty
// record.
//
// ParsePolicy makes sure that the steps of the launch hooks always fit in
// MaxRecordLen and those of the terminate hooks in MaxTerminateRecordLen;
// a record holding the steps of both lists may not, so keep the two apart.
// The record given to Terminate holds the terminate steps only (a terminate
// hook may use {{hook.<name>.job_id}} of an earlier terminate hook, never of
// a launch hook).
type Record struct {
	Steps map[string]Step
}

// Step is the progress of one hook.
type Step struct {
	// State is StateStarted, StateOK or StateFailed.
	State string
	// JobID is the AWX job of an awx or awx_callback hook, 0 otherwise (or
	// while it is not known yet).
	JobID int
	// At is when the step started, to the second.
	At time.Time
}

// Saver stores a record (on the instance's tags). The Runner calls it
// before each hook runs and after it ends.
type Saver func(ctx context.Context, rec Record) error

// ParseRecord reads a record written by Record.String; "" is an empty
// record.
func ParseRecord(s string) (Record, error) {
	rec := Record{Steps: map[string]Step{}}
	s = strings.TrimSpace(s)
	if s == "" {
		return rec, nil
	}
	const want = "want name=state/job_id/unix_time steps separated by ';', such as configure=ok/1001/1733100000"
	var errs []error
	for _, item := range strings.Split(s, ";") {
		name, rest, ok := strings.Cut(item, "=")
		if !ok || !namePattern.MatchString(name) {
			errs = append(errs, fmt.Errorf("step %s has no hook name: %s", shown(item), want))
			continue
		}
		if _, dup := rec.Steps[name]; dup {
			errs = append(errs, fmt.Errorf("hook %s appears twice", name))
			continue
		}
		fields := strings.Split(rest, "/")
		if len(fields) != 3 {
			errs = append(errs, fmt.Errorf("step %s: %s", shown(item), want))
			continue
		}
		state := fields[0]
		if state != StateStarted && state != StateOK && state != StateFailed {
			errs = append(errs, fmt.Errorf("step %s has state %s, want %s, %s or %s", shown(item), shown(state), StateStarted, StateOK, StateFailed))
			continue
		}
		job, err := strconv.Atoi(fields[1])
		if err != nil || job < 0 {
			errs = append(errs, fmt.Errorf("step %s has job id %s, want a whole number, 0 for none", shown(item), shown(fields[1])))
			continue
		}
		at, err := strconv.ParseInt(fields[2], 10, 64)
		if err != nil || at < 0 {
			errs = append(errs, fmt.Errorf("step %s has time %s, want Unix seconds", shown(item), shown(fields[2])))
			continue
		}
		st := Step{State: state, JobID: job}
		if at > 0 {
			st.At = time.Unix(at, 0).UTC()
		}
		rec.Steps[name] = st
	}
	if len(errs) > 0 {
		return Record{}, fmt.Errorf("reading hook record %s: %w", shown(s), multiError(errs))
	}
	return rec, nil
}

// String writes the record compactly and deterministically (steps sorted by
// name), such as "configure=ok/1001/1733100000;join=started/0/1733100005".
func (r Record) String() string {
	var b strings.Builder
	for i, name := range sortedKeys(r.Steps) {
		st := r.Steps[name]
		if i > 0 {
			b.WriteByte(';')
		}
		var at int64
		if !st.At.IsZero() {
			at = st.At.Unix()
		}
		fmt.Fprintf(&b, "%s=%s/%d/%d", name, st.State, st.JobID, at)
	}
	return b.String()
}

// Done reports whether every hook of the list is ok.
func (r Record) Done(spec []*Hook) bool {
	for _, h := range spec {
		if r.Steps[h.Name].State != StateOK {
			return false
		}
	}
	return true
}

// clone returns a copy of the record that can be changed without changing
// r.
func (r Record) clone() Record {
	c := Record{Steps: make(map[string]Step, len(r.Steps))}
	for k, v := range r.Steps {
		c.Steps[k] = v
	}
	return c
}

// recordLen is the longest Record.String of the steps of these hooks.
func recordLen(hooks []*Hook) int {
	if len(hooks) == 0 {
		return 0
	}
	n := -1 // no ';' after the last step
	for _, h := range hooks {
		n += len(h.Name) + recordStepOverhead
	}
	return n
}
