package refdoc

import (
	"testing"
)

const troubleshootingPage = "docs/troubleshooting.md"

// messageDirs are where the plugins' messages are written (the simulator,
// the in-memory EC2 and this package are not the plugins).
var messageDirs = []string{
	"target-spotfleet", "apm-node", "strategy-cpu-target/plugin", "strategy-cpu-target/main.go",
	"internal/awsconf", "internal/awsretry", "internal/fleet", "internal/nomadnode",
}

// TestTroubleshootingQuotesTheCode fails for every message the
// troubleshooting page quotes that the code does not write (a stale or
// misquoted message), and for every warning or error the plugins log that
// the page does not list.
func TestTroubleshootingQuotesTheCode(t *testing.T) {
	page, err := ReadPage(troubleshootingPage)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Rows(page)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) < 50 {
		t.Fatalf("%s lists %d messages; it should list every error and warning", troubleshootingPage, len(rows))
	}
	patterns, err := Patterns(messageDirs...)
	if err != nil {
		t.Fatal(err)
	}
	quotes := make([]Quote, len(rows))
	for i, r := range rows {
		quotes[i] = NewQuote(r.Key)
	}
	for i, r := range rows {
		found := false
		for _, p := range patterns {
			if p.MatchQuote(quotes[i]) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("%s: the code writes no message %q (stale, or misquoted: placeholders are <name>)", troubleshootingPage, r.Key)
		}
	}
	for _, p := range patterns {
		if !p.Log {
			continue
		}
		need := min(p.LiteralLen(), 30)
		listed := false
		for i, r := range rows {
			if LiteralLen(r.Key) >= need && p.MatchQuote(quotes[i]) {
				listed = true
				break
			}
		}
		if !listed {
			t.Errorf("%s: the log message %q (%s) is not listed", troubleshootingPage, p.Text, p.Pos)
		}
	}
}
