// Package hooks is the hook pipeline of target-spotfleet: what runs on a new
// Spot Fleet instance once its Nomad node has registered (launch hooks) and
// when an instance leaves the fleet (terminate hooks).
//
// Configuration comes from two places:
//   - the agent's target plugin block holds the AWX connection and its token
//     (ParseAgent), because a secret must never live in a scaling policy;
//   - a scaling policy's target block lists the hooks and their settings
//     (ParsePolicy): launch_hooks, terminate_hooks and hook_<name>_<setting>.
//
// Four kinds of hooks exist: awx launches an AWX job template against the
// instance and follows the job; awx_callback waits for the job the instance
// started itself through AWX's provisioning callback; nomad waits for the
// node to be ready and sets dynamic node metadata; exec runs a local command
// (no shell).
//
// A Runner runs a list of hooks against one Instance. Progress is a Record
// (one Step per hook) that the caller keeps on the instance's EC2 tags
// through a Saver, so that a plugin that restarts resumes where the last one
// stopped: a hook that succeeded is never run again, a hook that failed is
// never retried, and a hook that was running when the process stopped is
// resumed as its type allows (an AWX job is found again and followed rather
// than launched twice: the job whose extra_vars name the instance, never
// one that names another instance; an exec command, whose outcome is
// unknown, is not run a second time). The launch and terminate records are
// kept apart: a terminate hook may use {{hook.<name>.job_id}} of an earlier
// terminate hook, never of a launch hook.
//
// An awx or awx_callback hook's limit must name the instance, one host: its
// template holds at least one of {{instance_id}}, {{private_ip}},
// {{private_dns_name}}, {{node_id}}, {{node_name}} or {{node.meta.<key>}},
// and neither its text nor the values its expressions take at run time may
// hold an Ansible host-pattern operator or separator (, : ! & * ? [ ] ~ or
// whitespace). A value that does is a failure of the hook.
//
// An exec command gets a minimal environment: PATH, HOME, USER, LOGNAME,
// LANG, LC_ALL, TZ and TMPDIR from the plugin's environment (those that are
// set), the SPOTFLEET_* variables and the hook's env setting, never the
// rest of the plugin's environment (which holds AWS keys and tokens): use
// the hook's env to pass more. Its output, logged or in an error, has the
// AWX token, Runner.Redact and the values of the plugin's environment
// variables whose names contain SECRET, TOKEN, PASSWORD, KEY or CREDENTIAL
// redacted.
//
// When the context given to Launch or Terminate is cancelled (the plugin is
// stopping), the hook that was running is not recorded as failed and the
// Outcome's Err wraps the context's error (errors.Is(err,
// context.Canceled)). Its step stays started so that the next process
// resumes it, except for an exec command: the runner kills its process
// group and resets its step (removes it from the record), because the
// command did not complete. A command the plugin itself stopped is run
// again; one whose plugin died (kill -9, crash) is not, its outcome being
// unknown. (When the save that resets the step fails, the step stays
// started: the next process fails it as unknown, the safe side.)
//
// Two kinds of failures are not the instance's, and the caller should not
// treat them as a hook's failure:
//   - a failing Saver: Outcome.Err wraps ErrNotRecorded. The hook did not
//     run (the save before it failed) or its outcome is in Outcome.Record
//     but not in the saved record (the save after it failed): retry later,
//     giving that record to the next call, which skips a hook recorded ok
//     in it and saves the record with its next step;
//   - a failure through the configuration or AWX (IsConfigError): AWX
//     refusing the token (401), the permission (403), knowing no such job
//     template or job (404) or refusing the launch (400), a template that
//     ignores the limit or the variables (ignored_fields; the job AWX
//     started anyway is cancelled), AWX's TLS certificate not trusted, a
//     job template name that matches no template or several, the AWX token
//     that cannot be read, AWX not configured. The hook is not recorded as
//     failed: its step is removed from the record, so that a later call
//     runs it again once the problem is fixed. Outcome.OK is false and
//     Outcome.Hook names the hook.
package hooks
