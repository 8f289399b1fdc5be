//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk/helper/scaleutils/nodeselector"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
	"github.com/nomad-spotfleet/nomad-spotfleet/internal/nomadnode"
	"github.com/nomad-spotfleet/nomad-spotfleet/target-spotfleet/hooks"
)

// aclNomad is a dev-mode Nomad agent (server and client) with ACLs enabled,
// started for one test on loopback ports.
type aclNomad struct {
	addr    string
	cmd     *exec.Cmd
	dataDir string
	cgroup  string
	logPath string
}

// aclFreePort returns a TCP and UDP port free on 127.0.0.1 now.
func aclFreePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		_ = u.Close()
		return port
	}
	t.Fatal("no free port on 127.0.0.1")
	return 0
}

// startACLNomad starts `nomad agent -dev` with acl { enabled = true } and
// registers its stop (the whole process tree, by PID, then the tmpfs mounts
// and cgroups its tasks left) with t.Cleanup.
func startACLNomad(t *testing.T) *aclNomad {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "nomad")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: run `make tools` (%v)", bin, err)
	}
	dir := t.TempDir()
	http, rpc, serf := aclFreePort(t), aclFreePort(t), aclFreePort(t)
	for rpc == http {
		rpc = aclFreePort(t)
	}
	for serf == http || serf == rpc {
		serf = aclFreePort(t)
	}
	n := &aclNomad{addr: fmt.Sprintf("http://127.0.0.1:%d", http), dataDir: filepath.Join(dir, "data"),
		cgroup: fmt.Sprintf("/acltest-%d", os.Getpid()), logPath: filepath.Join(dir, "nomad.log")}
	cfg := fmt.Sprintf(`
bind_addr = "127.0.0.1"
data_dir  = %q
log_level = "INFO"
ports {
  http = %d
  rpc  = %d
  serf = %d
}
acl {
  enabled = true
}
client {
  cgroup_parent = %q
  node_class    = "spot"
}
`, n.dataDir, http, rpc, serf, n.cgroup)
	cfgPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(n.logPath)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(bin, "agent", "-dev", "-config", cfgPath)
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The agent must not pick up a token or address of the environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOMAD_") {
			n.cmd.Env = append(n.cmd.Env, kv)
		}
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		n.stop(t)
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(n.logPath); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				t.Logf("last lines of the Nomad log:\n%s", strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})
	return n
}

// stop ends the agent's process tree by PID (SIGTERM, then SIGKILL after a
// grace period), unmounts what its tasks mounted below the data dir, and
// removes the cgroups they used.
func (n *aclNomad) stop(t *testing.T) {
	pids := localcloud.ProcessTree(n.cmd.Process.Pid)
	cgroups := aclCgroupsOf(pids)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	// Anything of the tree still there (tasks outlive their executor).
	for _, pid := range append(pids, localcloud.ProcessTree(n.cmd.Process.Pid)...) {
		if localcloud.Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	<-done
	for _, pid := range pids {
		for i := 0; i < 50 && localcloud.Alive(pid); i++ {
			time.Sleep(100 * time.Millisecond)
		}
		if localcloud.Alive(pid) {
			t.Errorf("process %d of the ACL test's Nomad is still running", pid)
		}
	}
	mounts := aclMountsUnder(n.dataDir)
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i]) > len(mounts[j]) })
	for _, mp := range mounts {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s: %v", mp, err)
		}
	}
	sort.Slice(cgroups, func(i, j int) bool { return len(cgroups[i]) > len(cgroups[j]) })
	for _, d := range cgroups {
		if strings.Contains(d, "/nomad/") || strings.Contains(d, n.cgroup) {
			_ = syscall.Rmdir(d)
		}
	}
	// The client's cgroup_parent (with cpuset's shared and reserved
	// children) in every hierarchy, deepest first.
	parents, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", n.cgroup))
	parents = append(parents, filepath.Join("/sys/fs/cgroup", n.cgroup))
	for _, p := range parents {
		var dirs []string
		_ = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				t.Errorf("removing the cgroup %s of the ACL test's Nomad: %v", dirs[i], err)
			}
		}
	}
}

// aclCgroupsOf lists the cgroup directories of the processes.
func aclCgroupsOf(pids []int) []string {
	set := map[string]bool{}
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 || parts[2] == "/" {
				continue
			}
			base := "/sys/fs/cgroup"
			if parts[1] != "" {
				base = filepath.Join(base, strings.TrimPrefix(parts[1], "name="))
			}
			set[filepath.Join(base, parts[2])] = true
		}
	}
	var out []string
	for d := range set {
		out = append(out, d)
	}
	return out
}

// aclMountsUnder lists the mount points below dir.
func aclMountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			out = append(out, fields[4])
		}
	}
	return out
}

// aclRefused says whether err is Nomad's answer to a token without the
// permission.
func aclRefused(err error) bool {
	var re api.UnexpectedResponseError
	if errors.As(err, &re) {
		return re.StatusCode() == http.StatusForbidden
	}
	return err != nil && strings.Contains(err.Error(), "403") && strings.Contains(err.Error(), "Permission denied")
}

// goInterfaceMethods returns the method names of the interface named name
// declared in a Go file of the repository.
func goInterfaceMethods(t *testing.T, rel, name string) []string {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(root, rel), nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok || ts.Name.Name != name {
			return true
		}
		it, ok := ts.Type.(*ast.InterfaceType)
		if !ok {
			t.Fatalf("%s: %s is not an interface", rel, name)
		}
		for _, m := range it.Methods.List {
			for _, id := range m.Names {
				out = append(out, id.Name)
			}
		}
		return false
	})
	if len(out) == 0 {
		t.Fatalf("%s declares no interface %s with methods", rel, name)
	}
	return out
}

// TestNomadACLPolicyAllowsWhatThePluginsCall proves
// agent-config/infra/nomad-acl-autoscaler.hcl on a real Nomad with ACLs: a
// token of that policy alone makes every Nomad call of target-spotfleet
// (internal/nomadnode, its hooks, the SDK's node selector), of apm-node and
// of the agent (policy source, Nomad target, nomad-apm), sees the
// allocations of every namespace, and is refused what the policy leaves out.
func TestNomadACLPolicyAllowsWhatThePluginsCall(t *testing.T) {
	n := startACLNomad(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Bootstrap ACLs (retried until the server has elected itself).
	anon, err := api.NewClient(&api.Config{Address: n.addr})
	if err != nil {
		t.Fatal(err)
	}
	var mgmtToken *api.ACLToken
	bootCtx, bootCancel := context.WithTimeout(ctx, 30*time.Second)
	defer bootCancel()
	for mgmtToken == nil {
		tok, _, err := anon.ACLTokens().Bootstrap((&api.WriteOptions{}).WithContext(bootCtx))
		if err == nil {
			mgmtToken = tok
			break
		}
		if bootCtx.Err() != nil {
			t.Fatalf("bootstrapping the ACLs of the test's Nomad: %v", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	mgmt, err := api.NewClient(&api.Config{Address: n.addr, SecretID: mgmtToken.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	wopts := func() *api.WriteOptions { return (&api.WriteOptions{}).WithContext(ctx) }
	qopts := func() *api.QueryOptions { return (&api.QueryOptions{}).WithContext(ctx) }

	// The policy as the README says to apply it, and a token of it alone.
	rules := readSample(t, "infra/nomad-acl-autoscaler.hcl")
	if _, err := mgmt.ACLPolicies().Upsert(&api.ACLPolicy{Name: "nomad-autoscaler", Description: "nomad-autoscaler", Rules: rules}, wopts()); err != nil {
		t.Fatalf("Nomad refuses the policy nomad-acl-autoscaler.hcl: %v", err)
	}
	tok, _, err := mgmt.ACLTokens().Create(&api.ACLToken{Name: "nomad-autoscaler", Type: "client", Policies: []string{"nomad-autoscaler"}}, wopts())
	if err != nil {
		t.Fatal(err)
	}
	tokenCfg := &api.Config{Address: n.addr, SecretID: tok.SecretID}
	client, err := api.NewClient(tokenCfg)
	if err != nil {
		t.Fatal(err)
	}

	// A workload: a job with a scaling block in the default namespace and
	// one in another namespace, both on the dev node.
	if _, err := mgmt.Namespaces().Register(&api.Namespace{Name: "batch"}, wopts()); err != nil {
		t.Fatal(err)
	}
	job := func(id, ns string) *api.Job {
		j := api.NewServiceJob(id, id, "global", 50)
		j.Namespace = &ns
		j.Datacenters = []string{"*"}
		tg := api.NewTaskGroup("app", 1)
		// The agent scales it with our APM and strategy: idle, so to min.
		tg.Scaling = &api.ScalingPolicy{Min: infraPtr(int64(1)), Max: infraPtr(int64(3)), Enabled: infraPtr(true),
			Policy: map[string]any{
				"evaluation_interval": "2s",
				"cooldown":            "2s",
				"check": []map[string]any{{"cpu": []map[string]any{{
					"source":       "apm-node",
					"query":        "workload_cpu node_class=spot",
					"query_window": "6s",
					"strategy":     []map[string]any{{"strategy-cpu-target": []map[string]any{{"target": "75"}}}},
				}}}},
			}}
		task := api.NewTask("sleep", "raw_exec")
		task.Config = map[string]any{"command": "/bin/sleep", "args": []string{"600"}}
		task.Resources = &api.Resources{CPU: infraPtr(20), MemoryMB: infraPtr(16)}
		tg.AddTask(task)
		j.AddTaskGroup(tg)
		j.Update = &api.UpdateStrategy{MaxParallel: infraPtr(0)}
		return j
	}
	for _, ns := range []string{"default", "batch"} {
		if _, _, err := mgmt.Jobs().Register(job("probe", ns), wopts()); err != nil {
			t.Fatalf("registering job probe in %s: %v", ns, err)
		}
	}
	var node *api.NodeListStub
	running := map[string]string{} // namespace -> alloc id
	for len(running) < 2 {
		if ctx.Err() != nil {
			t.Fatalf("the probe jobs did not run on the dev node: running %v", running)
		}
		time.Sleep(250 * time.Millisecond)
		nodes, _, err := mgmt.Nodes().List(qopts())
		if err != nil || len(nodes) != 1 || nodes[0].Status != api.NodeStatusReady {
			continue
		}
		node = nodes[0]
		q := qopts()
		q.Namespace = "*"
		allocs, _, err := mgmt.Allocations().List(q)
		if err != nil {
			continue
		}
		for _, a := range allocs {
			if a.ClientStatus == api.AllocClientStatusRunning {
				running[a.Namespace] = a.ID
			}
		}
	}

	ok := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s with the policy's token: %v", what, err)
		}
	}

	// target-spotfleet: every method of internal/nomadnode's API (its hooks
	// use a subset), in the order the plugin uses them, with this token.
	nodes, err := nomadnode.NewClient(tokenCfg)
	if err != nil {
		t.Fatal(err)
	}
	nomadnodeCalls := map[string]func() error{
		"ListNodes": func() error {
			l, err := nodes.ListNodes(ctx)
			if err == nil && len(l) != 1 {
				err = fmt.Errorf("listed %d nodes, want 1", len(l))
			}
			return err
		},
		"NodeInfo": func() error { _, err := nodes.NodeInfo(ctx, node.ID); return err },
		"NodeAllocations": func() error {
			allocs, err := nodes.NodeAllocations(ctx, node.ID)
			if err == nil && len(allocs) < 2 {
				err = fmt.Errorf("saw %d allocations on the node, want those of both namespaces (a busy node must not look empty)", len(allocs))
			}
			return err
		},
		"ApplyMeta": func() error {
			v := "admitted"
			return nodes.ApplyMeta(ctx, node.ID, map[string]*string{"spotfleet_admission": &v})
		},
		"SetEligibility": func() error {
			if err := nodes.SetEligibility(ctx, node.ID, false); err != nil {
				return err
			}
			return nodes.SetEligibility(ctx, node.ID, true)
		},
		"StartDrain": func() error {
			return nodes.StartDrain(ctx, node.ID, &api.DrainSpec{Deadline: time.Hour}, map[string]string{"drained_by": "nomad-autoscaler"})
		},
		"CancelDrain": func() error {
			return nodes.CancelDrain(ctx, node.ID, map[string]string{"drained_by": "nomad-autoscaler"})
		},
		"Purge": func() error { return nodes.Purge(ctx, node.ID) },
	}
	order := []string{"ListNodes", "NodeInfo", "NodeAllocations", "ApplyMeta", "SetEligibility", "StartDrain", "CancelDrain"}
	for i := range reflect.TypeFor[nomadnode.API]().NumMethod() {
		if name := reflect.TypeFor[nomadnode.API]().Method(i).Name; nomadnodeCalls[name] == nil {
			t.Errorf("nomadnode.API has %s, which this test does not call: add it here (and to the ACL policy if it needs more)", name)
		}
	}
	for i := range reflect.TypeFor[hooks.NomadAPI]().NumMethod() {
		if name := reflect.TypeFor[hooks.NomadAPI]().Method(i).Name; nomadnodeCalls[name] == nil {
			t.Errorf("hooks.NomadAPI has %s, which this test does not call", name)
		}
	}

	// apm-node: the calls of apm-node/plugin/nomad.go's nomadAPI, made the
	// way it makes them.
	stale := func() *api.QueryOptions { return (&api.QueryOptions{AllowStale: true}).WithContext(ctx) }
	apmCalls := map[string]func() error{
		"Nodes": func() error {
			q := stale()
			q.Params = map[string]string{"resources": "true"}
			_, _, err := client.Nodes().List(q)
			return err
		},
		"Node":      func() error { _, _, err := client.Nodes().Info(node.ID, stale()); return err },
		"HostStats": func() error { _, err := client.Nodes().Stats(node.ID, stale()); return err },
		"Allocations": func() error {
			q := stale()
			q.Namespace, q.Filter = "*", `ClientStatus == "running" or ClientStatus == "pending"`
			q.Params = map[string]string{"resources": "true", "task_states": "false"}
			allocs, _, err := client.Allocations().List(q)
			if err == nil && len(allocs) < 2 {
				err = fmt.Errorf("listed %d live allocations, want those of both namespaces", len(allocs))
			}
			return err
		},
		"AllocStats": func() error {
			for _, id := range running {
				if _, err := client.Allocations().Stats(&api.Allocation{ID: id}, stale()); err != nil {
					return err
				}
			}
			return nil
		},
		"BlockedEvaluations": func() error {
			q := stale()
			q.Namespace, q.Filter = "*", `Status == "blocked"`
			_, _, err := client.Evaluations().List(q)
			return err
		},
		"JobSummary": func() error {
			q := stale()
			q.Namespace = "batch"
			_, _, err := client.Jobs().Summary("probe", q)
			return err
		},
		"Job": func() error {
			q := stale()
			q.Namespace = "batch"
			_, _, err := client.Jobs().Info("probe", q)
			return err
		},
	}
	for _, name := range goInterfaceMethods(t, "apm-node/plugin/nomad.go", "nomadAPI") {
		if apmCalls[name] == nil {
			t.Errorf("apm-node's nomadAPI has %s, which this test does not call: add it here (and to the ACL policy if it needs more)", name)
		}
	}
	for _, name := range []string{"Nodes", "Node", "HostStats", "Allocations", "AllocStats", "BlockedEvaluations", "JobSummary", "Job"} {
		if call := apmCalls[name]; call != nil {
			ok("apm-node "+name, call())
		}
	}

	for _, name := range order[:3] {
		ok("nomadnode "+name, nomadnodeCalls[name]())
	}
	// The SDK's node selectors (node_selector_strategy) read nodes and their
	// allocations with the same token.
	for _, strategy := range []string{"least_busy", "empty", "empty_ignore_system"} {
		sel, err := nodeselector.NewSelector(map[string]string{"node_selector_strategy": strategy}, client, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		stubs, _, err := client.Nodes().List(qopts())
		ok("listing nodes for the selector", err)
		picked := sel.Select(stubs, 1)
		switch {
		case strategy == "least_busy" && len(picked) != 1:
			t.Errorf("node selector %s picked %d nodes with the policy's token, want 1", strategy, len(picked))
		case strategy != "least_busy" && len(picked) != 0:
			t.Errorf("node selector %s took the busy node for empty with the policy's token: it cannot see its allocations", strategy)
		}
	}

	// The agent: the Nomad policy source, the Nomad target's status and
	// scaling of a task group, nomad-apm's job queries.
	policies, _, err := client.Scaling().ListPolicies(qopts())
	ok("agent: listing scaling policies", err)
	if err == nil && len(policies) != 1 {
		t.Errorf("agent: listed %d scaling policies of the default namespace, want 1", len(policies))
	}
	for _, p := range policies {
		_, _, err := client.Scaling().GetPolicy(p.ID, qopts())
		ok("agent: reading scaling policy "+p.ID, err)
	}
	status, _, err := client.Jobs().ScaleStatus("probe", qopts())
	ok("agent: reading the job's scale status", err)
	if err == nil && status.TaskGroups["app"].Desired != 1 {
		t.Errorf("agent: the scale status says %+v, want the group app at 1", status.TaskGroups)
	}
	_, _, err = client.Jobs().Scale("probe", "app", infraPtr(2), "probe scaling with the autoscaler's token", false, nil, wopts())
	ok("agent: scaling the task group", err)
	if err == nil {
		j, _, err := mgmt.Jobs().Info("probe", qopts())
		if err != nil || *j.TaskGroups[0].Count != 2 {
			t.Errorf("the scale call did not change the count: %v %v", err, j)
		}
	}
	_, _, err = client.Jobs().Allocations("probe", false, qopts())
	ok("nomad-apm: listing the job's allocations", err)
	_, _, err = client.Jobs().Info("probe", qopts())
	ok("nomad-apm: reading the job", err)

	// The real agent with our apm-node and strategy-cpu-target and this
	// token alone: its policy source finds the job's policy, apm-node
	// measures the pool, the stock Nomad target scales the idle group from
	// 2 back to its min of 1.
	if t.Failed() {
		t.FailNow()
	}
	runAgentWithToken(ctx, t, n, tok.SecretID, func() (int, error) {
		j, _, err := mgmt.Jobs().Info("probe", qopts())
		if err != nil {
			return 0, err
		}
		return *j.TaskGroups[0].Count, nil
	})

	// The node writes last: meta, eligibility, drain and cancel, purge.
	for _, name := range order[3:] {
		ok("nomadnode "+name, nomadnodeCalls[name]())
	}
	// The dynamic meta arrived (the admission gate works with this token).
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := nodes.NodeInfo(ctx, node.ID)
		if err == nil && info.Meta["spotfleet_admission"] == "admitted" {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the dynamic meta set with the policy's token never reached the node: %v", err)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Outside the policy: refused.
	refusals := map[string]error{}
	_, _, err = client.Jobs().Register(job("intruder", "default"), wopts())
	refusals["registering a job"] = err
	_, _, err = client.Jobs().Deregister("probe", false, wopts())
	refusals["stopping a job"] = err
	_, err = client.Agent().Self()
	refusals["reading the agent's configuration"] = err
	_, _, err = client.ACLTokens().List(qopts())
	refusals["listing ACL tokens"] = err
	_, err = client.Namespaces().Register(&api.Namespace{Name: "mine"}, wopts())
	refusals["creating a namespace"] = err
	_, _, err = client.Variables().Create(&api.Variable{Path: "nomad/jobs/autoscaler", Items: api.VariableItems{"k": "v"}}, wopts())
	refusals["writing a Nomad variable"] = err
	_, err = client.Operator().RaftGetConfiguration(qopts())
	refusals["reading the Raft configuration"] = err
	for what, err := range refusals {
		if !aclRefused(err) {
			t.Errorf("%s with the policy's token: want 403 Permission denied, got %v", what, err)
		}
	}

	// Purge removes the node; last, since the node is gone after it.
	ok("nomadnode Purge", nomadnodeCalls["Purge"]())
}

func infraPtr[T any](v T) *T { return &v }

// runAgentWithToken runs bin/nomad-autoscaler with the plugins of plugins/
// against the ACL test's Nomad, authenticated by token, until count()
// reports the probe group scaled in to 1, and fails the test if that does
// not happen within a minute or the agent logged a refused call. The agent
// and its plugin processes are stopped by PID before it returns.
func runAgentWithToken(ctx context.Context, t *testing.T, n *aclNomad, token string, count func() (int, error)) {
	t.Helper()
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "nomad-autoscaler")
	for _, f := range []string{bin, filepath.Join(root, "plugins", "apm-node"), filepath.Join(root, "plugins", "strategy-cpu-target")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s is missing: run `make build tools` (%v)", f, err)
		}
	}
	dir := t.TempDir()
	policyDir := filepath.Join(dir, "policies")
	if err := os.Mkdir(policyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
log_level  = "DEBUG"
plugin_dir = %q
http {
  bind_address = "127.0.0.1"
  bind_port    = %d
}
nomad {
  address = %q
  token   = %q
}
policy {
  dir = %q
}
apm "apm-node" {
  driver = "apm-node"
  config = {
    sample_interval = "1s"
    node_warmup     = "1s"
  }
}
strategy "strategy-cpu-target" {
  driver = "strategy-cpu-target"
}
`, filepath.Join(root, "plugins"), aclFreePort(t), n.addr, token, policyDir)
	cfgPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin, "agent", "-config", cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOMAD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		pids := localcloud.ProcessTree(cmd.Process.Pid)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		for _, pid := range pids {
			for i := 0; i < 50 && localcloud.Alive(pid); i++ {
				time.Sleep(100 * time.Millisecond)
			}
			if localcloud.Alive(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Errorf("process %d of the autoscaler agent outlived its stop", pid)
			}
		}
	}
	defer stop()

	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		c, err := count()
		if err == nil && c == 1 {
			t.Logf("the agent scaled the idle group from 2 to 1 with the policy's token in %s", time.Since(start).Round(100*time.Millisecond))
			break
		}
		select {
		case <-exited:
			t.Fatalf("the autoscaler agent exited: %s", aclLogTail(logPath, 40))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the agent did not scale the idle group to 1 within a minute (count %d, %v):\n%s", c, err, aclLogTail(logPath, 60))
		}
		time.Sleep(500 * time.Millisecond)
	}
	stop()
	b, _ := os.ReadFile(logPath)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "Permission denied") || strings.Contains(line, "response code: 403") {
			t.Errorf("the agent or a plugin was refused a call with the policy's token: %s", line)
		}
	}
	if strings.Contains(string(b), token) {
		t.Error("the agent's log holds the Nomad token")
	}
}

// aclLogTail returns the last n lines of a file.
func aclLogTail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
