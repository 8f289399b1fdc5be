package interruption

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults and bounds of Config. SQS itself bounds the long poll (20 s), the
// batch (10 messages) and the visibility timeout (12 hours).
const (
	defaultWaitTime          = 20 * time.Second
	maxWaitTime              = 20 * time.Second
	defaultMaxMessages       = 10
	maxMaxMessages           = 10
	defaultVisibilityTimeout = 60 * time.Second
	maxVisibilityTimeout     = 12 * time.Hour
	defaultHandleTimeout     = 45 * time.Second
	defaultMaxInFlight       = 32
	// maxMaxInFlight: each message in flight is a goroutine and, usually,
	// a drain; more than a thousand at once is a typo, not a fleet.
	maxMaxInFlight = 1000
)

// Config is the configuration of a Watcher. The zero value of a field means
// its default.
type Config struct {
	// QueueURL is the SQS queue EventBridge delivers the EC2 events to
	// (see ValidQueueURL). Required.
	QueueURL string
	// WaitTime is the long poll of one receive: default and maximum 20s,
	// in whole seconds. (Zero means the default: short polling is not
	// offered, it only costs requests.)
	WaitTime time.Duration
	// MaxMessages is the most messages one receive asks for: 1 to 10,
	// default 10.
	MaxMessages int32
	// VisibilityTimeout is how long a received message stays hidden from
	// other receivers while it is handled: default 60s, at most 12h, in
	// whole seconds.
	VisibilityTimeout time.Duration
	// HandleTimeout is the deadline of one Handle call: default 45s; it
	// must be shorter than VisibilityTimeout, so that a message does not
	// come back while it is still being handled.
	HandleTimeout time.Duration
	// MaxInFlight is how many messages are handled at once: 1 to 1000,
	// default 32.
	MaxInFlight int
	// Logger receives the watcher's log lines; default a null logger.
	Logger hclog.Logger
	// Now is the clock of the duplicate memory; default time.Now.
	Now func() time.Time
}

// withDefaults returns cfg with its zero fields set to their defaults.
func (cfg Config) withDefaults() Config {
	if cfg.WaitTime == 0 {
		cfg.WaitTime = defaultWaitTime
	}
	if cfg.MaxMessages == 0 {
		cfg.MaxMessages = defaultMaxMessages
	}
	if cfg.VisibilityTimeout == 0 {
		cfg.VisibilityTimeout = defaultVisibilityTimeout
	}
	if cfg.HandleTimeout == 0 {
		cfg.HandleTimeout = defaultHandleTimeout
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = defaultMaxInFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// validate checks a Config that has its defaults applied. Every error names
// the field, its value and what is accepted.
func (cfg Config) validate() error {
	var errs []error
	if err := ValidQueueURL(cfg.QueueURL); err != nil {
		errs = append(errs, fmt.Errorf("QueueURL: %w", err))
	}
	if cfg.WaitTime < 0 || cfg.WaitTime > maxWaitTime || cfg.WaitTime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("WaitTime is %s, want whole seconds from 1s to %s (0 means the default, %s)",
			cfg.WaitTime, maxWaitTime, defaultWaitTime))
	}
	if cfg.MaxMessages < 1 || cfg.MaxMessages > maxMaxMessages {
		errs = append(errs, fmt.Errorf("MaxMessages is %d, want 1 to %d (0 means the default, %d)",
			cfg.MaxMessages, maxMaxMessages, defaultMaxMessages))
	}
	if cfg.VisibilityTimeout < time.Second || cfg.VisibilityTimeout > maxVisibilityTimeout || cfg.VisibilityTimeout%time.Second != 0 {
		errs = append(errs, fmt.Errorf("VisibilityTimeout is %s, want whole seconds from 1s to %s (0 means the default, %s)",
			cfg.VisibilityTimeout, maxVisibilityTimeout, defaultVisibilityTimeout))
	}
	if cfg.HandleTimeout <= 0 || cfg.HandleTimeout >= cfg.VisibilityTimeout {
		errs = append(errs, fmt.Errorf("HandleTimeout is %s, want more than 0 and less than VisibilityTimeout (%s) (0 means the default, %s)",
			cfg.HandleTimeout, cfg.VisibilityTimeout, defaultHandleTimeout))
	}
	if cfg.MaxInFlight < 1 || cfg.MaxInFlight > maxMaxInFlight {
		errs = append(errs, fmt.Errorf("MaxInFlight is %d, want 1 to %d (0 means the default, %d)",
			cfg.MaxInFlight, maxMaxInFlight, defaultMaxInFlight))
	}
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}

// queueURLExample is what the errors of ValidQueueURL show as accepted.
const queueURLExample = "want an http:// or https:// URL with a host and a path, such as " +
	"https://sqs.us-east-1.amazonaws.com/123456789012/name"

// ValidQueueURL checks that s looks like an SQS queue URL: http or https, a
// host, and a path of at least one segment, such as
// https://sqs.us-east-1.amazonaws.com/123456789012/name (or moto's
// http://127.0.0.1:PORT/123456789012/name). It does not check that the queue
// exists.
func ValidQueueURL(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("queue URL is empty; %s", queueURLExample)
	}
	u, err := url.Parse(s)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // its message would repeat the URL
		}
		return fmt.Errorf("queue URL %s is not a URL (%v); %s", shown(s), err, queueURLExample)
	}
	if u.User != nil {
		// Never repeat a password, not even in an error.
		return fmt.Errorf("queue URL %s must not carry user information; %s", shown(u.Redacted()), queueURLExample)
	}
	switch {
	case u.Scheme == "":
		return fmt.Errorf("queue URL %s has no scheme; %s", shown(s), queueURLExample)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("queue URL %s has scheme %s; %s", shown(s), shown(u.Scheme), queueURLExample)
	case u.Host == "":
		return fmt.Errorf("queue URL %s has no host; %s", shown(s), queueURLExample)
	case strings.Trim(u.Path, "/") == "":
		return fmt.Errorf("queue URL %s has no path; %s", shown(s), queueURLExample)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("queue URL %s has a query or fragment; %s", shown(s), queueURLExample)
	}
	return nil
}
