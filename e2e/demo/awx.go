package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

// awxSide is the AWX stand-in of the demo: one job template, configure-node,
// that runs the real ansible-playbook with the demo's playbook (the product's
// monitoring.yml behind a one-shot fault).
type awxSide struct {
	awx   *localcloud.AWX
	token string
	// fault is the file whose presence makes the next configuration fail:
	// the first job to rename it away fails, every other job goes on.
	fault string
}

// configurePlaybook is the demo's post-configuration: a job that claims the
// armed fault (an atomic rename, so exactly one job claims it however many
// run at once) fails the way a broken download would; every job then plays
// the product's monitoring.yml, which writes the node's monitoring marker.
func configurePlaybook(fault, monitoring string) string {
	return fmt.Sprintf(`---
- name: Demo fault injection (one job fails on purpose when armed)
  hosts: all
  gather_facts: false
  tasks:
    - name: Claim the armed fault, if any
      ansible.builtin.command:
        argv:
          - mv
          - %[1]q
          - "%[1]s.claimed-by-{{ instance_id }}"
      register: fault_claim
      changed_when: fault_claim.rc == 0
      failed_when: false
    - name: Fail on purpose when this job claimed the fault
      ansible.builtin.fail:
        msg: "demo: the monitoring agent's package could not be downloaded on {{ instance_id }} (failure injected on purpose)"
      when: fault_claim.rc == 0

- name: The product's monitoring playbook
  ansible.builtin.import_playbook: %[2]q
`, fault, monitoring)
}

// startAWX writes the playbook into dir and starts the stand-in.
func startAWX(ctx context.Context, dir string) (*awxSide, error) {
	root, err := localcloud.RepoRoot()
	if err != nil {
		return nil, err
	}
	monitoring := filepath.Join(root, "agent-config", "playbooks", "monitoring.yml")
	if _, err := os.Stat(monitoring); err != nil {
		return nil, fmt.Errorf("the product's playbook: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create the AWX directory: %w", err)
	}
	a := &awxSide{fault: filepath.Join(dir, "fault-armed")}
	playbook := filepath.Join(dir, "configure-node.yml")
	if err := os.WriteFile(playbook, []byte(configurePlaybook(a.fault, monitoring)), 0o644); err != nil {
		return nil, fmt.Errorf("write the demo playbook: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("make the AWX token: %w", err)
	}
	a.token = "demo-" + hex.EncodeToString(b)
	a.awx, err = localcloud.StartAWX(ctx, localcloud.AWXConfig{
		Token: a.token,
		Templates: []localcloud.AWXTemplate{{
			ID: configureTemplateID, Name: configureTemplate, Playbook: playbook,
			AskLimitOnLaunch: true, AskVariablesOnLaunch: true,
		}},
		WorkDir:         filepath.Join(dir, "jobs"),
		RunPlaybook:     true,
		PlaybookTimeout: hookTimeout,
		StepDelay:       20 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("start the AWX stand-in: %w", err)
	}
	return a, nil
}

// armFault makes the next configuration job fail.
func (a *awxSide) armFault() error {
	if err := os.WriteFile(a.fault, []byte("armed by the demo\n"), 0o644); err != nil {
		return fmt.Errorf("arm the playbook fault: %w", err)
	}
	return nil
}

// faultArmed reports whether the fault waits for a job to claim it.
func (a *awxSide) faultArmed() bool {
	_, err := os.Stat(a.fault)
	return err == nil
}

// env is what the agent needs to reach AWX: its token, by environment.
func (a *awxSide) env() []string { return []string{awxTokenEnv + "=" + a.token} }

var (
	// recapRe finds the counts of a PLAY RECAP line.
	recapRe = regexp.MustCompile(`ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)
	// fatalMsgRe finds the message of a failed task.
	fatalMsgRe = regexp.MustCompile(`FAILED! => .*"msg": "((?:[^"\\]|\\.)*)"`)
)

// jobOutcome summarises a finished job's ansible output in a few words.
func jobOutcome(stdout string) string {
	var parts []string
	if m := fatalMsgRe.FindStringSubmatch(stdout); m != nil {
		parts = append(parts, "task failed: "+m[1])
	}
	if ms := recapRe.FindAllStringSubmatch(stdout, -1); len(ms) > 0 {
		m := ms[len(ms)-1]
		parts = append(parts, fmt.Sprintf("recap ok=%s changed=%s failed=%s", m[1], m[2], m[4]))
	}
	return strings.Join(parts, "; ")
}

// jobInstance is the instance a configure job ran for.
func jobInstance(j localcloud.AWXJob) string {
	if v, ok := j.ExtraVars["instance_id"]; ok {
		return fmt.Sprint(v)
	}
	return ""
}
