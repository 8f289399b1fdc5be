package refdoc

import (
	"go/parser"
	"go/token"
	"slices"
	"testing"
)

const page = "# Title\n\n## Keys\n\nProse naming `ghost` is not a row.\n\n" +
	"| key | default |\n|---|---|\n| `alpha` | `1` |\n| `beta` | a \\| b `x|y` |\n\n" +
	"### Sub\n\n| key | x |\n|---|---|\n| `gamma` | 3 |\n\n```\n## not a heading\n```\n"

func TestSectionAndRows(t *testing.T) {
	rows, err := SectionRows(page, "Keys")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range rows {
		keys = append(keys, r.Key)
	}
	if !slices.Equal(keys, []string{"alpha", "beta"}) {
		t.Fatalf("rows of Keys = %v, want alpha and beta (not the prose, not Sub's rows)", keys)
	}
	if c, _ := Cell(rows, "beta", 1); c != "a | b `x|y`" {
		t.Errorf("cell = %q", c)
	}
	if _, err := Section(page, "not a heading"); err == nil {
		t.Error("a heading inside a code fence was found")
	}
	if _, err := Rows("| k |\n|---|\n| two `a` `b` |\n"); err == nil {
		t.Error("a first cell that is not one `key` was accepted")
	}
}

func TestProblems(t *testing.T) {
	got := Problems(page, "Keys", []string{"alpha", "delta"})
	want := []string{
		`section "Keys": key "delta" is accepted by the code but has no row`,
		`section "Keys": key "beta" has a row but the code does not accept it (stale)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("Problems = %q, want %q", got, want)
	}
	if p := Problems(page, "Sub", []string{"gamma"}); p != nil {
		t.Errorf("Problems of a matching section = %q", p)
	}
}

func patternsOf(t *testing.T, src string) []Pattern {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	return filePatterns(fset, f, "x.go")
}

func TestPatternMatch(t *testing.T) {
	ps := patternsOf(t, `package x
func f() {
	_ = fmt.Errorf("invalid %s %q: want a positive duration of at most %s", k, v, m)
	_ = fmt.Errorf("%s: %w", what, err)
	log.Warn("fleet status: "+note, "k", v)
	_ = fmt.Errorf("write hook_<name>_<setting>, such as %s", x)
}`)
	if len(ps) != 4 || !ps[2].Log || ps[0].Log {
		t.Fatalf("patterns = %+v", ps)
	}
	match := func(doc string) bool {
		for _, p := range ps {
			if p.Match(doc) {
				return true
			}
		}
		return false
	}
	for _, doc := range []string{
		`invalid <key> "<value>": want a positive duration of at most <max>`,
		`invalid node_drain_deadline "10h": want a positive duration`, // a prefix, a key written out
		`fleet status: <notes>`,
		`write hook_<name>_<setting>, such as <example>`, // placeholders the code writes literally
	} {
		if !match(doc) {
			t.Errorf("%q not matched", doc)
		}
	}
	for _, doc := range []string{
		`invalid <key> "<value>": want a negative duration`,
		`the fleet exploded: nothing works`, // "%s: %w" must not vouch for it
		`<key>: <value>`,
	} {
		if match(doc) {
			t.Errorf("%q matched", doc)
		}
	}
}
