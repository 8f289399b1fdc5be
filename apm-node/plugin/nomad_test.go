package plugin

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The files in testdata/ were recorded from a Nomad v1.6.3 server and client
// (cpu_total_compute = 4000, 200 MHz and 256 MB reserved, on a 2-core host)
// running one raw_exec task that burns CPU (500 MHz, 64 MB asked). Only the
// host CPU figures were edited, to 74.5% and 35.5% busy, so the two cores
// differ.
const (
	recordedNodeID  = "f1dfe207-e6ac-9bca-6037-2be14d95bb4c"
	recordedAllocID = "52deb846-0b52-e383-2b91-f1f05c436f48"
)

// recordedNomad serves the recorded responses like a Nomad server does and
// remembers the query string of every request by path.
type recordedNomad struct {
	*httptest.Server
	mu       sync.Mutex
	requests map[string]url.Values
}

func newRecordedNomad(t *testing.T) *recordedNomad {
	t.Helper()
	r := &recordedNomad{requests: map[string]url.Values{}}
	files := map[string]string{
		"/v1/nodes":                  "nodes.json",
		"/v1/node/" + recordedNodeID: "node.json",
		"/v1/client/stats":           "client_stats.json",
		"/v1/allocations":            "allocations.json",
		"/v1/client/allocation/" + recordedAllocID + "/stats": "allocation_stats.json",
	}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.URL.Path] = req.URL.Query()
		r.mu.Unlock()

		if req.URL.Path == "/v1/client/stats" && req.URL.Query().Get("node_id") != recordedNodeID {
			http.Error(w, "Unknown node "+req.URL.Query().Get("node_id"), http.StatusNotFound)
			return
		}
		name, ok := files[req.URL.Path]
		if !ok {
			if strings.HasPrefix(req.URL.Path, "/v1/client/allocation/") {
				id := strings.Split(req.URL.Path, "/")[4]
				http.Error(w, fmt.Sprintf("Unknown allocation %q", id), http.StatusNotFound)
				return
			}
			http.NotFound(w, req)
			return
		}
		body, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Nomad-Index", "20")
		_, _ = w.Write(body)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *recordedNomad) query(path string) url.Values {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[path]
}

func newTestNomadClient(t *testing.T, addr, token string, timeout time.Duration) *nomadClient {
	t.Helper()
	client, err := api.NewClient(&api.Config{Address: addr, SecretID: token})
	require.NoError(t, err)
	return newNomadClient(client, timeout, token)
}

func TestNomadClientReadsRecordedResponses(t *testing.T) {
	srv := newRecordedNomad(t)
	c := newTestNomadClient(t, srv.URL, "", time.Second)
	ctx := context.Background()

	cases := []struct {
		name      string
		call      func(t *testing.T)
		path      string
		wantQuery map[string]string
	}{
		{
			name: "node list carries resources",
			call: func(t *testing.T) {
				nodes, err := c.Nodes(ctx)
				require.NoError(t, err)
				require.Len(t, nodes, 1)
				assert.Equal(t, "spot-worker", nodes[0].NodeClass)
				cpu, err := schedulableCPU(nodes[0])
				require.NoError(t, err)
				assert.Equal(t, 3800.0, cpu)
			},
			path:      "/v1/nodes",
			wantQuery: map[string]string{"resources": "true"},
		},
		{
			name: "node read has the ready time",
			call: func(t *testing.T) {
				node, err := c.Node(ctx, recordedNodeID)
				require.NoError(t, err)
				assert.Equal(t, int64(1795692918), node.StatusUpdatedAt)
				require.NotEmpty(t, node.Events)
			},
			path: "/v1/node/" + recordedNodeID,
		},
		{
			name: "host stats are read through the server",
			call: func(t *testing.T) {
				stats, err := c.HostStats(ctx, recordedNodeID)
				require.NoError(t, err)
				v, err := hostCPUPercent(stats)
				require.NoError(t, err)
				assert.InDelta(t, 55.0, v, 1e-9)
			},
			path:      "/v1/client/stats",
			wantQuery: map[string]string{"node_id": recordedNodeID},
		},
		{
			name: "allocations of every namespace, live only, with resources",
			call: func(t *testing.T) {
				allocs, err := c.Allocations(ctx)
				require.NoError(t, err)
				require.Len(t, allocs, 1)
				assert.Equal(t, 500.0, allocatedCPU(allocs[0]))
			},
			path: "/v1/allocations",
			wantQuery: map[string]string{
				"namespace": "*", "resources": "true", "task_states": "false", "filter": liveAllocFilter,
			},
		},
		{
			name: "allocation stats carry the MHz used",
			call: func(t *testing.T) {
				usage, err := c.AllocStats(ctx, recordedAllocID)
				require.NoError(t, err)
				v, err := usedCPU(usage)
				require.NoError(t, err)
				assert.InDelta(t, 1198.589900932198, v, 1e-9)
			},
			path: "/v1/client/allocation/" + recordedAllocID + "/stats",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.call(t)
			got := srv.query(tc.path)
			require.NotNil(t, got, "no request reached %s", tc.path)
			for k, v := range tc.wantQuery {
				assert.Equal(t, v, got.Get(k), "query parameter %s", k)
			}
		})
	}
}

func TestAllocStatsTellsAGoneAllocationFromAFailure(t *testing.T) {
	cases := []struct {
		name     string
		status   int
		body     string
		wantGone bool
	}{
		{name: "unknown allocation is gone", status: http.StatusNotFound, body: `Unknown allocation "x"`, wantGone: true},
		{name: "no path to the node is a failure", status: http.StatusNotFound, body: "No path to node"},
		{name: "server error is a failure", status: http.StatusInternalServerError, body: "rpc error"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, tc.body, tc.status)
			}))
			defer srv.Close()
			c := newTestNomadClient(t, srv.URL, "", time.Second)

			_, err := c.AllocStats(context.Background(), "x")

			require.Error(t, err)
			assert.Equal(t, tc.wantGone, err == errAllocGone, "error: %v", err)
			if !tc.wantGone {
				assert.Contains(t, err.Error(), "reading stats of allocation x")
			}
		})
	}
}

func TestNomadCallsGiveUpAtTheirDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := newTestNomadClient(t, srv.URL, "", 50*time.Millisecond)

	_, err := c.HostStats(context.Background(), "a")

	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "reading host stats of node a")
}

func TestTheTokenNeverAppearsInErrors(t *testing.T) {
	const token = "5f0e3b7c-secret-token"
	// A proxy that echoes the request headers into its error page.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "denied: X-Nomad-Token="+r.Header.Get("X-Nomad-Token"), http.StatusForbidden)
	}))
	defer srv.Close()
	c := newTestNomadClient(t, srv.URL, token, time.Second)

	_, err := c.Nodes(context.Background())

	require.Error(t, err)
	assert.NotContains(t, err.Error(), token)
	assert.Contains(t, err.Error(), "<redacted>")
	assert.Contains(t, err.Error(), "listing Nomad nodes")
}
