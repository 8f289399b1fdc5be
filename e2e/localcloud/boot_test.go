//go:build e2e

package localcloud_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// TestBootCallback: every new fleet instance POSTs AWX's provisioning
// callback once its node is ready, with its private IP from moto as host
// (the address a target plugin reads with DescribeInstances), retrying 5xx
// answers; a client restarted after a crash does not call again, and
// SetBootCallback(nil) stops the calls.
func TestBootCallback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	awx := startTestAWX(t, localcloud.AWXConfig{})
	awx.FailNext("/api/v2/job_templates/8/callback/", http.StatusServiceUnavailable, 2)

	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir: t.TempDir(), Reconcile: true, RefillDelay: localcloud.RefillDisabled, Logf: t.Logf,
		BootCallback: &localcloud.BootCallback{URL: awx.URL(), TemplateID: 8, HostConfigKey: "hck-123"},
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)

	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 2})
	if err != nil {
		t.Fatal(err)
	}
	insts := running(ctx, t, cloud, fleetID, 2)
	waitEvent(ctx, t, cloud, localcloud.EventBootCallback, 2)

	// What moto reports for the instances, read as the target reads them.
	out, err := cloud.EC2().DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: instanceIDs(insts)})
	if err != nil {
		t.Fatal(err)
	}
	ipOf := map[string]string{}
	dnsRe := regexp.MustCompile(`^ip-(\d+)-(\d+)-(\d+)-(\d+)\.ec2\.internal$`)
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			id, ip, dns := aws.ToString(in.InstanceId), aws.ToString(in.PrivateIpAddress), aws.ToString(in.PrivateDnsName)
			az := ""
			if in.Placement != nil {
				az = aws.ToString(in.Placement.AvailabilityZone)
			}
			t.Logf("moto: %s %s PrivateIpAddress=%q PrivateDnsName=%q Placement.AvailabilityZone=%q", id, in.InstanceType, ip, dns, az)
			m := dnsRe.FindStringSubmatch(dns)
			if ip == "" || m == nil || strings.Join(m[1:], ".") != ip || !strings.HasPrefix(az, localcloud.DefaultRegion) {
				t.Errorf("instance %s: PrivateIpAddress %q, PrivateDnsName %q, AZ %q", id, ip, dns, az)
			}
			ipOf[id] = ip
		}
	}
	for _, in := range insts {
		if in.PrivateIP != ipOf[in.ID] || in.PrivateDNSName == "" {
			t.Errorf("Instance %s: PrivateIP %q, PrivateDNSName %q; moto says %q", in.ID, in.PrivateIP, in.PrivateDNSName, ipOf[in.ID])
		}
	}

	// One callback job per instance, for its private IP.
	var hosts []string
	for _, j := range awx.Jobs() {
		if j.LaunchType != "callback" || j.TemplateID != 8 {
			t.Errorf("unexpected job %+v", j)
		}
		hosts = append(hosts, j.Limit)
	}
	slices.Sort(hosts)
	want := []string{ipOf[insts[0].ID], ipOf[insts[1].ID]}
	slices.Sort(want)
	if !slices.Equal(hosts, want) {
		t.Errorf("callback jobs for hosts %v, want the private IPs %v", hosts, want)
	}
	var faults, posts int
	for _, c := range awx.Calls() {
		if c.Path != "/api/v2/job_templates/8/callback/" || c.Method != http.MethodPost {
			continue
		}
		posts++
		if c.Fault {
			faults++
			continue
		}
		form, err := url.ParseQuery(c.Body)
		if err != nil || form.Get("host_config_key") != "hck-123" || !slices.Contains(want, form.Get("host")) {
			t.Errorf("callback body %q", c.Body)
		}
	}
	if faults != 2 || posts != 4 {
		t.Errorf("%d callback POSTs, %d answered by the fault; want 4 and 2 (retried)", posts, faults)
	}

	// Each callback came after its client started, and says what AWX answered.
	for _, in := range insts {
		var started, called time.Time
		for _, e := range cloud.Events() {
			if e.InstanceID != in.ID {
				continue
			}
			switch e.Kind {
			case localcloud.EventClientStarted:
				started = e.Time
			case localcloud.EventBootCallback:
				called = e.Time
				if !strings.Contains(e.Message, ": 201, job ") || !strings.Contains(e.Message, fmt.Sprintf("host=%q", ipOf[in.ID])) ||
					strings.Contains(e.Message, "hck-123") {
					t.Errorf("boot callback event of %s: %s", in.ID, e.Message)
				}
			}
		}
		if started.IsZero() || !called.After(started) {
			t.Errorf("%s: client started %v, callback %v", in.ID, started, called)
		}
		node, err := cloud.NodeByInstance(ctx, in.ID)
		if err != nil || node.Status != api.NodeStatusReady {
			t.Errorf("node of %s: %v", in.ID, err)
		}
	}

	// A crashed client is restarted by the reconciler without a new callback.
	crashed := insts[0].ID
	if err := syscall.Kill(cloud.ClientPID(crashed), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, cloud, localcloud.EventClientFailed, 1)
	if _, err := cloud.WaitNodeStatus(ctx, crashed, api.NodeStatusReady); err != nil {
		t.Fatal(err)
	}
	for countEvents(cloud, localcloud.EventClientStarted) < 3 && ctx.Err() == nil {
		time.Sleep(100 * time.Millisecond)
	}

	// Without a callback, a new instance calls nothing.
	if err := cloud.SetBootCallback(&localcloud.BootCallback{URL: "awx.example"}); err == nil {
		t.Error("SetBootCallback accepted a URL without a scheme")
	}
	if err := cloud.SetBootCallback(nil); err != nil {
		t.Fatal(err)
	}
	if err := cloud.SetTargetCapacity(ctx, fleetID, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := cloud.WaitNodesReady(ctx, 3); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if n := countEvents(cloud, localcloud.EventBootCallback); n != 2 {
		t.Errorf("%d boot callbacks, want 2 (none after the crash or with the callback removed)", n)
	}
	if n := len(awx.Jobs()); n != 2 {
		t.Errorf("%d AWX jobs, want 2", n)
	}
}

// TestBootCallbackGivesUpOnConnectionErrors: an AWX that cannot be reached
// is retried, then reported once in the timeline.
func TestBootCallbackGivesUpOnConnectionErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cloud, err := localcloud.Start(ctx, localcloud.Config{
		WorkDir: t.TempDir(), Reconcile: true, RefillDelay: localcloud.RefillDisabled, Logf: t.Logf,
		// Port 1 on loopback: connection refused.
		BootCallback: &localcloud.BootCallback{URL: "http://127.0.0.1:1", TemplateID: 8, HostConfigKey: "hck-123",
			Host: func(id string) string { return "host-of-" + id }},
	})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	fleetID, err := cloud.CreateFleet(ctx, localcloud.FleetSpec{TargetCapacity: 1})
	if err != nil {
		t.Fatal(err)
	}
	id := running(ctx, t, cloud, fleetID, 1)[0].ID
	e := waitEvent(ctx, t, cloud, localcloud.EventBootCallback, 1)
	if e.InstanceID != id || !strings.Contains(e.Message, `host="host-of-`+id+`"`) ||
		!strings.Contains(e.Message, "failed after 5 attempts") || !strings.Contains(e.Message, "connection refused") {
		t.Errorf("event: %s", e)
	}
}

// TestNodeDir: a client carries the extra static meta it is given and
// always its own node_dir; a playbook run by the AWX stand-in installs
// "monitoring" there and a raw_exec task on that node sees the file; the
// dir goes with the client.
func TestNodeDir(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatalf("ansible-playbook is not on PATH (%v): run `%s` (or make ansible)", err, localcloud.AnsibleInstallHint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	work := t.TempDir()
	cloud, err := localcloud.Start(ctx, localcloud.Config{WorkDir: work, Logf: t.Logf,
		Client: localcloud.ClientOptions{Meta: map[string]string{"team": "blue"}}})
	if err != nil {
		t.Fatal(err)
	}
	closeOnCleanup(t, cloud)
	const id = "i-0nodedir00000001"
	if err := cloud.StartClient(ctx, id, localcloud.ClientOptions{Meta: map[string]string{
		"spotfleet_admission": "pending", localcloud.MetaNodeDir: "/not/this/one",
	}}); err != nil {
		t.Fatal(err)
	}
	node, err := cloud.WaitNodeStatus(ctx, id, api.NodeStatusReady)
	if err != nil {
		t.Fatal(err)
	}
	dir := cloud.NodeDir(id)
	if want := filepath.Join(work, "clients", id, "node"); dir != want {
		t.Fatalf("NodeDir = %q, want %q", dir, want)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("node dir: %v", err)
	}
	for k, v := range map[string]string{"team": "blue", "spotfleet_admission": "pending",
		localcloud.MetaNodeDir: dir, localcloud.MetaInstanceID: id} {
		if node.Meta[k] != v {
			t.Errorf("meta.%s = %q, want %q (meta %v)", k, node.Meta[k], v, node.Meta)
		}
	}
	if cloud.NodeDir("i-unknown") != "" {
		t.Error("NodeDir of an instance without a client")
	}

	// AWX installs monitoring into the node's dir, as the launch hook does.
	awx := startTestAWX(t, localcloud.AWXConfig{RunPlaybook: true, WorkDir: t.TempDir(), PlaybookTimeout: time.Minute})
	body := fmt.Sprintf(`{"limit":%q,"extra_vars":{"instance_id":%q,"node_dir":%q}}`, id, id, node.Meta[localcloud.MetaNodeDir])
	code, m, raw := awxDo(t, awx, "POST", "/api/v2/job_templates/9/launch/", awxTestToken, "", body)
	if code != http.StatusCreated {
		t.Fatalf("launch: %d %s", code, raw)
	}
	j, err := awx.WaitJob(ctx, jobID(t, m))
	if err != nil || j.Status != localcloud.AWXSuccessful {
		t.Fatalf("monitoring job: %v %s %s\n%s", err, j.Status, j.Explanation, j.Stdout)
	}

	// A raw_exec task on that node reads it through ${meta.node_dir}.
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	job := api.NewBatchJob("see-monitoring", "see-monitoring", "global", 50)
	job.Datacenters = []string{localcloud.DefaultDatacenter}
	job.Constrain(api.NewConstraint("${node.unique.id}", "=", node.ID))
	task := api.NewTask("cat", "raw_exec").
		SetConfig("command", "/bin/sh").
		SetConfig("args", []string{"-c", `cat "$0/monitoring-installed"`, "${meta.node_dir}"}).
		Require(&api.Resources{CPU: aws.Int(50), MemoryMB: aws.Int(32)})
	tg := api.NewTaskGroup("cat", 1).AddTask(task)
	tg.RestartPolicy = &api.RestartPolicy{Attempts: aws.Int(0), Mode: aws.String("fail")}
	tg.ReschedulePolicy = &api.ReschedulePolicy{Attempts: aws.Int(0), Unlimited: aws.Bool(false)}
	job.AddTaskGroup(tg)
	if _, _, err := nc.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	var alloc *api.Allocation
	for alloc == nil {
		stubs, _, err := nc.Jobs().Allocations("see-monitoring", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stubs {
			switch s.ClientStatus {
			case api.AllocClientStatusComplete:
				if alloc, _, err = nc.Allocations().Info(s.ID, nil); err != nil {
					t.Fatal(err)
				}
			case api.AllocClientStatusFailed, api.AllocClientStatusLost:
				t.Fatalf("the task could not read the file: allocation %s %s %v", s.ID, s.ClientStatus, s.TaskStates)
			}
		}
		if ctx.Err() != nil {
			t.Fatal("the task did not complete")
		}
		time.Sleep(200 * time.Millisecond)
	}
	rc, err := nc.AllocFS().Cat(alloc, "alloc/logs/cat.stdout.0", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(rc)
	_ = rc.Close()
	if strings.TrimSpace(string(out)) != id {
		t.Errorf("the task read %q, want %q", out, id)
	}

	// The dir goes with the client.
	if err := cloud.StopClient(id); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("node dir after the client stopped: %v", err)
	}
	if cloud.NodeDir(id) != "" {
		t.Error("NodeDir of a stopped client")
	}
}
