package hooks

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// maxShown is how many characters of a value an error repeats.
const maxShown = 120

// redacted replaces every secret in logged output and errors.
const redacted = "[redacted]"

// shown quotes s for an error message, cut to maxShown characters.
func shown(s string) string {
	r := []rune(s)
	if len(r) <= maxShown {
		return strconv.Quote(s)
	}
	return strconv.Quote(string(r[:maxShown])) + fmt.Sprintf("... (%d bytes)", len(s))
}

// redactor hides secret values in text.
type redactor []string

// newRedactor returns a redactor for the non-empty secrets, longest first so
// that a secret containing another is hidden whole.
func newRedactor(secrets ...[]string) redactor {
	var r redactor
	seen := map[string]bool{}
	for _, list := range secrets {
		for _, s := range list {
			if s != "" && !seen[s] {
				seen[s] = true
				r = append(r, s)
			}
		}
	}
	sort.Slice(r, func(i, j int) bool { return len(r[i]) > len(r[j]) })
	return r
}

// secretEnvWords mark an environment variable of the plugin whose value is
// a secret (AWS_SECRET_ACCESS_KEY, NOMAD_TOKEN, VAULT_TOKEN, ...), compared
// case-insensitively with its name.
var secretEnvWords = []string{"SECRET", "TOKEN", "PASSWORD", "KEY", "CREDENTIAL"}

// minEnvSecretLen is the shortest value of such a variable that is
// redacted: shorter ones ("1", "true") would hide ordinary words.
const minEnvSecretLen = 6

// envSecrets returns the values of the plugin process's environment
// variables whose names contain one of secretEnvWords, read now.
func envSecrets() []string {
	var out []string
	for _, kv := range os.Environ() {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || len(value) < minEnvSecretLen {
			continue
		}
		upper := strings.ToUpper(name)
		for _, w := range secretEnvWords {
			if strings.Contains(upper, w) {
				out = append(out, value)
				break
			}
		}
	}
	return out
}

// apply returns s with every secret replaced by "[redacted]".
func (r redactor) apply(s string) string {
	for _, secret := range r {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	return s
}

// multiError is several errors reported as one line, joined with "; ".
type multiError []error

func (m multiError) Error() string {
	msgs := make([]string, len(m))
	for i, err := range m {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.Is and errors.As see every error.
func (m multiError) Unwrap() []error { return m }

// lastLines returns at most n of the last non-empty-tail lines of s.
func lastLines(s string, n int) []string {
	s = strings.TrimRight(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
