package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// nomadAPI lists the Nomad API calls the plugin makes. The sampler only talks
// to Nomad through it, so tests replace it with a fake.
type nomadAPI interface {
	// Nodes lists every client node, with its resources.
	Nodes(ctx context.Context) ([]*api.NodeListStub, error)
	// Node reads one node in full (status timestamps and events).
	Node(ctx context.Context, nodeID string) (*api.Node, error)
	// HostStats reads a client's host statistics; the server forwards the
	// call to the client.
	HostStats(ctx context.Context, nodeID string) (*api.HostStats, error)
	// Allocations lists the pending and running allocations of every
	// namespace, with their allocated resources.
	Allocations(ctx context.Context) ([]*api.AllocationListStub, error)
	// AllocStats reads the resource usage of one allocation from its client.
	// It returns errAllocGone when the client no longer knows it.
	AllocStats(ctx context.Context, allocID string) (*api.AllocResourceUsage, error)
	// BlockedEvaluations lists the blocked evaluations of every namespace:
	// the jobs with allocations the scheduler could not place.
	BlockedEvaluations(ctx context.Context) ([]*api.Evaluation, error)
	// JobSummary reads a job's summary (queued allocations per task group).
	// It returns errJobGone when Nomad no longer knows the job.
	JobSummary(ctx context.Context, namespace, jobID string) (*api.JobSummary, error)
	// Job reads a job's latest version. It returns errJobGone when Nomad no
	// longer knows the job.
	Job(ctx context.Context, namespace, jobID string) (*api.Job, error)
}

// errAllocGone marks an allocation that stopped between listing and reading
// its stats: it uses nothing any more, which is not a failure to read.
var errAllocGone = errors.New("allocation is no longer on its client")

// errJobGone marks a job purged since its blocked evaluation was listed: it
// asks for nothing any more, which is not a failure to read.
var errJobGone = errors.New("job is no longer known to Nomad")

// blockedEvalFilter asks the server for blocked evaluations only.
const blockedEvalFilter = `Status == "blocked"`

// liveAllocFilter asks the server for live allocations only, so the list does
// not carry every terminal allocation that has not been garbage collected.
const liveAllocFilter = `ClientStatus == "running" or ClientStatus == "pending"`

// nomadClient implements nomadAPI over the Nomad HTTP API. Every call gets
// its own deadline.
type nomadClient struct {
	client  *api.Client
	timeout time.Duration
	// secret is the ACL token; it is scrubbed from every error message in
	// case a proxy echoes request headers back in an error body.
	secret string
}

var _ nomadAPI = (*nomadClient)(nil)

func newNomadClient(client *api.Client, timeout time.Duration, secret string) *nomadClient {
	return &nomadClient{client: client, timeout: timeout, secret: secret}
}

func (c *nomadClient) options(ctx context.Context) (*api.QueryOptions, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	q := &api.QueryOptions{AllowStale: true}
	return q.WithContext(ctx), cancel
}

// Nodes implements nomadAPI.
func (c *nomadClient) Nodes(ctx context.Context) ([]*api.NodeListStub, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	q.Params = map[string]string{"resources": "true"}
	nodes, _, err := c.client.Nodes().List(q)
	if err != nil {
		return nil, c.wrap(err, "listing Nomad nodes")
	}
	return nodes, nil
}

// Node implements nomadAPI.
func (c *nomadClient) Node(ctx context.Context, nodeID string) (*api.Node, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	node, _, err := c.client.Nodes().Info(nodeID, q)
	if err != nil {
		return nil, c.wrap(err, "reading node "+nodeID)
	}
	return node, nil
}

// HostStats implements nomadAPI.
func (c *nomadClient) HostStats(ctx context.Context, nodeID string) (*api.HostStats, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	stats, err := c.client.Nodes().Stats(nodeID, q)
	if err != nil {
		return nil, c.wrap(err, "reading host stats of node "+nodeID)
	}
	return stats, nil
}

// Allocations implements nomadAPI.
func (c *nomadClient) Allocations(ctx context.Context) ([]*api.AllocationListStub, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	q.Namespace = "*"
	q.Filter = liveAllocFilter
	q.Params = map[string]string{"resources": "true", "task_states": "false"}
	allocs, _, err := c.client.Allocations().List(q)
	if err != nil {
		return nil, c.wrap(err, "listing allocations")
	}
	return allocs, nil
}

// AllocStats implements nomadAPI.
func (c *nomadClient) AllocStats(ctx context.Context, allocID string) (*api.AllocResourceUsage, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	usage, err := c.client.Allocations().Stats(&api.Allocation{ID: allocID}, q)
	if err != nil {
		// Nomad answers 404 "Unknown allocation" for an allocation its
		// client has already forgotten; other 404s (no path to the node)
		// are real failures.
		var re api.UnexpectedResponseError
		if errors.As(err, &re) && re.StatusCode() == http.StatusNotFound &&
			strings.Contains(strings.ToLower(re.Body()), "unknown allocation") {
			return nil, errAllocGone
		}
		return nil, c.wrap(err, "reading stats of allocation "+allocID)
	}
	return usage, nil
}

// BlockedEvaluations implements nomadAPI.
func (c *nomadClient) BlockedEvaluations(ctx context.Context) ([]*api.Evaluation, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	q.Namespace = "*"
	q.Filter = blockedEvalFilter
	evals, _, err := c.client.Evaluations().List(q)
	if err != nil {
		return nil, c.wrap(err, "listing blocked evaluations")
	}
	return evals, nil
}

// JobSummary implements nomadAPI.
func (c *nomadClient) JobSummary(ctx context.Context, namespace, jobID string) (*api.JobSummary, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	q.Namespace = namespace
	summary, _, err := c.client.Jobs().Summary(jobID, q)
	if err != nil {
		if jobNotFound(err) {
			return nil, errJobGone
		}
		return nil, c.wrap(err, fmt.Sprintf("reading the summary of job %q in namespace %q", jobID, namespace))
	}
	return summary, nil
}

// Job implements nomadAPI.
func (c *nomadClient) Job(ctx context.Context, namespace, jobID string) (*api.Job, error) {
	q, cancel := c.options(ctx)
	defer cancel()
	q.Namespace = namespace
	job, _, err := c.client.Jobs().Info(jobID, q)
	if err != nil {
		if jobNotFound(err) {
			return nil, errJobGone
		}
		return nil, c.wrap(err, fmt.Sprintf("reading job %q in namespace %q", jobID, namespace))
	}
	return job, nil
}

// jobNotFound reports whether err is Nomad's 404 "job not found"; other 404s
// (a proxy, a wrong path) are real failures.
func jobNotFound(err error) bool {
	var re api.UnexpectedResponseError
	return errors.As(err, &re) && re.StatusCode() == http.StatusNotFound &&
		strings.Contains(strings.ToLower(re.Body()), "job not found")
}

// wrap adds what was being attempted to err and scrubs the ACL token from
// its text.
func (c *nomadClient) wrap(err error, action string) error {
	if c.secret != "" && strings.Contains(err.Error(), c.secret) {
		return fmt.Errorf("%s: %s", action, strings.ReplaceAll(err.Error(), c.secret, "<redacted>"))
	}
	return fmt.Errorf("%s: %w", action, err)
}
