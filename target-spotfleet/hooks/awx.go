package hooks

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Timing and bounds of AWX requests.
const (
	defaultRetryBase      = 500 * time.Millisecond
	defaultRetryMax       = 10 * time.Second
	defaultAttemptTimeout = 30 * time.Second
	maxResponseBytes      = 1 << 20
	// jobsPageSize is how many jobs one listing asks for.
	jobsPageSize = 20
	// cleanupTimeout bounds the best-effort calls made after a hook's time
	// ran out (cancelling a job, fetching its output).
	cleanupTimeout = 15 * time.Second
)

// Final statuses of an AWX job.
const (
	jobSuccessful = "successful"
	jobFailed     = "failed"
	jobError      = "error"
	jobCanceled   = "canceled"
)

// awxClient talks to the AWX API for one hook run.
type awxClient struct {
	agent          *Agent
	http           *http.Client
	red            redactor
	log            hclog.Logger
	poll           time.Duration
	now            func() time.Time
	retryBase      time.Duration
	retryMax       time.Duration
	attemptTimeout time.Duration
}

// awx returns an AWX client for one hook run.
func (r *Runner) awx(log hclog.Logger) (*awxClient, error) {
	if !r.Agent.AWXConfigured() {
		return nil, errNotConfigured
	}
	c := &awxClient{
		agent:          r.Agent,
		http:           r.HTTP,
		red:            r.redactor(),
		log:            log,
		poll:           r.poll(),
		now:            r.now,
		retryBase:      r.retryBase,
		retryMax:       r.retryMax,
		attemptTimeout: r.attemptTimeout,
	}
	if c.http == nil {
		c.http = r.Agent.httpClient()
	}
	if c.retryBase <= 0 {
		c.retryBase = defaultRetryBase
	}
	if c.retryMax <= 0 {
		c.retryMax = defaultRetryMax
	}
	if c.attemptTimeout <= 0 {
		c.attemptTimeout = defaultAttemptTimeout
	}
	return c, nil
}

// awxJob is the part of an AWX job the hooks read.
type awxJob struct {
	ID             int    `json:"id"`
	Status         string `json:"status"`
	JobTemplate    int    `json:"job_template"`
	Limit          string `json:"limit"`
	Created        string `json:"created"`
	JobExplanation string `json:"job_explanation"`
	LaunchType     string `json:"launch_type"`
	// ExtraVars is AWX's extra_vars: a string holding a JSON (or YAML)
	// object; nil when the answer had no such field.
	ExtraVars json.RawMessage `json:"extra_vars"`
}

// instanceIDPattern finds instance_id in extra_vars that are not JSON
// (YAML).
var instanceIDPattern = regexp.MustCompile(`(?m)^\s*["']?instance_id["']?\s*:\s*["']?([^"'\s,}]*)`)

// owner returns the instance_id the job's extra_vars name; known is false
// when the answer had no extra_vars field.
func (j *awxJob) owner() (id string, known bool) {
	if j.ExtraVars == nil || string(j.ExtraVars) == "null" {
		return "", false
	}
	text := string(j.ExtraVars)
	var str string
	if json.Unmarshal(j.ExtraVars, &str) == nil {
		text = str
	}
	var vars map[string]any
	if json.Unmarshal([]byte(text), &vars) == nil {
		if v, ok := vars["instance_id"].(string); ok {
			return v, true
		}
		return "", true
	}
	if m := instanceIDPattern.FindStringSubmatch(text); m != nil {
		return m[1], true
	}
	return "", true
}

func (j *awxJob) final() bool {
	switch j.Status {
	case jobSuccessful, jobFailed, jobError, jobCanceled:
		return true
	}
	return false
}

// createdAt returns when AWX created the job; ok is false when AWX gave no
// readable time.
func (j *awxJob) createdAt() (time.Time, bool) {
	t, err := time.Parse(time.RFC3339Nano, j.Created)
	return t, err == nil
}

// apiError is a refusal of the AWX API. config marks one that is the
// configuration's or AWX's fault (IsConfigError): 401, 403, 404, and 400
// on a launch.
type apiError struct {
	status int
	msg    string
	config bool
}

func (e *apiError) Error() string { return e.msg }

// isNotFound reports whether err is AWX's 404.
func isNotFound(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == http.StatusNotFound
}

// response is one answer of AWX.
type response struct {
	status int
	body   []byte
}

// attempt sends one request. err is a network-level failure (or a failure
// to read the token or the body); a non-2xx status is not an error here.
func (c *awxClient) attempt(ctx context.Context, method, path string, query url.Values, body any) (*response, error) {
	tok, err := c.agent.currentToken()
	if err != nil {
		return nil, &configError{err: err}
	}
	u := c.agent.url + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding the request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	actx, cancel := context.WithTimeout(ctx, c.attemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("building %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if untrustedCertificate(err) {
			// Not a blip: retrying cannot help.
			return nil, &configError{err: fmt.Errorf("%s %s: AWX's TLS certificate is not trusted (%v): set awx_ca_file in the agent's target plugin config to the CA that signed it", method, path, unwrapURLError(err))}
		}
		if ctx.Err() == nil && actx.Err() != nil {
			return nil, &netError{msg: fmt.Sprintf("%s %s: no answer within %s", method, path, c.attemptTimeout)}
		}
		return nil, &netError{msg: fmt.Sprintf("%s %s: %v", method, path, unwrapURLError(err)), err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, &netError{msg: fmt.Sprintf("%s %s: reading the answer: %v", method, path, err), err: err}
	}
	if len(b) > maxResponseBytes {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", method, path, maxResponseBytes)
	}
	return &response{status: resp.StatusCode, body: b}, nil
}

// netError is a failure to get an answer: worth retrying.
type netError struct {
	msg string
	err error
}

func (e *netError) Error() string { return e.msg }
func (e *netError) Unwrap() error { return e.err }

// untrustedCertificate reports whether err is a TLS certificate that does
// not verify.
func untrustedCertificate(err error) bool {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	return errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &he) || errors.As(err, &ie)
}

// refused reports whether a network error means the request was never
// sent (so it created nothing).
func refused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err // its message repeats the method and URL
	}
	return err
}

// retryable reports whether an answer's status is worth retrying.
func retryable(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests
}

// do sends an idempotent request, retrying network errors, 5xx and 429 with
// exponential backoff until ctx ends, and decodes a 2xx JSON answer into out
// (a *[]byte gets the raw body). what names the object for errors, such as
// "job 1001".
func (c *awxClient) do(ctx context.Context, method, path string, query url.Values, body, out any, what string) error {
	backoff := c.retryBase
	for n := 1; ; n++ {
		resp, err := c.attempt(ctx, method, path, query, body)
		var last error
		switch {
		case err != nil:
			var ne *netError
			if !errors.As(err, &ne) {
				return err
			}
			last = err
		case resp.status >= 200 && resp.status < 300:
			return decode(resp, out, method, path)
		case retryable(resp.status):
			last = c.statusError(resp, method, path, what)
		default:
			return c.statusError(resp, method, path, what)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (gave up after %d attempts: %v)", last, n, ctx.Err())
		}
		c.log.Debug("AWX request failed, retrying", "method", method, "path", path, "attempt", n, "backoff", backoff, "error", c.red.apply(last.Error()))
		if !sleep(ctx, backoff) {
			return fmt.Errorf("%w (gave up after %d attempts: %v)", last, n, ctx.Err())
		}
		backoff = min(2*backoff, c.retryMax)
	}
}

// decode reads a 2xx answer into out.
func decode(resp *response, out any, method, path string) error {
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = resp.body
		return nil
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return fmt.Errorf("%s %s: AWX answered %d with a body that is not the expected JSON: %v", method, path, resp.status, err)
	}
	return nil
}

// statusError explains a non-2xx answer. It never repeats the token (AWX
// does not echo it, and the message is redacted anyway).
func (c *awxClient) statusError(resp *response, method, path, what string) *apiError {
	detail := c.red.apply(errorDetail(resp.body))
	req := method + " " + path
	var msg string
	switch resp.status {
	case http.StatusBadRequest:
		msg = fmt.Sprintf("AWX rejected %s (400 Bad Request): %s", req, detail)
	case http.StatusUnauthorized:
		msg = "AWX refused the credentials (401 Unauthorized): check the token that awx_token/awx_token_file/awx_token_env gives"
	case http.StatusForbidden:
		msg = fmt.Sprintf("AWX denied %s (403 Forbidden): the token's user lacks permission on %s (launching a job template needs the execute role on it, following a job needs read access): %s", req, what, detail)
	case http.StatusNotFound:
		msg = fmt.Sprintf("AWX has no %s (404 Not Found for %s)", what, req)
	default:
		msg = fmt.Sprintf("AWX answered %s with %d %s: %s", req, resp.status, http.StatusText(resp.status), detail)
	}
	switch resp.status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		return &apiError{status: resp.status, msg: msg, config: true}
	}
	return &apiError{status: resp.status, msg: msg}
}

// errorDetail extracts AWX's explanation from an error body: "detail" or
// "error", else every field's messages, else the text.
func errorDetail(body []byte) string {
	var m map[string]any
	if json.Unmarshal(body, &m) == nil && len(m) > 0 {
		for _, k := range []string{"detail", "error", "msg"} {
			if s, ok := m[k].(string); ok && s != "" {
				return s
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			v, _ := json.Marshal(m[k])
			parts = append(parts, k+": "+string(v))
		}
		return cut(strings.Join(parts, "; "), 500)
	}
	s := strings.TrimSpace(string(body))
	if s == "" {
		return "(no detail)"
	}
	return cut(s, 500)
}

// cut shortens s to n bytes at most, saying so.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// resolveTemplate returns the id of a job template given as an id or a
// name; a name is looked up once per Agent.
func (c *awxClient) resolveTemplate(ctx context.Context, ref string) (int, error) {
	if isDigits(ref) {
		id, err := strconv.Atoi(ref)
		if err != nil || id <= 0 {
			return 0, fmt.Errorf("job template %s is not a valid id", shown(ref))
		}
		return id, nil
	}
	if id, ok := c.agent.cachedTemplate(ref); ok {
		return id, nil
	}
	var page struct {
		Count   int `json:"count"`
		Results []struct {
			ID   int    `json:"id"`
			Name string `json:"name"`
		} `json:"results"`
	}
	q := url.Values{"name": {ref}}
	if err := c.do(ctx, http.MethodGet, "/api/v2/job_templates/", q, nil, &page, "job templates"); err != nil {
		return 0, fmt.Errorf("looking up job template %s: %w", shown(ref), err)
	}
	var ids []string
	id := 0
	for _, t := range page.Results {
		if t.Name == ref { // AWX may ignore the filter; check it
			id = t.ID
			ids = append(ids, strconv.Itoa(t.ID))
		}
	}
	switch len(ids) {
	case 0:
		return 0, &configError{err: fmt.Errorf("AWX has no job template named %s: check hook_<name>_job_template (or give the template's numeric id)", shown(ref))}
	case 1:
		c.agent.cacheTemplate(ref, id)
		return id, nil
	}
	return 0, &configError{err: fmt.Errorf("AWX has %d job templates named %s (ids %s): give the numeric id in hook_<name>_job_template", len(ids), shown(ref), strings.Join(ids, ", "))}
}

// launchResult is what a launch gave.
type launchResult struct {
	job     int
	ignored []string // the fields AWX ignored
	adopted bool     // the job was found after an ambiguous failure
}

// launch launches a job template for an instance. An ambiguous failure (no
// answer after the request may have been sent, or 5xx) may still have
// created a job: before each retry it looks for a job of the template with
// the same limit created since the first attempt (less resumeSlack) whose
// extra_vars do not name another instance (see findJob), and adopts it.
func (c *awxClient) launch(ctx context.Context, tmpl int, what, limit, instanceID string, extraVars map[string]string) (launchResult, error) {
	path := fmt.Sprintf("/api/v2/job_templates/%d/launch/", tmpl)
	body := map[string]any{"limit": limit, "extra_vars": extraVars}
	first := c.now()
	backoff := c.retryBase
	for n := 1; ; n++ {
		resp, err := c.attempt(ctx, http.MethodPost, path, nil, body)
		var last error
		ambiguous := false
		switch {
		case err != nil:
			var ne *netError
			if !errors.As(err, &ne) {
				return launchResult{}, err
			}
			last, ambiguous = err, !refused(err)
		case resp.status >= 200 && resp.status < 300:
			return parseLaunch(resp, what)
		case retryable(resp.status):
			last, ambiguous = c.statusError(resp, http.MethodPost, path, what), resp.status >= 500
		default:
			e := c.statusError(resp, http.MethodPost, path, what)
			if resp.status == http.StatusBadRequest {
				e.config = true // missing survey answers, bad variables: the template's
			}
			return launchResult{}, e
		}
		if ctx.Err() != nil || !sleep(ctx, backoff) {
			return launchResult{}, fmt.Errorf("launching %s: %w (gave up after %d attempts: %v)", what, last, n, ctx.Err())
		}
		backoff = min(2*backoff, c.retryMax)
		if ambiguous {
			job, err := c.findJob(ctx, tmpl, limit, instanceID, first.Add(-resumeSlack))
			if err != nil {
				return launchResult{}, fmt.Errorf("launching %s failed ambiguously (%v) and looking for the job it may have created failed: %w", what, last, err)
			}
			if job != nil {
				c.log.Info("AWX launch failed ambiguously but created a job; following it", "job_id", job.ID, "error", c.red.apply(last.Error()))
				return launchResult{job: job.ID, adopted: true}, nil
			}
		}
		c.log.Debug("AWX launch failed, retrying", "attempt", n, "error", c.red.apply(last.Error()))
	}
}

// parseLaunch reads the answer of a launch.
func parseLaunch(resp *response, what string) (launchResult, error) {
	var out struct {
		Job           int                        `json:"job"`
		ID            int                        `json:"id"`
		IgnoredFields map[string]json.RawMessage `json:"ignored_fields"`
	}
	if err := json.Unmarshal(resp.body, &out); err != nil {
		return launchResult{}, fmt.Errorf("launching %s: AWX answered %d with a body that is not the expected JSON: %v", what, resp.status, err)
	}
	res := launchResult{job: out.Job}
	if res.job == 0 {
		res.job = out.ID
	}
	if res.job == 0 {
		return launchResult{}, fmt.Errorf("launching %s: AWX answered %d without a job id", what, resp.status)
	}
	res.ignored = sortedKeys(out.IgnoredFields)
	return res, nil
}

// getJob reads one job.
func (c *awxClient) getJob(ctx context.Context, id int) (*awxJob, error) {
	var j awxJob
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v2/jobs/%d/", id), nil, nil, &j, fmt.Sprintf("job %d", id)); err != nil {
		return nil, fmt.Errorf("reading AWX job %d: %w", id, err)
	}
	return &j, nil
}

// listJobs lists the newest jobs of a template for a limit, keeping only
// those that really match (AWX might ignore a filter) and were created at
// or after since (zero: any time), newest first.
func (c *awxClient) listJobs(ctx context.Context, tmpl int, limit string, since time.Time) ([]awxJob, error) {
	var page struct {
		Results []awxJob `json:"results"`
	}
	// AWX reserves the query name "limit" (it never filters on it): the
	// field is filtered with the explicit lookup limit__exact.
	q := url.Values{
		"job_template": {strconv.Itoa(tmpl)},
		"limit__exact": {limit},
		"order_by":     {"-id"},
		"page_size":    {strconv.Itoa(jobsPageSize)},
	}
	if !since.IsZero() {
		q.Set("created__gte", since.UTC().Format(time.RFC3339))
	}
	if err := c.do(ctx, http.MethodGet, "/api/v2/jobs/", q, nil, &page, fmt.Sprintf("jobs of job template %d", tmpl)); err != nil {
		return nil, fmt.Errorf("listing AWX jobs of job template %d for %s: %w", tmpl, shown(limit), err)
	}
	var out []awxJob
	for _, j := range page.Results {
		if j.JobTemplate != tmpl || j.Limit != limit {
			continue
		}
		if !since.IsZero() {
			at, ok := j.createdAt()
			if !ok || at.Before(since) {
				continue
			}
		}
		out = append(out, j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out, nil
}

// findJob returns the job of the template for the limit, created at or
// after since, that an awx hook launched for the instance, or nil: the
// newest one whose extra_vars name the instance (instance_id) or, when none
// does, the newest one whose extra_vars name no instance. A job whose
// extra_vars name another instance is never returned: it is the job of an
// earlier instance that had the same address. When the listing gives no
// extra_vars, each candidate is read to get them.
func (c *awxClient) findJob(ctx context.Context, tmpl int, limit, instanceID string, since time.Time) (*awxJob, error) {
	jobs, err := c.listJobs(ctx, tmpl, limit, since)
	if err != nil || len(jobs) == 0 {
		return nil, err
	}
	var anonymous *awxJob
	for i := range jobs {
		j := &jobs[i]
		owner, known := j.owner()
		if !known {
			full, err := c.getJob(ctx, j.ID)
			if err != nil {
				return nil, fmt.Errorf("reading the extra_vars of a candidate job: %w", err)
			}
			if owner, known = full.owner(); !known {
				owner = "" // AWX shows none: nothing says whose job it is
			}
		}
		switch {
		case owner == instanceID && instanceID != "":
			return j, nil
		case owner == "" && anonymous == nil:
			anonymous = j
		case owner != "" && owner != instanceID:
			c.log.Debug("an AWX job of the template for the same host names another instance; it is not this instance's", "job_id", j.ID, "its_instance_id", owner)
		}
	}
	return anonymous, nil
}

// cancelJob asks AWX to cancel a job, best effort, within cleanupTimeout
// even when ctx has ended.
func (c *awxClient) cancelJob(ctx context.Context, id int) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	return c.do(cctx, http.MethodPost, fmt.Sprintf("/api/v2/jobs/%d/cancel/", id), nil, nil, nil, fmt.Sprintf("job %d", id))
}

// stdoutTail returns the last lines of a job's output, redacted, within
// cleanupTimeout even when ctx has ended.
func (c *awxClient) stdoutTail(ctx context.Context, id int) ([]string, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var b []byte
	q := url.Values{"format": {"txt"}}
	if err := c.do(cctx, http.MethodGet, fmt.Sprintf("/api/v2/jobs/%d/stdout/", id), q, nil, &b, fmt.Sprintf("output of job %d", id)); err != nil {
		return nil, err
	}
	return lastLines(c.red.apply(string(b)), maxOutputLines), nil
}
