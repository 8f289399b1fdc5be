package localcloud

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// ClientOptions configures one Nomad client agent. Empty fields take the
// cloud's defaults (Config.Client, then the package defaults).
type ClientOptions struct {
	// InstanceType goes to meta.ec2_instance_type (the reconciler sets it
	// from moto).
	InstanceType string
	// NodeClass is the client's node_class; default "spot".
	NodeClass string
	// Datacenter is the client's datacenter; default "dc1".
	Datacenter string
	// CPUTotalCompute is the client's cpu_total_compute in MHz; default 2000.
	CPUTotalCompute int
	// Meta holds extra client meta (merged over the defaults'; the instance
	// ID, instance type and node_dir keys are always set by the cloud).
	Meta map[string]string
	// ExtraHCL is appended to the client's agent configuration.
	ExtraHCL string
}

// withDefaults fills the empty fields of o from d.
func (o ClientOptions) withDefaults(d ClientOptions) ClientOptions {
	if o.InstanceType == "" {
		o.InstanceType = d.InstanceType
	}
	if o.NodeClass == "" {
		o.NodeClass = d.NodeClass
	}
	if o.Datacenter == "" {
		o.Datacenter = d.Datacenter
	}
	if o.CPUTotalCompute == 0 {
		o.CPUTotalCompute = d.CPUTotalCompute
	}
	meta := maps.Clone(d.Meta)
	if meta == nil {
		meta = map[string]string{}
	}
	maps.Copy(meta, o.Meta)
	o.Meta = meta
	if o.ExtraHCL == "" {
		o.ExtraHCL = d.ExtraHCL
	}
	return o
}

// client is one running Nomad client agent, standing in for one instance.
type client struct {
	instanceID string
	opts       ClientOptions
	proc       *process
	dir        string // everything of this client: config, data dir, node dir
	nodeDir    string // meta.node_dir: the node's own directory (see NodeDir)
	link       string // short symlink to the data dir (see startClient)
	cgroup     string // the client's cgroup_parent
	httpPort   int
	managed    bool // started by the reconciler, which may also stop it
	stopping   bool
	stopDone   chan struct{} // closed when a stop has finished
	// stopErr is set when a stop left processes running: the client is
	// kept (Clients lists it) and later stops return this error.
	stopErr error
}

var clientSeq atomic.Int64

var instanceIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// clientHCL renders a client agent's configuration.
func clientHCL(cl *client, dataDir, serverRPC, logLevel string, ports []int) string {
	o := cl.opts
	meta := map[string]string{}
	maps.Copy(meta, o.Meta)
	meta[MetaInstanceID] = cl.instanceID
	meta[MetaInstanceType] = o.InstanceType
	meta[MetaNodeDir] = cl.nodeDir
	keys := slices.Sorted(maps.Keys(meta))
	var mb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&mb, "    %q = %q\n", k, meta[k])
	}
	return fmt.Sprintf(`# Nomad client of the local cloud for instance %[1]s (generated).
name                 = %[1]q
datacenter           = %[2]q
data_dir             = %[3]q
bind_addr            = "127.0.0.1"
log_level            = %[4]q
disable_update_check = true

ports {
  http = %[5]d
  rpc  = %[6]d
  serf = %[7]d
}

advertise {
  http = "127.0.0.1"
  rpc  = "127.0.0.1"
  serf = "127.0.0.1"
}

server {
  enabled = false
}

client {
  enabled           = true
  servers           = [%[8]q]
  node_class        = %[9]q
  cpu_total_compute = %[10]d
  network_interface = "lo"
  cgroup_parent     = %[11]q

  meta {
%[12]s  }

  # The cloud fingerprinters would call the instance metadata IP.
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}

plugin "raw_exec" {
  config {
    enabled = true
  }
}

consul {
  auto_advertise   = false
  server_auto_join = false
  client_auto_join = false
}

vault {
  enabled = false
}

%[13]s
`, cl.instanceID, o.Datacenter, dataDir, logLevel, ports[0], ports[1], ports[2],
		serverRPC, o.NodeClass, o.CPUTotalCompute, cl.cgroup, mb.String(), o.ExtraHCL)
}

// StartClient starts a Nomad client agent standing in for instanceID (node
// name = instance ID, meta.ec2_instance_id = instance ID, meta.node_dir =
// NodeDir(instanceID)). It returns once the process runs; use WaitNodesReady
// or WaitNodeStatus to wait for the node. The reconciler never stops clients
// started this way.
func (c *Cloud) StartClient(ctx context.Context, instanceID string, opts ClientOptions) error {
	return c.startClient(ctx, instanceID, opts, false)
}

func (c *Cloud) startClient(_ context.Context, instanceID string, opts ClientOptions, managed bool) error {
	if !instanceIDRe.MatchString(instanceID) {
		return fmt.Errorf("localcloud: start client: invalid instance ID %q", instanceID)
	}
	if c.server == nil {
		return errors.New("localcloud: start client: the Nomad server is not running")
	}
	cl := &client{
		instanceID: instanceID,
		opts:       opts.withDefaults(c.cfg.Client),
		dir:        filepath.Join(c.cfg.WorkDir, "clients", instanceID),
		nodeDir:    filepath.Join(c.cfg.WorkDir, "clients", instanceID, "node"),
		cgroup:     fmt.Sprintf("/localcloud-%d-%s", os.Getpid(), instanceID),
		managed:    managed,
		stopDone:   make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return fmt.Errorf("localcloud: start client %s: the cloud is closed", instanceID)
	}
	if _, ok := c.clients[instanceID]; ok {
		c.mu.Unlock()
		return fmt.Errorf("localcloud: start client %s: already running", instanceID)
	}
	c.clients[instanceID] = cl // reserve the slot while starting
	c.mu.Unlock()

	fail := func(err error) error {
		_ = removeDataDir(cl.dir) // nothing of a client that never ran stays
		c.mu.Lock()
		delete(c.clients, instanceID)
		c.mu.Unlock()
		return fmt.Errorf("localcloud: start client %s: %w", instanceID, err)
	}
	ports, err := freePorts(3)
	if err != nil {
		return fail(err)
	}
	cl.httpPort = ports[0]
	dataDir := filepath.Join(cl.dir, "data")
	for _, d := range []string{dataDir, cl.nodeDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
	}
	// Nomad puts a unix socket (the task API) in every task's secrets dir,
	// and unix socket paths are limited to 107 bytes: below a test's temp dir
	// they are too long. So the agent gets a short symlink as data_dir.
	cl.link = filepath.Join(os.TempDir(), fmt.Sprintf("lc%d-%d", os.Getpid(), clientSeq.Add(1)))
	_ = os.Remove(cl.link)
	if err := os.Symlink(dataDir, cl.link); err != nil {
		return fail(fmt.Errorf("link data dir: %w", err))
	}
	cfgPath := filepath.Join(cl.dir, "client.hcl")
	hcl := clientHCL(cl, cl.link, c.NomadRPCAddr(), c.cfg.NomadLogLevel, ports)
	if err := os.WriteFile(cfgPath, []byte(hcl), 0o644); err != nil {
		return fail(err)
	}
	p, err := startProcess("nomad-client-"+instanceID, c.cfg.NomadBin, []string{"agent", "-config", cfgPath},
		cl.dir, filepath.Join(c.logsDir, "client-"+instanceID+".log"), nomadEnv())
	if err != nil {
		_ = os.Remove(cl.link)
		_ = removeDataDir(cl.dir)
		return fail(err)
	}
	c.track(p)
	c.mu.Lock()
	cl.proc = p
	closed := c.closed
	c.mu.Unlock()
	if closed { // Close ran meanwhile and did not see this client
		_ = c.stopClient(instanceID, "cloud closed during start")
		return fmt.Errorf("localcloud: start client %s: the cloud is closed", instanceID)
	}
	c.record(Event{Kind: EventClientStarted, InstanceID: instanceID,
		Message: fmt.Sprintf("pid=%d type=%s class=%s http=127.0.0.1:%d", p.pid(), cl.opts.InstanceType, cl.opts.NodeClass, cl.httpPort)})
	return nil
}

// StopClient stops the client agent of instanceID with its whole process tree
// (agent, logmon, executors, tasks), unmounts what it mounted below its data
// dir, removes the dir and its cgroups. Stopping an unknown or already
// stopped client is not an error. A client whose processes would not stop
// is not forgotten: Clients and ClientPID still list it, an
// EventClientFailed says so, and every later stop returns the error.
func (c *Cloud) StopClient(instanceID string) error {
	return c.stopClient(instanceID, "stopped")
}

func (c *Cloud) stopClient(instanceID, reason string) error {
	c.mu.Lock()
	cl, ok := c.clients[instanceID]
	if !ok || cl.proc == nil {
		c.mu.Unlock()
		return nil
	}
	if cl.stopErr != nil { // its processes would not stop: reported already
		err := cl.stopErr
		c.mu.Unlock()
		return err
	}
	if cl.stopping { // another caller is stopping it: wait for that
		done := cl.stopDone
		c.mu.Unlock()
		<-done
		return nil
	}
	cl.stopping = true
	c.mu.Unlock()
	defer close(cl.stopDone)

	start := time.Now()
	var errs []error
	procErr := cl.proc.stop(5 * time.Second)
	if procErr != nil {
		errs = append(errs, procErr)
	}
	_ = os.Remove(cl.link)
	if err := removeDataDir(cl.dir); err != nil {
		errs = append(errs, err)
	}
	removeCgroups(cl.cgroup)

	if procErr != nil {
		// Some of its processes still run: keep the client listed
		// (Clients, ClientPID) rather than forget it, and say so.
		err := fmt.Errorf("localcloud: stop client %s: %w", instanceID, errors.Join(errs...))
		c.mu.Lock()
		cl.stopping, cl.stopErr = false, err
		c.mu.Unlock()
		c.record(Event{Kind: EventClientFailed, InstanceID: instanceID,
			Message: fmt.Sprintf("%s: its client agent (pid=%d) did not stop: %v", reason, cl.proc.pid(), procErr)})
		return err
	}
	c.mu.Lock()
	delete(c.clients, instanceID)
	c.mu.Unlock()
	c.record(Event{Kind: EventClientStopped, InstanceID: instanceID,
		Message: fmt.Sprintf("%s (pid=%d, took %s)", reason, cl.proc.pid(), time.Since(start).Round(time.Millisecond))})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("localcloud: stop client %s: %w", instanceID, err)
	}
	return nil
}

// Clients returns the instance IDs that currently have a client agent.
func (c *Cloud) Clients() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, 0, len(c.clients))
	for id, cl := range c.clients {
		if cl.proc != nil && !cl.stopping {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// ClientPID returns the PID of instanceID's client agent, 0 if none.
func (c *Cloud) ClientPID(instanceID string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[instanceID]; ok && cl.proc != nil {
		return cl.proc.pid()
	}
	return 0
}

// ClientAddr returns the HTTP address of instanceID's client agent.
func (c *Cloud) ClientAddr(instanceID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[instanceID]; ok {
		return fmt.Sprintf("http://127.0.0.1:%d", cl.httpPort)
	}
	return ""
}

// NodeDir returns the directory that belongs to instanceID's client (its
// meta.node_dir), "" while the instance has no client. It is where the
// instance's "disk" is for things installed on it from outside the agent:
// a playbook the AWX stand-in runs for the node writes there (monitoring.yml
// writes node_dir/monitoring-installed), and the node's raw_exec tasks,
// which run on this host, can read it. It lives in the client's folder
// (WorkDir/clients/<instance>/node), created with the client and removed
// with it when the client stops (the instance is terminated or stopped).
func (c *Cloud) NodeDir(instanceID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[instanceID]; ok && cl.proc != nil && !cl.stopping {
		return cl.nodeDir
	}
	return ""
}
