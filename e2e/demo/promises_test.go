package main

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nomad-spotfleet/nomad-spotfleet/e2e/localcloud"
)

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// goodIP is each instance's private address in goodDay (in the order of
// its jobs: 172.31.0.4 and up).
var goodIP = map[string]string{"i-a": "172.31.0.4", "i-b": "172.31.0.5", "i-f": "172.31.0.6", "i-c": "172.31.0.7", "i-d": "172.31.0.8"}

func nodeDir(inst string) string { return "/work/clients/" + inst + "/node" }

func job(id int, inst, status string, finished float64) localcloud.AWXJob {
	return localcloud.AWXJob{ID: id, TemplateID: configureTemplateID, Name: configureTemplate, Status: status, Limit: goodIP[inst],
		ExtraVars: map[string]any{"instance_id": inst, "node_dir": nodeDir(inst)}, Started: at(finished - 2), Finished: at(finished)}
}

// goodDay is the history of a demo in which every promise holds: i-a is the
// first node, i-b and i-f come with the rise (i-f's playbook fails, i-c
// replaces it), i-b is interrupted at 100 s and i-d replaces it.
func goodDay() (history, []localcloud.AWXJob, summary, finalState) {
	h := history{Start: t0, End: at(200), Instances: map[string]instHist{
		"i-a": {ID: "i-a", Seen: at(1)},
		"i-b": {ID: "i-b", Seen: at(20), Gone: at(140)},
		"i-f": {ID: "i-f", Seen: at(20), Gone: at(27)},
		"i-c": {ID: "i-c", Seen: at(30), Gone: at(180)},
		"i-d": {ID: "i-d", Seen: at(101), Gone: at(181)},
	},
		// The scale-out 1→3 launched i-b and i-f; the scale-in 3→1 at the end.
		Marks:       []mark{{At: at(19.5), Kind: markScaleOut, Label: "1→3"}, {At: at(179), Kind: markScaleIn, Label: "3→1"}},
		ScaledIn:    map[string]time.Time{"i-c": at(179), "i-d": at(179)},
		AdmitLogged: map[string]time.Time{"i-a": at(8), "i-b": at(30), "i-c": at(40), "i-d": at(115)},
		HookFailed:  map[string]time.Time{"i-f": at(26)},
		HookRemoved: map[string]time.Time{"i-f": at(26.5)},
		IRQ: interruption{Instance: "i-b", NodeID: "nb", Warned: at(100), Deadline: at(140), DrainLogged: at(100.2),
			Requested: at(100.3), GivenBack: at(101.2), GivenBackWhy: "the replacement has launched", Terminated: at(140)},
	}
	for id, in := range h.Instances {
		in.PrivateIP = goodIP[id]
		h.Instances[id] = in
	}
	h.Nodes = []nodeHist{
		{ID: "na", Name: "i-a", Registered: at(2), Ready: at(2), Admitted: at(9)},
		{ID: "nb", Name: "i-b", Registered: at(21), Ready: at(21), Admitted: at(31), DrainStart: at(101), DrainEnd: at(104)},
		{ID: "nf", Name: "i-f", Registered: at(21), Ready: at(21)},
		{ID: "nc", Name: "i-c", Registered: at(31), Ready: at(31), Admitted: at(41)},
		{ID: "nd", Name: "i-d", Registered: at(102), Ready: at(102), Admitted: at(116)},
	}
	for i := range h.Nodes {
		h.Nodes[i].NodeDir = nodeDir(h.Nodes[i].Name)
		if !h.Nodes[i].Admitted.IsZero() {
			h.Nodes[i].Marker = h.Nodes[i].Name + "\n"
		}
	}
	h.Allocs = []allocHist{
		{ID: "a1", NodeName: "i-a", Created: at(9)},
		{ID: "a2", NodeName: "i-b", Created: at(31)},
		{ID: "a3", NodeName: "i-c", Created: at(41)},
		{ID: "a4", NodeName: "i-d", Created: at(117)},
	}
	jobs := []localcloud.AWXJob{
		job(1001, "i-a", localcloud.AWXSuccessful, 6),
		job(1002, "i-b", localcloud.AWXSuccessful, 25),
		job(1003, "i-f", localcloud.AWXFailed, 25),
		job(1004, "i-c", localcloud.AWXSuccessful, 36),
		job(1005, "i-d", localcloud.AWXSuccessful, 110),
	}
	s := summary{PeakTarget: 5, ScaleOuts: 2, ScaleIns: 1}
	fin := finalState{Target: 1, Running: 1, Ready: 1, NonTerminated: 1,
		States: map[string]string{"i-a": "running", "i-f": "terminated", "i-b": "terminated"}}
	return h, jobs, s, fin
}

func TestPromisesHoldOnAGoodDay(t *testing.T) {
	h, jobs, s, fin := goodDay()
	for _, p := range checkPromises(h, jobs, s, fin) {
		if !p.OK {
			t.Errorf("%s: %s", p.What, p.Detail)
		}
	}
	if err := promisesError(checkPromises(h, jobs, s, fin)); err != nil {
		t.Errorf("promisesError = %v, want nil", err)
	}
}

// TestPromisesFail breaks one thing at a time; exactly the promise it
// concerns must fail, with a reason naming it.
func TestPromisesFail(t *testing.T) {
	tests := []struct {
		name, promise, reason string
		breakIt               func(h *history, jobs *[]localcloud.AWXJob, s *summary, fin *finalState)
	}{
		{"alloc before the job ended", "every admitted node ran its AWX playbook", "before its job 1004 ended",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) { h.Allocs[2].Created = at(35) }},
		{"admitted before the job ended", "every admitted node ran its AWX playbook", "not after its job 1002",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) { h.AdmitLogged["i-b"] = at(24) }},
		{"two jobs for one node", "every admitted node ran its AWX playbook", "2 configure jobs",
			func(_ *history, jobs *[]localcloud.AWXJob, _ *summary, _ *finalState) {
				*jobs = append(*jobs, job(1006, "i-a", localcloud.AWXSuccessful, 50))
			}},
		{"work on the failed node", "nothing placed on it", "1 allocation(s) were placed on it",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) {
				h.Allocs = append(h.Allocs, allocHist{ID: "bad", NodeName: "i-f", Created: at(27)})
			}},
		{"failed instance still running", "nothing placed on it", `EC2 shows it "running"`,
			func(_ *history, _ *[]localcloud.AWXJob, _ *summary, fin *finalState) { fin.States["i-f"] = "running" }},
		{"no fault claimed", "nothing placed on it", "0 configure jobs did not succeed",
			func(_ *history, jobs *[]localcloud.AWXJob, _ *summary, _ *finalState) {
				(*jobs)[2].Status = localcloud.AWXSuccessful
			}},
		{"replacement too late", "before the notice ended", "not within the 40s notice",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) { h.Nodes[4].Admitted = at(141) }},
		{"drain not complete before termination", "before the notice ended", "not before EC2 took it",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) { h.Nodes[1].DrainEnd = at(141) }},
		{"never drained", "before the notice ended", "not seen draining",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) {
				h.Nodes[1].DrainStart = time.Time{}
			}},
		{"no interruption", "before the notice ended", "no spot interruption was sent",
			func(h *history, _ *[]localcloud.AWXJob, _ *summary, _ *finalState) { h.IRQ = interruption{} }},
		{"above the minimum", "back to its minimum", "target 2",
			func(_ *history, _ *[]localcloud.AWXJob, _ *summary, fin *finalState) { fin.Target = 2 }},
		{"lost", "no allocation lost", "1 lost",
			func(_ *history, _ *[]localcloud.AWXJob, s *summary, _ *finalState) { s.Lost = []string{"allocation x"} }},
		{"leaked", "no instance leaked", "1 leaked",
			func(_ *history, _ *[]localcloud.AWXJob, _ *summary, fin *finalState) { fin.Leaked = []string{"i-z"} }},
		{"never grew", "followed the load", "peak target 2",
			func(_ *history, _ *[]localcloud.AWXJob, s *summary, _ *finalState) { s.PeakTarget = 2 }},
	}
	// Work on the failed node breaks the admission promise too: that node
	// took work without a successful job.
	also := map[string]string{"work on the failed node": "ran its AWX playbook before it took work"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, jobs, s, fin := goodDay()
			tt.breakIt(&h, &jobs, &s, &fin)
			for _, p := range checkPromises(h, jobs, s, fin) {
				concerned := strings.Contains(p.What, tt.promise)
				if concerned && p.OK {
					t.Errorf("%q holds, want it broken: %s", p.What, p.Detail)
				}
				if concerned && !strings.Contains(p.Detail, tt.reason) {
					t.Errorf("%q: reason %q lacks %q", p.What, p.Detail, tt.reason)
				}
				if !concerned && !p.OK && (also[tt.name] == "" || !strings.Contains(p.What, also[tt.name])) {
					t.Errorf("%q broke too: %s", p.What, p.Detail)
				}
			}
			if err := promisesError(checkPromises(h, jobs, s, fin)); err == nil || !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("promisesError = %v, want one naming %q", err, tt.reason)
			}
		})
	}
}

func TestLeaks(t *testing.T) {
	all := []ec2Instance{{"i-a", "running"}, {"i-b", "terminated"}, {"i-x", "running"}, {"i-y", "stopped"}}
	fleet := map[string]bool{"i-a": true, "i-y": true}
	serving := map[string]bool{"i-a": true}
	got := leaks(all, fleet, serving, []string{"i-a", "i-b"}, 1)
	want := []string{"i-x is running but not", "i-y runs in the fleet but is not a ready", "EC2 lists 3 instances not terminated", "client agent still runs for i-b"}
	if len(got) != len(want) {
		t.Fatalf("leaks = %q, want %d entries", got, len(want))
	}
	for _, w := range want {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, w)
		}
		if !found {
			t.Errorf("leaks %q lack %q", got, w)
		}
	}
	if got := leaks([]ec2Instance{{"i-a", "running"}, {"i-b", "terminated"}}, fleet, serving, []string{"i-a"}, 1); len(got) != 0 {
		t.Errorf("leaks of a clean fleet = %q, want none", got)
	}
}

func TestTimeAboveAndPeak(t *testing.T) {
	samples := []sample{
		{At: at(0), HaveCPU: false, CPU: math.NaN(), Ready: 0},
		{At: at(1), HaveCPU: true, CPU: 50, Ready: 1},
		{At: at(3), HaveCPU: true, CPU: 90, Ready: 1},
		{At: at(6), HaveCPU: true, CPU: 80, Ready: 3},
		{At: at(7), HaveCPU: true, CPU: 60, Ready: 2},
		{At: at(11), HaveCPU: true, CPU: 99, Ready: 2}, // last: no duration
	}
	above, measured := timeAbove(samples, 75)
	if above != 4*time.Second || measured != 10*time.Second {
		t.Errorf("timeAbove = %s of %s, want 4s of 10s", above, measured)
	}
	if p := peakNodes(samples); p != 3 {
		t.Errorf("peakNodes = %d, want 3", p)
	}
}

func TestJobOutcome(t *testing.T) {
	out := `TASK [Fail on purpose when this job claimed the fault] *************************
fatal: [172.31.0.4]: FAILED! => {"changed": false, "msg": "demo: the monitoring agent's package could not be downloaded on i-1 (failure injected on purpose)"}

PLAY RECAP *********************************************************************
172.31.0.4                 : ok=1    changed=1    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
`
	got := jobOutcome(out)
	for _, want := range []string{"task failed: demo: the monitoring agent's package could not be downloaded on i-1", "recap ok=1 changed=1 failed=1"} {
		if !strings.Contains(got, want) {
			t.Errorf("jobOutcome = %q, lacks %q", got, want)
		}
	}
	if got := jobOutcome("PLAY RECAP\nh : ok=5    changed=1    unreachable=0    failed=0    skipped=1"); got != "recap ok=5 changed=1 failed=0" {
		t.Errorf("jobOutcome of a good run = %q", got)
	}
}

func TestConfigurePlaybookAndTargetBlock(t *testing.T) {
	pb := configurePlaybook("/w/fault-armed", "/r/monitoring.yml")
	for _, want := range []string{`- "/w/fault-armed"`, `- "/w/fault-armed.claimed-by-{{ instance_id }}"`, `import_playbook: "/r/monitoring.yml"`, "when: fault_claim.rc == 0"} {
		if !strings.Contains(pb, want) {
			t.Errorf("playbook lacks %q:\n%s", want, pb)
		}
	}
	base := "target \"spotfleet\" {\n  config = {\n    aws_secret_access_key = \"test\"\n  }\n}\n"
	got, err := targetWithAWX(base, "http://127.0.0.1:1", "http://127.0.0.1:2/q")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`awx_url                = "http://127.0.0.1:1"`, `awx_token_env          = "DEMO_AWX_TOKEN"`, `interruption_queue_url = "http://127.0.0.1:2/q"`} {
		if !strings.Contains(got, want) {
			t.Errorf("target block lacks %q:\n%s", want, got)
		}
	}
	if _, err := targetWithAWX("target {}", "u", "q"); err == nil || !strings.Contains(err.Error(), "aws_secret_access_key") {
		t.Errorf("targetWithAWX without the anchor: err %v, want one naming the missing line", err)
	}
	pol := clusterPolicyHCL("sfr-1")
	for _, want := range []string{`launch_hooks                = "configure"`, `hook_configure_job_template = "configure-node"`,
		`admission_meta_key          = "spotfleet_admission"`, `interruption_drain_deadline = "10s"`, `node_warmup                 = "6s"`} {
		if !strings.Contains(pol, want) {
			t.Errorf("policy lacks %q:\n%s", want, pol)
		}
	}
}

func TestRenderPicture(t *testing.T) {
	h, _, _, _ := goodDay()
	for i := 0; i <= 200; i += 2 {
		s := sample{At: at(float64(i)), Target: 1 + i/50, Ready: 1 + i/60, Admitting: i % 20 / 19}
		if i > 6 {
			s.HaveCPU, s.CPU = true, 40+float64(i%70)
		} else {
			s.CPU = math.NaN()
		}
		h.Samples = append(h.Samples, s)
	}
	h.Marks = []mark{
		{At: at(10), Kind: markLoad, Label: "rise (4)"},
		{At: at(22), Kind: markScaleOut, Label: "1→3"},
		{At: at(26), Kind: markHookFailed, Label: "i-f"},
		{At: at(31), Kind: markAdmitted, Label: "i-b"},
		{At: at(100), Kind: markInterruption, Label: "spot interruption of i-b"},
		{At: at(140), Kind: markInterruptionEnd, Label: "i-b reclaimed"},
		{At: at(170), Kind: markScaleIn, Label: "5→1"},
	}
	dir := t.TempDir()
	pngPath, svgPath, err := renderPicture(h, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s does not decode as PNG: %v", pngPath, err)
	}
	if b := img.Bounds(); b.Dx() < 600 || b.Dy() < 400 {
		t.Errorf("PNG is %dx%d, want a readable size", b.Dx(), b.Dy())
	}
	raw, err := os.ReadFile(svgPath)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(raw))
	root := ""
	for {
		tok, err := dec.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("%s does not parse as XML: %v", svgPath, err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("SVG root element is %q, want svg", root)
	}
	for _, want := range []string{"playbook failed", "spot interruption warning", "scale-out", "scale-in", "workload CPU", "admitted ready nodes"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("SVG has no text %q", want)
		}
	}
	if _, _, err := renderPicture(history{Start: t0, End: t0}, t.TempDir()); err == nil {
		t.Error("a picture of a demo without duration was drawn, want an error")
	}
}
