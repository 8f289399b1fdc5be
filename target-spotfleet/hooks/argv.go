package hooks

import (
	"errors"
	"fmt"
	"strings"
)

// shellOperators are characters that mean something to a shell but that
// splitCommand refuses unquoted: no shell runs the command, so they would be
// passed on as plain words and do nothing of what they seem to.
const shellOperators = "|&;<>()`$*?"

// splitCommand splits a command line into words the way a POSIX shell
// splits a simple command, without expanding anything: words are separated
// by blanks; 'single quotes' keep everything literally; "double quotes"
// keep everything but \" \\ \$ and \` ; outside quotes a backslash keeps the
// next character literally; a {{template expression}} stays whole, even
// with spaces inside its braces. Unquoted shell operators, redirections,
// globs and variables are refused, since no shell runs.
func splitCommand(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '{' && i+1 < len(rs) && rs[i+1] == '{':
			// A template expression is one piece of a word, spaces and all.
			end := strings.Index(string(rs[i:]), "}}")
			if end < 0 {
				return nil, fmt.Errorf("has a {{ at character %d that is never closed with }}", i+1)
			}
			expr := []rune(string(rs[i:])[:end+2])
			cur.WriteString(string(expr))
			i += len(expr) - 1
			inWord = true
		case c == '\\':
			if i+1 >= len(rs) {
				return nil, errors.New("ends with a lone backslash")
			}
			i++
			cur.WriteRune(rs[i])
			inWord = true
		case c == '\'':
			j := i + 1
			for j < len(rs) && rs[j] != '\'' {
				j++
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("has a single quote at character %d that is never closed", i+1)
			}
			cur.WriteString(string(rs[i+1 : j]))
			i = j
			inWord = true
		case c == '"':
			j := i + 1
			for ; j < len(rs) && rs[j] != '"'; j++ {
				if rs[j] == '\\' && j+1 < len(rs) && strings.ContainsRune("\"\\$`", rs[j+1]) {
					j++
				}
				cur.WriteRune(rs[j])
			}
			if j >= len(rs) {
				return nil, fmt.Errorf("has a double quote at character %d that is never closed", i+1)
			}
			i = j
			inWord = true
		case strings.ContainsRune(shellOperators, c):
			return nil, fmt.Errorf("has an unquoted %q at character %d: no shell runs the command, so it would be passed on as a plain word; quote it, or run a shell yourself (\"/bin/sh -c '...'\")", c, i+1)
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
