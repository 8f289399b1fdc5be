package localcloud

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// AgentConfigSpec runs the Nomad Autoscaler agent on a configuration file of
// the caller's (an operator's sample, such as agent-config/agent.hcl) rather
// than on one StartAutoscaler generates. What differs on the local cloud and
// lives outside the plugin blocks is given as command-line flags, which the
// agent merges over its file: -plugin-dir, -nomad-address, -policy-dir,
// -http-bind-address/-http-bind-port (127.0.0.1 and a free port),
// -log-level and the policy defaults. Whatever differs inside a plugin's
// config map (URLs, files) the caller substitutes in Config itself.
type AgentConfigSpec struct {
	// Config is the agent configuration, written to the agent's dir as is.
	Config string
	// Policies maps file names to policy file contents (as
	// AutoscalerSpec.Policies), written to the agent's policy dir.
	Policies map[string]string
	// Env is added to the agent's environment (which already holds
	// Cloud.AWSEnv: static test credentials and moto as the endpoint).
	Env []string
	// Bin is the agent binary; default <repo>/bin/nomad-autoscaler.
	Bin string
	// PluginDir is -plugin-dir; default <repo>/plugins.
	PluginDir string
	// LogLevel is -log-level; default "DEBUG".
	LogLevel string
	// EvaluationInterval and Cooldown, when > 0, are
	// -policy-default-evaluation-interval and -policy-default-cooldown: the
	// defaults of policies that set none (a job's scaling block, say).
	EvaluationInterval time.Duration
	Cooldown           time.Duration
}

// StartAutoscalerWithConfig starts `nomad-autoscaler agent -config <file>`
// on spec.Config with the local flags above, and waits as StartAutoscaler
// does: until the agent's HTTP health endpoint answers and its policy
// manager has started (its plugins are loaded and configured). If the agent
// exits during start-up it returns the handle (for its logs) and an error
// wrapping ErrAutoscalerExited. Close stops every agent.
func (c *Cloud) StartAutoscalerWithConfig(ctx context.Context, spec AgentConfigSpec) (*Autoscaler, error) {
	var err error
	if spec.Bin, err = repoBinary(spec.Bin, "nomad-autoscaler", "run `make tools`"); err != nil {
		return nil, err
	}
	if spec.PluginDir == "" {
		root, err := RepoRoot()
		if err != nil {
			return nil, err
		}
		spec.PluginDir = filepath.Join(root, "plugins")
	}
	if spec.LogLevel == "" {
		spec.LogLevel = "DEBUG"
	}

	return c.launchAgent(ctx, spec.Bin, spec.Env, spec.Policies, func(dir, policyDir string, port int) (string, []string, error) {
		cfgPath := filepath.Join(dir, "agent.hcl")
		if err := os.WriteFile(cfgPath, []byte(spec.Config), 0o644); err != nil {
			return "", nil, fmt.Errorf("localcloud: write autoscaler config: %w", err)
		}
		args := []string{"agent", "-config", cfgPath,
			"-plugin-dir", spec.PluginDir,
			"-nomad-address", c.NomadAddr(),
			"-policy-dir", policyDir,
			"-http-bind-address", "127.0.0.1",
			"-http-bind-port", strconv.Itoa(port),
			"-log-level", spec.LogLevel,
		}
		if spec.EvaluationInterval > 0 {
			args = append(args, "-policy-default-evaluation-interval", spec.EvaluationInterval.String())
		}
		if spec.Cooldown > 0 {
			args = append(args, "-policy-default-cooldown", spec.Cooldown.String())
		}
		return cfgPath, args, nil
	})
}
