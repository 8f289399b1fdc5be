package localcloud

// The provisioning callback of a new instance. On AWS a launch template's
// user-data asks AWX for the instance's configuration once the machine is
// up, with something like
//
//	curl -s --retry 5 --retry-connrefused \
//	  --data "host_config_key=$KEY&host=$(hostname -I | cut -d' ' -f1)" \
//	  https://awx.example.com/api/v2/job_templates/$ID/callback/
//
// and AWX runs the template's playbook against that host. moto runs no
// user-data, so with a BootCallback the reconciler does that POST for every
// fleet instance it starts a client agent for, once the agent's node is
// ready in Nomad.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Timing of a boot callback: how long the node may take to be ready, and
// the attempts of the POST (connection errors and 5xx answers are retried,
// as curl --retry does, after 0.5s, 1s, 2s, 4s).
const (
	bootCallbackNodeWait = 2 * time.Minute
	bootCallbackAttempts = 5
	bootCallbackFirstGap = 500 * time.Millisecond
	bootCallbackTimeout  = 10 * time.Second // one POST
)

// BootCallback makes every new fleet instance call AWX's provisioning
// callback, as a real instance's user-data would (Config.BootCallback,
// Cloud.SetBootCallback). The reconciler calls it once per instance, after
// it has started the instance's client agent and the node is ready in Nomad:
// a form POST of host_config_key and host to
// <URL>/api/v2/job_templates/<TemplateID>/callback/. The outcome is one
// EventBootCallback in the timeline (and one log line); the host_config_key
// never appears in either. A client restarted after a crash does not call
// again (user-data runs at first boot), and clients started with
// StartClient, which stand for no fleet instance, never call.
type BootCallback struct {
	// URL is AWX's base URL, for example the stand-in's AWX.URL().
	URL string
	// TemplateID is the job template whose callback is called (> 0).
	TemplateID int
	// HostConfigKey is the template's host_config_key.
	HostConfigKey string
	// Host returns the host to send for an instance; nil: the instance's
	// private IP from moto. An empty host is left out of the form (AWX then
	// matches the caller's address).
	Host func(instanceID string) string
	// ExtraVars, when set, returns extra_vars sent with the callback as a
	// JSON string; AWX uses them only if the template asks for variables on
	// launch (ask_variables_on_launch).
	ExtraVars func(instanceID string) map[string]any
}

func (cb *BootCallback) validate() error {
	if cb == nil {
		return nil
	}
	u, err := url.Parse(cb.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("localcloud: boot callback: URL %q is not an http(s) base URL such as http://127.0.0.1:8052", cb.URL)
	}
	if cb.TemplateID <= 0 {
		return fmt.Errorf("localcloud: boot callback: TemplateID %d: want the ID (> 0) of a job template with callbacks", cb.TemplateID)
	}
	return nil
}

// endpoint is the template's callback URL.
func (cb BootCallback) endpoint() string {
	return strings.TrimRight(cb.URL, "/") + fmt.Sprintf("/api/v2/job_templates/%d/callback/", cb.TemplateID)
}

// SetBootCallback sets (nil: removes) the boot callback for the instances
// whose client agents the reconciler starts from now on.
func (c *Cloud) SetBootCallback(cb *BootCallback) error {
	if err := cb.validate(); err != nil {
		return err
	}
	if cb != nil {
		cp := *cb
		cb = &cp
	}
	c.mu.Lock()
	c.bootCallback = cb
	c.mu.Unlock()
	return nil
}

// startBootCallback runs the boot callback of a fleet instance whose client
// agent the reconciler has just started, in the background, unless there is
// no callback or the instance has called already.
func (c *Cloud) startBootCallback(inst Instance) {
	c.mu.Lock()
	cb := c.bootCallback
	called := c.bootCalled[inst.ID]
	if cb != nil {
		c.bootCalled[inst.ID] = true
	}
	c.mu.Unlock()
	if cb == nil || called {
		return
	}
	c.goBackground(func() { c.bootCall(c.bgCtx, *cb, inst) })
}

// bootCall waits for the instance's node to be ready, POSTs the callback
// and records the outcome.
func (c *Cloud) bootCall(ctx context.Context, cb BootCallback, inst Instance) {
	record := func(msg string) {
		if ctx.Err() == nil {
			c.record(Event{Kind: EventBootCallback, InstanceID: inst.ID, Message: msg})
		}
	}
	if err := c.waitClientUp(ctx, inst.ID); err != nil {
		record("not called: " + err.Error())
		return
	}
	host := inst.PrivateIP
	if cb.Host != nil {
		host = cb.Host(inst.ID)
	}
	form := url.Values{"host_config_key": {cb.HostConfigKey}}
	if host != "" {
		form.Set("host", host)
	}
	if cb.ExtraVars != nil {
		b, err := json.Marshal(cb.ExtraVars(inst.ID))
		if err != nil {
			record("not called: encode extra_vars: " + err.Error())
			return
		}
		form.Set("extra_vars", string(b))
	}
	what := fmt.Sprintf("POST %s host=%q", cb.endpoint(), host)
	status, body, attempts, err := postBootCallback(ctx, cb.endpoint(), form)
	switch {
	case err != nil:
		record(fmt.Sprintf("%s failed after %d attempts: %v", what, attempts, err))
	case status == http.StatusCreated:
		var ans struct {
			Job int `json:"job"`
		}
		_ = json.Unmarshal(body, &ans)
		record(fmt.Sprintf("%s: %d, job %d (attempt %d)", what, status, ans.Job, attempts))
	default:
		record(fmt.Sprintf("%s: %d %s (attempt %d)", what, status, strings.TrimSpace(string(body)), attempts))
	}
}

// waitClientUp waits until the node of instanceID is ready; it gives up
// when the instance's client agent stops meanwhile.
func (c *Cloud) waitClientUp(ctx context.Context, instanceID string) error {
	ctx, cancel := context.WithTimeout(ctx, bootCallbackNodeWait)
	defer cancel()
	for {
		if c.ClientPID(instanceID) == 0 {
			return errors.New("the client agent stopped before its node was ready")
		}
		if n, err := c.NodeByInstance(ctx, instanceID); err == nil && n.Status == api.NodeStatusReady {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the node was not ready within %s", bootCallbackNodeWait)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// postBootCallback POSTs the form, retrying connection errors and 5xx
// answers. It returns the last answer's status and body and the number of
// attempts made; err is set when no answer came or the last one was a 5xx.
func postBootCallback(ctx context.Context, endpoint string, form url.Values) (int, []byte, int, error) {
	hc := &http.Client{Timeout: bootCallbackTimeout}
	gap := bootCallbackFirstGap
	var lastErr error
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
		if err != nil {
			return 0, nil, attempt, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			if resp.StatusCode < 500 {
				return resp.StatusCode, body, attempt, nil
			}
			lastErr = fmt.Errorf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			lastErr = err
		}
		if attempt == bootCallbackAttempts || ctx.Err() != nil {
			return 0, nil, attempt, lastErr
		}
		select {
		case <-ctx.Done():
			return 0, nil, attempt, lastErr
		case <-time.After(gap):
		}
		gap *= 2
	}
}
