package hooks

import (
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

// testInstance is a fully known instance with a registered node, launched
// 5 minutes ago.
func testInstance() Instance {
	return Instance{
		ID: "i-0abc123", Type: "c5.large", Zone: "us-east-1a",
		PrivateIP: "10.0.0.5", PrivateDNS: "ip-10-0-0-5.ec2.internal", FleetID: "sfr-1234",
		NodeID: "node-1", NodeName: "client-1", NodeMeta: map[string]string{"rack": "r1"},
		LaunchTime: time.Now().UTC().Add(-5 * time.Minute),
	}
}

// newTestRunner returns a Runner with fast polls and retries and a log
// buffer.
func newTestRunner(t *testing.T, agent *Agent) (*Runner, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	return &Runner{
		Agent:          agent,
		Logger:         hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}),
		Poll:           5 * time.Millisecond,
		retryBase:      2 * time.Millisecond,
		retryMax:       20 * time.Millisecond,
		attemptTimeout: 2 * time.Second,
	}, logs
}

// mustPolicy parses a policy that must be valid.
func mustPolicy(t *testing.T, cfg map[string]string, agent *Agent) *Spec {
	t.Helper()
	spec, err := ParsePolicy(cfg, agent)
	require.NoError(t, err)
	return spec
}
