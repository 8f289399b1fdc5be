package interruption

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/require"
)

// harness is a Watcher on a fakeSQS, with its log lines captured and its
// pauses between failed receives recorded instead of slept.
type harness struct {
	w      *Watcher
	sqs    *fakeSQS
	logs   *logBuffer
	mu     sync.Mutex
	pauses []time.Duration
}

// newHarness makes a watcher with a 1 s long poll and a 30 s visibility
// timeout; change adjusts the config before NewWatcher sees it.
func newHarness(t *testing.T, h Handler, change func(*Config)) *harness {
	t.Helper()
	hs := &harness{sqs: newFakeSQS(), logs: &logBuffer{}}
	cfg := Config{
		QueueURL:          fakeQueueURL,
		WaitTime:          time.Second,
		VisibilityTimeout: 30 * time.Second,
		HandleTimeout:     10 * time.Second,
		Logger:            hclog.New(&hclog.LoggerOptions{Output: hs.logs, Level: hclog.Debug, JSONFormat: true}),
	}
	if change != nil {
		change(&cfg)
	}
	w, err := NewWatcher(hs.sqs, h, cfg)
	require.NoError(t, err)
	w.sleep = func(ctx context.Context, d time.Duration) error {
		hs.mu.Lock()
		hs.pauses = append(hs.pauses, d)
		hs.mu.Unlock()
		return sleepCtx(ctx, time.Millisecond)
	}
	hs.w = w
	return hs
}

func (hs *harness) recordedPauses() []time.Duration {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return append([]time.Duration(nil), hs.pauses...)
}

// start runs the watcher until the returned stop is called (or the test
// ends). stop cancels Run's context and fails the test unless Run returns
// within 10 s.
func (hs *harness) start(t *testing.T) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		hs.w.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-returned:
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of its context's cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// receive waits for a value on ch, failing the test after 10 s.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// logBuffer collects the JSON log lines of an hclog logger.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// logLine is one decoded log line: "@level", "@message" and the fields.
type logLine map[string]any

func (l logLine) level() string   { s, _ := l["@level"].(string); return s }
func (l logLine) message() string { s, _ := l["@message"].(string); return s }
func (l logLine) field(k string) string {
	switch v := l[k].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		out, _ := json.Marshal(v)
		return string(out)
	}
}

// String is the whole line, for failure messages and substring checks.
func (l logLine) String() string {
	out, _ := json.Marshal(map[string]any(l))
	return string(out)
}

func (b *logBuffer) lines(t *testing.T) []logLine {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []logLine
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var l logLine
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l), "log line %q", sc.Text())
		lines = append(lines, l)
	}
	return lines
}

// where returns the lines whose field key is value.
func (b *logBuffer) where(t *testing.T, key, value string) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range b.lines(t) {
		if l.field(key) == value {
			out = append(out, l)
		}
	}
	return out
}

// atLevel returns the lines of one level whose text contains all of want.
func (b *logBuffer) atLevel(t *testing.T, level string, want ...string) []logLine {
	t.Helper()
	var out []logLine
	for _, l := range b.lines(t) {
		if l.level() != level {
			continue
		}
		all := true
		for _, w := range want {
			all = all && strings.Contains(l.String(), w)
		}
		if all {
			out = append(out, l)
		}
	}
	return out
}

// warning is a Spot interruption warning with its own event and instance id.
func warning(t *testing.T, eventID, instanceID string) string {
	t.Helper()
	return edit(t, edit(t, warningBody, "id", eventID), "detail.instance-id", instanceID)
}
