//go:build e2e

package localcloud_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

const awxTestToken = "s3cr3t-awx-token"

// awxTemplates: 7 takes nothing on launch, 8 asks for limit and extra_vars
// and accepts callbacks, 9 is the real monitoring playbook.
func awxTemplates() []localcloud.AWXTemplate {
	return []localcloud.AWXTemplate{
		{ID: 7, Name: "fixed", Playbook: "../../agent-config/playbooks/monitoring.yml"},
		{ID: 8, Name: "post-config", Playbook: "../../agent-config/playbooks/monitoring.yml",
			AskLimitOnLaunch: true, AskVariablesOnLaunch: true, HostConfigKey: "hck-123"},
		{ID: 9, Name: "monitoring", Playbook: "../../agent-config/playbooks/monitoring.yml",
			AskLimitOnLaunch: true, AskVariablesOnLaunch: true},
	}
}

func startTestAWX(t *testing.T, cfg localcloud.AWXConfig) *localcloud.AWX {
	t.Helper()
	cfg.Token = awxTestToken
	if cfg.Templates == nil {
		cfg.Templates = awxTemplates()
	}
	cfg.Logf = t.Logf
	if cfg.StepDelay == 0 {
		cfg.StepDelay = 20 * time.Millisecond
	}
	a, err := localcloud.StartAWX(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Error(err)
		}
	})
	return a
}

// awxDo sends a request (body: JSON unless contentType says otherwise) and
// returns the status and the decoded JSON answer (nil if not JSON).
func awxDo(t *testing.T, a *localcloud.AWX, method, path, token, contentType, body string) (int, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequest(method, a.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType == "" {
		contentType = "application/json"
	}
	if body != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m, string(raw)
}

func jobID(t *testing.T, m map[string]any) int {
	t.Helper()
	id, ok := m["job"].(float64)
	if !ok || id <= 0 || m["id"] != m["job"] {
		t.Fatalf("launch answer without job id: %v", m)
	}
	return int(id)
}

// waitAWXJob polls GET /api/v2/jobs/{id}/ until the job is final and returns
// the statuses seen, in order, and the last answer.
func waitAWXJob(t *testing.T, a *localcloud.AWX, id int, within time.Duration) ([]string, map[string]any) {
	t.Helper()
	var seen []string
	deadline := time.Now().Add(within)
	for {
		code, m, raw := awxDo(t, a, "GET", "/api/v2/jobs/"+strconv.Itoa(id)+"/", awxTestToken, "", "")
		if code != http.StatusOK {
			t.Fatalf("GET job %d: %d %s", id, code, raw)
		}
		st, _ := m["status"].(string)
		if len(seen) == 0 || seen[len(seen)-1] != st {
			seen = append(seen, st)
		}
		if localcloud.AWXFinal(st) {
			return seen, m
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still %s after %s (seen %v)", id, st, within, seen)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAWXToken(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{})
	for _, tok := range []string{"", "wrong"} {
		code, _, raw := awxDo(t, a, "GET", "/api/v2/job_templates/?name=fixed", tok, "", "")
		if code != http.StatusUnauthorized || raw != `{"detail":"Authentication credentials were not provided."}` {
			t.Errorf("token %q: %d %s", tok, code, raw)
		}
		code, _, _ = awxDo(t, a, "POST", "/api/v2/job_templates/7/launch/", tok, "", "{}")
		if code != http.StatusUnauthorized {
			t.Errorf("launch with token %q: %d", tok, code)
		}
	}
	if n := len(a.Jobs()); n != 0 {
		t.Errorf("%d jobs launched without a token", n)
	}
	code, m, raw := awxDo(t, a, "GET", "/api/v2/job_templates/?name=post-config", awxTestToken, "", "")
	res, _ := m["results"].([]any)
	if code != http.StatusOK || m["count"] != 1.0 || len(res) != 1 || res[0].(map[string]any)["id"] != 8.0 {
		t.Fatalf("find by name: %d %s", code, raw)
	}
	if _, m, _ := awxDo(t, a, "GET", "/api/v2/job_templates/?name=nope", awxTestToken, "", ""); m["count"] != 0.0 {
		t.Errorf("unknown name: %v", m)
	}
}

func TestAWXLaunchIgnoredFields(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{})
	body := `{"limit":"i-1","extra_vars":{"instance_id":"i-1","node_dir":"/x"}}`

	code, m, raw := awxDo(t, a, "POST", "/api/v2/job_templates/7/launch/", awxTestToken, "", body)
	if code != http.StatusCreated {
		t.Fatalf("launch 7: %d %s", code, raw)
	}
	ign, _ := m["ignored_fields"].(map[string]any)
	if ign["limit"] != "i-1" || ign["extra_vars"] == nil {
		t.Errorf("template without ask-on-launch: ignored_fields %v", m["ignored_fields"])
	}
	_, job := waitAWXJob(t, a, jobID(t, m), 5*time.Second)
	if job["limit"] != "" || job["extra_vars"] != "{}" || job["job_template"] != 7.0 {
		t.Errorf("ignored fields were used: %v", job)
	}

	// Asked on launch: an object, a JSON string and a YAML string.
	for _, ev := range []string{`{"instance_id":"i-2","node_dir":"/x"}`, `"{\"instance_id\":\"i-2\",\"node_dir\":\"/x\"}"`,
		`"instance_id: i-2\nnode_dir: /x\n"`} {
		code, m, raw = awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"i-2","extra_vars":`+ev+`}`)
		if code != http.StatusCreated {
			t.Fatalf("launch 8 with %s: %d %s", ev, code, raw)
		}
		if ign, _ := m["ignored_fields"].(map[string]any); len(ign) != 0 {
			t.Errorf("ask-on-launch template ignored %v", ign)
		}
		_, job = waitAWXJob(t, a, jobID(t, m), 5*time.Second)
		var vars map[string]any
		if s, _ := job["extra_vars"].(string); json.Unmarshal([]byte(s), &vars) != nil || vars["instance_id"] != "i-2" || vars["node_dir"] != "/x" {
			t.Errorf("extra_vars %s: job has %v", ev, job["extra_vars"])
		}
		if job["limit"] != "i-2" {
			t.Errorf("limit: %v", job["limit"])
		}
	}
	if code, _, _ := awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"extra_vars":"- a\n- b"}`); code != http.StatusBadRequest {
		t.Errorf("extra_vars that is no mapping: %d", code)
	}
	if code, _, _ := awxDo(t, a, "POST", "/api/v2/job_templates/99/launch/", awxTestToken, "", "{}"); code != http.StatusNotFound {
		t.Errorf("unknown template: %d", code)
	}
	if code, _, _ := awxDo(t, a, "GET", "/api/v2/jobs/7/", awxTestToken, "", ""); code != http.StatusNotFound {
		t.Errorf("unknown job: %d", code)
	}
}

func TestAWXStatusProgression(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{Script: func(j localcloud.AWXJob) localcloud.AWXResult {
		if j.Limit == "bad" {
			return localcloud.AWXResult{Status: localcloud.AWXFailed, Stdout: "TASK failed\n"}
		}
		return localcloud.AWXResult{Stdout: "PLAY RECAP ok " + j.Limit + "\n"}
	}})
	_, m, _ := awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"good"}`)
	id := jobID(t, m)
	if m["status"] != "new" {
		t.Errorf("status at launch: %v", m["status"])
	}
	seen, job := waitAWXJob(t, a, id, 5*time.Second)
	if want := []string{"new", "pending", "waiting", "running", "successful"}; !slices.Equal(seen, want) {
		t.Errorf("statuses %v, want %v", seen, want)
	}
	if job["failed"] != false || job["result_stdout"] != "PLAY RECAP ok good\n" {
		t.Errorf("successful job: %v", job)
	}
	if code, _, out := awxDo(t, a, "GET", "/api/v2/jobs/"+strconv.Itoa(id)+"/stdout/?format=txt", awxTestToken, "", ""); code != 200 || out != "PLAY RECAP ok good\n" {
		t.Errorf("stdout: %d %q", code, out)
	}

	_, m, _ = awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"bad"}`)
	if _, job = waitAWXJob(t, a, jobID(t, m), 5*time.Second); job["status"] != "failed" || job["failed"] != true {
		t.Errorf("scripted failure: %v", job)
	}

	// Cancel a job before it ends.
	_, m, _ = awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"slow"}`)
	id = jobID(t, m)
	if code, _, _ := awxDo(t, a, "POST", "/api/v2/jobs/"+strconv.Itoa(id)+"/cancel/", awxTestToken, "", ""); code != http.StatusAccepted {
		t.Errorf("cancel: %d", code)
	}
	if _, job = waitAWXJob(t, a, id, 5*time.Second); job["status"] != "canceled" {
		t.Errorf("cancelled job: %v", job["status"])
	}
	if code, _, _ := awxDo(t, a, "POST", "/api/v2/jobs/"+strconv.Itoa(id)+"/cancel/", awxTestToken, "", ""); code != http.StatusMethodNotAllowed {
		t.Errorf("cancel a finished job: %d", code)
	}
}

func TestAWXFailureInjection(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{})
	a.FailNext("/api/v2/job_templates/8/launch/", http.StatusServiceUnavailable, 2)
	for i := range 2 {
		if code, _, _ := awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"h"}`); code != http.StatusServiceUnavailable {
			t.Errorf("launch %d: %d, want 503", i, code)
		}
	}
	if code, _, _ := awxDo(t, a, "GET", "/api/v2/job_templates/", awxTestToken, "", ""); code != http.StatusOK {
		t.Errorf("other path hit by the fault: %d", code)
	}
	if n := len(a.Jobs()); n != 0 {
		t.Errorf("failed launches created %d jobs", n)
	}
	if err := a.SetJobResult(8, localcloud.AWXError); err != nil {
		t.Fatal(err)
	}
	code, m, raw := awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"h"}`)
	if code != http.StatusCreated {
		t.Fatalf("third launch: %d %s", code, raw)
	}
	if _, job := waitAWXJob(t, a, jobID(t, m), 5*time.Second); job["status"] != "error" || job["failed"] != true {
		t.Errorf("forced result: %v", job)
	}
	_ = a.SetJobResult(8, "")
	_, m, _ = awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"h"}`)
	if _, job := waitAWXJob(t, a, jobID(t, m), 5*time.Second); job["status"] != "successful" {
		t.Errorf("after the rule was removed: %v", job["status"])
	}
	if err := a.SetJobResult(8, "running"); err == nil {
		t.Error("SetJobResult accepted a status that is not final")
	}
	var faults int
	for _, c := range a.Calls() {
		if c.Fault {
			faults++
		}
	}
	if faults != 2 {
		t.Errorf("%d fault calls recorded, want 2", faults)
	}
}

func TestAWXCallback(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{})
	path := "/api/v2/job_templates/8/callback/"
	if code, _, _ := awxDo(t, a, "POST", path, "", "", `{"host_config_key":"wrong","host":"i-9"}`); code != http.StatusForbidden {
		t.Errorf("wrong key: %d", code)
	}
	if code, _, _ := awxDo(t, a, "POST", "/api/v2/job_templates/7/callback/", "", "", `{"host_config_key":""}`); code != http.StatusForbidden {
		t.Errorf("template without callbacks: %d", code)
	}
	code, m, raw := awxDo(t, a, "POST", path, "", "", `{"host_config_key":"hck-123","host":"i-9"}`)
	if code != http.StatusCreated {
		t.Fatalf("callback: %d %s", code, raw)
	}
	id := jobID(t, m)
	if code, _, _ := awxDo(t, a, "POST", path, "", "", `{"host_config_key":"hck-123","host":"i-9"}`); code != http.StatusBadRequest {
		t.Errorf("second callback while the first is pending: %d", code)
	}
	if _, job := waitAWXJob(t, a, id, 5*time.Second); job["limit"] != "i-9" || job["status"] != "successful" || job["launch_type"] != "callback" {
		t.Errorf("callback job: %v", job)
	}
	// A form without host: the remote address is the host.
	form := url.Values{"host_config_key": {"hck-123"}}.Encode()
	code, m, raw = awxDo(t, a, "POST", path, "", "application/x-www-form-urlencoded", form)
	if code != http.StatusCreated {
		t.Fatalf("form callback: %d %s", code, raw)
	}
	waitAWXJob(t, a, jobID(t, m), 5*time.Second)
	_, list, _ := awxDo(t, a, "GET", "/api/v2/jobs/?job_template=8&limit__exact=127.0.0.1", awxTestToken, "", "")
	if res, _ := list["results"].([]any); list["count"] != 1.0 || len(res) != 1 || res[0].(map[string]any)["limit"] != "127.0.0.1" {
		t.Errorf("jobs of 127.0.0.1: %v", list)
	}
	_, list, _ = awxDo(t, a, "GET", "/api/v2/jobs/?job_template=8&limit__exact=i-9", awxTestToken, "", "")
	if list["count"] != 1.0 {
		t.Errorf("jobs of i-9: %v", list)
	}
}

func TestAWXCallsNoToken(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{})
	awxDo(t, a, "GET", "/api/v2/job_templates/?name=fixed", awxTestToken, "", "")
	awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"i-5"}`)
	awxDo(t, a, "GET", "/api/v2/job_templates/?name="+awxTestToken, "wrong", "", "")
	awxDo(t, a, "POST", "/api/v2/job_templates/8/callback/", "", "", `{"host_config_key":"x","note":"`+awxTestToken+`"}`)
	calls := a.Calls()
	if len(calls) != 4 {
		t.Fatalf("%d calls recorded, want 4: %+v", len(calls), calls)
	}
	if c := calls[1]; c.Method != "POST" || c.Path != "/api/v2/job_templates/8/launch/" || c.Body != `{"limit":"i-5"}` ||
		c.Status != http.StatusCreated || c.Time.IsZero() {
		t.Errorf("launch call: %+v", c)
	}
	for _, c := range calls {
		b, _ := json.Marshal(c)
		if strings.Contains(string(b), awxTestToken) {
			t.Errorf("call record holds the token: %s", b)
		}
	}
}

// TestAWXRealPlaybook NEEDS ansible-playbook ON PATH (`apt-get install -y
// ansible-core`, which the Makefile does before the e2e tests): without it
// the test FAILS on purpose, it is never skipped.
func TestAWXRealPlaybook(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	a := startTestAWX(t, localcloud.AWXConfig{RunPlaybook: true, WorkDir: t.TempDir(), PlaybookTimeout: time.Minute})
	nodeDir := t.TempDir()
	launch := func(vars map[string]any) localcloud.AWXJob {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"limit": "i-0abc", "extra_vars": vars})
		code, m, raw := awxDo(t, a, "POST", "/api/v2/job_templates/9/launch/", awxTestToken, "", string(b))
		if code != http.StatusCreated {
			t.Fatalf("launch: %d %s", code, raw)
		}
		j, err := a.WaitJob(ctx, jobID(t, m))
		if err != nil {
			t.Fatal(err)
		}
		return j
	}

	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		j := launch(map[string]any{"instance_id": "i-0abc", "node_dir": nodeDir})
		if j.Status != localcloud.AWXError || !strings.Contains(j.Explanation, localcloud.AnsibleInstallHint) ||
			!strings.Contains(j.Stdout, localcloud.AnsibleInstallHint) {
			t.Errorf("job without ansible-playbook: %s %q %q", j.Status, j.Explanation, j.Stdout)
		}
		t.Fatalf("ansible-playbook is not on PATH (%v): run `%s` (as root, after apt-get update); the job said: %s",
			err, localcloud.AnsibleInstallHint, j.Explanation)
	}

	j := launch(map[string]any{"instance_id": "i-0abc", "node_dir": nodeDir})
	if j.Status != localcloud.AWXSuccessful || j.Failed {
		t.Fatalf("monitoring.yml: %s %s\n%s", j.Status, j.Explanation, j.Stdout)
	}
	got, err := os.ReadFile(filepath.Join(nodeDir, "monitoring-installed"))
	if err != nil || strings.TrimSpace(string(got)) != "i-0abc" {
		t.Errorf("monitoring-installed: %q %v", got, err)
	}
	_, _, out := awxDo(t, a, "GET", "/api/v2/jobs/"+strconv.Itoa(j.ID)+"/stdout/?format=txt", awxTestToken, "", "")
	if !strings.Contains(out, "PLAY RECAP") || !strings.Contains(out, "i-0abc") {
		t.Errorf("stdout of the run:\n%s", out)
	}

	j = launch(map[string]any{"node_dir": nodeDir})
	if j.Status != localcloud.AWXFailed || !j.Failed || !strings.Contains(j.Stdout, "needs the extra variables instance_id and node_dir") {
		t.Errorf("run without instance_id: %s %s\n%s", j.Status, j.Explanation, j.Stdout)
	}
}

// TestAWXCloseStopsPlaybook: Close kills a running ansible-playbook (needs
// ansible-playbook on PATH like TestAWXRealPlaybook; fails without it).
func TestAWXCloseStopsPlaybook(t *testing.T) {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		t.Fatalf("ansible-playbook is not on PATH (%v): run `%s`", err, localcloud.AnsibleInstallHint)
	}
	dir := t.TempDir()
	pb := filepath.Join(dir, "slow.yml")
	if err := os.WriteFile(pb, []byte("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.command: sleep 60\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := localcloud.StartAWX(context.Background(), localcloud.AWXConfig{Token: awxTestToken, Logf: t.Logf, RunPlaybook: true,
		Templates: []localcloud.AWXTemplate{{ID: 1, Name: "slow", Playbook: pb}}, StepDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, m, _ := awxDo(t, a, "POST", "/api/v2/job_templates/1/launch/", awxTestToken, "", "")
	id := jobID(t, m)
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0; time.Sleep(10 * time.Millisecond) {
		j, _ := a.Job(id)
		pid = j.PID
		if time.Now().After(deadline) {
			t.Fatalf("job %d not running: %+v", id, j)
		}
	}
	time.Sleep(1500 * time.Millisecond) // let ansible reach the sleep task
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %s", d)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("ansible-playbook pid %d still exists after Close (%v)", pid, err)
	}
	time.Sleep(200 * time.Millisecond) // SIGKILL is delivered asynchronously
	if left := liveInGroup(pid); len(left) > 0 {
		t.Errorf("process group %d still has live processes after Close: %v", pid, left)
	}
	if j, _ := a.Job(id); j.Status != localcloud.AWXCanceled {
		t.Errorf("job after Close: %s", j.Status)
	}
}

// liveInGroup lists the processes of process group pgid that are not zombies
// (a killed grandchild stays a zombie until its new parent reaps it).
func liveInGroup(pgid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:]) // state ppid pgrp ...
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			out = append(out, e.Name()+" "+s[:i+1]+" "+f[0])
		}
	}
	return out
}

// awxList GETs a job list and returns the answer and the IDs of its results,
// in order; it fails the test unless the status is want.
func awxList(t *testing.T, a *localcloud.AWX, path string, want int) (map[string]any, []int) {
	t.Helper()
	code, m, raw := awxDo(t, a, "GET", path, awxTestToken, "", "")
	if code != want {
		t.Fatalf("GET %s: %d %s, want %d", path, code, raw, want)
	}
	var ids []int
	res, _ := m["results"].([]any)
	for _, r := range res {
		ids = append(ids, int(r.(map[string]any)["id"].(float64)))
	}
	return m, ids
}

// launchJobs launches one job per limit on template 8 (hosts starting with
// "bad" fail), plus a callback for host "cb-1" on 8 and a launch of 7, and
// waits until all are final. It returns the job IDs in launch order.
func launchJobs(t *testing.T, a *localcloud.AWX, limits ...string) []int {
	t.Helper()
	var ids []int
	for _, l := range limits {
		_, m, _ := awxDo(t, a, "POST", "/api/v2/job_templates/8/launch/", awxTestToken, "", `{"limit":"`+l+`"}`)
		ids = append(ids, jobID(t, m))
	}
	_, m, _ := awxDo(t, a, "POST", "/api/v2/job_templates/8/callback/", "", "application/x-www-form-urlencoded", "host_config_key=hck-123&host=cb-1")
	ids = append(ids, jobID(t, m))
	_, m, _ = awxDo(t, a, "POST", "/api/v2/job_templates/7/launch/", awxTestToken, "", "{}")
	ids = append(ids, jobID(t, m))
	for _, id := range ids {
		waitAWXJob(t, a, id, 5*time.Second)
	}
	return ids
}

func failBadHosts(j localcloud.AWXJob) localcloud.AWXResult {
	if strings.HasPrefix(j.Limit, "bad") {
		return localcloud.AWXResult{Status: localcloud.AWXFailed}
	}
	return localcloud.AWXResult{}
}

func TestAWXJobListFilters(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{Script: failBadHosts})
	ids := launchJobs(t, a, "i-1", "bad-2", "i-3", "i-1")
	// ids: 0 i-1 ok, 1 bad-2 failed, 2 i-3 ok, 3 i-1 ok, 4 callback cb-1 ok, 5 template 7 ok
	job := func(i int) map[string]any {
		_, m, _ := awxDo(t, a, "GET", "/api/v2/jobs/"+strconv.Itoa(ids[i])+"/", awxTestToken, "", "")
		return m
	}
	pick := func(is ...int) []int {
		var out []int
		for _, i := range is {
			out = append(out, ids[i])
		}
		return out
	}
	created2 := url.QueryEscape(job(2)["created"].(string))

	cases := []struct {
		name  string
		query string
		want  []int
	}{
		{"no filter: every job, by id", "", ids},
		{"job_template", "job_template=8", pick(0, 1, 2, 3, 4)},
		{"job_template__exact", "job_template__exact=7", pick(5)},
		{"status", "status=failed", pick(1)},
		{"status__exact", "status__exact=successful&job_template=8", pick(0, 2, 3, 4)},
		{"status__in", "status__in=failed,error,canceled", pick(1)},
		{"launch_type", "launch_type=callback", pick(4)},
		{"launch_type__exact", "launch_type__exact=manual&job_template=8", pick(0, 1, 2, 3)},
		{"limit__exact filters the limit", "limit__exact=i-1", pick(0, 3)},
		{"bare limit is reserved and ignored, as in AWX", "limit=i-1", ids},
		{"id__gt", "id__gt=" + strconv.Itoa(ids[3]), pick(4, 5)},
		{"created__gte", "created__gte=" + created2, pick(2, 3, 4, 5)},
		{"created__gt", "created__gt=" + created2, pick(3, 4, 5)},
		{"created__gt a date", "created__gt=2000-01-01", ids},
		{"not__", "not__status=successful", pick(1)},
		{"or__", "or__limit__exact=i-3&or__status=failed", pick(1, 2)},
		{"a repeated parameter ANDs its values", "limit__in=i-1,i-3&limit__in=i-3,bad-2", pick(2)},
		{"isnull", "job_template__isnull=false&finished__isnull=false&started__isnull=false", ids},
		{"format is ignored", "format=json&status=failed", pick(1)},
		{"order_by=-id", "order_by=-id&job_template=8", pick(4, 3, 2, 1, 0)},
		{"order_by=created", "order_by=created", ids},
		{"order_by=-created", "order_by=-created&limit__startswith=i-", pick(3, 2, 0)},
		{"order_by two keys", "order_by=limit,-id&job_template=8", pick(1, 4, 3, 0, 2)},
		{"type=job", "type=job&status=failed", pick(1)},
		{"type other than job", "type=project_update", nil},
		{"search in the name", "search=fix", pick(5)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, got := awxList(t, a, "/api/v2/jobs/?"+tc.query, http.StatusOK)
			if !slices.Equal(got, tc.want) {
				t.Errorf("?%s: jobs %v, want %v", tc.query, got, tc.want)
			}
			if m["count"] != float64(len(tc.want)) {
				t.Errorf("?%s: count %v, want %d", tc.query, m["count"], len(tc.want))
			}
		})
	}

	// The jobs of one template: the same filters, within the template.
	_, got := awxList(t, a, "/api/v2/job_templates/8/jobs/?status=successful&order_by=-id", http.StatusOK)
	if want := pick(4, 3, 2, 0); !slices.Equal(got, want) {
		t.Errorf("jobs of template 8: %v, want %v", got, want)
	}
	if _, got = awxList(t, a, "/api/v2/job_templates/7/jobs/", http.StatusOK); !slices.Equal(got, pick(5)) {
		t.Errorf("jobs of template 7: %v", got)
	}
	awxList(t, a, "/api/v2/job_templates/99/jobs/", http.StatusNotFound)
	if code, _, _ := awxDo(t, a, "GET", "/api/v2/job_templates/8/jobs/", "", "", ""); code != http.StatusUnauthorized {
		t.Errorf("jobs of a template without a token: %d", code)
	}

	bad := []struct{ query, detail string }{
		{"foo=1", "Job has no field named 'foo'"},
		{"inventory=1", "Job has no field named 'inventory'"},
		{"status__foo=x", "No related model for field foo."},
		{"not__bogus__in=1", "Job has no field named 'bogus'"},
		{"id__gt=abc", `["“abc” value must be an integer."]`},
		{"created__gte=yesterday", `["“yesterday” value has an invalid format. It must be in YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ] format."]`},
		{"job_template=abc", "Invalid job_template id: abc"},
		{"status__in=", "cannot provide empty value for __in"},
		{"failed=maybe", `Unable to convert "maybe" to boolean`},
		{"id__iexact=1", "id is not a text field and cannot be filtered by case-insensitive search"},
		{"status__limit=1", "No related model for field limit."},
		{"order_by=-bogus", "Job has no field named 'bogus'"},
	}
	for _, b := range bad {
		m, _ := awxList(t, a, "/api/v2/jobs/?"+b.query, http.StatusBadRequest)
		if m["detail"] != b.detail {
			t.Errorf("?%s: detail %q, want %q", b.query, m["detail"], b.detail)
		}
	}
}

func TestAWXJobListPages(t *testing.T) {
	a := startTestAWX(t, localcloud.AWXConfig{StepDelay: time.Millisecond})
	var limits []string
	for i := range 26 {
		limits = append(limits, fmt.Sprintf("h-%02d", i))
	}
	ids := launchJobs(t, a, limits...) // 28 jobs

	m, got := awxList(t, a, "/api/v2/jobs/", http.StatusOK)
	if m["count"] != 28.0 || !slices.Equal(got, ids[:25]) || m["previous"] != nil ||
		m["next"] != "/api/v2/jobs/?page=2" {
		t.Errorf("default page: count %v, %d results, previous %v, next %v", m["count"], len(got), m["previous"], m["next"])
	}

	// Follow next from page 1 of 4 (page_size 8), keeping the filter.
	var all []int
	path := "/api/v2/jobs/?job_template=8&page_size=8"
	var links []any
	for page := 1; path != ""; page++ {
		m, got := awxList(t, a, path, http.StatusOK)
		all = append(all, got...)
		if m["count"] != 27.0 {
			t.Errorf("page %d: count %v", page, m["count"])
		}
		links = append(links, m["previous"])
		path, _ = m["next"].(string)
	}
	if !slices.Equal(all, ids[:27]) {
		t.Errorf("pages of template 8: %v, want %v", all, ids[:27])
	}
	wantPrev := []any{nil, "/api/v2/jobs/?job_template=8&page=1&page_size=8",
		"/api/v2/jobs/?job_template=8&page=2&page_size=8", "/api/v2/jobs/?job_template=8&page=3&page_size=8"}
	if !slices.Equal(links, wantPrev) {
		t.Errorf("previous links %v, want %v", links, wantPrev)
	}

	if _, got := awxList(t, a, "/api/v2/jobs/?page_size=8&page=last", http.StatusOK); !slices.Equal(got, ids[24:]) {
		t.Errorf("page=last: %v", got)
	}
	if m, got := awxList(t, a, "/api/v2/jobs/?page_size=500", http.StatusOK); len(got) != 28 || m["next"] != nil {
		t.Errorf("page_size above 200: %d results, next %v", len(got), m["next"])
	}
	for _, ps := range []string{"0", "-3", "many"} { // AWX falls back to 25
		if _, got := awxList(t, a, "/api/v2/jobs/?page_size="+ps, http.StatusOK); len(got) != 25 {
			t.Errorf("page_size=%s: %d results, want 25", ps, len(got))
		}
	}
	for _, p := range []string{"0", "5", "two"} {
		if m, _ := awxList(t, a, "/api/v2/jobs/?page_size=8&page="+p, http.StatusNotFound); m["detail"] != "Invalid page." {
			t.Errorf("page=%s: %v", p, m)
		}
	}
	if m, got := awxList(t, a, "/api/v2/jobs/?status=failed&page=1", http.StatusOK); len(got) != 0 || m["count"] != 0.0 || m["next"] != nil {
		t.Errorf("empty first page: %v", m)
	}
	// An unknown page_size and order still paginate consistently.
	if _, got := awxList(t, a, "/api/v2/jobs/?order_by=-id&page_size=200", http.StatusOK); got[0] != ids[27] || got[27] != ids[0] {
		t.Errorf("order_by=-id: %v", got)
	}
}
