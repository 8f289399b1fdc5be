package localcloud

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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

	c.mu.Lock()
	n := len(c.autoscalers) + 1
	c.mu.Unlock()
	dir := filepath.Join(c.cfg.WorkDir, fmt.Sprintf("autoscaler-%d", n))
	policyDir := filepath.Join(dir, "policies")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		return nil, fmt.Errorf("localcloud: create autoscaler policy dir: %w", err)
	}
	for name, content := range spec.Policies {
		if name != filepath.Base(name) {
			return nil, fmt.Errorf("localcloud: policy file name %q must not contain a path", name)
		}
		if err := os.WriteFile(filepath.Join(policyDir, name), []byte(content), 0o644); err != nil {
			return nil, fmt.Errorf("localcloud: write policy %s: %w", name, err)
		}
	}
	cfgPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgPath, []byte(spec.Config), 0o644); err != nil {
		return nil, fmt.Errorf("localcloud: write autoscaler config: %w", err)
	}
	logPath := filepath.Join(c.logsDir, fmt.Sprintf("autoscaler-%d.log", n))

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
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
		a := &Autoscaler{dir: dir, policyDir: policyDir, cfgPath: cfgPath, addr: fmt.Sprintf("http://127.0.0.1:%d", port)}
		if attempt > 0 {
			_ = os.Remove(logPath)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, errors.New("localcloud: start autoscaler: the cloud is closed")
		}
		p, err := startProcess(fmt.Sprintf("nomad-autoscaler-%d", n), spec.Bin, args, dir, logPath, c.autoscalerEnv(spec.Env))
		if err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("localcloud: %w", err)
		}
		a.proc = p
		c.autoscalers = append(c.autoscalers, a)
		c.started = append(c.started, p.pid())
		c.mu.Unlock()

		err = waitHTTP(ctx, a.addr+"/v1/health", p, 60*time.Second)
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = a.WaitLog(wctx, "starting policy source")
			cancel()
			if errors.Is(err, ErrAutoscalerExited) {
				return a, fmt.Errorf("localcloud: start autoscaler: %w (%v); log %s", ErrAutoscalerExited, p.exitErr(), logPath)
			}
			c.logf("autoscaler %d up at %s on config %s (pid %d, log %s)", n, a.addr, cfgPath, p.pid(), logPath)
			return a, nil
		}
		if !p.exited() {
			return a, fmt.Errorf("localcloud: wait for the autoscaler agent at %s: %w", a.addr, err)
		}
		lastErr = fmt.Errorf("localcloud: start autoscaler: %w (%v); log %s", ErrAutoscalerExited, p.exitErr(), logPath)
		if !strings.Contains(a.Logs(), "address already in use") {
			return a, lastErr
		}
	}
	return nil, lastErr
}
