// Command demo runs the product's whole loop on the local cloud, unattended,
// as a day in miniature: a diversified Spot Fleet of gated Nomad client
// nodes (moto + real Nomad agents), the real Nomad Autoscaler agent with
// this project's three plugins (apm-node, strategy-cpu-target,
// target-spotfleet), an AWX stand-in running the real ansible-playbook for
// each new node's post-configuration, and a CPU load: a baseline, a rise
// (during which one node's playbook fails on purpose), a spike, a spot
// interruption at the spike's height, and the fall back to the minimum.
//
// It prints a timeline that reads like a story (load, CPU, the strategy's
// decisions and reasons, hook steps, the interruption's handling, nodes
// joining and leaving), a summary, and every promise checked against what
// happened: the interrupted node drained and replaced before the notice
// ended, every admitted node configured by its own successful job before
// its first allocation, the failed node's instance terminated and replaced
// with nothing placed on it, the fleet back at its minimum, no allocation
// lost, no instance leaked (EC2 checked). It draws CPU and node count over
// time with the events marked, as demo.png and demo.svg in demo-out/ at the
// repository's root (-out), and exits non-zero with the reasons if any
// promise did not hold.
//
// Run it with `make demo` (which builds the plugins and tools and installs
// ansible-playbook first) or `go run ./e2e/demo` from the repository. It
// talks to 127.0.0.1 only.
//
// The same binary is the load: started as `demo burn -share S`, it keeps
// one core busy for the share S of every 100 ms.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
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
	flag.StringVar(&opts.outDir, "out", "", "directory for the picture (demo.png, demo.svg) and the timeline (timeline.txt); default demo-out/ at the repository's root")
	flag.Parse()
	if opts.outDir == "" {
		root, err := localcloud.RepoRoot()
		if err != nil {
			fmt.Fprintf(os.Stderr, "demo: %v (give -out)\n", err)
			os.Exit(2)
		}
		opts.outDir = filepath.Join(root, "demo-out")
	}
	if err := os.MkdirAll(opts.outDir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "demo: -out %s: %v\n", opts.outDir, err)
		os.Exit(2)
	}
	tlPath := filepath.Join(opts.outDir, "timeline.txt")
	tlFile, err := os.Create(tlPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: -out %s: %v\n", opts.outDir, err)
		os.Exit(2)
	}
	opts.out = io.MultiWriter(os.Stdout, tlFile)

	// SIGINT/SIGTERM cancel the demo; the deferred cleanup in run then
	// stops every process it started. Further signals are ignored until
	// the cleanup is done, so a second Ctrl-C cannot leave orphans.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, opts)
	stop()
	if err != nil {
		fmt.Fprintf(io.MultiWriter(os.Stderr, tlFile), "\ndemo FAILED: %v\n", err)
		tlFile.Close()
		os.Exit(1)
	}
	fmt.Fprintf(opts.out, "\ndemo passed (timeline also in %s)\n", tlPath)
	if err := tlFile.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: write %s: %v\n", tlPath, err)
		os.Exit(1)
	}
}

// options are the demo's command-line settings.
type options struct {
	keep    bool
	verbose bool
	outDir  string
	out     io.Writer // the timeline: stdout and timeline.txt
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
