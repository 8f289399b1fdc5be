// Command demo runs the product's main job on the local cloud, unattended:
// a diversified Spot Fleet of Nomad client nodes (moto + real Nomad agents),
// the real Nomad Autoscaler agent with this project's three plugins
// (apm-node, strategy-cpu-target, target-spotfleet) and a CPU load that
// steps up and then down. It prints a timeline of the load, the strategy's
// decisions, the fleet's scale-outs and drained scale-ins and the nodes
// joining and leaving, then checks that the fleet grew and shrank back with
// no allocation lost, and exits non-zero with the reason if not.
//
// Run it with `make demo` (which builds the plugins and tools first) or
// `go run ./e2e/demo` from the repository. It talks to 127.0.0.1 only.
//
// The same binary is the load: started as `demo burn -share S`, it keeps
// one core busy for the share S of every 100 ms.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// hardCap bounds the whole demo, start-up and shutdown aside.
const hardCap = 8 * time.Minute

func main() {
	if len(os.Args) > 1 && os.Args[1] == burnCommand {
		os.Exit(runBurner(os.Args[2:]))
	}
	var opts options
	flag.BoolVar(&opts.keep, "keep", false, "keep the work directory (logs of every agent) instead of removing it")
	flag.BoolVar(&opts.verbose, "v", false, "print the local cloud's own diagnostics to stderr")
	flag.Parse()

	// SIGINT/SIGTERM cancel the demo; the deferred cleanup in run then
	// stops every process it started. Further signals are ignored until
	// the cleanup is done, so a second Ctrl-C cannot leave orphans.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, opts)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo FAILED: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo passed")
}

// options are the demo's command-line settings.
type options struct {
	keep    bool
	verbose bool
}

// errTimeCap is the cause of the demo's context when hardCap passes.
var errTimeCap = fmt.Errorf("time cap of %s reached", hardCap)

// run creates the work directory and runs the demo in it, removing it
// afterwards unless opts.keep.
func run(parent context.Context, opts options) (err error) {
	workDir, err := os.MkdirTemp("", "nomad-spotfleet-demo-")
	if err != nil {
		return fmt.Errorf("create the work directory: %w", err)
	}
	defer func() {
		if opts.keep {
			fmt.Printf("work directory kept: %s\n", workDir)
			return
		}
		if rerr := os.RemoveAll(workDir); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove the work directory: %w", rerr))
		}
	}()

	ctx, cancel := context.WithTimeoutCause(parent, hardCap, errTimeCap)
	defer cancel()
	d := &demo{opts: opts, workDir: workDir}
	err = d.run(ctx)
	if err != nil && parent.Err() != nil {
		err = fmt.Errorf("interrupted: %w", err)
	}
	return err
}
