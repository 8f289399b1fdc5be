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
// than launched twice; an exec command, whose outcome is unknown, is not run
// a second time).
//
// When the context given to Launch or Terminate is cancelled (the plugin is
// stopping), the hook that was running is not recorded as failed: its step
// stays started so that the next process resumes it, and the Outcome's Err
// wraps the context's error (errors.Is(err, context.Canceled)).
package hooks
