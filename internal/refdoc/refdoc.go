// Package refdoc checks the documentation pages under docs/ against the
// code: the reference pages list every configuration key the parsers accept
// (and no other), and the troubleshooting page quotes only messages the code
// emits. The plugins' reference tests use it.
package refdoc

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Row is one row of a Markdown table: its key (the single code span of the
// first cell) and every cell's text.
type Row struct {
	Key   string
	Cells []string
}

// ReadPage reads a documentation page by its path relative to the module
// root (such as docs/reference/apm-node.md), from any package directory of
// the module.
func ReadPage(rel string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", rel, err)
	}
	return string(b), nil
}

// Section returns the text under the heading whose title is heading (any
// level), up to the next heading of any level, or an error when the page
// has no such heading.
func Section(page, heading string) (string, error) {
	lines := strings.Split(page, "\n")
	start := -1
	fence := false
	for i, line := range lines {
		if strings.HasPrefix(line, "```") {
			fence = !fence
		}
		if fence {
			continue
		}
		l, title := headingOf(line)
		if l == 0 {
			continue
		}
		if start >= 0 {
			return strings.Join(lines[start:i], "\n"), nil
		}
		if start < 0 && title == heading {
			start = i + 1
		}
	}
	if start < 0 {
		return "", fmt.Errorf("no heading %q", heading)
	}
	return strings.Join(lines[start:], "\n"), nil
}

// headingOf returns the level and title of a Markdown ATX heading, or 0.
func headingOf(line string) (int, string) {
	n := 0
	for n < len(line) && line[n] == '#' {
		n++
	}
	if n == 0 || n > 6 || n == len(line) || line[n] != ' ' {
		return 0, ""
	}
	return n, strings.TrimSpace(line[n:])
}

// codeSpan is a first cell that is exactly one code span.
var codeSpan = regexp.MustCompile("^`([^`]+)`$")

// Rows returns the rows of the tables in text whose first cell is exactly
// one code span (header and separator rows are skipped). A first cell with
// anything else is an error: a key's row names one key, so that the tests
// can tell a documented key from a mention in prose.
func Rows(text string) ([]Row, error) {
	var rows []Row
	var errs []string
	inTable := false
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		if !inTable {
			// The header row.
			inTable = true
			continue
		}
		if len(cells) > 0 && strings.Trim(cells[0], "-: ") == "" {
			continue // the separator row
		}
		m := codeSpan.FindStringSubmatch(cells[0])
		if m == nil {
			errs = append(errs, fmt.Sprintf("table row %q: its first cell must be one `key`", line))
			continue
		}
		rows = append(rows, Row{Key: m[1], Cells: cells})
	}
	if len(errs) > 0 {
		return rows, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return rows, nil
}

// splitRow splits a table row into trimmed cells; a '|' inside a code span
// or escaped as \| does not split.
func splitRow(line string) []string {
	line = strings.TrimPrefix(strings.TrimSuffix(line, "|"), "|")
	var cells []string
	var cur strings.Builder
	inCode := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
			continue
		case c == '`':
			inCode = !inCode
		case c == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

// SectionRows is Section then Rows.
func SectionRows(page, heading string) ([]Row, error) {
	text, err := Section(page, heading)
	if err != nil {
		return nil, err
	}
	return Rows(text)
}

// Diff compares the keys documented (rows) with the keys the code accepts:
// missing are accepted but not documented, stale documented but not
// accepted, dup documented more than once; each sorted.
func Diff(rows []Row, code []string) (missing, stale, dup []string) {
	documented := map[string]int{}
	for _, r := range rows {
		documented[r.Key]++
	}
	accepted := map[string]bool{}
	for _, k := range code {
		accepted[k] = true
		if documented[k] == 0 {
			missing = append(missing, k)
		}
	}
	for k, n := range documented {
		if !accepted[k] {
			stale = append(stale, k)
		}
		if n > 1 {
			dup = append(dup, k)
		}
	}
	slices.Sort(missing)
	missing = slices.Compact(missing)
	slices.Sort(stale)
	slices.Sort(dup)
	return missing, stale, dup
}

// Problems describes what Diff found for one section of a page, one line
// per key, or nil when the section matches the code.
func Problems(page, heading string, code []string) []string {
	rows, err := SectionRows(page, heading)
	if err != nil {
		return []string{fmt.Sprintf("section %q: %v", heading, err)}
	}
	missing, stale, dup := Diff(rows, code)
	var out []string
	for _, k := range missing {
		out = append(out, fmt.Sprintf("section %q: key %q is accepted by the code but has no row", heading, k))
	}
	for _, k := range stale {
		out = append(out, fmt.Sprintf("section %q: key %q has a row but the code does not accept it (stale)", heading, k))
	}
	for _, k := range dup {
		out = append(out, fmt.Sprintf("section %q: key %q has more than one row", heading, k))
	}
	return out
}

// Cell returns the cell of column col (0 is the key) of key's row, and
// whether the row exists.
func Cell(rows []Row, key string, col int) (string, bool) {
	for _, r := range rows {
		if r.Key == key && col < len(r.Cells) {
			return r.Cells[col], true
		}
	}
	return "", false
}

// firstCode is the first code span of a cell.
var firstCode = regexp.MustCompile("`([^`]*)`")

// Default returns the first code span of key's default column (column 1),
// the value a reference page gives as the key's default; the error says
// whether the row or the code span is missing.
func Default(rows []Row, key string) (string, error) {
	cell, ok := Cell(rows, key, 1)
	if !ok {
		return "", fmt.Errorf("no row for %s", key)
	}
	m := firstCode.FindStringSubmatch(cell)
	if m == nil {
		return "", fmt.Errorf("the default of %s (%q) has no `value`", key, cell)
	}
	return m[1], nil
}
