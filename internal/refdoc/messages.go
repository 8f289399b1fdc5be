package refdoc

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Pattern is a message as the code writes it: literal text, with format
// verbs (%s, %q, %w, ...) and concatenated non-literal operands as
// wildcards.
type Pattern struct {
	// Text is the pattern with each wildcard written as %_.
	Text string
	// Pos is where the code writes it (file:line).
	Pos string
	// Log is set for the message of a log call (Warn or Error).
	Log  bool
	toks []ptok
}

type ptok struct {
	r    rune
	wild bool
}

// verb is a fmt verb with its flags, width and precision.
var verb = regexp.MustCompile(`%[-+# 0-9.*\[\]]*[a-zA-Z%]`)

// newPattern builds a pattern from its literal parts; a wildcard sits
// between each two parts (and nowhere else), and format verbs inside the
// parts are wildcards too.
func newPattern(parts []string, wildEnd bool) Pattern {
	var p Pattern
	var text strings.Builder
	add := func(s string) {
		for _, r := range s {
			p.toks = append(p.toks, ptok{r: r})
		}
		text.WriteString(s)
	}
	wild := func() {
		p.toks = append(p.toks, ptok{wild: true})
		text.WriteString("%_")
	}
	for i, part := range parts {
		if i > 0 {
			wild()
		}
		rest := part
		for {
			loc := verb.FindStringIndex(rest)
			if loc == nil {
				add(rest)
				break
			}
			add(rest[:loc[0]])
			if rest[loc[0]:loc[1]] == "%%" {
				add("%")
			} else {
				wild()
			}
			rest = rest[loc[1]:]
		}
	}
	if wildEnd {
		wild()
	}
	p.Text = text.String()
	return p
}

// Match reports whether doc, a message as the documentation quotes it, is
// what the pattern prints, or the beginning of it, and the pattern's own
// text (not its wildcards) accounts for at least 9 characters and half of
// doc's text outside placeholders: a pattern such as "%s: %w" does not
// vouch for any message with a colon. In doc, <placeholder> stands for a
// value and matches a wildcard (or the same text in the code, which writes
// such as hook_<name>_<setting> literally); a trailing "..." or "…" is
// dropped.
func (p Pattern) Match(doc string) bool { return p.MatchQuote(NewQuote(doc)) }

// Quote is a message as the documentation quotes it, parsed once for many
// Match calls.
type Quote struct {
	toks []dtok
	lit  int
}

// NewQuote parses a quoted message (see Match).
func NewQuote(doc string) Quote {
	doc = strings.TrimSpace(doc)
	doc = strings.TrimSuffix(doc, "…")
	doc = strings.TrimSuffix(doc, "...")
	return Quote{toks: docToks(doc), lit: LiteralLen(doc)}
}

// MatchQuote is Match for a parsed quote.
func (p Pattern) MatchQuote(q Quote) bool {
	d := q.toks
	if len(d) == 0 || len(p.toks) == 0 {
		return false
	}
	// Most patterns start with text that differs from doc's: no search.
	if c := p.toks[0]; !c.wild && (d[0].ph == "" && d[0].r != c.r || d[0].ph != "" && c.r != '<') {
		return false
	}
	m := matcher{d: d, c: p.toks, memo: make([]int32, (len(d)+1)*(len(p.toks)+1))}
	n := m.match(0, 0)
	return n >= minQuoted && 2*n >= q.lit
}

// minQuoted is the least number of characters a documented message must
// share with the code's text.
const minQuoted = 9

// LiteralLen is the number of literal characters of the pattern.
func (p Pattern) LiteralLen() int {
	n := 0
	for _, t := range p.toks {
		if !t.wild {
			n++
		}
	}
	return n
}

type dtok struct {
	r  rune
	ph string // a placeholder such as <key>, with its brackets
}

var placeholder = regexp.MustCompile(`<[^<>\s]+>`)

func docToks(doc string) []dtok {
	var out []dtok
	for {
		loc := placeholder.FindStringIndex(doc)
		if loc == nil {
			break
		}
		for _, r := range doc[:loc[0]] {
			out = append(out, dtok{r: r})
		}
		out = append(out, dtok{ph: doc[loc[0]:loc[1]]})
		doc = doc[loc[1]:]
	}
	for _, r := range doc {
		out = append(out, dtok{r: r})
	}
	return out
}

// matcher finds how many of d's characters the literal text of c matches,
// at best; memo holds the answers for (i, j) plus 2, 0 meaning unknown.
type matcher struct {
	d    []dtok
	c    []ptok
	memo []int32
}

// match returns how many of d[i:]'s characters the literal text of c[j:]
// matched, at best, or -1 when d[i:] is not what c[j:] prints (nor its
// beginning).
func (m *matcher) match(i, j int) int {
	k := i*(len(m.c)+1) + j
	if v := m.memo[k]; v != 0 {
		return int(v) - 2
	}
	n := m.step(i, j)
	m.memo[k] = int32(n + 2)
	return n
}

func (m *matcher) step(i, j int) int {
	d, c := m.d[i:], m.c[j:]
	if len(d) == 0 {
		return 0 // doc quotes the beginning
	}
	if len(c) == 0 {
		return -1
	}
	if c[0].wild {
		// The wildcard prints nothing more, or doc's next token too.
		return max(m.match(i, j+1), m.match(i+1, j))
	}
	if d[0].ph != "" {
		ph := []rune(d[0].ph)
		if len(c) < len(ph) {
			return -1
		}
		for x, r := range ph {
			if c[x].wild || c[x].r != r {
				return -1
			}
		}
		if n := m.match(i+1, j+len(ph)); n >= 0 {
			return n + len(ph)
		}
		return -1
	}
	if c[0].r != d[0].r {
		return -1
	}
	if n := m.match(i+1, j+1); n >= 0 {
		return n + 1
	}
	return -1
}

// LiteralLen is the number of characters of doc outside placeholders.
func LiteralLen(doc string) int {
	return len([]rune(placeholder.ReplaceAllString(doc, "")))
}

// Patterns returns every message-like string of the non-test Go files under
// dirs (relative to the module root): string literals with a space, and
// concatenations of them with other operands. The messages of log calls
// (.Warn and .Error with a literal first argument) are marked Log.
func Patterns(dirs ...string) ([]Pattern, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	var out []Pattern
	fset := token.NewFileSet()
	for _, dir := range dirs {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return fmt.Errorf("parsing %s: %w", path, err)
			}
			rel, _ := filepath.Rel(root, path)
			out = append(out, filePatterns(fset, f, rel)...)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func filePatterns(fset *token.FileSet, f *ast.File, rel string) []Pattern {
	var out []Pattern
	logArgs := map[ast.Expr]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok {
			if sel, ok := call.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Warn" || sel.Sel.Name == "Error") && len(call.Args) > 0 {
				logArgs[call.Args[0]] = true
			}
		}
		return true
	})
	var visit func(n ast.Node) bool
	visit = func(n ast.Node) bool {
		e, ok := n.(ast.Expr)
		if !ok {
			return true
		}
		parts, wildEnd, isStr := stringParts(e)
		if !isStr {
			return true
		}
		text := strings.Join(parts, "")
		if strings.Contains(text, " ") || logArgs[e] {
			p := newPattern(parts, wildEnd)
			p.Pos = fmt.Sprintf("%s:%d", rel, fset.Position(e.Pos()).Line)
			p.Log = logArgs[e]
			out = append(out, p)
		}
		return false // the parts of a concatenation are not messages of their own
	}
	ast.Inspect(f, visit)
	return out
}

// stringParts returns the literal parts of a string literal or of a
// concatenation with at least one literal; a non-literal operand splits the
// parts (and, at the end, sets wildEnd).
func stringParts(e ast.Expr) (parts []string, wildEnd, ok bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return nil, false, false
		}
		s, err := strconv.Unquote(x.Value)
		if err != nil {
			return nil, false, false
		}
		return []string{s}, false, true
	case *ast.ParenExpr:
		return stringParts(x.X)
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return nil, false, false
		}
		lp, lw, lok := stringParts(x.X)
		rp, rw, rok := stringParts(x.Y)
		switch {
		case lok && rok:
			if lw {
				return append(lp, rp...), rw, true
			}
			merged := append(lp[:len(lp)-1:len(lp)-1], lp[len(lp)-1]+rp[0])
			return append(merged, rp[1:]...), rw, true
		case lok:
			return lp, true, true
		case rok:
			return append([]string{""}, rp...), rw, true
		}
	}
	return nil, false, false
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
		dir = parent
	}
}
