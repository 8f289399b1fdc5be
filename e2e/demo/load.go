package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// The load job.
const (
	loadJobID   = "demo-burners"
	loadGroup   = "burn"
	burnCommand = "burn" // os.Args[1] that turns this binary into a burner
	burnPeriod  = 100 * time.Millisecond
)

// burnerJob is a service job of count raw_exec tasks on the pool's admitted
// nodes, each
// running this binary as a burner that uses share of one core. Updates
// have max_parallel = 0 (no deployment, so the count can change at any
// time) and migrations are quick, so drains finish well inside the target's
// drain deadline.
func burnerJob(exe string, count int, share float64) *api.Job {
	job := api.NewServiceJob(loadJobID, loadJobID, "global", 50)
	job.Datacenters = []string{localcloud.DefaultDatacenter}
	job.Constrain(api.NewConstraint("${node.class}", "=", nodeClass))
	// The admission gate (docs/hooks.md): only nodes whose launch hooks
	// succeeded take the pool's work.
	job.Constrain(api.NewConstraint("${meta."+gateKey+"}", "=", "admitted"))
	job.Update = &api.UpdateStrategy{MaxParallel: ptr(0)}
	tg := api.NewTaskGroup(loadGroup, count)
	tg.Migrate = &api.MigrateStrategy{MaxParallel: ptr(4), HealthCheck: ptr("task_states"),
		MinHealthyTime: ptr(time.Second), HealthyDeadline: ptr(time.Minute)}
	tg.EphemeralDisk = &api.EphemeralDisk{SizeMB: ptr(20)}
	task := api.NewTask("burn", "raw_exec").
		SetConfig("command", exe).
		SetConfig("args", []string{burnCommand,
			"-share", strconv.FormatFloat(share, 'f', 4, 64),
			"-parent", strconv.Itoa(os.Getpid())}).
		Require(&api.Resources{CPU: ptr(burnerAskMHz), MemoryMB: ptr(32)})
	task.KillTimeout = ptr(time.Second)
	task.LogConfig = &api.LogConfig{MaxFiles: ptr(1), MaxFileSizeMB: ptr(1)}
	tg.AddTask(task)
	job.AddTaskGroup(tg)
	return job
}

func ptr[T any](v T) *T { return &v }

// load changes the burner job's count.
type load struct {
	nc    *api.Client
	share float64 // of one core, per burner
}

// start registers the burner job with count tasks.
func (l load) start(ctx context.Context, count int) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find this binary for the burner tasks: %w", err)
	}
	q := (&api.WriteOptions{}).WithContext(ctx)
	if _, _, err := l.nc.Jobs().Register(burnerJob(exe, count, l.share), q); err != nil {
		return fmt.Errorf("register job %s: %w", loadJobID, err)
	}
	return nil
}

// scale sets the number of burner tasks.
func (l load) scale(ctx context.Context, count int) error {
	q := (&api.WriteOptions{}).WithContext(ctx)
	if _, _, err := l.nc.Jobs().Scale(loadJobID, loadGroup, &count, fmt.Sprintf("demo: %d burners", count), false, nil, q); err != nil {
		return fmt.Errorf("scale job %s to %d: %w", loadJobID, count, err)
	}
	return nil
}

// waitRunning waits until count burner allocations run.
func (l load) waitRunning(ctx context.Context, count int) error {
	last := 0
	for {
		allocs, _, err := l.nc.Jobs().Allocations(loadJobID, false, (&api.QueryOptions{}).WithContext(ctx))
		if err == nil {
			last = 0
			for _, a := range allocs {
				if a.ClientStatus == api.AllocClientStatusRunning {
					last++
				}
			}
			if last >= count {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %d running burners (have %d): %w", count, last, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// runBurner is the burner task: it keeps one core busy for share of every
// burnPeriod until it is killed or the demo process (-parent) is gone, so a
// demo killed without cleanup leaves no burner behind.
func runBurner(args []string) int {
	fs := flag.NewFlagSet(burnCommand, flag.ContinueOnError)
	share := fs.Float64("share", baseBurnShare, "share of one core to use, in (0, 1)")
	parent := fs.Int("parent", 0, "exit when this PID is gone (0: never)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *share <= 0 || *share >= 1 {
		fmt.Fprintf(os.Stderr, "burn: -share %v: want a value in (0, 1)\n", *share)
		return 2
	}
	runtime.GOMAXPROCS(1)
	busy := time.Duration(*share * float64(burnPeriod))
	lastCheck := time.Now()
	for {
		start := time.Now()
		for time.Since(start) < busy {
		}
		if *parent > 0 && start.Sub(lastCheck) >= time.Second {
			lastCheck = start
			if err := syscall.Kill(*parent, 0); errors.Is(err, syscall.ESRCH) {
				return 0
			}
		}
		time.Sleep(burnPeriod - time.Since(start))
	}
}
