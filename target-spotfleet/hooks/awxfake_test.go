package hooks

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeAWX is an in-test AWX API on 127.0.0.1 that refuses like AWX does: 401
// for a bad token, 403 for a template the user may not execute, 404 for an
// unknown template or job, 400 for a launch missing survey answers, and
// ignored_fields (while still creating the job) for a template that does not
// prompt on launch. Jobs move new -> pending -> waiting -> running -> final,
// one status per observation. Faults can be queued per route.
type fakeAWX struct {
	t   *testing.T
	srv *httptest.Server

	mu                sync.Mutex
	token             string
	templates         map[int]*fakeTemplate
	jobs              map[int]*fakeJob
	nextJob           int
	calls             []fakeCall
	faults            map[string][]fault
	ignoreListFilters bool
	// listOmitsExtraVars: job listings leave extra_vars out (only a job's
	// own page has them).
	listOmitsExtraVars bool
}

// fakeTemplate is a job template of the fake.
type fakeTemplate struct {
	id          int
	name        string
	noPrompt    bool   // does not prompt on launch for limit and variables
	forbidden   bool   // the token's user may not execute it
	survey      bool   // needs a survey answer "region" in extra_vars
	outcome     string // final status of its jobs; "" successful; "hang" never ends
	explanation string
	stdout      string
	// stdoutDenied: reading the output of its jobs is forbidden
	stdoutDenied bool
}

// fakeJob is a job of the fake.
type fakeJob struct {
	id          int
	template    int
	limit       string
	extraVars   map[string]any
	created     time.Time
	launchType  string
	statuses    []string
	pos         int
	explanation string
	stdout      string
}

func (j *fakeJob) status() string { return j.statuses[j.pos] }

// observe returns the current status and moves the job one step on.
func (j *fakeJob) observe() string {
	s := j.status()
	if j.pos < len(j.statuses)-1 {
		j.pos++
	}
	return s
}

func (j *fakeJob) final() bool {
	switch j.status() {
	case jobSuccessful, jobFailed, jobError, jobCanceled:
		return true
	}
	return false
}

// fakeCall is one request the fake received.
type fakeCall struct {
	Method, Path string
	Query        map[string]string
	Body         map[string]any
}

// fault is what a queued fault does to one request.
type fault int

const (
	fault500             fault = iota // answer 500 without doing anything
	fault502                          // answer 502 without doing anything
	fault429                          // answer 429 without doing anything
	faultReset                        // reset the connection without doing anything
	faultCreateThenReset              // do the work (create the job), then reset the connection
	faultCreateThen500                // do the work, then answer 500
)

// Route names for faults.
const (
	routeTemplates = "GET /job_templates/"
	routeLaunch    = "POST launch"
	routeJobs      = "GET /jobs/"
	routeJob       = "GET job"
	routeCancel    = "POST cancel"
	routeStdout    = "GET stdout"
)

const fakeToken = "tok-3f9a1c7e5b"

var (
	reLaunch = regexp.MustCompile(`^/api/v2/job_templates/(\d+)/launch/$`)
	reJob    = regexp.MustCompile(`^/api/v2/jobs/(\d+)/$`)
	reCancel = regexp.MustCompile(`^/api/v2/jobs/(\d+)/cancel/$`)
	reStdout = regexp.MustCompile(`^/api/v2/jobs/(\d+)/stdout/$`)
)

func newFakeAWX(t *testing.T) *fakeAWX {
	t.Helper()
	f := &fakeAWX{
		t:         t,
		token:     fakeToken,
		templates: map[int]*fakeTemplate{},
		jobs:      map[int]*fakeJob{},
		nextJob:   1001,
		faults:    map[string][]fault{},
	}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// addTemplate adds a job template and returns it for changes.
func (f *fakeAWX) addTemplate(id int, name string) *fakeTemplate {
	f.mu.Lock()
	defer f.mu.Unlock()
	tp := &fakeTemplate{id: id, name: name}
	f.templates[id] = tp
	return tp
}

// addJob creates a job as if someone else launched it.
func (f *fakeAWX) addJob(tmpl int, limit, launchType string, created time.Time, statuses ...string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	tp := f.templates[tmpl]
	j := &fakeJob{id: f.nextJob, template: tmpl, limit: limit, created: created, launchType: launchType, statuses: statuses}
	if tp != nil {
		j.explanation, j.stdout = tp.explanation, tp.stdout
	}
	f.nextJob++
	f.jobs[j.id] = j
	return j.id
}

// addJobFor creates a job as if an awx hook of another run had launched it
// for an instance: its extra_vars name instanceID.
func (f *fakeAWX) addJobFor(tmpl int, limit, instanceID string, created time.Time, statuses ...string) int {
	id := f.addJob(tmpl, limit, "manual", created, statuses...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[id].extraVars = map[string]any{"instance_id": instanceID, "private_ip": limit}
	return id
}

// fail queues faults for the next requests of a route.
func (f *fakeAWX) fail(route string, faults ...fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults[route] = append(f.faults[route], faults...)
}

func (f *fakeAWX) setToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = tok
}

// callsTo returns the recorded calls whose "METHOD path" matches re.
func (f *fakeAWX) callsTo(re string) []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	rx := regexp.MustCompile(re)
	var out []fakeCall
	for _, c := range f.calls {
		if rx.MatchString(c.Method + " " + c.Path) {
			out = append(out, c)
		}
	}
	return out
}

// jobCount returns how many jobs exist.
func (f *fakeAWX) jobCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.jobs)
}

func (f *fakeAWX) jobStatus(id int) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.jobs[id].status()
}

func (f *fakeAWX) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()

	call := fakeCall{Method: r.Method, Path: r.URL.Path, Query: map[string]string{}}
	for k, v := range r.URL.Query() {
		call.Query[k] = v[0]
	}
	if r.Body != nil {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err == nil {
			call.Body = body
		}
	}
	f.calls = append(f.calls, call)

	if r.Header.Get("Authorization") != "Bearer "+f.token {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Authentication credentials were not provided."})
		return
	}

	route, id := "", 0
	switch p := r.URL.Path; {
	case r.Method == http.MethodGet && p == "/api/v2/job_templates/":
		route = routeTemplates
	case r.Method == http.MethodPost && reLaunch.MatchString(p):
		route, id = routeLaunch, atoi(reLaunch.FindStringSubmatch(p)[1])
	case r.Method == http.MethodGet && p == "/api/v2/jobs/":
		route = routeJobs
	case r.Method == http.MethodGet && reJob.MatchString(p):
		route, id = routeJob, atoi(reJob.FindStringSubmatch(p)[1])
	case r.Method == http.MethodPost && reCancel.MatchString(p):
		route, id = routeCancel, atoi(reCancel.FindStringSubmatch(p)[1])
	case r.Method == http.MethodGet && reStdout.MatchString(p):
		route, id = routeStdout, atoi(reStdout.FindStringSubmatch(p)[1])
	default:
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}

	var flt *fault
	if q := f.faults[route]; len(q) > 0 {
		flt = &q[0]
		f.faults[route] = q[1:]
	}
	if flt != nil {
		switch *flt {
		case fault500:
			writeJSON(w, http.StatusInternalServerError, map[string]any{"detail": "A server error has occurred."})
			return
		case fault502:
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
			return
		case fault429:
			writeJSON(w, http.StatusTooManyRequests, map[string]any{"detail": "Request was throttled."})
			return
		case faultReset:
			reset(w)
			return
		}
	}

	rec := httptest.NewRecorder()
	switch route {
	case routeTemplates:
		f.listTemplates(rec, r)
	case routeLaunch:
		f.launch(rec, id, call.Body)
	case routeJobs:
		f.listJobs(rec, r)
	case routeJob:
		f.getJob(rec, id)
	case routeCancel:
		f.cancel(rec, id)
	case routeStdout:
		f.stdout(rec, id)
	}
	if flt != nil {
		switch *flt {
		case faultCreateThenReset:
			reset(w)
			return
		case faultCreateThen500:
			writeJSON(w, http.StatusInternalServerError, map[string]any{"detail": "A server error has occurred."})
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (f *fakeAWX) listTemplates(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	var results []map[string]any
	for _, id := range sortedIDs(f.templates) {
		tp := f.templates[id]
		if name == "" || tp.name == name || f.ignoreListFilters {
			results = append(results, map[string]any{"id": tp.id, "name": tp.name, "type": "job_template"})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(results), "next": nil, "previous": nil, "results": results})
}

func (f *fakeAWX) launch(w http.ResponseWriter, id int, body map[string]any) {
	tp := f.templates[id]
	if tp == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	if tp.forbidden {
		writeJSON(w, http.StatusForbidden, map[string]any{"detail": "You do not have permission to perform this action."})
		return
	}
	limit, _ := body["limit"].(string)
	vars, _ := body["extra_vars"].(map[string]any)
	ignored := map[string]any{}
	if tp.noPrompt {
		if _, ok := body["limit"]; ok {
			ignored["limit"] = limit
			limit = ""
		}
		if _, ok := body["extra_vars"]; ok {
			ignored["extra_vars"] = vars
			vars = nil
		}
	}
	if tp.survey {
		if _, ok := vars["region"]; !ok {
			writeJSON(w, http.StatusBadRequest, map[string]any{"variables_needed_to_start": []string{"'region' value missing"}})
			return
		}
	}
	final := tp.outcome
	if final == "" {
		final = jobSuccessful
	}
	statuses := []string{"new", "pending", "waiting", "running", final}
	if final == "hang" {
		statuses = []string{"new", "pending", "running"}
	}
	j := &fakeJob{id: f.nextJob, template: id, limit: limit, extraVars: vars, created: time.Now().UTC(), launchType: "manual",
		statuses: statuses, explanation: tp.explanation, stdout: tp.stdout}
	f.nextJob++
	f.jobs[j.id] = j
	writeJSON(w, http.StatusCreated, map[string]any{"job": j.id, "id": j.id, "type": "job", "status": "pending", "ignored_fields": ignored})
}

func (f *fakeAWX) jobJSON(j *fakeJob, status string, listed bool) map[string]any {
	m := map[string]any{
		"id": j.id, "type": "job", "status": status, "failed": status == jobFailed || status == jobError,
		"job_template": j.template, "limit": j.limit, "launch_type": j.launchType,
		"created": j.created.Format("2006-01-02T15:04:05.000000Z"), "job_explanation": explanationFor(j, status),
	}
	if !listed || !f.listOmitsExtraVars {
		// Like AWX, extra_vars is a string holding a JSON object.
		vars := "{}"
		if len(j.extraVars) > 0 {
			b, _ := json.Marshal(j.extraVars)
			vars = string(b)
		}
		m["extra_vars"] = vars
	}
	return m
}

func explanationFor(j *fakeJob, status string) string {
	switch status {
	case jobFailed, jobError, jobCanceled:
		return j.explanation
	}
	return ""
}

func (f *fakeAWX) listJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("order_by") != "-id" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"order_by": []string{"the test wants order_by=-id"}})
		return
	}
	size := atoi(q.Get("page_size"))
	var results []map[string]any
	ids := sortedIDs(f.jobs)
	sort.Sort(sort.Reverse(sort.IntSlice(ids)))
	for _, id := range ids {
		j := f.jobs[id]
		if !f.ignoreListFilters {
			if t := q.Get("job_template"); t != "" && atoi(t) != j.template {
				continue
			}
			// Like AWX, "limit" is a reserved query name and filters
			// nothing; the field is filtered with limit__exact.
			if l, ok := q["limit__exact"]; ok && l[0] != j.limit {
				continue
			}
		}
		if size > 0 && len(results) == size {
			break
		}
		results = append(results, f.jobJSON(j, j.observe(), true))
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(results), "results": results})
}

func (f *fakeAWX) getJob(w http.ResponseWriter, id int) {
	j := f.jobs[id]
	if j == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	writeJSON(w, http.StatusOK, f.jobJSON(j, j.observe(), false))
}

func (f *fakeAWX) cancel(w http.ResponseWriter, id int) {
	j := f.jobs[id]
	if j == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	if j.final() {
		writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "Not allowed to cancel"})
		return
	}
	j.statuses, j.pos = []string{jobCanceled}, 0
	w.WriteHeader(http.StatusAccepted)
}

func (f *fakeAWX) stdout(w http.ResponseWriter, id int) {
	j := f.jobs[id]
	if j == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
		return
	}
	if tp := f.templates[j.template]; tp != nil && tp.stdoutDenied {
		writeJSON(w, http.StatusForbidden, map[string]any{"detail": "You do not have permission to perform this action."})
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(j.stdout))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// reset closes the connection with a TCP reset, as a crashed proxy would.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic("no hijacker")
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func sortedIDs[V any](m map[int]V) []int {
	ids := make([]int, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	return ids
}

// agentFor returns an Agent for the fake, with the token in a file.
func agentFor(t *testing.T, f *fakeAWX) (*Agent, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "awx-token")
	require.NoError(t, os.WriteFile(path, []byte(fakeToken+"\n"), 0o600))
	a, err := ParseAgent(map[string]string{"awx_url": f.srv.URL + "/", "awx_token_file": path})
	require.NoError(t, err)
	return a, path
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// memSaver records every saved record; fail decides whether save number n
// (from 1) fails.
type memSaver struct {
	mu    sync.Mutex
	saved []Record
	fail  func(n int, rec Record) error
}

func (m *memSaver) save(_ context.Context, rec Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.saved) + 1
	if m.fail != nil {
		if err := m.fail(n, rec); err != nil {
			return err
		}
	}
	m.saved = append(m.saved, rec.clone())
	return nil
}

func (m *memSaver) strings() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, len(m.saved))
	for i, r := range m.saved {
		out[i] = r.String()
	}
	return out
}

// states returns the state of one hook in each saved record.
func (m *memSaver) states(name string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, r := range m.saved {
		st, ok := r.Steps[name]
		if !ok {
			out = append(out, "-")
			continue
		}
		out = append(out, fmt.Sprintf("%s/%d", st.State, st.JobID))
	}
	return out
}

// finish makes a job end with status from its next observation on.
func (f *fakeAWX) finish(id int, status string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[id]
	j.statuses, j.pos = []string{status}, 0
}
