// Package localcloud runs a "local cloud" on loopback for end-to-end tests and
// the demo: moto_server as the EC2 and SQS API, a single Nomad server, one
// real Nomad client agent per running Spot Fleet instance (started and
// stopped by a reconciler that also emulates what moto lacks: maintain refill
// and spot interruption warnings), and the real Nomad Autoscaler agent.
//
// Nothing here talks to anything but 127.0.0.1. Every process is started by
// this package, tracked by PID and stopped with its whole process tree by
// Close. Direct children die with the owning process (Pdeathsig); whatever a
// process that died without Close left behind (Nomad's logmon, executors,
// tasks, mounts, cgroups) is swept by the next Start.
//
// A client agent gets a short symlink in the system temp dir as data_dir
// (unix socket paths below a test's temp dir are too long for Nomad's task
// API socket) and its own cgroup_parent; all its files stay in WorkDir.
//
// # What the local cloud emulates
//
// moto stores fleets and instances but does nothing by itself. On top of it:
//
//   - Maintain refill (Config.RefillDelay, SetRefillDelay at run time): AWS
//     replaces the lost capacity of a maintain fleet on its own, within a
//     minute or two. The reconciler launches the missing instances once a
//     maintain fleet has had fewer running instances than its target for the
//     delay (stopped instances do not count as running). A deliberate
//     scale-in (target lowered, then those instances terminated) is no loss.
//   - No refill (RefillDisabled): AWS has not replaced the loss (yet), or the
//     fleet is one AWS never refills (type request); the fleet stays below
//     its target until someone raises the target again.
//   - Capacity shortage (SetCapacityLimit, FleetSpec.CapacityLimit): the
//     pool has no spot capacity (InsufficientInstanceCapacity): at most n
//     instances run, the target stays where it was, refill stops at n.
//   - Spot interruption (Interrupt, InterruptWith): the two-minute warning
//     (scaled down in tests), then termination, or a stop for the "stop"
//     interruption behaviour, at the end of the notice.
//   - Rebalance recommendation (Rebalance): only the message; EC2 does
//     nothing to the instance.
//   - Loss without warning (TerminateInstance) and stop (StopInstance).
//   - State-change notifications (on unless Config.NoStateChangeEvents):
//     what an EventBridge rule for "EC2 Instance State-change Notification"
//     delivers, for every fleet instance (below).
//   - Faults of the Nomad API (FailNomad, on NomadProxyAddr).
//   - User-data's provisioning callback (Config.BootCallback): once a new
//     instance's node is ready, the reconciler POSTs AWX's callback for it,
//     with the instance's private IP as host.
//
// Every client agent gets meta.node_dir, a directory of its own (NodeDir)
// that stands for the instance's disk: playbooks write there, the node's
// raw_exec tasks read it, and it goes with the client.
//
// All messages go to one SQS queue (QueueURL), like the documented setup
// with one EventBridge rule per event type targeting one queue; SendMessage
// adds raw ones (malformed, foreign, duplicated).
//
// The modes compose: an interrupted or lost instance of a maintain fleet is
// refilled after the refill delay, unless refill is disabled, and only up to
// a capacity limit; an instance stopped by an interruption stays listed in
// its fleet and in moto's FulfilledCapacity, its client agent stops, and
// refill launches a replacement for it; a capacity limit's terminations get
// state-change notifications like any other (none for an instance it
// terminates at launch, which EC2 would never have started).
//
// # State-change notifications
//
// With the documented EventBridge rule, AWS puts an "EC2 Instance
// State-change Notification" (detail {"instance-id", "state"}) into the queue
// for every transition of an instance. moto emits nothing, so the local cloud
// sends them for every fleet instance:
//
//   - "running" when the reconciler first sees the instance running and keeps
//     it, in the pass that starts its client agent (at most about one
//     Config.ReconcileInterval after the launch); not for an instance that a
//     capacity limit terminates at launch, which gets no message at all;
//   - "shutting-down" then "terminated", back to back, when it is terminated,
//     by anyone;
//   - "stopping" then "stopped", back to back, when it is stopped (moto has
//     no stopping state: it stops at once).
//
// Each state is sent at most once per instance, and never after a later
// state of the lifecycle running < stopping < stopped < shutting-down <
// terminated (so a stale observation cannot send "running" after
// "terminated", and a restarted instance gets no second "running").
// Terminations and stops by the local cloud itself (TerminateInstance,
// StopInstance, the end of an interruption's notice) queue their messages
// before they return (with "running" first if the reconciler had not sent it
// yet); the reconciler sees every other transition (TerminateInstances or
// StopInstances through the EC2 API, a capacity limit's terminations) in its
// next pass, within one Config.ReconcileInterval. A send that fails is
// retried by the next pass. A terminated instance is forgotten a minute
// after moto stopped listing it in its fleet. Every message sent is an
// EventStateChange in the timeline, its Message starting with the state.
package localcloud

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Defaults used when a Config field is left zero.
const (
	DefaultRegion            = "us-east-1"
	DefaultAccountID         = "123456789012"
	DefaultDatacenter        = "dc1"
	DefaultNodeClass         = "spot"
	DefaultCPUTotalCompute   = 2000
	DefaultRefillDelay       = 10 * time.Second
	DefaultReconcileInterval = time.Second
	DefaultQueueName         = "localcloud-spot-interruptions"

	// RefillDisabled as Config.RefillDelay turns maintain refill off.
	RefillDisabled time.Duration = -1
)

// Config describes the local cloud to start.
type Config struct {
	// WorkDir holds every data dir, config file and log (tests pass t.TempDir()).
	WorkDir string
	// NomadBin is the Nomad v1.6.3 binary; default <repo>/bin/nomad.
	NomadBin string
	// MotoBin is the moto_server executable; default: found on PATH.
	MotoBin string
	// NomadLogLevel for the server and the clients; default "INFO".
	NomadLogLevel string

	// Reconcile starts the reconciler that keeps one client agent per running
	// fleet instance and emulates maintain refill.
	Reconcile bool
	// ReconcileInterval is the reconciler's poll period; default 1s.
	ReconcileInterval time.Duration
	// RefillDelay is how long a maintain fleet may stay below its target
	// before the reconciler launches replacements; zero means
	// DefaultRefillDelay, RefillDisabled (any negative value) turns it off.
	RefillDelay time.Duration

	// BootCallback, when set, makes every new fleet instance call AWX's
	// provisioning callback once its client agent's node is ready, as a
	// real instance's user-data would (see BootCallback; SetBootCallback
	// changes it at run time).
	BootCallback *BootCallback

	// Client holds the defaults for client agents (node class, datacenter,
	// cpu_total_compute, extra meta) used by the reconciler and by StartClient
	// for fields the caller leaves empty.
	Client ClientOptions

	// QueueName is the SQS queue that receives interruption warnings,
	// rebalance recommendations and state-change notifications.
	QueueName string
	// NoStateChangeEvents turns the "EC2 Instance State-change Notification"
	// messages off. They are on by default, as on AWS with an EventBridge
	// rule for them (see Cloud.TerminateInstance and the package doc).
	NoStateChangeEvents bool

	// OnEvent, when set, is called (synchronously, keep it quick) for every
	// recorded Event.
	OnEvent func(Event)
	// Logf, when set, receives the cloud's own diagnostics (t.Logf fits).
	Logf func(format string, args ...any)
}

// Cloud is a running local cloud. All methods are safe for concurrent use.
type Cloud struct {
	cfg     Config
	logsDir string

	moto     *process
	motoURL  string
	ec2      *ec2.Client
	sqs      *sqs.Client
	queueURL string
	queueARN string

	server *nomadServer

	mu           sync.Mutex
	clients      map[string]*client
	autoscalers  []*Autoscaler
	started      []int // PIDs of every process ever started
	events       []Event
	fleetTypes   map[string]string        // fleet ID -> request|maintain, from CreateFleet
	fleetClients map[string]ClientOptions // fleet ID -> client options, from CreateFleet
	capLimits    map[string]int           // fleet ID -> at most this many running instances
	rec          reconcilerState
	states       stateTracker  // state-change notifications sent
	refillDelay  atomic.Int64  // time.Duration; Config.RefillDelay, SetRefillDelay
	recKick      chan struct{} // wakes the reconciler for a pass now
	proxy        *nomadProxy
	bootCallback *BootCallback   // Config.BootCallback, SetBootCallback
	bootCalled   map[string]bool // instances whose boot callback has run
	closed       bool

	bgCtx    context.Context // cancelled by Close: reconciler, interruptions
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Start starts moto_server, the Nomad server and the fault-injecting proxy
// in front of its HTTP API (NomadProxyAddr), and the reconciler when
// cfg.Reconcile is set. On error everything already started is stopped.
func Start(ctx context.Context, cfg Config) (*Cloud, error) {
	if cfg.WorkDir == "" {
		return nil, errors.New("localcloud: Config.WorkDir is required")
	}
	wd, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("localcloud: resolve work dir: %w", err)
	}
	cfg.WorkDir = wd
	if cfg.NomadLogLevel == "" {
		cfg.NomadLogLevel = "INFO"
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.RefillDelay == 0 {
		cfg.RefillDelay = DefaultRefillDelay
	}
	if cfg.QueueName == "" {
		cfg.QueueName = DefaultQueueName
	}
	if err := cfg.BootCallback.validate(); err != nil {
		return nil, err
	}
	if cfg.BootCallback != nil {
		cb := *cfg.BootCallback
		cfg.BootCallback = &cb
	}
	cfg.Client = cfg.Client.withDefaults(ClientOptions{
		NodeClass:       DefaultNodeClass,
		Datacenter:      DefaultDatacenter,
		CPUTotalCompute: DefaultCPUTotalCompute,
	})

	c := &Cloud{
		cfg:          cfg,
		logsDir:      filepath.Join(wd, "logs"),
		clients:      map[string]*client{},
		fleetTypes:   map[string]string{},
		fleetClients: map[string]ClientOptions{},
		capLimits:    map[string]int{},
		rec:          newReconcilerState(),
		states:       newStateTracker(),
		recKick:      make(chan struct{}, 1),
		bootCallback: cfg.BootCallback,
		bootCalled:   map[string]bool{},
	}
	c.refillDelay.Store(int64(cfg.RefillDelay))
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	for _, d := range []string{c.logsDir, filepath.Join(wd, "clients")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("localcloud: create %s: %w", d, err)
		}
	}

	for _, msg := range sweepOrphans() {
		c.logf("%s", msg)
	}
	if err := c.startMoto(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.createQueue(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.startServer(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := c.startNomadProxy(); err != nil {
		_ = c.Close()
		return nil, err
	}
	if cfg.Reconcile {
		c.startReconciler()
	}
	return c, nil
}

// Close stops the reconciler, pending interruptions, every autoscaler, every
// client agent, the Nomad API proxy, the Nomad server and moto_server, each
// with its whole process tree. It is idempotent and safe after a partial
// Start.
func (c *Cloud) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.bgCancel()
		c.bgWG.Wait()

		var errs []error
		c.mu.Lock()
		autoscalers := append([]*Autoscaler(nil), c.autoscalers...)
		ids := make([]string, 0, len(c.clients))
		for id := range c.clients {
			ids = append(ids, id)
		}
		c.mu.Unlock()

		for _, a := range autoscalers {
			if err := a.Stop(); err != nil {
				errs = append(errs, err)
			}
		}
		var wg sync.WaitGroup
		var emu sync.Mutex
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.StopClient(id); err != nil {
					emu.Lock()
					errs = append(errs, err)
					emu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err := c.nomadProxyClose(); err != nil {
			errs = append(errs, err)
		}
		if c.server != nil {
			if err := c.server.proc.stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if c.moto != nil {
			if err := c.moto.stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// WorkDir returns the cloud's work directory.
func (c *Cloud) WorkDir() string { return c.cfg.WorkDir }

// StartedPIDs returns the PIDs of every process the cloud has started so far
// (moto, server, clients, autoscalers; stopped ones included).
func (c *Cloud) StartedPIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.started...)
}

// track records a started process's PID.
func (c *Cloud) track(p *process) {
	c.mu.Lock()
	c.started = append(c.started, p.pid())
	c.mu.Unlock()
}

// logf writes a diagnostic line when Config.Logf is set.
func (c *Cloud) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf("localcloud: "+format, args...)
	}
}

// isClosed reports whether Close has begun.
func (c *Cloud) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// goBackground runs fn in a goroutine that Close waits for, unless Close has
// begun (then it returns false). Close marks the cloud closed under mu before
// it waits, so no goroutine is added after the wait started.
func (c *Cloud) goBackground(fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.bgWG.Add(1)
	go func() {
		defer c.bgWG.Done()
		fn()
	}()
	return true
}
