package plugin

import (
	"context"
	"fmt"
	"sync"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad-autoscaler/sdk"
)

// toSlack widens the end of a query window: the agent computes the window
// just before calling Query, so the sample a first query triggers is a few
// milliseconds younger than the window's end.
const toSlack = time.Second

// samplerSet owns one background sampler per active query.
type samplerSet struct {
	coll     *collector
	interval time.Duration
	// retention is both how much history a sampler keeps and how long it
	// keeps sampling without being queried.
	retention time.Duration
	timeout   time.Duration
	log       hclog.Logger
	now       func() time.Time

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	samplers map[string]*sampler
	wg       sync.WaitGroup
}

func newSamplerSet(coll *collector, cfg config, log hclog.Logger) *samplerSet {
	ctx, cancel := context.WithCancel(context.Background())
	return &samplerSet{
		coll:      coll,
		interval:  cfg.sampleInterval,
		retention: cfg.sampleRetention,
		timeout:   max(cfg.sampleInterval, cfg.requestTimeout),
		log:       log,
		now:       coll.now,
		ctx:       ctx,
		cancel:    cancel,
		samplers:  make(map[string]*sampler),
	}
}

// query returns the datapoints of q inside r. The first query of a pool
// samples at once; later ones read the history the background sampler keeps.
func (s *samplerSet) query(q query, r sdk.TimeRange) (sdk.TimestampedMetrics, error) {
	if s.ctx.Err() != nil {
		return nil, fmt.Errorf("apm-node is reconfiguring or stopping; query %q not served", q)
	}
	sm, created := s.get(q)
	if created {
		sm.takeSample()
		close(sm.first)
		s.wg.Go(sm.loop)
	} else {
		select {
		case <-sm.first:
		case <-s.ctx.Done():
			return nil, fmt.Errorf("apm-node is reconfiguring or stopping; query %q not served", q)
		}
	}
	return sm.window(r)
}

// get returns the sampler of q, creating it if there is none. It marks the
// sampler as queried now while holding the set's lock, so an idle sampler
// can never be retired between being found and being used.
func (s *samplerSet) get(q query) (*sampler, bool) {
	key := q.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if sm, ok := s.samplers[key]; ok {
		sm.touch(s.now())
		return sm, false
	}
	sm := &sampler{
		set:   s,
		q:     q,
		log:   s.log.With("query", key),
		first: make(chan struct{}),
	}
	sm.touch(s.now())
	s.samplers[key] = sm
	sm.log.Info("starting sampler", "interval", s.interval, "retention", s.retention)
	return sm, true
}

// retireIfIdle removes sm when nobody has queried it for the retention
// period and reports whether it did.
func (s *samplerSet) retireIfIdle(sm *sampler) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now().Sub(sm.queriedAt()) < s.retention {
		return false
	}
	delete(s.samplers, sm.q.String())
	sm.log.Info("stopping sampler: not queried within the retention period", "retention", s.retention)
	return true
}

// stop ends every sampler and waits for them.
func (s *samplerSet) stop() {
	s.cancel()
	s.wg.Wait()
}

// sampler keeps the recent history of one query.
type sampler struct {
	set   *samplerSet
	q     query
	log   hclog.Logger
	first chan struct{} // closed once the first sample is in

	mu          sync.Mutex
	history     []sample // oldest first, within the retention period
	last        outcome  // the latest attempt, successful or not
	lastQueried time.Time
}

func (sm *sampler) touch(now time.Time) {
	sm.mu.Lock()
	sm.lastQueried = now
	sm.mu.Unlock()
}

func (sm *sampler) queriedAt() time.Time {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.lastQueried
}

// loop samples every interval until the set stops or nobody queries.
func (sm *sampler) loop() {
	ticker := time.NewTicker(sm.set.interval)
	defer ticker.Stop()
	for {
		select {
		case <-sm.set.ctx.Done():
			return
		case <-ticker.C:
			if sm.set.retireIfIdle(sm) {
				return
			}
			sm.takeSample()
		}
	}
}

// takeSample collects one sample and records it.
func (sm *sampler) takeSample() {
	ctx, cancel := context.WithTimeout(sm.set.ctx, sm.set.timeout)
	defer cancel()
	o := sm.set.coll.collect(ctx, sm.q, sm.log)
	switch {
	case o.err != nil:
		sm.log.Warn("sample failed", "error", o.err)
	case o.empty != "":
		sm.log.Debug("pool is empty", "reason", o.empty)
	}
	sm.record(o)
}

// record stores an attempt and drops history older than the retention.
func (sm *sampler) record(o outcome) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.last = o
	if o.err == nil && o.empty == "" {
		sm.history = append(sm.history, o.sample)
	}
	cutoff := sm.set.now().Add(-sm.set.retention)
	drop := 0
	for drop < len(sm.history) && sm.history[drop].at.Before(cutoff) {
		drop++
	}
	if drop > 0 {
		sm.history = append(sm.history[:0], sm.history[drop:]...)
	}
}

// window returns the datapoints inside r. When the latest attempt failed the
// query fails too, and when it found the pool empty there are no datapoints:
// older figures no longer describe the pool.
func (sm *sampler) window(r sdk.TimeRange) (sdk.TimestampedMetrics, error) {
	sm.mu.Lock()
	defer sm.mu.Unlock()

	switch {
	case sm.last.err != nil:
		return nil, fmt.Errorf("latest sample of %q failed: %w", sm.q, sm.last.err)
	case sm.last.empty != "":
		sm.log.Info("returning no datapoints: the pool has no node that counts", "reason", sm.last.empty)
		return sdk.TimestampedMetrics{}, nil
	}

	end := r.To.Add(toSlack)
	out := sdk.TimestampedMetrics{}
	if r.From.Equal(r.To) {
		// query_window = "instant": the newest sample.
		for i := len(sm.history) - 1; i >= 0; i-- {
			if !sm.history[i].at.After(end) {
				out = append(out, datapoint(sm.history[i]))
				break
			}
		}
	} else {
		for _, s := range sm.history {
			if !s.at.Before(r.From) && !s.at.After(end) {
				out = append(out, datapoint(s))
			}
		}
	}
	if len(out) == 0 {
		sm.log.Debug("no samples inside the query window", "from", r.From, "to", r.To, "samples_kept", len(sm.history))
	}
	return out, nil
}

func datapoint(s sample) sdk.TimestampedMetric {
	return sdk.TimestampedMetric{Timestamp: s.at, Value: s.value}
}
