package localcloud

// The Nomad API proxy: a reverse proxy on loopback in front of the Nomad
// server's HTTP API that forwards everything (blocking queries, streams and
// upgraded connections included) unless a fault rule matches, in which case
// it answers for the server: by default 500 "No cluster leader", what Nomad
// says while it elects a leader. Autoscaler agents started with
// AutoscalerSpec.NomadViaProxy talk to Nomad through it; client agents never
// do.

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultNomadFaultBody is the body of an injected fault when
// NomadFault.Body is empty: Nomad's answer while it has no leader.
const DefaultNomadFaultBody = "No cluster leader"

// maxProxyRecords bounds the proxy's request history.
const maxProxyRecords = 10000

// NomadFault is a fault rule for the Nomad API proxy (FailNomad). A request
// matches when its method, path and query all match; the first active rule
// that matches answers it, and the request never reaches the server.
type NomadFault struct {
	// Method matches the request method ("GET", "PUT" ...); empty: any.
	Method string
	// PathPrefix matches the start of the URL path ("/v1/nodes",
	// "/v1/job/web/scale" ...); empty: any path.
	PathPrefix string
	// Query holds query parameters that must be present; a non-empty value
	// must also be equal. {"index": ""} matches only blocking queries.
	Query map[string]string
	// Status is the HTTP status of the answer; default 500.
	Status int
	// Body is the answer's body (text/plain); default DefaultNomadFaultBody.
	Body string
	// Delay holds each failed request this long before answering (a slow
	// server); zero answers at once.
	Delay time.Duration
	// Duration ends the rule this long after FailNomad; zero: no time limit.
	Duration time.Duration
	// Count ends the rule after it has failed this many requests; zero: no
	// limit. Without Duration and Count a rule lasts until it is removed.
	Count int
}

// NomadFaultRule is a fault rule installed by FailNomad.
type NomadFaultRule struct {
	p       *nomadProxy
	n       int // position in installation order, for messages
	fault   NomadFault
	until   time.Time // zero: no time limit
	failed  int       // guarded by p.mu
	removed bool      // guarded by p.mu
}

// Failed returns how many requests the rule has failed so far.
func (r *NomadFaultRule) Failed() int {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	return r.failed
}

// Active reports whether the rule still fails matching requests (not
// removed, not expired, count not reached).
func (r *NomadFaultRule) Active() bool {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	return r.activeLocked(time.Now())
}

// Remove ends the rule.
func (r *NomadFaultRule) Remove() {
	r.p.mu.Lock()
	r.removed = true
	r.p.mu.Unlock()
}

// String describes the rule.
func (r *NomadFaultRule) String() string {
	f := r.fault
	var b strings.Builder
	fmt.Fprintf(&b, "fault #%d: %s %s*", r.n, orAny(f.Method), f.PathPrefix)
	for k, v := range f.Query {
		if v == "" {
			fmt.Fprintf(&b, " ?%s", k)
		} else {
			fmt.Fprintf(&b, " ?%s=%s", k, v)
		}
	}
	fmt.Fprintf(&b, " -> %d %q", f.Status, f.Body)
	if f.Delay > 0 {
		fmt.Fprintf(&b, " after %s", f.Delay)
	}
	if f.Duration > 0 {
		fmt.Fprintf(&b, " for %s", f.Duration)
	}
	if f.Count > 0 {
		fmt.Fprintf(&b, " for %d requests", f.Count)
	}
	return b.String()
}

func orAny(method string) string {
	if method == "" {
		return "ANY"
	}
	return method
}

func (r *NomadFaultRule) activeLocked(now time.Time) bool {
	return !r.removed && (r.until.IsZero() || now.Before(r.until)) &&
		(r.fault.Count <= 0 || r.failed < r.fault.Count)
}

func (r *NomadFaultRule) matches(req *http.Request) bool {
	f := r.fault
	if f.Method != "" && !strings.EqualFold(f.Method, req.Method) {
		return false
	}
	if !strings.HasPrefix(req.URL.Path, f.PathPrefix) {
		return false
	}
	if len(f.Query) > 0 {
		q := req.URL.Query()
		for k, v := range f.Query {
			if !q.Has(k) || (v != "" && q.Get(k) != v) {
				return false
			}
		}
	}
	return true
}

// NomadProxyRecord is one request that went through the Nomad API proxy,
// recorded when its answer is complete.
type NomadProxyRecord struct {
	Time     time.Time // when the request arrived
	Method   string
	Path     string
	RawQuery string
	Status   int           // the answer's status (0: none was written)
	Duration time.Duration // until the answer was complete
	Fault    bool          // answered by a fault rule
}

// NomadProxyStats counts the proxy's requests.
type NomadProxyStats struct {
	// Forwarded requests went to the Nomad server (in flight ones included).
	Forwarded int
	// Failed requests were answered by a fault rule.
	Failed int
}

// nomadProxy is the running proxy.
type nomadProxy struct {
	c      *Cloud
	addr   string
	srv    *http.Server
	tr     *http.Transport
	rp     *httputil.ReverseProxy
	logOut *os.File

	mu      sync.Mutex
	closed  bool
	rules   []*NomadFaultRule
	nRules  int
	stats   NomadProxyStats
	records []NomadProxyRecord
	wg      sync.WaitGroup // in-flight requests
	logMu   sync.Mutex
}

// startNomadProxy listens on a free loopback port and serves the proxy in
// front of the Nomad server.
func (c *Cloud) startNomadProxy() error {
	target, err := url.Parse(c.NomadAddr())
	if err != nil {
		return fmt.Errorf("localcloud: start Nomad proxy: parse %q: %w", c.NomadAddr(), err)
	}
	logOut, err := os.OpenFile(filepath.Join(c.logsDir, "nomad-proxy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("localcloud: start Nomad proxy: open log: %w", err)
	}
	ln, err := listenLoopback()
	if err != nil {
		_ = logOut.Close()
		return fmt.Errorf("localcloud: start Nomad proxy: %w", err)
	}
	p := &nomadProxy{c: c, addr: "http://" + ln.Addr().String(), logOut: logOut}
	p.tr = &http.Transport{
		Proxy:               nil, // never an HTTP(S)_PROXY of the environment
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true, // pass Accept-Encoding and bodies through untouched
		// No ResponseHeaderTimeout: a blocking query answers after up to
		// its wait time (5 minutes by default).
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
		},
		Transport:     p.tr,
		FlushInterval: -1, // streams (event stream, logs -f) arrive as they are written
		ErrorLog:      log.New(logOut, "nomad-proxy: ", log.LstdFlags|log.Lmicroseconds),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the caller went away (a cancelled blocking query)
			}
			p.logLine("%s %s: forward error: %v", r.Method, r.URL.RequestURI(), err)
			http.Error(w, "localcloud Nomad proxy: "+err.Error(), http.StatusBadGateway)
		},
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(logOut, "nomad-proxy: ", log.LstdFlags|log.Lmicroseconds),
		// No WriteTimeout or ReadTimeout: blocking queries and streams last.
	}
	go func() { _ = p.srv.Serve(ln) }()
	c.proxy = p
	c.logf("nomad API proxy at %s -> %s", p.addr, c.NomadAddr())
	return nil
}

// close stops the proxy: it refuses new requests, closes its listener and
// connections and waits briefly for in-flight ones.
func (p *nomadProxy) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.srv.Close()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(3 * time.Second): // upgraded connections end with the server
	}
	p.tr.CloseIdleConnections()
	p.logMu.Lock()
	cerr := p.logOut.Close()
	p.logMu.Unlock()
	if err = errors.Join(err, cerr); err != nil {
		return fmt.Errorf("localcloud: stop Nomad proxy: %w", err)
	}
	return nil
}

// ServeHTTP answers from the first matching fault rule, or forwards.
func (p *nomadProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		http.Error(w, "localcloud Nomad proxy: closed", http.StatusServiceUnavailable)
		return
	}
	p.wg.Add(1)
	defer p.wg.Done()
	var rule *NomadFaultRule
	for _, rl := range p.rules {
		if rl.activeLocked(start) && rl.matches(r) {
			rule = rl
			break
		}
	}
	var nth int
	if rule != nil {
		rule.failed++
		nth = rule.failed
		p.stats.Failed++
	} else {
		p.stats.Forwarded++
	}
	p.mu.Unlock()

	if rule != nil {
		f := rule.fault
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
			}
			t.Stop()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(f.Status)
		_, _ = io.WriteString(w, f.Body)
		p.done(r, start, f.Status, true)
		p.c.record(Event{Kind: EventNomadFault, Message: fmt.Sprintf("%s %s -> %d %q (%s; failed %d)",
			r.Method, r.URL.RequestURI(), f.Status, f.Body, rule, nth)})
		return
	}
	sw := &statusWriter{ResponseWriter: w}
	p.rp.ServeHTTP(sw, r)
	p.done(r, start, sw.status, false)
}

// done records a completed request.
func (p *nomadProxy) done(r *http.Request, start time.Time, status int, fault bool) {
	rec := NomadProxyRecord{Time: start, Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery,
		Status: status, Duration: time.Since(start), Fault: fault}
	p.mu.Lock()
	if len(p.records) >= maxProxyRecords {
		p.records = append(p.records[:0], p.records[len(p.records)-maxProxyRecords/2:]...)
	}
	p.records = append(p.records, rec)
	p.mu.Unlock()
	tag := ""
	if fault {
		tag = " FAULT"
	}
	p.logLine("%s %s -> %d%s (%s)", r.Method, r.URL.RequestURI(), status, tag, rec.Duration.Round(time.Millisecond))
}

// logLine appends one line to the proxy's log file.
func (p *nomadProxy) logLine(format string, args ...any) {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	_, _ = fmt.Fprintf(p.logOut, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// statusWriter remembers the status written through it. Unwrap lets
// http.ResponseController (used by the reverse proxy) flush and hijack the
// underlying writer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the underlying ResponseWriter.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// NomadProxyAddr returns the address of the proxy in front of the Nomad
// server's HTTP API (http://127.0.0.1:<port>); "" before Start.
func (c *Cloud) NomadProxyAddr() string {
	if c.proxy == nil {
		return ""
	}
	return c.proxy.addr
}

// FailNomad installs a fault rule in the Nomad API proxy and returns it (for
// its count of failed requests, or to remove it). Rules are tried in the
// order they were installed. Zero Status and Body mean 500 and
// DefaultNomadFaultBody. Only requests through NomadProxyAddr are affected.
func (c *Cloud) FailNomad(f NomadFault) *NomadFaultRule {
	if f.Status == 0 {
		f.Status = http.StatusInternalServerError
	}
	if f.Body == "" {
		f.Body = DefaultNomadFaultBody
	}
	f.Method = strings.ToUpper(f.Method)
	if len(f.Query) > 0 {
		q := make(map[string]string, len(f.Query))
		for k, v := range f.Query {
			q[k] = v
		}
		f.Query = q
	}
	p := c.proxy
	if p == nil { // before Start or after a failed one: a rule that never matches
		return &NomadFaultRule{p: &nomadProxy{}, fault: f, removed: true}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nRules++
	r := &NomadFaultRule{p: p, n: p.nRules, fault: f}
	if f.Duration > 0 {
		r.until = time.Now().Add(f.Duration)
	}
	p.rules = append(p.rules, r)
	c.logf("nomad proxy: %s", r)
	return r
}

// ClearNomadFaults removes every fault rule of the Nomad API proxy.
func (c *Cloud) ClearNomadFaults() {
	p := c.proxy
	if p == nil {
		return
	}
	p.mu.Lock()
	for _, r := range p.rules {
		r.removed = true
	}
	p.rules = nil
	p.mu.Unlock()
	c.logf("nomad proxy: faults cleared")
}

// NomadProxyStats returns how many requests the Nomad API proxy forwarded
// and failed so far.
func (c *Cloud) NomadProxyStats() NomadProxyStats {
	p := c.proxy
	if p == nil {
		return NomadProxyStats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// NomadProxyRequests returns the completed requests of the Nomad API proxy,
// oldest first (the most recent few thousand).
func (c *Cloud) NomadProxyRequests() []NomadProxyRecord {
	p := c.proxy
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]NomadProxyRecord(nil), p.records...)
}

// nomadProxyClose stops the proxy if it runs.
func (c *Cloud) nomadProxyClose() error {
	if c.proxy == nil {
		return nil
	}
	return c.proxy.close()
}
