//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

const (
	sampleJobFile   = "jobs/autoscaler.nomad.hcl"
	sampleJobID     = "autoscaler"
	sampleJobTask   = "autoscaler"
	sampleJobVarDir = "nomad/jobs/autoscaler"
	samplePolicyDst = "local/policies/spot-pool.hcl"
	sampleStableID  = "stable-1"
	sampleAWXTmpl   = "spot-node-configure"
)

// TestSampleAutoscalerJobRuns runs agent-config/jobs/autoscaler.nomad.hcl on
// the local cloud as an operator would without Vault: the plugins and the
// agent come as tar.gz artifacts (go-getter, checksums checked) from a
// loopback server, the credentials (AWS keys, AWX token) from the Nomad
// Variable the job reads, and the agent, placed on a stable node, scales the
// spot pool out through an AWX launch hook; no secret shows in its logs or
// its rendered configuration, and stopping the job ends every process of it.
// It also checks the Vault variant of the same file (vault block, secret
// templates, accepted by Nomad but for the Vault it does not have), the TLS
// variables (checkTLSVariant), that the
// job's policy is ../policies/spot-pool.hcl (hooks aside) and that its agent
// configuration sets every key of ../agent.hcl.
func TestSampleAutoscalerJobRuns(t *testing.T) {
	start := time.Now()
	const nodeCPU, taskCPU = 1000, 900 // one task per node: 90% allocated
	cloud := startCloud(t, localcloud.Config{Client: localcloud.ClientOptions{
		CPUTotalCompute: nodeCPU,
		// New spot nodes wait for their launch hooks (the admission gate).
		Meta: map[string]string{"spotfleet_admission": "pending"},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nc, err := cloud.NomadClient()
	if err != nil {
		t.Fatal(err)
	}
	src := readSample(t, sampleJobFile)

	// The file as shipped: defaults (Vault) parse, carry the vault block and
	// secret templates, and agree with the policy and agent samples.
	checkVaultVariant(t, nc, src)
	checkTLSVariant(t, nc, src)
	checkSamplesMatch(t, nc, src)

	t.Logf("cloud up, samples checked after %s", time.Since(start).Round(time.Millisecond))
	// The pool: one spot node, and a stable node for the agent.
	fleetID := createFleet(ctx, t, cloud, localcloud.FleetSpec{TargetCapacity: 1}, 1)
	if err := cloud.StartClient(ctx, sampleStableID, localcloud.ClientOptions{
		NodeClass: "stable", Meta: map[string]string{"spotfleet_admission": "none"}}); err != nil {
		t.Fatalf("starting the stable client: %v", err)
	}
	if _, err := cloud.WaitNodesReady(ctx, 2); err != nil {
		t.Fatalf("waiting for the stable node: %v", err)
	}

	t.Logf("fleet node and stable node ready after %s", time.Since(start).Round(time.Millisecond))
	// Secrets: distinct values, so that finding one anywhere means a leak.
	awxToken := "awx-" + randHex(t, 12)
	awsKeyID := "AKIAE2E" + strings.ToUpper(randHex(t, 6))
	awsSecret := "e2e-secret-" + randHex(t, 16)
	secrets := []string{awxToken, awsKeyID, awsSecret}

	awx, err := localcloud.StartAWX(ctx, localcloud.AWXConfig{
		Token:     awxToken,
		Templates: []localcloud.AWXTemplate{{ID: 7, Name: sampleAWXTmpl, AskLimitOnLaunch: true, AskVariablesOnLaunch: true}},
		WorkDir:   filepath.Join(cloud.WorkDir(), "awx"),
		StepDelay: 20 * time.Millisecond,
		Logf:      t.Logf,
	})
	if err != nil {
		t.Fatalf("starting the AWX stand-in: %v", err)
	}
	t.Cleanup(func() {
		if err := awx.Close(); err != nil {
			t.Errorf("stopping the AWX stand-in: %v", err)
		}
	})

	// The artifacts, as an operator publishes them: the plugins of
	// `make build` and the agent of `make tools`.
	root, err := localcloud.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	plugins := map[string]string{}
	for _, name := range []string{"apm-node", "strategy-cpu-target", "target-spotfleet"} {
		plugins[name] = filepath.Join(root, "plugins", name)
	}
	artifacts := map[string][]byte{}
	sums := map[string]string{}
	artifacts["/nomad-spotfleet/plugins.tar.gz"], sums["plugins"] = tarGz(t, plugins)
	artifacts["/nomad-autoscaler/agent.tar.gz"], sums["agent"] = tarGz(t, map[string]string{
		"nomad-autoscaler": filepath.Join(root, "bin", "nomad-autoscaler")})
	t.Logf("artifacts built after %s (plugins %d bytes, agent %d bytes)", time.Since(start).Round(time.Millisecond),
		len(artifacts["/nomad-spotfleet/plugins.tar.gz"]), len(artifacts["/nomad-autoscaler/agent.tar.gz"]))
	var fetchMu sync.Mutex
	fetches := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := artifacts[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		fetchMu.Lock()
		fetches[r.URL.Path]++
		fetchMu.Unlock()
		http.ServeContent(w, r, filepath.Base(r.URL.Path), time.Now(), bytes.NewReader(b))
	}))
	defer srv.Close()

	if _, _, err := nc.Variables().Create(&api.Variable{Path: sampleJobVarDir, Items: api.VariableItems{
		"awx_token":             awxToken,
		"aws_access_key_id":     awsKeyID,
		"aws_secret_access_key": awsSecret,
	}}, nil); err != nil {
		t.Fatalf("writing the Nomad Variable %s: %v", sampleJobVarDir, err)
	}

	// The pool's work: two tasks of 90% of a node, on admitted nodes only.
	load := sleeperJob("sample-load", localcloud.DefaultNodeClass, 2, taskCPU)
	load.Constrain(api.NewConstraint("${meta.spotfleet_admission}", "=", "admitted"))
	if _, _, err := nc.Jobs().Register(load, nil); err != nil {
		t.Fatalf("registering the load job: %v", err)
	}

	vars := hclVars(map[string]any{
		"use_vault":                 false,
		"nomad_acl":                 false,
		"driver":                    "raw_exec",
		"node_class":                "stable",
		"agent_artifact_url":        srv.URL + "/nomad-autoscaler/agent.tar.gz",
		"agent_artifact_checksum":   "sha256:" + sums["agent"],
		"plugins_artifact_url":      srv.URL + "/nomad-spotfleet/plugins.tar.gz",
		"plugins_artifact_checksum": "sha256:" + sums["plugins"],
		"log_level":                 "DEBUG",
		"nomad_address":             cloud.NomadAddr(),
		"aws_region":                localcloud.DefaultRegion,
		"aws_endpoint":              cloud.MotoURL(),
		"interruption_queue_url":    cloud.QueueURL(),
		"awx_url":                   awx.URL(),
		"apm_sample_interval":       "1s",
		"apm_node_warmup":           "1s",
		"spot_fleet_request_id":     fleetID,
		"pool_max":                  2,
		"cpu_metric":                "allocated_cpu",
		"evaluation_interval":       "2s",
		"cooldown":                  "5s",
		"query_window":              "10s",
		"node_id_attribute":         "meta." + localcloud.MetaInstanceID,
		"node_warmup":               "2s", // apm_node_warmup + apm_sample_interval
		"policy_target_extra": strings.Join([]string{
			`launch_hooks                = "configure"`,
			`hook_configure_type         = "awx"`,
			`hook_configure_job_template = "` + sampleAWXTmpl + `"`,
			`hook_configure_limit        = "{{private_ip}}"`,
			`hook_configure_timeout      = "1m"`,
		}, "\n"),
	})
	job, err := nc.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: src, Variables: vars, Canonicalize: true})
	if err != nil {
		t.Fatalf("Nomad cannot parse %s with use_vault = false: %v", sampleJobFile, err)
	}
	task := job.TaskGroups[0].Tasks[0]
	if task.Vault != nil {
		t.Errorf("use_vault = false: the job still has a vault block: %+v", task.Vault)
	}
	for _, tmpl := range task.Templates {
		if strings.Contains(*tmpl.EmbeddedTmpl, "secret \"") {
			t.Errorf("use_vault = false: template %s still reads Vault:\n%s", *tmpl.DestPath, *tmpl.EmbeddedTmpl)
		}
	}
	if _, _, err := nc.Jobs().Register(job, nil); err != nil {
		t.Fatalf("registering %s: %v", sampleJobFile, err)
	}
	t.Logf("job registered after %s", time.Since(start).Round(time.Millisecond))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _, _ = nc.Jobs().Deregister(sampleJobID, true, nil)
		}
	})

	// The agent runs: on the stable node, its plugins from the artifact.
	var alloc *api.Allocation
	waitFor(t, 60*time.Second, "the autoscaler allocation runs", func() (bool, string) {
		stubs, _, err := nc.Jobs().Allocations(sampleJobID, true, nil)
		if err != nil || len(stubs) == 0 {
			return false, fmt.Sprint("no allocation yet ", err)
		}
		s := stubs[0]
		state := s.ClientStatus
		if ts := s.TaskStates[sampleJobTask]; ts != nil {
			for _, ev := range ts.Events {
				state += "; " + ev.Type + " " + ev.DisplayMessage
			}
			if s.ClientStatus == api.AllocClientStatusFailed || ts.Failed {
				t.Fatalf("the autoscaler task failed: %s", state)
			}
		}
		if s.ClientStatus != api.AllocClientStatusRunning {
			return false, state
		}
		alloc, _, err = nc.Allocations().Info(s.ID, nil)
		return err == nil, state
	})
	t.Logf("agent running after %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() && !stopped {
			lines := strings.Split(allocLogs(t, nc, alloc), "\n")
			t.Logf("the agent's last log lines:\n%s", strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})
	fetchMu.Lock()
	for path := range artifacts {
		if fetches[path] != 1 {
			t.Errorf("artifact %s was fetched %d times, want 1", path, fetches[path])
		}
	}
	fetchMu.Unlock()
	stable, _, err := nc.Nodes().Info(alloc.NodeID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if stable.NodeClass != "stable" {
		t.Errorf("the agent runs on node %s of class %q, want the stable node", stable.Name, stable.NodeClass)
	}
	// The agent and its plugins run from the artifacts, with the AWS keys
	// of the variable in their environment (the default credential chain).
	var agentPIDs []int
	var exes []string
	want := []string{"apm-node", "nomad-autoscaler", "strategy-cpu-target", "target-spotfleet"}
	waitFor(t, 30*time.Second, "the agent and its plugins run from the artifacts", func() (bool, string) {
		agentPIDs, exes = taskProcesses(t, cloud.ClientPID(sampleStableID), alloc.ID), nil
		for _, pid := range agentPIDs {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			exes = append(exes, filepath.Base(exe))
		}
		sort.Strings(exes)
		return slices.Equal(exes, want), fmt.Sprint(exes)
	})
	for _, pid := range agentPIDs {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		vars := strings.Split(string(env), "\x00")
		if !slices.Contains(vars, "AWS_ACCESS_KEY_ID="+awsKeyID) || !slices.Contains(vars, "AWS_SECRET_ACCESS_KEY="+awsSecret) {
			t.Errorf("process %d lacks the AWS keys of the Nomad Variable in its environment", pid)
		}
	}

	// It scales the pool: 90% allocated on one node, above 75%, so one node
	// more (the policy's max), which joins through the AWX launch hook.
	decision := regexp.MustCompile(`strategy-cpu-target: scale out 1 -> 2`)
	waitFor(t, 60*time.Second, "the fleet grows to 2 nodes and both tasks run", func() (bool, string) {
		target, running, err := fleetState(ctx, cloud, fleetID)
		counts, _, aerr := jobAllocs(nc, "sample-load")
		if err != nil || aerr != nil {
			return false, fmt.Sprint(err, aerr)
		}
		return target == 2 && len(running) == 2 && counts["running"] == 2,
			fmt.Sprintf("target=%d running=%d load: %s", target, len(running), formatCounts(counts))
	})
	var logs string
	waitFor(t, 20*time.Second, "the decision in the agent's logs (Nomad API)", func() (bool, string) {
		logs = allocLogs(t, nc, alloc)
		return decision.MatchString(logs), fmt.Sprintf("%d bytes of logs", len(logs))
	})
	for _, re := range []*regexp.Regexp{
		decision,
		regexp.MustCompile(`target-spotfleet: .*fleet status: ready`),
		regexp.MustCompile(`target-spotfleet.*: hook finished.*configure`),
		regexp.MustCompile(`target-spotfleet: node admitted`),
	} {
		if m := re.FindString(logs); m == "" {
			t.Errorf("the agent's logs have no line matching %q", re)
		} else {
			t.Logf("log: %s", m)
		}
	}
	// The hook used the token from the variable and got a real limit: the
	// template's [[ ]] delimiters left {{private_ip}} to the plugin.
	var launches []string
	for _, c := range awx.Calls() {
		if c.Method == http.MethodPost && strings.Contains(c.Path, "/launch/") {
			launches = append(launches, fmt.Sprintf("%d %s", c.Status, c.Body))
			if c.Status != http.StatusCreated || !regexp.MustCompile(`"limit":"\d+\.\d+\.\d+\.\d+"`).MatchString(c.Body) {
				t.Errorf("AWX launch answered %d with body %s, want 201 and an IP as limit", c.Status, c.Body)
			}
		}
	}
	if len(launches) == 0 {
		t.Errorf("AWX got no launch of %s", sampleAWXTmpl)
	}

	// The agent's health endpoint, at the service Nomad registered.
	checkAgentHealth(t, nc)

	// No secret in the logs or in the rendered configuration, and the
	// secrets directory is not served.
	cfg, err := catAllocFile(nc, alloc, sampleJobTask+"/local/config.hcl")
	if err != nil {
		t.Errorf("reading the rendered config.hcl: %v", err)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a secret value (%d chars) appears in the job's logs", len(s))
		}
		if strings.Contains(cfg, s) {
			t.Errorf("a secret value (%d chars) appears in local/config.hcl", len(s))
		}
	}
	// Nomad refuses to read the secrets directory through its API.
	body, err := catAllocFile(nc, alloc, sampleJobTask+"/secrets/agent.env")
	for _, s := range secrets {
		if strings.Contains(body, s) {
			t.Errorf("Nomad serves secrets/agent.env through the alloc fs API")
			break
		}
	}
	t.Logf("alloc fs of secrets/agent.env: %q, %v", body, err)

	// Stop: the allocation completes, the agent and its plugins are gone.
	if _, _, err := nc.Jobs().Deregister(sampleJobID, true, nil); err != nil {
		t.Fatalf("stopping the job: %v", err)
	}
	stopped = true
	waitFor(t, 40*time.Second, "the agent and its plugins exit", func() (bool, string) {
		var alive []int
		for _, pid := range agentPIDs {
			if localcloud.Alive(pid) {
				alive = append(alive, pid)
			}
		}
		return len(alive) == 0, fmt.Sprintf("alive: %v", alive)
	})
	if left := taskProcesses(t, cloud.ClientPID(sampleStableID), alloc.ID); len(left) > 0 {
		t.Errorf("processes of the allocation still run after the stop: %v", left)
	}
	t.Logf("whole run took %s", time.Since(start).Round(time.Millisecond))
}

// checkVaultVariant parses the file with its defaults (use_vault = true) and
// checks the vault block and the secret templates; the server accepts the
// job but for the Vault it does not have.
func checkVaultVariant(t *testing.T, nc *api.Client, src string) {
	t.Helper()
	job, err := nc.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: src, Canonicalize: true})
	if err != nil {
		t.Fatalf("Nomad cannot parse %s with its defaults: %v", sampleJobFile, err)
	}
	if job.ID == nil || *job.ID != sampleJobID {
		t.Errorf("%s parsed to job id %v, want %q (the Nomad Variable path depends on it)", sampleJobFile, job.ID, sampleJobID)
	}
	// One agent, also while its node is cut off from the servers.
	if d := job.TaskGroups[0].StopAfterClientDisconnect; d == nil || *d != time.Minute {
		t.Errorf("the group's stop_after_client_disconnect is %v, want 1m", d)
	}
	task := job.TaskGroups[0].Tasks[0]
	if task.Vault == nil || !slices.Equal(task.Vault.Policies, []string{"nomad-autoscaler"}) {
		t.Errorf("use_vault = true: want a vault block with policy nomad-autoscaler, got %+v", task.Vault)
	}
	want := map[string][]string{
		"secrets/agent.env": {`with secret "aws/creds/nomad-autoscaler"`, `with secret "nomad/creds/nomad-autoscaler"`},
		"secrets/awx-token": {`with secret "secret/data/nomad-autoscaler/awx"`},
	}
	for _, tmpl := range task.Templates {
		body := *tmpl.EmbeddedTmpl
		if strings.Contains(body, "nomadVar") {
			t.Errorf("use_vault = true: template %s reads a Nomad Variable:\n%s", *tmpl.DestPath, body)
		}
		for _, w := range want[*tmpl.DestPath] {
			if !strings.Contains(body, w) {
				t.Errorf("use_vault = true: template %s lacks %s:\n%s", *tmpl.DestPath, w, body)
			}
		}
		delete(want, *tmpl.DestPath)
		// The AWS key id, secret and session token of one lease: one read.
		if n := strings.Count(body, `secret "aws/creds/nomad-autoscaler"`); *tmpl.DestPath == "secrets/agent.env" && n != 1 {
			t.Errorf("use_vault = true: secrets/agent.env reads the AWS secrets engine %d times, want once:\n%s", n, body)
		}
	}
	for dst := range want {
		t.Errorf("use_vault = true: no template renders %s", dst)
	}
	resp, _, err := nc.Jobs().Validate(job, nil)
	if err != nil {
		t.Fatalf("validating the Vault variant: %v", err)
	}
	if len(resp.ValidationErrors) != 1 || !strings.Contains(resp.ValidationErrors[0], "Vault not enabled") {
		t.Errorf("the Vault variant's validation errors: %q, want only that this Nomad has no Vault", resp.ValidationErrors)
	}
}

// tlsExample is a variable assignment in the comments of the job file,
// such as `#   nomad_client_key  = "{{ with nomadVar ... }}"`.
var tlsExample = regexp.MustCompile(`(?m)^#\s+(nomad_(?:ca_cert|client_cert|client_key))\s*=\s*(".*")$`)

// nomadBlock returns the key = value settings of the nomad block of a
// rendered agent configuration (values unquoted).
func nomadBlock(t *testing.T, config string) map[string]string {
	t.Helper()
	_, rest, ok := strings.Cut(config, "\nnomad {\n")
	block, _, closed := strings.Cut(rest, "\n}")
	if !ok || !closed {
		t.Fatalf("the rendered agent configuration has no nomad block:\n%s", config)
	}
	out := map[string]string{}
	for _, line := range strings.Split(block, "\n") {
		if m := policyLine.FindStringSubmatch(line); m != nil {
			out[m[1]] = strings.Trim(m[2], `"`)
		}
	}
	return out
}

// checkTLSVariant checks the TLS variables of the job file. Unset (the
// defaults), the agent's nomad block has no TLS key and no TLS file is
// rendered. Set as the file's comments show for the Nomad Variable (the
// key's template from the comment, the certificates as PEM text), the nomad
// block names the three files in secrets/ and the server name, the default
// address is https, each file is rendered from its variable into secrets/
// (reloading the agent when it changes), and the key's template appears
// nowhere else in the job. The comment's Vault PKI example parses too. A
// private key given as a variable's value, or a certificate without its
// key, is refused at parse time, naming the variable and not echoing the
// key.
func checkTLSVariant(t *testing.T, nc *api.Client, src string) {
	t.Helper()
	parse := func(vars map[string]any, extra string) (*api.Job, error) {
		return nc.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: src, Variables: hclVars(vars) + extra, Canonicalize: true})
	}
	templates := func(job *api.Job) map[string]*api.Template {
		out := map[string]*api.Template{}
		for _, tmpl := range job.TaskGroups[0].Tasks[0].Templates {
			out[*tmpl.DestPath] = tmpl
		}
		return out
	}
	tlsKeys := []string{"ca_cert", "client_cert", "client_key", "tls_server_name"}
	tlsFiles := []string{"secrets/nomad-ca.pem", "secrets/nomad-client.pem", "secrets/nomad-client-key.pem"}

	// The defaults: no TLS at all.
	job, err := parse(map[string]any{"use_vault": false}, "")
	if err != nil {
		t.Fatalf("parsing %s with use_vault = false: %v", sampleJobFile, err)
	}
	tmpls := templates(job)
	nb := nomadBlock(t, *tmpls["local/config.hcl"].EmbeddedTmpl)
	for _, k := range tlsKeys {
		if v, ok := nb[k]; ok {
			t.Errorf("TLS variables unset: the agent's nomad block sets %s = %q", k, v)
		}
	}
	if !strings.HasPrefix(nb["address"], "http://") {
		t.Errorf("TLS variables unset: the agent's Nomad address is %q, want http://...", nb["address"])
	}
	for _, f := range tlsFiles {
		if tmpls[f] != nil {
			t.Errorf("TLS variables unset: a template renders %s", f)
		}
	}

	// The comment's examples.
	examples := map[string]map[string]string{} // "vault" or "nomadVar" -> variable -> HCL string
	for _, m := range tlsExample.FindAllStringSubmatch(src, -1) {
		kind := "vault"
		if strings.Contains(m[2], "nomadVar") {
			kind = "nomadVar"
		}
		if examples[kind] == nil {
			examples[kind] = map[string]string{}
		}
		examples[kind][m[1]] = m[2]
	}
	if len(examples["vault"]) != 3 || examples["nomadVar"]["nomad_client_key"] == "" {
		t.Fatalf("%s's comments show TLS examples %v; want the three Vault PKI variables and nomad_client_key from the Nomad Variable", sampleJobFile, examples)
	}
	var vaultVars strings.Builder
	for k, v := range examples["vault"] {
		vaultVars.WriteString(k + " = " + v + "\n")
	}
	if job, err = parse(map[string]any{}, vaultVars.String()); err != nil {
		t.Errorf("%s does not parse with the comment's Vault PKI example: %v", sampleJobFile, err)
	} else if tm := templates(job)["secrets/nomad-client-key.pem"]; tm == nil || !strings.Contains(*tm.EmbeddedTmpl, "private_key") {
		t.Errorf("the Vault PKI example renders no key into secrets/nomad-client-key.pem: %+v", tm)
	}

	caPEM := "-----BEGIN CERTIFICATE-----\nMIIBe2eCA" + randHex(t, 8) + "\n-----END CERTIFICATE-----"
	certPEM := "-----BEGIN CERTIFICATE-----\nMIIBe2eClient" + randHex(t, 8) + "\n-----END CERTIFICATE-----"
	keyVar := "nomad_client_key = " + examples["nomadVar"]["nomad_client_key"] + "\n"
	vars := map[string]any{"use_vault": false, "nomad_ca_cert": caPEM, "nomad_client_cert": certPEM, "nomad_tls_server_name": "client.global.nomad"}
	job, err = parse(vars, keyVar)
	if err != nil {
		t.Fatalf("parsing %s with the TLS variables: %v", sampleJobFile, err)
	}
	tmpls = templates(job)
	nb = nomadBlock(t, *tmpls["local/config.hcl"].EmbeddedTmpl)
	for k, want := range map[string]string{
		"ca_cert":         `{{ env "NOMAD_SECRETS_DIR" }}/nomad-ca.pem`,
		"client_cert":     `{{ env "NOMAD_SECRETS_DIR" }}/nomad-client.pem`,
		"client_key":      `{{ env "NOMAD_SECRETS_DIR" }}/nomad-client-key.pem`,
		"tls_server_name": "client.global.nomad",
	} {
		if got := nb[k]; got != want {
			t.Errorf("TLS variables set: the agent's nomad block has %s = %q, want %q", k, got, want)
		}
	}
	if !strings.HasPrefix(nb["address"], "https://") {
		t.Errorf("TLS variables set: the agent's default Nomad address is %q, want https://...", nb["address"])
	}
	keyTmpl := `{{ with nomadVar "nomad/jobs/autoscaler" }}{{ .nomad_client_key }}{{ end }}`
	for i, want := range []string{caPEM, certPEM, keyTmpl} {
		tm := tmpls[tlsFiles[i]]
		if tm == nil {
			t.Errorf("TLS variables set: no template renders %s", tlsFiles[i])
			continue
		}
		if *tm.EmbeddedTmpl != want+"\n" || *tm.ChangeMode != "signal" || *tm.ChangeSignal != "SIGHUP" || *tm.Envvars {
			t.Errorf("TLS variables set: %s renders %q (change_mode %s %s, env %v), want %q on SIGHUP",
				tlsFiles[i], *tm.EmbeddedTmpl, *tm.ChangeMode, *tm.ChangeSignal, *tm.Envvars, want+"\n")
		}
	}
	// The key's template, the only way to the key, is in the secrets/
	// template alone: nowhere else in the job (its config, env, meta).
	js, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(js), ".nomad_client_key"); n != 1 {
		t.Errorf("the key's template appears %d times in the job, want once (secrets/nomad-client-key.pem):\n%s", n, js)
	}
	for dst, tm := range tmpls {
		if !strings.HasPrefix(dst, "secrets/") && (strings.Contains(*tm.EmbeddedTmpl, "nomad_client_key") || strings.Contains(*tm.EmbeddedTmpl, "PRIVATE KEY")) {
			t.Errorf("template %s, outside secrets/, reads the client key:\n%s", dst, *tm.EmbeddedTmpl)
		}
	}

	// Refused: a key as a value, a certificate without its key.
	keyBody := "MIIEe2ekey" + randHex(t, 12)
	keyPEM := "-----BEGIN EC PRIVATE KEY-----\n" + keyBody + "\n-----END EC PRIVATE KEY-----"
	for _, c := range []struct {
		name  string
		vars  map[string]any
		extra string
		want  string
	}{
		{"a key in nomad_client_key", map[string]any{"nomad_client_cert": certPEM, "nomad_client_key": keyPEM}, "", "nomad_client_key"},
		{"a key in nomad_client_cert", map[string]any{"nomad_client_cert": certPEM + "\n" + keyPEM}, keyVar, "nomad_client_cert"},
		{"a key in nomad_ca_cert", map[string]any{"nomad_ca_cert": keyPEM}, "", "nomad_ca_cert"},
		{"a certificate without its key", map[string]any{"nomad_client_cert": certPEM}, "", "nomad_client_cert and nomad_client_key go together"},
		{"a key without its certificate", map[string]any{}, keyVar, "nomad_client_cert and nomad_client_key go together"},
	} {
		c.vars["use_vault"] = false
		_, err := parse(c.vars, c.extra)
		switch {
		case err == nil:
			t.Errorf("%s: %s parses, want it refused", c.name, sampleJobFile)
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: refused with %q, want an error naming %q", c.name, err, c.want)
		case strings.Contains(err.Error(), keyBody):
			t.Errorf("%s: the error shows the key: %v", c.name, err)
		}
	}
}

// policyLine is a key = value line of a policy file, outside comments.
var policyLine = regexp.MustCompile(`^\s*([a-z_]+)\s*=\s*(.*?)\s*$`)

// policySettings lists the key = value lines of a policy or agent file,
// without the hook keys.
func policySettings(src string) []string {
	var out []string
	for _, line := range strings.Split(src, "\n") {
		m := policyLine.FindStringSubmatch(line)
		if m == nil || strings.HasPrefix(m[1], "hook_") || m[1] == "launch_hooks" || m[1] == "terminate_hooks" {
			continue
		}
		out = append(out, m[1]+" = "+m[2])
	}
	sort.Strings(out)
	return out
}

// checkSamplesMatch compares what the job renders with its defaults to the
// other samples: its policy must be ../policies/spot-pool.hcl (hooks aside),
// and its agent configuration must set every key ../agent.hcl sets.
func checkSamplesMatch(t *testing.T, nc *api.Client, src string) {
	t.Helper()
	job, err := nc.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: src})
	if err != nil {
		t.Fatalf("Nomad cannot parse %s: %v", sampleJobFile, err)
	}
	rendered := map[string]string{}
	for _, tmpl := range job.TaskGroups[0].Tasks[0].Templates {
		if tmpl.DestPath != nil && tmpl.EmbeddedTmpl != nil {
			rendered[*tmpl.DestPath] = *tmpl.EmbeddedTmpl
		}
	}
	policy, config := rendered[samplePolicyDst], rendered["local/config.hcl"]
	if policy == "" || config == "" {
		t.Fatalf("%s renders no %s or no local/config.hcl", sampleJobFile, samplePolicyDst)
	}
	got, want := policySettings(policy), policySettings(readSample(t, "policies/spot-pool.hcl"))
	if !slices.Equal(got, want) {
		t.Errorf("the job's policy differs from policies/spot-pool.hcl (hooks aside):\n job: %q\n file: %q", got, want)
	}
	keys := map[string]bool{}
	for _, kv := range policySettings(config) {
		keys[strings.Fields(kv)[0]] = true
	}
	for _, kv := range policySettings(readSample(t, "agent.hcl")) {
		if k := strings.Fields(kv)[0]; !keys[k] {
			t.Errorf("agent.hcl sets %s, the job's agent configuration does not", k)
		}
	}
}

// tarGz packs files (archive name -> path on disk) as an executable-mode
// tar.gz and returns the archive and its sha256. The gzip stream is real
// (go-getter decompresses it) but stored, not compressed: compressing 200 MB
// of binaries would take the test most of ten seconds on a busy machine.
func tarGz(t *testing.T, files map[string]string) ([]byte, string) {
	t.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(gz)
	for _, name := range names {
		b, err := os.ReadFile(files[name])
		if err != nil {
			t.Fatalf("binary for the artifact missing (run `make build` and `make tools`): %v", err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(b)), ModTime: time.Now(), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:])
}

// hclVars renders a variables file (strings, numbers, bools).
func hclVars(vars map[string]any) string {
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		switch v := vars[k].(type) {
		case string:
			fmt.Fprintf(&b, "%s = %q\n", k, v)
		default:
			fmt.Fprintf(&b, "%s = %v\n", k, v)
		}
	}
	return b.String()
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// taskProcesses returns the processes below the client agent clientPID that
// run a binary of the allocation's directory: the agent and the plugins from
// the artifacts.
func taskProcesses(t *testing.T, clientPID int, allocID string) []int {
	t.Helper()
	if clientPID == 0 {
		t.Fatal("the stable client is not running")
	}
	var out []int
	for _, pid := range localcloud.ProcessTree(clientPID) {
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil {
			continue
		}
		if strings.Contains(exe, allocID) {
			out = append(out, pid)
		}
	}
	return out
}

// allocLogs reads the task's stdout and stderr through the Nomad API.
func allocLogs(t *testing.T, nc *api.Client, alloc *api.Allocation) string {
	t.Helper()
	var b strings.Builder
	for _, stream := range []string{"stdout", "stderr"} {
		cancel := make(chan struct{})
		frames, errs := nc.AllocFS().Logs(alloc, false, sampleJobTask, stream, api.OriginStart, 0, cancel, nil)
	read:
		for {
			select {
			case f, ok := <-frames:
				if !ok {
					break read
				}
				b.Write(f.Data)
			case err, ok := <-errs:
				if ok && err != nil {
					t.Logf("reading the task's %s: %v", stream, err)
				}
				if !ok || err != nil {
					break read
				}
			case <-time.After(10 * time.Second):
				t.Logf("reading the task's %s: timed out", stream)
				break read
			}
		}
		close(cancel)
	}
	return b.String()
}

// catAllocFile reads a file of the allocation through the Nomad API.
func catAllocFile(nc *api.Client, alloc *api.Allocation, path string) (string, error) {
	rc, err := nc.AllocFS().Cat(alloc, path, nil)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// checkAgentHealth finds the agent's service registration and asks its
// health endpoint.
func checkAgentHealth(t *testing.T, nc *api.Client) {
	t.Helper()
	regs, _, err := nc.Services().Get("nomad-autoscaler", nil)
	if err != nil || len(regs) != 1 {
		t.Errorf("service nomad-autoscaler: %d registrations, %v; want 1", len(regs), err)
		return
	}
	url := fmt.Sprintf("http://%s:%d/v1/health", regs[0].Address, regs[0].Port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("agent health at %s: %v", url, err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("agent health at %s: %s", url, resp.Status)
	}
}
