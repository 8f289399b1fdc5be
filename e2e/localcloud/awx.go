package localcloud

// The AWX stand-in: an HTTP server on loopback that speaks the part of the
// AWX (Ansible Tower) API v2 a provisioning hook uses: find a job template by
// name, launch it (limit and extra_vars are used only when the template asks
// for them on launch; otherwise AWX lists them in ignored_fields), follow the
// job's status, read its output, list jobs with AWX's filters and pages
// (awxjobs.go), and the provisioning callback a host calls with the
// template's host_config_key. AWX itself cannot run here. A job
// either runs the real ansible-playbook against its limit with a local
// connection, or ends with a scripted result (tests without ansible). The
// stand-in is started independently of the Cloud.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"
)

// AnsibleInstallHint is how to install ansible-playbook here; a job that
// needs it and does not find it on PATH ends in status "error" with a message
// that contains this command.
const AnsibleInstallHint = "apt-get install -y ansible-core"

// AWX job statuses, in the order a job goes through them; the last four are
// final.
const (
	AWXNew        = "new"
	AWXPending    = "pending"
	AWXWaiting    = "waiting"
	AWXRunning    = "running"
	AWXSuccessful = "successful"
	AWXFailed     = "failed"
	AWXError      = "error"
	AWXCanceled   = "canceled"
)

// awxNotAuthenticated is AWX's answer without valid credentials.
const awxNotAuthenticated = `{"detail":"Authentication credentials were not provided."}`

// maxAWXCalls bounds the call record; maxAWXBody bounds a recorded body.
const (
	maxAWXCalls = 10000
	maxAWXBody  = 64 << 10
)

// firstAWXJobID is the first job ID handed out: far from template IDs, so a
// client that mixes them up gets a 404 rather than a wrong answer.
const firstAWXJobID = 1001

// AWXFinal reports whether status is a final job status.
func AWXFinal(status string) bool {
	switch status {
	case AWXSuccessful, AWXFailed, AWXError, AWXCanceled:
		return true
	}
	return false
}

// AWXTemplate is a job template of the stand-in.
type AWXTemplate struct {
	ID   int    // > 0, unique
	Name string // unique
	// Playbook is the playbook's path (relative paths are taken from the
	// working directory of StartAWX); needed when jobs run ansible-playbook.
	Playbook string
	// AskLimitOnLaunch and AskVariablesOnLaunch are AWX's "prompt on
	// launch" settings: without them a launch's limit or extra_vars are
	// ignored and listed in ignored_fields.
	AskLimitOnLaunch     bool
	AskVariablesOnLaunch bool
	// HostConfigKey enables the provisioning callback; empty: callbacks
	// are refused (403).
	HostConfigKey string
}

// AWXResult is the scripted outcome of a job when AWXConfig.RunPlaybook is
// false.
type AWXResult struct {
	// Status is the final status; empty: successful. A status that is not
	// final is taken as "error".
	Status string
	// Stdout is the job's output; empty: a line naming the job.
	Stdout string
	// Explanation is AWX's job_explanation (why a job ended in error).
	Explanation string
	// Delay is how long the job stays running; zero: AWXConfig.StepDelay.
	Delay time.Duration
}

// AWXConfig configures StartAWX.
type AWXConfig struct {
	// Token is the OAuth2 token every request must send as
	// "Authorization: Bearer <token>" (the provisioning callback excepted,
	// as in AWX: its host_config_key is its credential). Required.
	Token string
	// Templates are the job templates.
	Templates []AWXTemplate
	// WorkDir holds the extra-vars files and output of playbook runs;
	// empty: a temporary directory removed by Close.
	WorkDir string
	// Logf, when set, receives the stand-in's diagnostics (t.Logf fits).
	Logf func(format string, args ...any)
	// RunPlaybook makes jobs run the real ansible-playbook, found on PATH
	// (AnsiblePath overrides), as
	//   ansible-playbook -i "<limit>," -c local <playbook> -e @<extra vars>.json
	// Without it a job ends as Script says.
	RunPlaybook bool
	// AnsiblePath is the ansible-playbook binary; empty: looked up on PATH
	// when each job starts.
	AnsiblePath string
	// PlaybookTimeout ends a playbook run that lasts longer (status
	// "failed", as AWX's job timeout); zero: 5 minutes.
	PlaybookTimeout time.Duration
	// Script decides a job's outcome when RunPlaybook is false; nil: every
	// job is successful.
	Script func(job AWXJob) AWXResult
	// StepDelay is how long a job stays in each of new, pending and
	// waiting (and running, for a scripted job); zero: 50ms.
	StepDelay time.Duration
}

// AWXJob is a snapshot of a job.
type AWXJob struct {
	ID          int
	TemplateID  int
	Name        string // the template's name
	LaunchType  string // "manual" (launch) or "callback"
	Status      string
	Failed      bool
	Limit       string
	ExtraVars   map[string]any // as used by the job
	Stdout      string
	Explanation string
	Created     time.Time
	Started     time.Time // zero until running
	Finished    time.Time // zero until final
	PID         int       // ansible-playbook's PID while it runs; 0 otherwise
}

// AWXCall is one request the stand-in answered. The token is never recorded:
// headers are not kept, and the token is masked wherever it appears in the
// path, query or body.
type AWXCall struct {
	Time   time.Time
	Method string
	Path   string
	Query  string
	Body   string // up to 64 KiB
	Status int
	Fault  bool // answered by FailNext
}

// AWX is a running AWX stand-in.
type AWX struct {
	cfg      AWXConfig
	url      string
	srv      *http.Server
	workDir  string
	ownsWork bool
	tmpls    map[int]AWXTemplate
	done     chan struct{} // closed by Close
	wg       sync.WaitGroup

	mu        sync.Mutex
	closed    bool
	nextID    int
	jobs      map[int]*awxJob
	faults    []*awxFault
	forced    map[int]string
	calls     []AWXCall
	closeOnce sync.Once
	closeErr  error
}

type awxJob struct {
	AWXJob
	extraJSON string
	out       *lockedBuffer
	cancel    chan struct{} // closed by cancel
}

type awxFault struct {
	prefix string
	status int
	left   int
}

// lockedBuffer collects a playbook's output while it is read by the API.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// StartAWX validates cfg and serves the stand-in on a free loopback port.
// ctx bounds the start only; the stand-in runs until Close.
func StartAWX(ctx context.Context, cfg AWXConfig) (*AWX, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("localcloud: start AWX: %w", err)
	}
	if cfg.Token == "" {
		return nil, errors.New("localcloud: start AWX: a Token is required")
	}
	if cfg.StepDelay <= 0 {
		cfg.StepDelay = 50 * time.Millisecond
	}
	if cfg.PlaybookTimeout <= 0 {
		cfg.PlaybookTimeout = 5 * time.Minute
	}
	a := &AWX{tmpls: map[int]AWXTemplate{}, done: make(chan struct{}), nextID: firstAWXJobID,
		jobs: map[int]*awxJob{}, forced: map[int]string{}}
	names := map[string]bool{}
	for _, t := range cfg.Templates {
		switch {
		case t.ID <= 0:
			return nil, fmt.Errorf("localcloud: start AWX: template %q: ID must be > 0", t.Name)
		case t.Name == "":
			return nil, fmt.Errorf("localcloud: start AWX: template %d: Name is empty", t.ID)
		case a.tmpls[t.ID].ID != 0 || names[t.Name]:
			return nil, fmt.Errorf("localcloud: start AWX: template %d %q: ID or name used twice", t.ID, t.Name)
		case cfg.RunPlaybook && t.Playbook == "":
			return nil, fmt.Errorf("localcloud: start AWX: template %d %q: Playbook is empty", t.ID, t.Name)
		}
		if t.Playbook != "" {
			p, err := filepath.Abs(t.Playbook)
			if err != nil {
				return nil, fmt.Errorf("localcloud: start AWX: template %q: %w", t.Name, err)
			}
			t.Playbook = p
		}
		a.tmpls[t.ID] = t
		names[t.Name] = true
	}
	cfg.Templates = slices.Clone(cfg.Templates)
	a.cfg = cfg
	a.workDir = cfg.WorkDir
	if a.workDir == "" {
		d, err := os.MkdirTemp("", "localcloud-awx-")
		if err != nil {
			return nil, fmt.Errorf("localcloud: start AWX: %w", err)
		}
		a.workDir, a.ownsWork = d, true
	} else if err := os.MkdirAll(a.workDir, 0o755); err != nil {
		return nil, fmt.Errorf("localcloud: start AWX: %w", err)
	}
	ln, err := listenLoopback()
	if err != nil {
		if a.ownsWork {
			_ = os.RemoveAll(a.workDir)
		}
		return nil, fmt.Errorf("localcloud: start AWX: %w", err)
	}
	a.url = "http://" + ln.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v2/job_templates/{$}", a.listTemplates)
	mux.HandleFunc("GET /api/v2/job_templates/{id}/{$}", a.getTemplate)
	mux.HandleFunc("POST /api/v2/job_templates/{id}/launch/{$}", a.launch)
	mux.HandleFunc("POST /api/v2/job_templates/{id}/callback/{$}", a.callback)
	mux.HandleFunc("GET /api/v2/job_templates/{id}/jobs/{$}", a.listTemplateJobs)
	mux.HandleFunc("GET /api/v2/jobs/{$}", a.listJobs)
	mux.HandleFunc("GET /api/v2/jobs/{id}/{$}", a.getJob)
	mux.HandleFunc("GET /api/v2/jobs/{id}/stdout/{$}", a.stdout)
	mux.HandleFunc("POST /api/v2/jobs/{id}/cancel/{$}", a.cancelJob)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		awxJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
	})
	a.srv = &http.Server{
		Handler:           a.front(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = a.srv.Serve(ln) }()
	a.logf("listening at %s (%d templates, run playbooks: %v, work dir %s)", a.url, len(a.tmpls), cfg.RunPlaybook, a.workDir)
	return a, nil
}

// URL returns the stand-in's base URL (http://127.0.0.1:<port>); the API is
// under /api/v2/.
func (a *AWX) URL() string { return a.url }

// Close stops the server and every running playbook (its process group,
// by PID); jobs not yet final end "canceled". It removes WorkDir only if
// StartAWX created it. Close is idempotent.
func (a *AWX) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		a.mu.Unlock()
		err := a.srv.Close()
		close(a.done)
		waited := make(chan struct{})
		go func() {
			a.wg.Wait()
			close(waited)
		}()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			err = errors.Join(err, errors.New("jobs did not stop within 10s"))
		}
		if a.ownsWork {
			err = errors.Join(err, os.RemoveAll(a.workDir))
		}
		if err != nil {
			a.closeErr = fmt.Errorf("localcloud: stop AWX: %w", err)
		}
		a.logf("stopped")
	})
	return a.closeErr
}

// FailNext makes the next count requests whose path starts with pathPrefix
// fail with status (default 500) and an AWX-like JSON body, before the token
// is checked. Rules are tried in the order they were added.
func (a *AWX) FailNext(pathPrefix string, status, count int) {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if count <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.faults = append(a.faults, &awxFault{prefix: pathPrefix, status: status, left: count})
}

// SetJobResult forces the final status of every job of templateID that has
// not ended yet (whatever its playbook or script says); "" removes the rule.
// A cancelled job stays canceled.
func (a *AWX) SetJobResult(templateID int, status string) error {
	if status != "" && !AWXFinal(status) {
		return fmt.Errorf("localcloud: AWX SetJobResult: %q is not a final status", status)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if status == "" {
		delete(a.forced, templateID)
	} else {
		a.forced[templateID] = status
	}
	return nil
}

// Calls returns every request answered so far, oldest first.
func (a *AWX) Calls() []AWXCall {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// Jobs returns a snapshot of every job, by ID.
func (a *AWX) Jobs() []AWXJob {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AWXJob, 0, len(a.jobs))
	for _, j := range a.jobs {
		out = append(out, j.snapshot())
	}
	slices.SortFunc(out, func(x, y AWXJob) int { return x.ID - y.ID })
	return out
}

// Job returns a snapshot of one job.
func (a *AWX) Job(id int) (AWXJob, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	j, ok := a.jobs[id]
	if !ok {
		return AWXJob{}, false
	}
	return j.snapshot(), true
}

// WaitJob waits until job id is final and returns it.
func (a *AWX) WaitJob(ctx context.Context, id int) (AWXJob, error) {
	for {
		j, ok := a.Job(id)
		if !ok {
			return AWXJob{}, fmt.Errorf("localcloud: AWX job %d does not exist", id)
		}
		if AWXFinal(j.Status) {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return j, fmt.Errorf("localcloud: AWX job %d still %s: %w", id, j.Status, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (j *awxJob) snapshot() AWXJob {
	s := j.AWXJob
	s.ExtraVars = cloneVars(j.ExtraVars)
	if j.out != nil && !AWXFinal(j.Status) {
		s.Stdout = j.out.String()
	}
	return s
}

func cloneVars(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (a *AWX) logf(format string, args ...any) {
	if a.cfg.Logf != nil {
		a.cfg.Logf("localcloud: awx: "+format, args...)
	}
}

// front records every call, answers injected faults and checks the token.
func (a *AWX) front(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w}
		fault := false
		defer func() {
			rec := string(body)
			if len(rec) > maxAWXBody {
				rec = rec[:maxAWXBody]
			}
			c := AWXCall{Time: start, Method: r.Method, Path: a.mask(r.URL.Path), Query: a.mask(r.URL.RawQuery),
				Body: a.mask(rec), Status: sw.status, Fault: fault}
			a.mu.Lock()
			if len(a.calls) >= maxAWXCalls {
				a.calls = append(a.calls[:0], a.calls[len(a.calls)-maxAWXCalls/2:]...)
			}
			a.calls = append(a.calls, c)
			a.mu.Unlock()
			a.logf("%s %s -> %d", c.Method, c.Path, c.Status)
		}()

		a.mu.Lock()
		closed := a.closed
		var f *awxFault
		for _, x := range a.faults {
			if x.left > 0 && strings.HasPrefix(r.URL.Path, x.prefix) {
				f = x
				x.left--
				break
			}
		}
		a.mu.Unlock()
		if closed {
			awxJSON(sw, http.StatusServiceUnavailable, map[string]any{"detail": "localcloud AWX stand-in is closed."})
			return
		}
		if f != nil {
			fault = true
			awxJSON(sw, f.status, map[string]any{"detail": fmt.Sprintf("localcloud AWX: injected fault (%d)", f.status)})
			return
		}
		isCallback := r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/callback/")
		if !isCallback && !a.authorized(r) {
			sw.Header().Set("Content-Type", "application/json")
			sw.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
			sw.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(sw, awxNotAuthenticated)
			return
		}
		next.ServeHTTP(sw, r)
	})
}

func (a *AWX) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(tok) == a.cfg.Token
}

// mask hides the token wherever it appears.
func (a *AWX) mask(s string) string {
	if a.cfg.Token == "" {
		return s
	}
	s = strings.ReplaceAll(s, a.cfg.Token, "<token>")
	return strings.ReplaceAll(s, url.QueryEscape(a.cfg.Token), "<token>")
}

func awxJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"detail":"encode error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (a *AWX) template(w http.ResponseWriter, r *http.Request) (AWXTemplate, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	t, ok := a.tmpls[id]
	if err != nil || !ok {
		awxJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return AWXTemplate{}, false
	}
	return t, true
}

func (a *AWX) templateJSON(t AWXTemplate) map[string]any {
	return map[string]any{
		"id": t.ID, "type": "job_template", "url": fmt.Sprintf("/api/v2/job_templates/%d/", t.ID),
		"name": t.Name, "playbook": filepath.Base(t.Playbook),
		"ask_limit_on_launch": t.AskLimitOnLaunch, "ask_variables_on_launch": t.AskVariablesOnLaunch,
		"host_config_key": t.HostConfigKey,
	}
}

func (a *AWX) listTemplates(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var ids []int
	for id, t := range a.tmpls {
		if (!q.Has("name") || q.Get("name") == t.Name) && (!q.Has("id") || q.Get("id") == strconv.Itoa(id)) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	results := make([]map[string]any, 0, len(ids))
	for _, id := range ids {
		results = append(results, a.templateJSON(a.tmpls[id]))
	}
	awxJSON(w, http.StatusOK, map[string]any{"count": len(results), "next": nil, "previous": nil, "results": results})
}

func (a *AWX) getTemplate(w http.ResponseWriter, r *http.Request) {
	if t, ok := a.template(w, r); ok {
		awxJSON(w, http.StatusOK, a.templateJSON(t))
	}
}

// launchBody is a launch or callback request; extra_vars is an object or a
// JSON or YAML string.
type launchBody struct {
	Limit         json.RawMessage `json:"limit"`
	ExtraVars     json.RawMessage `json:"extra_vars"`
	HostConfigKey string          `json:"host_config_key"`
	Host          string          `json:"host"`
}

func present(m json.RawMessage) bool {
	return len(m) > 0 && string(m) != "null"
}

// parseExtraVars reads extra_vars as AWX does: an object, or a string of
// JSON or YAML that holds a mapping.
func parseExtraVars(raw json.RawMessage) (map[string]any, error) {
	vars := map[string]any{}
	if !present(raw) {
		return vars, nil
	}
	if raw[0] == '{' {
		if err := json.Unmarshal(raw, &vars); err != nil {
			return nil, err
		}
		return vars, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, errors.New("must be an object or a string")
	}
	return parseVarsText(s)
}

func parseVarsText(s string) (map[string]any, error) {
	vars := map[string]any{}
	if strings.TrimSpace(s) == "" {
		return vars, nil
	}
	jerr := json.Unmarshal([]byte(s), &vars)
	if jerr == nil {
		return vars, nil
	}
	j, yerr := yaml.YAMLToJSON([]byte(s))
	if yerr == nil {
		vars = map[string]any{}
		if yerr = json.Unmarshal(j, &vars); yerr == nil {
			return vars, nil
		}
	}
	return nil, fmt.Errorf("Cannot parse as JSON (error: %v) or YAML (error: %v).", jerr, yerr)
}

func (a *AWX) launch(w http.ResponseWriter, r *http.Request) {
	t, ok := a.template(w, r)
	if !ok {
		return
	}
	var b launchBody
	if body, _ := io.ReadAll(r.Body); len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &b); err != nil {
			awxJSON(w, http.StatusBadRequest, map[string]any{"detail": "JSON parse error - " + err.Error()})
			return
		}
	}
	ignored := map[string]any{}
	limit := ""
	vars := map[string]any{}
	if present(b.Limit) {
		if !t.AskLimitOnLaunch {
			ignored["limit"] = b.Limit
		} else if err := json.Unmarshal(b.Limit, &limit); err != nil {
			awxJSON(w, http.StatusBadRequest, map[string]any{"limit": []string{"Not a valid string."}})
			return
		}
	}
	if present(b.ExtraVars) {
		if !t.AskVariablesOnLaunch {
			ignored["extra_vars"] = b.ExtraVars
		} else {
			v, err := parseExtraVars(b.ExtraVars)
			if err != nil {
				awxJSON(w, http.StatusBadRequest, map[string]any{"extra_vars": []string{err.Error()}})
				return
			}
			vars = v
		}
	}
	id, err := a.newJob(t, "manual", limit, vars)
	if err != nil {
		awxJSON(w, http.StatusServiceUnavailable, map[string]any{"detail": err.Error()})
		return
	}
	resp := a.jobJSON(id, false)
	resp["job"] = id
	resp["ignored_fields"] = ignored
	w.Header().Set("Location", fmt.Sprintf("/api/v2/jobs/%d/", id))
	awxJSON(w, http.StatusCreated, resp)
}

func (a *AWX) callback(w http.ResponseWriter, r *http.Request) {
	t, ok := a.template(w, r)
	if !ok {
		return
	}
	body, _ := io.ReadAll(r.Body)
	var b launchBody
	if strings.Contains(r.Header.Get("Content-Type"), "json") {
		if len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, &b); err != nil {
				awxJSON(w, http.StatusBadRequest, map[string]any{"detail": "JSON parse error - " + err.Error()})
				return
			}
		}
	} else {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			awxJSON(w, http.StatusBadRequest, map[string]any{"detail": "form parse error - " + err.Error()})
			return
		}
		b.HostConfigKey, b.Host = form.Get("host_config_key"), form.Get("host")
		if ev := form.Get("extra_vars"); ev != "" {
			b.ExtraVars, _ = json.Marshal(ev)
		}
	}
	if t.HostConfigKey == "" || b.HostConfigKey != t.HostConfigKey {
		awxJSON(w, http.StatusForbidden, map[string]any{"detail": "You do not have permission to perform this action."})
		return
	}
	host := strings.TrimSpace(b.Host)
	if host == "" {
		host = r.RemoteAddr
		if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			host = h
		}
	}
	vars := map[string]any{}
	if t.AskVariablesOnLaunch && present(b.ExtraVars) {
		v, err := parseExtraVars(b.ExtraVars)
		if err != nil {
			awxJSON(w, http.StatusBadRequest, map[string]any{"extra_vars": []string{err.Error()}})
			return
		}
		vars = v
	}
	a.mu.Lock()
	for _, j := range a.jobs {
		if j.TemplateID == t.ID && j.LaunchType == "callback" && j.Limit == host && !AWXFinal(j.Status) {
			a.mu.Unlock()
			awxJSON(w, http.StatusBadRequest, map[string]any{"msg": "Host callback job already pending."})
			return
		}
	}
	a.mu.Unlock()
	id, err := a.newJob(t, "callback", host, vars)
	if err != nil {
		awxJSON(w, http.StatusServiceUnavailable, map[string]any{"detail": err.Error()})
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v2/jobs/%d/", id))
	awxJSON(w, http.StatusCreated, map[string]any{"job": id, "id": id, "limit": host})
}

// jobJSON renders a job as AWX does; a.mu must not be held.
func (a *AWX) jobJSON(id int, withStdout bool) map[string]any {
	j, ok := a.Job(id)
	if !ok {
		return map[string]any{}
	}
	extra := "{}"
	a.mu.Lock()
	if jj := a.jobs[id]; jj != nil {
		extra = jj.extraJSON
	}
	a.mu.Unlock()
	ts := func(t time.Time) any {
		if t.IsZero() {
			return nil
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	elapsed := 0.0
	if !j.Started.IsZero() {
		end := j.Finished
		if end.IsZero() {
			end = time.Now()
		}
		elapsed = end.Sub(j.Started).Seconds()
	}
	m := map[string]any{
		"id": j.ID, "type": "job", "url": fmt.Sprintf("/api/v2/jobs/%d/", j.ID),
		"name": j.Name, "job_template": j.TemplateID, "launch_type": j.LaunchType,
		"status": j.Status, "failed": j.Failed, "limit": j.Limit, "extra_vars": extra,
		"job_explanation": j.Explanation, "created": ts(j.Created), "started": ts(j.Started),
		"finished": ts(j.Finished), "elapsed": elapsed,
	}
	if withStdout {
		m["result_stdout"] = j.Stdout
	}
	return m
}

func (a *AWX) jobByPath(w http.ResponseWriter, r *http.Request) (int, bool) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err == nil {
		if _, ok := a.Job(id); ok {
			return id, true
		}
	}
	awxJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
	return 0, false
}

func (a *AWX) getJob(w http.ResponseWriter, r *http.Request) {
	if id, ok := a.jobByPath(w, r); ok {
		awxJSON(w, http.StatusOK, a.jobJSON(id, true))
	}
}

func (a *AWX) stdout(w http.ResponseWriter, r *http.Request) {
	id, ok := a.jobByPath(w, r)
	if !ok {
		return
	}
	j, _ := a.Job(id)
	switch f := r.URL.Query().Get("format"); f {
	case "json":
		awxJSON(w, http.StatusOK, map[string]any{"range": map[string]any{"start": 0, "end": len(j.Stdout)}, "content": j.Stdout})
	case "", "txt", "ansi", "txt_download", "ansi_download":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, j.Stdout)
	default:
		awxJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
	}
}

func (a *AWX) cancelJob(w http.ResponseWriter, r *http.Request) {
	id, ok := a.jobByPath(w, r)
	if !ok {
		return
	}
	a.mu.Lock()
	j := a.jobs[id]
	if AWXFinal(j.Status) {
		a.mu.Unlock()
		awxJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "Job cannot be canceled."})
		return
	}
	a.finishLocked(j, AWXCanceled, "", "Job canceled through the API.", true)
	a.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// newJob creates a job and starts running it.
func (a *AWX) newJob(t AWXTemplate, launchType, limit string, vars map[string]any) (int, error) {
	extra, err := json.Marshal(vars)
	if err != nil {
		return 0, fmt.Errorf("encode extra_vars: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, errors.New("localcloud AWX stand-in is closed")
	}
	id := a.nextID
	a.nextID++
	j := &awxJob{AWXJob: AWXJob{ID: id, TemplateID: t.ID, Name: t.Name, LaunchType: launchType,
		Status: AWXNew, Limit: limit, ExtraVars: vars, Created: time.Now()},
		extraJSON: string(extra), cancel: make(chan struct{})}
	a.jobs[id] = j
	a.wg.Add(1)
	go a.run(j, t)
	a.logf("job %d (%s, %s) created: limit %q, extra_vars %s", id, t.Name, launchType, limit, extra)
	return id, nil
}

// run moves a job through its statuses and ends it.
func (a *AWX) run(j *awxJob, t AWXTemplate) {
	defer a.wg.Done()
	for _, st := range []string{AWXPending, AWXWaiting} {
		if !a.step(j, st) {
			return
		}
	}
	if !a.sleep(j, a.cfg.StepDelay) { // waiting lasts a step too
		return
	}
	if a.cfg.RunPlaybook {
		a.runPlaybook(j, t)
		return
	}
	res := AWXResult{}
	if a.cfg.Script != nil {
		a.mu.Lock()
		snap := j.snapshot()
		a.mu.Unlock()
		res = a.cfg.Script(snap)
	}
	if res.Status == "" {
		res.Status = AWXSuccessful
	}
	if !AWXFinal(res.Status) {
		res.Explanation = fmt.Sprintf("scripted status %q is not final", res.Status)
		res.Status = AWXError
	}
	if res.Stdout == "" {
		res.Stdout = fmt.Sprintf("localcloud AWX: scripted job %d (%s) limit %q: %s\n", j.ID, j.Name, j.Limit, res.Status)
	}
	if res.Delay <= 0 {
		res.Delay = a.cfg.StepDelay
	}
	if !a.setRunning(j, 0) || !a.sleep(j, res.Delay) {
		return
	}
	a.finish(j, res.Status, res.Stdout, res.Explanation)
}

// step waits StepDelay and moves the job to status; false if the job ended
// meanwhile or the stand-in is closing.
func (a *AWX) step(j *awxJob, status string) bool {
	if !a.sleep(j, a.cfg.StepDelay) {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if AWXFinal(j.Status) {
		return false
	}
	j.Status = status
	return true
}

func (a *AWX) setRunning(j *awxJob, pid int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if AWXFinal(j.Status) {
		return false
	}
	j.Status, j.Started, j.PID = AWXRunning, time.Now(), pid
	return true
}

// sleep waits d; false when the job is cancelled or the stand-in closes
// (the job then ends canceled).
func (a *AWX) sleep(j *awxJob, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-j.cancel:
		return false
	case <-a.done:
		a.finish(j, AWXCanceled, "", "The AWX stand-in was closed.")
		return false
	}
}

func (a *AWX) finish(j *awxJob, status, stdout, explanation string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.finishLocked(j, status, stdout, explanation, false)
}

// finishLocked ends a job unless it has ended already; a forced result
// (SetJobResult) wins unless the job is being cancelled.
func (a *AWX) finishLocked(j *awxJob, status, stdout, explanation string, cancel bool) {
	if AWXFinal(j.Status) {
		return
	}
	if f := a.forced[j.TemplateID]; f != "" && !cancel {
		if f != status {
			explanation = strings.TrimSpace(explanation + fmt.Sprintf(" (status forced to %s; it would have been %s)", f, status))
		}
		status = f
	}
	if j.out != nil {
		stdout = j.out.String() + stdout
	}
	j.Status = status
	j.Failed = status != AWXSuccessful
	j.Finished = time.Now()
	j.Stdout = stdout
	j.Explanation = explanation
	j.PID = 0
	if cancel {
		close(j.cancel)
	}
	a.logf("job %d (%s) %s %s", j.ID, j.Name, status, explanation)
	_ = os.WriteFile(filepath.Join(a.workDir, fmt.Sprintf("job-%d.log", j.ID)), []byte(stdout), 0o644)
}

// runPlaybook runs ansible-playbook for the job and ends it with the result.
func (a *AWX) runPlaybook(j *awxJob, t AWXTemplate) {
	bin := a.cfg.AnsiblePath
	if bin == "" {
		bin = "ansible-playbook"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		msg := fmt.Sprintf("ansible-playbook not found (%v): install it with `%s` (as root, after apt-get update)", err, AnsibleInstallHint)
		a.finish(j, AWXError, msg+"\n", msg)
		return
	}
	a.mu.Lock()
	extra := j.extraJSON
	limit := j.Limit
	a.mu.Unlock()
	varsFile := filepath.Join(a.workDir, fmt.Sprintf("job-%d-extra-vars.json", j.ID))
	tmp := filepath.Join(a.workDir, "ansible-tmp")
	if err := errors.Join(os.WriteFile(varsFile, []byte(extra), 0o600), os.MkdirAll(tmp, 0o755)); err != nil {
		a.finish(j, AWXError, "", "prepare the run: "+err.Error())
		return
	}
	inv := limit
	if inv == "" {
		inv = "localhost"
	}
	out := &lockedBuffer{}
	args := []string{"-i", inv + ",", "-c", "local", t.Playbook, "-e", "@" + varsFile}
	cmd := exec.Command(path, args...)
	cmd.Dir = a.workDir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_HOST_KEY_CHECKING=False",
		"ANSIBLE_RETRY_FILES_ENABLED=False", "ANSIBLE_PYTHON_INTERPRETER=auto_silent",
		"ANSIBLE_LOCAL_TEMP="+tmp, "ANSIBLE_REMOTE_TEMP="+tmp,
		ownerEnv+"="+ownerTag())
	a.mu.Lock()
	if AWXFinal(j.Status) {
		a.mu.Unlock()
		return
	}
	j.out = out
	a.mu.Unlock()
	if err := startCmd(cmd); err != nil {
		a.finish(j, AWXError, "", "start ansible-playbook: "+err.Error())
		return
	}
	pid := cmd.Process.Pid
	a.logf("job %d: ansible-playbook pid %d: %s", j.ID, pid, strings.Join(args, " "))
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	a.setRunning(j, pid)
	kill := func() {
		_ = syscall.Kill(-pid, syscall.SIGKILL) // its process group (startCmd sets Setpgid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	timer := time.NewTimer(a.cfg.PlaybookTimeout)
	defer timer.Stop()
	select {
	case err := <-exited:
		_ = syscall.Kill(-pid, syscall.SIGKILL) // anything it left behind
		if err == nil {
			a.finish(j, AWXSuccessful, "", "")
		} else {
			a.finish(j, AWXFailed, "", "ansible-playbook: "+err.Error())
		}
	case <-timer.C:
		kill()
		<-exited
		a.finish(j, AWXFailed, "", fmt.Sprintf("Job terminated due to timeout (%s).", a.cfg.PlaybookTimeout))
	case <-j.cancel:
		kill()
		<-exited
	case <-a.done:
		kill()
		<-exited
		a.finish(j, AWXCanceled, "", "The AWX stand-in was closed.")
	}
}
