package main

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// logLine is one line of the autoscaler agent's log (hclog's text format):
//
//	2025-01-02T15:04:05.000Z [INFO]  agent.plugin: scaled out: from=1 to=3 reason="..."
//
// Plugin log lines reach the agent as JSON and are written again by the
// agent with their fields in random order, so fields are kept in a map.
type logLine struct {
	Time   time.Time // zero when the timestamp does not parse
	Level  string    // TRACE, DEBUG, INFO, WARN, ERROR
	Module string
	Msg    string
	Fields map[string]string
}

var (
	// headerRe matches the timestamp, level and module of an hclog line.
	headerRe = regexp.MustCompile(`^(\S+)\s+\[([A-Z]+)\]\s+([^\s:]+): (.*)$`)
	// multiKeyRe matches the line that opens a multi-line value.
	multiKeyRe = regexp.MustCompile(`^([A-Za-z_@][\w.@-]*)=$`)
	// entryStartRe matches the first line of an hclog entry.
	entryStartRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\S+\s+\[[A-Z]+\]\s`)
	// fieldRe matches one key=value pair; a value is a quoted string with
	// escapes, a bracketed list, or a bare word.
	fieldRe = regexp.MustCompile(`([A-Za-z_@][\w.@-]*)=("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\s"]*)`)
)

// parseLogLine splits an agent log entry into level, module, message and
// fields. On the first line the fields are the longest run of key=value
// pairs, separated by single spaces, that ends the line; whatever precedes
// them is the message (so "a = b" or "x=1 more words" inside a message stay
// in the message). hclog writes a value that holds newlines (a playbook's
// output in a hook's error) after the first line, as "  key=" followed by
// lines "  | text", and the fields after it on a line of their own; those
// are read too. It reports false for lines that are not hclog lines
// (panics, plugin stderr).
func parseLogLine(entry string) (logLine, bool) {
	lines := strings.Split(strings.TrimRight(entry, "\r\n "), "\n")
	m := headerRe.FindStringSubmatch(strings.TrimRight(lines[0], "\r "))
	if m == nil {
		return logLine{}, false
	}
	l := logLine{Level: m[2], Module: m[3], Fields: map[string]string{}}
	if t, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
		l.Time = t
	}
	rest := m[4]

	matches := fieldRe.FindAllStringSubmatchIndex(rest, -1)
	start := len(rest) // where the run of fields begins
	for i := len(matches) - 1; i >= 0; i-- {
		mt := matches[i]
		if mt[1] != start || (mt[0] > 0 && rest[mt[0]-1] != ' ') {
			break
		}
		start = max(mt[0]-1, 0)
	}
	for _, mt := range matches {
		if mt[0] < start {
			continue
		}
		l.Fields[rest[mt[2]:mt[3]]] = unquote(rest[mt[4]:mt[5]])
	}
	l.Msg = strings.TrimSuffix(strings.TrimSpace(rest[:start]), ":")

	// The lines after the first: multi-line values and the fields after them.
	key, val := "", []string(nil)
	flush := func() {
		if key != "" {
			l.Fields[key] = strings.Join(val, "\n")
		}
		key, val = "", nil
	}
	for _, ln := range lines[1:] {
		t := strings.TrimSpace(ln)
		if key != "" && strings.HasPrefix(t, "|") {
			val = append(val, strings.TrimPrefix(strings.TrimPrefix(t, "|"), " "))
			continue
		}
		flush()
		if km := multiKeyRe.FindStringSubmatch(t); km != nil {
			key = km[1]
			continue
		}
		for _, fm := range fieldRe.FindAllStringSubmatch(t, -1) {
			l.Fields[fm[1]] = unquote(fm[2])
		}
	}
	flush()
	return l, true
}

// unquote removes hclog's quoting from a value.
func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		if s, err := strconv.Unquote(v); err == nil {
			return s
		}
		return v[1 : len(v)-1]
	}
	return v
}
