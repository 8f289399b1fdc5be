package interruption

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidQueueURL(t *testing.T) {
	cases := []struct {
		name    string
		url     string
		wantErr string
	}{
		{name: "AWS queue", url: "https://sqs.us-east-1.amazonaws.com/123456789012/spot-interruptions"},
		{name: "moto queue", url: "http://127.0.0.1:5000/123456789012/spot-interruptions"},
		{name: "one segment", url: "https://sqs.eu-west-1.amazonaws.com/queue"},
		{name: "empty", url: "", wantErr: "queue URL is empty; want an http:// or https:// URL"},
		{name: "queue name only", url: "spot-interruptions", wantErr: `queue URL "spot-interruptions" has no scheme; want`},
		{name: "ARN", url: "arn:aws:sqs:us-east-1:123456789012:spot-interruptions", wantErr: `has scheme "arn"`},
		{name: "other scheme", url: "ftp://sqs.us-east-1.amazonaws.com/123456789012/q", wantErr: `has scheme "ftp"`},
		{name: "no host", url: "https:///123456789012/q", wantErr: `queue URL "https:///123456789012/q" has no host`},
		{name: "no path", url: "https://sqs.us-east-1.amazonaws.com/", wantErr: "has no path; want"},
		{name: "query", url: "https://sqs.us-east-1.amazonaws.com/1/q?x=1", wantErr: "has a query or fragment"},
		{name: "not a URL", url: "https://sqs.us-east-1.amazonaws.com:port/1/q", wantErr: `is not a URL (invalid port ":port" after host)`},
		{name: "password is not repeated", url: "https://me:hunter2@sqs.us-east-1.amazonaws.com/1/q", wantErr: `"https://me:xxxxx@sqs.us-east-1.amazonaws.com/1/q" must not carry user information`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidQueueURL(tc.url)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestNewWatcherAppliesDefaults(t *testing.T) {
	w, err := NewWatcher(newFakeSQS(), HandlerFunc(doneHandler), Config{QueueURL: fakeQueueURL})
	require.NoError(t, err)
	require.Equal(t, 20*time.Second, w.cfg.WaitTime)
	require.Equal(t, int32(10), w.cfg.MaxMessages)
	require.Equal(t, 60*time.Second, w.cfg.VisibilityTimeout)
	require.Equal(t, 45*time.Second, w.cfg.HandleTimeout)
	require.Equal(t, 32, w.cfg.MaxInFlight)
	require.NotNil(t, w.cfg.Logger)
	require.NotNil(t, w.cfg.Now)
}

func TestNewWatcherNamesTheBadField(t *testing.T) {
	ok := func(c *Config) {}
	cases := []struct {
		name    string
		change  func(*Config)
		wantErr string
	}{
		{name: "bad queue URL", change: func(c *Config) { c.QueueURL = "spot-interruptions" }, wantErr: `QueueURL: queue URL "spot-interruptions" has no scheme`},
		{name: "negative wait", change: func(c *Config) { c.WaitTime = -time.Second }, wantErr: "WaitTime is -1s, want whole seconds from 1s to 20s (0 means the default, 20s)"},
		{name: "wait above SQS's limit", change: func(c *Config) { c.WaitTime = 21 * time.Second }, wantErr: "WaitTime is 21s"},
		{name: "wait in fractions of seconds", change: func(c *Config) { c.WaitTime = 1500 * time.Millisecond }, wantErr: "WaitTime is 1.5s"},
		{name: "batch above SQS's limit", change: func(c *Config) { c.MaxMessages = 11 }, wantErr: "MaxMessages is 11, want 1 to 10"},
		{name: "negative batch", change: func(c *Config) { c.MaxMessages = -1 }, wantErr: "MaxMessages is -1"},
		{name: "visibility above 12h", change: func(c *Config) { c.VisibilityTimeout = 13 * time.Hour }, wantErr: "VisibilityTimeout is 13h0m0s, want whole seconds from 1s to 12h0m0s"},
		{name: "visibility below a second", change: func(c *Config) {
			c.VisibilityTimeout = 500 * time.Millisecond
			c.HandleTimeout = 100 * time.Millisecond
		}, wantErr: "VisibilityTimeout is 500ms"},
		{name: "handle timeout not below visibility", change: func(c *Config) { c.VisibilityTimeout = 30 * time.Second }, wantErr: "HandleTimeout is 45s, want more than 0 and less than VisibilityTimeout (30s)"},
		{name: "negative handle timeout", change: func(c *Config) { c.HandleTimeout = -time.Second }, wantErr: "HandleTimeout is -1s"},
		{name: "negative in flight", change: func(c *Config) { c.MaxInFlight = -3 }, wantErr: "MaxInFlight is -3, want 1 to 1000"},
		{name: "huge in flight", change: func(c *Config) { c.MaxInFlight = 100000 }, wantErr: "MaxInFlight is 100000"},
		{name: "valid", change: ok},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{QueueURL: fakeQueueURL}
			tc.change(&cfg)
			_, err := NewWatcher(newFakeSQS(), HandlerFunc(doneHandler), cfg)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, "creating the interruption watcher: invalid configuration: ")
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
	_, err := NewWatcher(newFakeSQS(), HandlerFunc(doneHandler), Config{QueueURL: fakeQueueURL, WaitTime: 30 * time.Second, MaxMessages: 20})
	require.ErrorContains(t, err, "WaitTime is 30s, want whole seconds from 1s to 20s (0 means the default, 20s); MaxMessages is 20", "every bad field, on one line")
	_, err = NewWatcher(nil, HandlerFunc(doneHandler), Config{QueueURL: fakeQueueURL})
	require.ErrorContains(t, err, "no SQS client")
	_, err = NewWatcher(newFakeSQS(), nil, Config{QueueURL: fakeQueueURL})
	require.ErrorContains(t, err, "no handler")
}

func doneHandler(context.Context, Event, Message) Outcome { return Outcome{Disposition: Done} }
