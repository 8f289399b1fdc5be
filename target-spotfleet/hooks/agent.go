package hooks

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
)

// Keys of the agent's target plugin config block that ParseAgent reads.
const (
	configKeyAWXURL       = "awx_url"
	configKeyAWXToken     = "awx_token"
	configKeyAWXTokenFile = "awx_token_file"
	configKeyAWXTokenEnv  = "awx_token_env"
	configKeyAWXCAFile    = "awx_ca_file"
)

// awxURLExample is what the errors about awx_url show as accepted.
const awxURLExample = "want the http:// or https:// base URL of AWX, such as https://awx.example.com"

// envNamePattern is what an environment variable name may look like.
var envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Agent holds the agent-level hook settings: how to reach AWX and where its
// token comes from. Secrets live here, never in a policy. An Agent is safe
// for concurrent use; it also caches the ids of job templates named by name.
type Agent struct {
	url       string // base URL without a trailing slash or /api/v2
	token     string // awx_token, when set literally
	tokenFile string
	tokenEnv  string
	caFile    string
	caPool    *x509.CertPool

	mu        sync.Mutex
	lastToken string         // the last token read from file or env (for Secrets)
	templates map[string]int // job template ids by name
	client    *http.Client
}

// AgentKeys returns the keys of the agent's plugin config that ParseAgent
// reads.
func AgentKeys() []string {
	return []string{configKeyAWXURL, configKeyAWXToken, configKeyAWXTokenFile, configKeyAWXTokenEnv, configKeyAWXCAFile}
}

// ParseAgent reads the AWX settings from the agent's target plugin config
// block (keys that are not AgentKeys are ignored). None of them set means
// AWX is not configured, which is not an error. It reads the token file or
// environment variable once to check that it gives a token, and the CA
// file, but it never touches the network. Errors name the key, the value
// (never a token) and what is accepted.
func ParseAgent(cfg map[string]string) (*Agent, error) {
	get := func(key string) string { return strings.TrimSpace(cfg[key]) }
	a := &Agent{
		token:     get(configKeyAWXToken),
		tokenFile: get(configKeyAWXTokenFile),
		tokenEnv:  get(configKeyAWXTokenEnv),
		caFile:    get(configKeyAWXCAFile),
		templates: map[string]int{},
	}
	var errs []string
	rawURL := get(configKeyAWXURL)
	if rawURL != "" {
		u, err := normalizeAWXURL(rawURL)
		if err != nil {
			errs = append(errs, err.Error())
		}
		a.url = u
	}

	var sources []string
	if a.token != "" {
		sources = append(sources, configKeyAWXToken)
	}
	if a.tokenFile != "" {
		sources = append(sources, configKeyAWXTokenFile)
	}
	if a.tokenEnv != "" {
		sources = append(sources, configKeyAWXTokenEnv)
	}
	switch {
	case len(sources) > 1:
		errs = append(errs, fmt.Sprintf("%s are set, want one token source only: keep %s or %s (which keep the token out of the agent's config) and remove the other",
			strings.Join(sources, " and "), configKeyAWXTokenFile, configKeyAWXTokenEnv))
	case len(sources) == 1 && rawURL == "":
		errs = append(errs, fmt.Sprintf("%s is set but %s is not: set %s to the base URL of AWX (such as https://awx.example.com), or remove %s",
			sources[0], configKeyAWXURL, configKeyAWXURL, sources[0]))
	case len(sources) == 0 && rawURL != "":
		errs = append(errs, fmt.Sprintf("%s is set but no token is: set %s (a file holding the token) or %s (the name of an environment variable holding it)",
			configKeyAWXURL, configKeyAWXTokenFile, configKeyAWXTokenEnv))
	case len(sources) == 1:
		if a.tokenEnv != "" && !envNamePattern.MatchString(a.tokenEnv) {
			errs = append(errs, fmt.Sprintf("%s is %s, want the name of an environment variable (letters, digits and '_', not starting with a digit), such as AWX_TOKEN",
				configKeyAWXTokenEnv, shown(a.tokenEnv)))
		} else if tok, err := a.readToken(); err != nil {
			errs = append(errs, err.Error())
		} else {
			a.lastToken = tok
		}
	}

	if a.caFile != "" {
		if rawURL == "" {
			errs = append(errs, fmt.Sprintf("%s is set to %s but %s is not: the CA file only serves the connection to AWX", configKeyAWXCAFile, shown(a.caFile), configKeyAWXURL))
		}
		pool, err := loadCAFile(a.caFile)
		if err != nil {
			errs = append(errs, err.Error())
		}
		a.caPool = pool
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return a, nil
}

// normalizeAWXURL checks awx_url and returns it without a trailing slash or
// a trailing /api/v2.
func normalizeAWXURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // its message would repeat the URL
		}
		return "", fmt.Errorf("%s is %s, which is not a URL (%v); %s", configKeyAWXURL, shown(raw), err, awxURLExample)
	}
	if u.User != nil {
		// Never repeat a password, not even in an error.
		return "", fmt.Errorf("%s %s must not carry user information (the token comes from %s or %s); %s",
			configKeyAWXURL, shown(u.Redacted()), configKeyAWXTokenFile, configKeyAWXTokenEnv, awxURLExample)
	}
	switch {
	case u.Scheme == "":
		return "", fmt.Errorf("%s is %s, which has no scheme; %s", configKeyAWXURL, shown(raw), awxURLExample)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("%s is %s, whose scheme is %s; %s", configKeyAWXURL, shown(raw), shown(u.Scheme), awxURLExample)
	case u.Host == "":
		return "", fmt.Errorf("%s is %s, which has no host; %s", configKeyAWXURL, shown(raw), awxURLExample)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "", fmt.Errorf("%s is %s, which has a query or fragment; %s", configKeyAWXURL, shown(raw), awxURLExample)
	}
	path := strings.TrimRight(u.Path, "/")
	path = strings.TrimSuffix(path, "/api/v2")
	path = strings.TrimSuffix(path, "/api")
	u.Path = strings.TrimRight(path, "/")
	u.RawPath = ""
	return u.String(), nil
}

// loadCAFile reads a PEM file of CA certificates into the system pool (or a
// new pool when the system has none).
func loadCAFile(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s is %s, which cannot be read (%v): want a PEM file with the CA certificate(s) of AWX's TLS", configKeyAWXCAFile, shown(path), unwrapPathError(err))
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s is %s, which holds no PEM certificate: want a PEM file with the CA certificate(s) of AWX's TLS", configKeyAWXCAFile, shown(path))
	}
	return pool, nil
}

// unwrapPathError drops the path from an *os.PathError, which the caller
// already names.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readToken returns the current token: the literal one, or the file or
// environment variable read now (so that a rotated token is used). Errors
// never contain the token.
func (a *Agent) readToken() (string, error) {
	switch {
	case a.token != "":
		return a.token, nil
	case a.tokenFile != "":
		b, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return "", fmt.Errorf("%s is %s, which cannot be read (%v): want a file that holds the AWX token", configKeyAWXTokenFile, shown(a.tokenFile), unwrapPathError(err))
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("%s is %s, which is empty: want a file that holds the AWX token", configKeyAWXTokenFile, shown(a.tokenFile))
		}
		if strings.ContainsAny(tok, "\r\n") {
			return "", fmt.Errorf("%s is %s, which holds more than one line: want a file that holds only the AWX token", configKeyAWXTokenFile, shown(a.tokenFile))
		}
		return tok, nil
	case a.tokenEnv != "":
		tok := strings.TrimSpace(os.Getenv(a.tokenEnv))
		if tok == "" {
			return "", fmt.Errorf("%s is %s, but that environment variable is empty or not set in the agent's environment: want it to hold the AWX token", configKeyAWXTokenEnv, shown(a.tokenEnv))
		}
		return tok, nil
	}
	return "", fmt.Errorf("no AWX token is configured: set %s or %s in the agent's target plugin config", configKeyAWXTokenFile, configKeyAWXTokenEnv)
}

// currentToken reads the token for one AWX request and remembers it for
// Secrets.
func (a *Agent) currentToken() (string, error) {
	tok, err := a.readToken()
	if err != nil {
		return "", err
	}
	a.mu.Lock()
	a.lastToken = tok
	a.mu.Unlock()
	return tok, nil
}

// AWXConfigured reports whether AWX hooks can run: awx_url and a token
// source are set. A nil Agent is not configured.
func (a *Agent) AWXConfigured() bool { return a != nil && a.url != "" }

// String describes the settings for logs: the AWX URL and where the token
// comes from, never the token itself.
func (a *Agent) String() string {
	if !a.AWXConfigured() {
		return "AWX not configured"
	}
	var source string
	switch {
	case a.tokenFile != "":
		source = "token from file " + a.tokenFile
	case a.tokenEnv != "":
		source = "token from env " + a.tokenEnv
	default:
		source = "token set"
	}
	s := "AWX " + a.url + ", " + source
	if a.caFile != "" {
		s += ", CA from " + a.caFile
	}
	return s
}

// Secrets returns the secret values the Agent knows now (the token, as last
// read and as read now), for the caller to redact from its own output.
func (a *Agent) Secrets() []string {
	if a == nil {
		return nil
	}
	var out []string
	if tok, err := a.readToken(); err == nil {
		out = append(out, tok)
	}
	a.mu.Lock()
	last := a.lastToken
	a.mu.Unlock()
	if last != "" && (len(out) == 0 || out[0] != last) {
		out = append(out, last)
	}
	return out
}

// httpClient returns the Agent's default HTTP client for AWX: the default
// transport, with the CA of awx_ca_file when set. It is built once.
func (a *Agent) httpClient() *http.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if a.caPool != nil {
			tr.TLSClientConfig = &tls.Config{RootCAs: a.caPool, MinVersion: tls.VersionTLS12}
		}
		a.client = &http.Client{Transport: tr}
	}
	return a.client
}

// cachedTemplate returns the id of the job template named name, when it was
// resolved before.
func (a *Agent) cachedTemplate(name string) (int, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.templates[name]
	return id, ok
}

// cacheTemplate remembers the id of the job template named name; id 0
// forgets it (the template went away).
func (a *Agent) cacheTemplate(name string, id int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.templates == nil {
		a.templates = map[string]int{}
	}
	if id == 0 {
		delete(a.templates, name)
		return
	}
	a.templates[name] = id
}
