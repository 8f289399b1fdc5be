// Package plugin implements apm-node, a Nomad Autoscaler APM plugin that
// reports the CPU (and memory) actually used by a pool of Nomad client
// nodes, and the nodes the pool lacks for the allocations Nomad could not
// place (unplaced_nodes), read from Nomad itself and sampled into a time
// series.
package plugin

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/plugins/apm"
	"github.com/hashicorp/nomad-autoscaler/plugins/base"
	"github.com/hashicorp/nomad-autoscaler/sdk"
	nomadHelper "github.com/hashicorp/nomad-autoscaler/sdk/helper/nomad"
	"github.com/hashicorp/nomad/api"
)

const (
	// pluginName must equal the binary's name: the agent refuses a plugin
	// whose reported name differs from its driver.
	pluginName = "apm-node"

	configKeySampleInterval  = "sample_interval"
	configKeySampleRetention = "sample_retention"
	configKeyNodeWarmup      = "node_warmup"
	configKeyConcurrency     = "stats_concurrency"
	configKeyRequestTimeout  = "request_timeout"
	// configKeyAdmissionMetaKey names the admission gate's meta key; the
	// default is nomadnode.DefaultGateKey, as for target-spotfleet.
	configKeyAdmissionMetaKey = "admission_meta_key"

	defaultSampleInterval  = 10 * time.Second
	defaultSampleRetention = 15 * time.Minute
	defaultNodeWarmup      = 60 * time.Second
	defaultConcurrency     = 32
	defaultRequestTimeout  = 5 * time.Second

	// configKeyNomadToken is the agent's ACL token key; it is never logged.
	configKeyNomadToken = "nomad_token"
)

var pluginInfo = &base.PluginInfo{
	Name:       pluginName,
	PluginType: sdk.PluginTypeAPM,
}

var _ apm.APM = (*APMPlugin)(nil)

// APMPlugin is the apm-node plugin. Its zero value is not usable: build it
// with NewPlugin.
type APMPlugin struct {
	logger hclog.Logger
	// newAPI builds the Nomad client from the agent's nomad_* keys; tests
	// replace it.
	newAPI func(raw map[string]string, cfg config) (nomadAPI, error)
	now    func() time.Time

	mu       sync.Mutex
	samplers *samplerSet
}

// NewPlugin returns an apm-node plugin that logs to log.
func NewPlugin(log hclog.Logger) *APMPlugin {
	return &APMPlugin{logger: log, newAPI: newNomadAPI, now: time.Now}
}

// PluginInfo implements base.Base.
func (p *APMPlugin) PluginInfo() (*base.PluginInfo, error) {
	return pluginInfo, nil
}

// SetConfig implements base.Base. It validates the plugin's keys and builds
// the Nomad client without touching the network: an error here stops the
// agent. Calling it again replaces the configuration and restarts sampling.
func (p *APMPlugin) SetConfig(raw map[string]string) error {
	cfg, err := parseConfig(raw)
	if err != nil {
		return err
	}
	nomad, err := p.newAPI(raw, cfg)
	if err != nil {
		return err
	}

	run := newLimiter(cfg.concurrency).run
	coll := &collector{api: nomad, nodes: newNodeReader(nomad, cfg.gate), warmup: cfg.nodeWarmup,
		countWarmup: countWarmup(cfg), run: run, now: p.now}
	set := newSamplerSet(coll, cfg, p.logger)

	p.mu.Lock()
	old := p.samplers
	p.samplers = set
	p.mu.Unlock()
	if old != nil {
		old.stop()
	}

	p.logger.Info("configured", configKeySampleInterval, cfg.sampleInterval,
		configKeySampleRetention, cfg.sampleRetention, configKeyNodeWarmup, cfg.nodeWarmup,
		configKeyConcurrency, cfg.concurrency, configKeyRequestTimeout, cfg.requestTimeout,
		configKeyAdmissionMetaKey, cfg.gate.MetaKey())
	return nil
}

// countWarmup is target-spotfleet's node_warmup as docs/hooks.md sets it:
// apm-node's node_warmup plus its sample_interval, 0 when apm-node has no
// warm-up (see uncountedWarming).
func countWarmup(cfg config) time.Duration {
	if cfg.nodeWarmup <= 0 {
		return 0
	}
	return cfg.nodeWarmup + cfg.sampleInterval
}

// newNomadAPI builds the Nomad API client from the agent's nomad_* keys.
func newNomadAPI(raw map[string]string, cfg config) (nomadAPI, error) {
	apiCfg := nomadHelper.ConfigFromNamespacedMap(raw)
	if err := poolConnections(apiCfg, cfg.concurrency); err != nil {
		return nil, fmt.Errorf("failed to configure TLS for the Nomad API client: %w", err)
	}
	client, err := api.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("failed to build the Nomad API client from the agent's nomad settings: %w", err)
	}
	return newNomadClient(client, cfg.requestTimeout, raw[configKeyNomadToken]), nil
}

// poolConnections gives the API client an HTTP transport that keeps as many
// idle connections as calls may be in flight. The default keeps GOMAXPROCS+1,
// so a concurrent sample would open and close connections on every call.
// Unix-socket addresses keep the API's own client.
func poolConnections(c *api.Config, concurrency int) error {
	addr := c.Address
	if addr == "" {
		addr = os.Getenv("NOMAD_ADDR")
	}
	if strings.HasPrefix(addr, "unix:") {
		return nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = concurrency
	transport.MaxIdleConns = 2 * concurrency
	transport.TLSHandshakeTimeout = 10 * time.Second
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	// Like the API's default: HTTP/1.1.
	transport.ForceAttemptHTTP2 = false
	c.HttpClient = &http.Client{Transport: transport}
	if c.TLSConfig == nil {
		return nil
	}
	return api.ConfigureTLS(c.HttpClient, c.TLSConfig)
}

// Query implements apm.Looker. It returns the samples of the query inside r;
// see docs/apm-node.md for the query syntax.
func (p *APMPlugin) Query(text string, r sdk.TimeRange) (sdk.TimestampedMetrics, error) {
	q, err := parseQuery(text)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	set := p.samplers
	p.mu.Unlock()
	if set == nil {
		return nil, errors.New("apm-node is not configured yet (SetConfig has not been called)")
	}
	return set.query(q, r)
}

// Stop ends every background sampler. The agent never calls it (it stops
// the plugin process); it is for embedding the plugin, as the tests do.
func (p *APMPlugin) Stop() {
	p.mu.Lock()
	set := p.samplers
	p.samplers = nil
	p.mu.Unlock()
	if set != nil {
		set.stop()
	}
}

// QueryMultiple implements apm.Looker; apm-node queries have one series.
func (p *APMPlugin) QueryMultiple(text string, r sdk.TimeRange) ([]sdk.TimestampedMetrics, error) {
	m, err := p.Query(text, r)
	if err != nil {
		return nil, err
	}
	return []sdk.TimestampedMetrics{m}, nil
}
