package main

import (
	"regexp"
	"strconv"
	"strings"
)

// logLine is one line of the autoscaler agent's log (hclog's text format):
//
//	2025-01-02T15:04:05.000Z [INFO]  agent.plugin: scaled out: from=1 to=3 reason="..."
//
// Plugin log lines reach the agent as JSON and are written again by the
// agent with their fields in random order, so fields are kept in a map.
type logLine struct {
	Level  string // TRACE, DEBUG, INFO, WARN, ERROR
	Module string
	Msg    string
	Fields map[string]string
}

var (
	// headerRe matches the timestamp, level and module of an hclog line.
	headerRe = regexp.MustCompile(`^\S+\s+\[([A-Z]+)\]\s+([^\s:]+): (.*)$`)
	// fieldRe matches one key=value pair; a value is a quoted string with
	// escapes, a bracketed list, or a bare word.
	fieldRe = regexp.MustCompile(`([A-Za-z_@][\w.@-]*)=("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\s"]*)`)
)

// parseLogLine splits an agent log line into level, module, message and
// fields. The fields are the longest run of key=value pairs, separated by
// single spaces, that ends the line; whatever precedes them is the message
// (so "a = b" or "x=1 more words" inside a message stay in the message). It
// reports false for lines that are not hclog lines (panics, plugin stderr).
func parseLogLine(line string) (logLine, bool) {
	m := headerRe.FindStringSubmatch(strings.TrimRight(line, "\r\n "))
	if m == nil {
		return logLine{}, false
	}
	l := logLine{Level: m[1], Module: m[2], Fields: map[string]string{}}
	rest := m[3]

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
