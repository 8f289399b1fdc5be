package localcloud

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ErrAutoscalerExited is wrapped by the errors of StartAutoscaler and WaitLog
// when the agent process has exited (plugin load or SetConfig failure, bad
// configuration ...).
var ErrAutoscalerExited = errors.New("nomad-autoscaler agent exited")

// AutoscalerSpec configures a Nomad Autoscaler agent run by StartAutoscaler.
type AutoscalerSpec struct {
	// Bin is the agent binary; default <repo>/bin/nomad-autoscaler.
	Bin string
	// PluginDir is the agent's plugin_dir; default <repo>/plugins.
	PluginDir string
	// EvaluationInterval is policy.default_evaluation_interval; default 5s.
	EvaluationInterval time.Duration
	// Cooldown is policy.default_cooldown; default 10s.
	Cooldown time.Duration
	// LogLevel is the agent's log_level; default "DEBUG".
	LogLevel string
	// ExtraHCL is appended to the agent configuration: apm, strategy and
	// target blocks.
	ExtraHCL string
	// Policies maps file names (for example "cluster.hcl") to policy file
	// contents, written to the agent's policy dir.
	Policies map[string]string
	// Env is added to the agent's environment (which already holds
	// Cloud.AWSEnv: static test credentials and moto as the endpoint).
	Env []string
	// NomadViaProxy points the agent at the Nomad API proxy
	// (Cloud.NomadProxyAddr, where FailNomad injects faults) instead of the
	// server: the agent's nomad block gets the proxy address, which plugins
	// inherit as nomad_address (SpotfleetTargetHCL sets none), and every
	// occurrence of Cloud.NomadAddr in ExtraHCL (a plugin's explicit
	// nomad_address) is replaced by the proxy address.
	NomadViaProxy bool
}

// Autoscaler is a running Nomad Autoscaler agent.
type Autoscaler struct {
	proc      *process
	dir       string
	cfgPath   string
	policyDir string
	addr      string
}

// AWSEnv returns environment variables that point an aws-sdk-go-v2 default
// configuration at moto only: static test credentials, us-east-1,
// AWS_ENDPOINT_URL and no instance metadata lookups.
func (c *Cloud) AWSEnv() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_REGION=" + DefaultRegion,
		"AWS_DEFAULT_REGION=" + DefaultRegion,
		"AWS_ENDPOINT_URL=" + c.motoURL,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// autoscalerEnv is the agent's environment: the caller's without AWS, Nomad,
// Consul and Vault variables, plus AWSEnv and extra.
func (c *Cloud) autoscalerEnv(extra []string) []string {
	var env []string
	for _, kv := range nomadEnv() {
		if strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, c.AWSEnv()...)
	return append(env, extra...)
}

// agentHCL renders the agent configuration.
func agentHCL(spec AutoscalerSpec, nomadAddr, policyDir string, port int) string {
	return fmt.Sprintf(`# Nomad Autoscaler agent of the local cloud (generated).
log_level  = %q
plugin_dir = %q

nomad {
  address = %q
}

http {
  bind_address = "127.0.0.1"
  bind_port    = %d
}

policy {
  dir                         = %q
  default_evaluation_interval = %q
  default_cooldown            = %q
}

%s
`, spec.LogLevel, spec.PluginDir, nomadAddr, port, policyDir,
		spec.EvaluationInterval.String(), spec.Cooldown.String(), spec.ExtraHCL)
}

// StartAutoscaler writes the agent configuration and policy files, starts
// `nomad-autoscaler agent -config <file>` with its output in a log file, and
// waits until its HTTP health endpoint answers and it has loaded its plugins
// (the policy manager has started). If the agent exits during start-up
// (unknown plugin, plugin name mismatch, SetConfig error ...) it returns the
// handle (for its logs) and an error wrapping ErrAutoscalerExited. Close
// stops every agent.
func (c *Cloud) StartAutoscaler(ctx context.Context, spec AutoscalerSpec) (*Autoscaler, error) {
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
	if spec.EvaluationInterval <= 0 {
		spec.EvaluationInterval = 5 * time.Second
	}
	if spec.Cooldown <= 0 {
		spec.Cooldown = 10 * time.Second
	}
	if spec.LogLevel == "" {
		spec.LogLevel = "DEBUG"
	}

	nomadAddr := c.NomadAddr()
	if spec.NomadViaProxy {
		if c.NomadProxyAddr() == "" {
			return nil, errors.New("localcloud: start autoscaler: NomadViaProxy, but the Nomad proxy is not running")
		}
		nomadAddr = c.NomadProxyAddr()
		spec.ExtraHCL = replaceAddr(spec.ExtraHCL, c.NomadAddr(), nomadAddr)
	}

	return c.launchAgent(ctx, spec.Bin, spec.Env, spec.Policies, func(dir, policyDir string, port int) (string, []string, error) {
		cfgPath := filepath.Join(dir, "agent.hcl")
		if err := os.WriteFile(cfgPath, []byte(agentHCL(spec, nomadAddr, policyDir, port)), 0o644); err != nil {
			return "", nil, fmt.Errorf("localcloud: write autoscaler config: %w", err)
		}
		return cfgPath, []string{"agent", "-config", cfgPath}, nil
	})
}

// agentArgs writes the agent's configuration for a start on the given HTTP
// port and returns its path and the agent's command-line arguments.
type agentArgs func(dir, policyDir string, port int) (cfgPath string, args []string, err error)

// launchAgent starts one autoscaler agent: a directory of its own with the
// policies written into its policy dir, then up to three attempts on a free
// port each (another process may take the port between the probe and the
// agent's bind), waiting until the agent's HTTP health endpoint answers and
// its policy manager has started (its plugins are loaded and configured). If
// the agent exits during start-up it returns the handle (for its logs) and
// an error wrapping ErrAutoscalerExited.
func (c *Cloud) launchAgent(ctx context.Context, bin string, env []string, policies map[string]string, prepare agentArgs) (*Autoscaler, error) {
	c.mu.Lock()
	n := len(c.autoscalers) + 1
	c.mu.Unlock()
	dir := filepath.Join(c.cfg.WorkDir, fmt.Sprintf("autoscaler-%d", n))
	policyDir := filepath.Join(dir, "policies")
	if err := os.MkdirAll(policyDir, 0o755); err != nil {
		return nil, fmt.Errorf("localcloud: create autoscaler policy dir: %w", err)
	}
	for name, content := range policies {
		if name != filepath.Base(name) {
			return nil, fmt.Errorf("localcloud: policy file name %q must not contain a path", name)
		}
		if err := os.WriteFile(filepath.Join(policyDir, name), []byte(content), 0o644); err != nil {
			return nil, fmt.Errorf("localcloud: write policy %s: %w", name, err)
		}
	}
	logPath := filepath.Join(c.logsDir, fmt.Sprintf("autoscaler-%d.log", n))

	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cfgPath, args, err := prepare(dir, policyDir, port)
		if err != nil {
			return nil, err
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
		p, err := startProcess(fmt.Sprintf("nomad-autoscaler-%d", n), bin, args, dir, logPath, c.autoscalerEnv(env))
		if err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("localcloud: %w", err)
		}
		// On stop the agent is signalled alone first: it shuts its plugins
		// down, which removes their sockets (/tmp/pluginNNNN); killing
		// the whole tree at once would leave them behind.
		p.rootFirst = agentStopFirst
		a.proc = p
		c.autoscalers = append(c.autoscalers, a)
		c.started = append(c.started, p.pid())
		c.mu.Unlock()

		err = waitHTTP(ctx, a.addr+"/v1/health", p, 60*time.Second)
		if err == nil {
			// The agent loads its plugins (SetConfig included) after the HTTP
			// server starts and before the policy manager logs its sources.
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

// replaceAddr replaces every occurrence of the address from (a URL ending in
// a port) in s by to, but not where from is the start of a longer port.
func replaceAddr(s, from, to string) string {
	re := regexp.MustCompile(regexp.QuoteMeta(from) + `([^0-9]|$)`)
	return re.ReplaceAllString(s, strings.ReplaceAll(to, "$", "$$")+"${1}")
}

// Addr returns the agent's HTTP address (http://127.0.0.1:<port>).
func (a *Autoscaler) Addr() string { return a.addr }

// PID returns the agent's process ID.
func (a *Autoscaler) PID() int { return a.proc.pid() }

// ConfigPath returns the agent configuration file.
func (a *Autoscaler) ConfigPath() string { return a.cfgPath }

// PolicyDir returns the agent's policy directory.
func (a *Autoscaler) PolicyDir() string { return a.policyDir }

// LogPath returns the file that holds the agent's output.
func (a *Autoscaler) LogPath() string { return a.proc.logPath }

// Logs returns the agent's output so far.
func (a *Autoscaler) Logs() string {
	b, _ := os.ReadFile(a.proc.logPath)
	return string(b)
}

// Exited reports whether the agent process has exited.
func (a *Autoscaler) Exited() bool { return a.proc.exited() }

// ExitErr returns the agent's exit status once it has exited (nil while it
// runs or if it exited 0).
func (a *Autoscaler) ExitErr() error { return a.proc.exitErr() }

// WaitLog waits until the agent's output contains substr and returns the
// first line that does.
func (a *Autoscaler) WaitLog(ctx context.Context, substr string) (string, error) {
	return a.waitLine(ctx, substr, func(line string) bool { return strings.Contains(line, substr) })
}

// WaitLogRegexp waits until a line of the agent's output matches re and
// returns that line.
func (a *Autoscaler) WaitLogRegexp(ctx context.Context, re *regexp.Regexp) (string, error) {
	return a.waitLine(ctx, re.String(), re.MatchString)
}

func (a *Autoscaler) waitLine(ctx context.Context, what string, match func(string) bool) (string, error) {
	for {
		exited := a.proc.exited() // read before the log: the log is complete then
		for _, line := range strings.Split(a.Logs(), "\n") {
			if match(line) {
				return line, nil
			}
		}
		if exited {
			return "", fmt.Errorf("localcloud: wait for %q in the autoscaler log: %w (%v)", what, ErrAutoscalerExited, a.proc.exitErr())
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("localcloud: wait for %q in the autoscaler log: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// agentStopFirst is how long Stop lets the agent stop its plugins before
// the rest of its process tree is stopped.
const agentStopFirst = 3 * time.Second

// Stop stops the agent and its plugin processes (idempotent).
func (a *Autoscaler) Stop() error {
	return a.proc.stop(10 * time.Second)
}

// SpotfleetTargetHCL is the agent's target block for this project's
// target-spotfleet plugin, pointed at the cloud's moto with its test
// credentials. The block is named "spotfleet", as policies refer to it.
func (c *Cloud) SpotfleetTargetHCL() string {
	return fmt.Sprintf(`
target "spotfleet" {
  driver = "target-spotfleet"
  config = {
    aws_region            = %q
    aws_endpoint          = %q
    aws_access_key_id     = "test"
    aws_secret_access_key = "test"
  }
}
`, DefaultRegion, c.motoURL)
}
