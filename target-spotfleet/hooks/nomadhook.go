package hooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
)

// runNomad runs a nomad hook: wait for the node to be ready (initializing
// and down keep it waiting), then set the hook's dynamic node metadata.
func (r *Runner) runNomad(ctx context.Context, h *Hook, p *prepared, log hclog.Logger) error {
	if r.Nomad == nil {
		return errors.New("no Nomad API was given to the hook runner")
	}
	if p.nodeID == "" {
		return errors.New("the instance has no Nomad node (it never registered)")
	}
	last, lastErr := "", error(nil)
	for {
		node, err := r.Nomad.NodeInfo(ctx, p.nodeID)
		switch {
		case err != nil && nomadnode.IsRefused(err):
			return &configError{err: fmt.Errorf("Nomad refused to read node %s (the agent's Nomad token needs node:read): %w", p.nodeID, err)}
		case err != nil:
			lastErr = err
		case node == nil:
			lastErr = fmt.Errorf("Nomad returned no node %s", p.nodeID)
		default:
			lastErr = nil
			if node.Status != last {
				log.Debug("node status", "status", node.Status)
			}
			last = node.Status
		}
		if lastErr == nil && last == api.NodeStatusReady {
			break
		}
		if !sleep(ctx, r.poll()) {
			if !timedOut(ctx) {
				return ctx.Err()
			}
			switch {
			case lastErr != nil && last == "":
				return fmt.Errorf("node %s was not ready within %s (reading it failed: %v)", p.nodeID, h.timeout(), lastErr)
			case lastErr != nil:
				return fmt.Errorf("node %s was not ready within %s (last status %s; the last read failed: %v)", p.nodeID, h.timeout(), last, lastErr)
			}
			return fmt.Errorf("node %s was not ready within %s (last status %s)", p.nodeID, h.timeout(), last)
		}
	}
	if len(p.meta) == 0 {
		return nil
	}
	meta := make(map[string]*string, len(p.meta))
	for k, v := range p.meta {
		meta[k] = &v
	}
	// A leader election or a reset connection is ridden out within the
	// hook's timeout; a refusal for lack of rights is the configuration's.
	for {
		err := r.Nomad.ApplyMeta(ctx, p.nodeID, meta)
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil && !timedOut(ctx):
			return ctx.Err()
		case nomadnode.IsRefused(err):
			return &configError{err: fmt.Errorf("Nomad refused dynamic metadata %v on node %s (the agent's Nomad token needs node:write): %w", sortedKeys(p.meta), p.nodeID, err)}
		case !nomadnode.IsTransient(err) || ctx.Err() != nil:
			return fmt.Errorf("setting dynamic metadata %v on node %s: %w", sortedKeys(p.meta), p.nodeID, err)
		}
		log.Debug("setting dynamic node metadata failed; retrying", "error", err)
		if !sleep(ctx, r.poll()) {
			return fmt.Errorf("setting dynamic metadata %v on node %s: %w (gave up at the hook's timeout)", sortedKeys(p.meta), p.nodeID, err)
		}
	}
}
