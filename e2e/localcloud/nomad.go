package localcloud

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// modulePath is the product module whose bin/ holds the tool binaries.
const modulePath = "github.com/nomad-spotfleet/nomad-spotfleet"

// RepoRoot finds the product repository's root by walking up from the
// current directory to the go.mod of the product module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := strings.TrimSpace(sc.Text())
				if strings.HasPrefix(line, "module ") {
					if strings.TrimSpace(strings.TrimPrefix(line, "module ")) == modulePath {
						_ = f.Close()
						return dir, nil
					}
					break
				}
			}
			_ = f.Close()
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("find repo root: no go.mod of %s above the current directory", modulePath)
		}
		dir = parent
	}
}

// repoBinary resolves a binary: the configured path, else <repo>/bin/<name>.
// It fails with a hint when the file is missing.
func repoBinary(configured, name, hint string) (string, error) {
	p := configured
	if p == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		p = filepath.Join(root, "bin", name)
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() {
		return "", fmt.Errorf("localcloud: %s binary not found at %s (%s)", name, p, hint)
	}
	return p, nil
}

// nomadServer is the single Nomad server of the local cloud.
type nomadServer struct {
	proc     *process
	httpPort int
	rpcPort  int
	serfPort int
	dataDir  string
}

// NomadAddr returns the server's HTTP API address (http://127.0.0.1:<port>).
func (c *Cloud) NomadAddr() string {
	if c.server == nil {
		return ""
	}
	return fmt.Sprintf("http://127.0.0.1:%d", c.server.httpPort)
}

// NomadRPCAddr returns the server's RPC address (127.0.0.1:<port>), the one
// clients join.
func (c *Cloud) NomadRPCAddr() string {
	if c.server == nil {
		return ""
	}
	return fmt.Sprintf("127.0.0.1:%d", c.server.rpcPort)
}

// serverHCL renders the server's agent configuration.
func serverHCL(dataDir, logLevel string, httpPort, rpcPort, serfPort int) string {
	return fmt.Sprintf(`# Nomad server of the local cloud (generated).
name                 = "localcloud-server"
datacenter           = %q
data_dir             = %q
bind_addr            = "127.0.0.1"
log_level            = %q
disable_update_check = true

ports {
  http = %d
  rpc  = %d
  serf = %d
}

advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}

server {
  enabled           = true
  bootstrap_expect  = 1
  heartbeat_grace   = "5s"
  min_heartbeat_ttl = "5s"
}

client {
  enabled = false
}

consul {
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}

vault {
  enabled = false
}
`, DefaultDatacenter, dataDir, logLevel, httpPort, rpcPort, serfPort)
}

// startServer runs the Nomad server and waits until it has elected itself.
// It retries with new ports when the process dies (most likely a port race).
func (c *Cloud) startServer(ctx context.Context) error {
	bin, err := repoBinary(c.cfg.NomadBin, "nomad", "run `make tools`")
	if err != nil {
		return err
	}
	c.cfg.NomadBin = bin
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		ports, err := freePorts(3)
		if err != nil {
			return err
		}
		s := &nomadServer{httpPort: ports[0], rpcPort: ports[1], serfPort: ports[2],
			dataDir: filepath.Join(c.cfg.WorkDir, "server", fmt.Sprintf("data-%d", attempt))}
		if err := os.MkdirAll(s.dataDir, 0o755); err != nil {
			return fmt.Errorf("localcloud: create server data dir: %w", err)
		}
		cfgPath := filepath.Join(c.cfg.WorkDir, "server", "server.hcl")
		hcl := serverHCL(s.dataDir, c.cfg.NomadLogLevel, s.httpPort, s.rpcPort, s.serfPort)
		if err := os.WriteFile(cfgPath, []byte(hcl), 0o644); err != nil {
			return fmt.Errorf("localcloud: write server config: %w", err)
		}
		p, err := startProcess("nomad-server", bin, []string{"agent", "-config", cfgPath},
			c.cfg.WorkDir, filepath.Join(c.logsDir, "nomad-server.log"), nomadEnv())
		if err != nil {
			return fmt.Errorf("localcloud: %w", err)
		}
		c.track(p)
		s.proc = p
		c.server = s
		if err := c.waitLeader(ctx, 60*time.Second); err != nil {
			lastErr = fmt.Errorf("localcloud: wait for the Nomad server to elect a leader: %w", err)
			if p.exited() {
				_ = p.stop(time.Second)
				c.server = nil
				continue
			}
			return lastErr
		}
		c.logf("nomad server up at %s (rpc %s)", c.NomadAddr(), c.NomadRPCAddr())
		return nil
	}
	return lastErr
}

// nomadEnv is the environment for Nomad agents: the caller's, minus NOMAD_*
// variables that could point the agent elsewhere.
func nomadEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NOMAD_") || strings.HasPrefix(kv, "CONSUL_") || strings.HasPrefix(kv, "VAULT_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitLeader polls /v1/status/leader until it names a leader.
func (c *Cloud) waitLeader(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	url := c.NomadAddr() + "/v1/status/leader"
	for {
		leader, err := getLeader(ctx, hc, url)
		if err == nil && leader != "" {
			return nil
		}
		if c.server.proc.exited() {
			return fmt.Errorf("nomad server exited (%v); see %s", c.server.proc.exitErr(), c.server.proc.logPath)
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// getLeader returns the leader address reported by the server ("" if none).
func getLeader(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var leader string
	if err := json.Unmarshal(body, &leader); err != nil {
		return "", fmt.Errorf("decode leader: %w", err)
	}
	return leader, nil
}
