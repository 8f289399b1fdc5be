package hooks

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Template expressions. A value of a hook setting may contain {{name}}
// (spaces inside the braces allowed), replaced at run time with a fact about
// the instance. There is no escape for a literal "{{".
const (
	exprInstanceID     = "instance_id"
	exprInstanceType   = "instance_type"
	exprZone           = "availability_zone"
	exprPrivateIP      = "private_ip"
	exprPrivateDNS     = "private_dns_name"
	exprFleetID        = "fleet_id"
	exprNodeID         = "node_id"
	exprNodeName       = "node_name"
	exprNodeMetaPrefix = "node.meta."
	exprHookPrefix     = "hook."
	exprHookJobID      = ".job_id"
)

// exprAccepted is what the errors about expressions show as accepted.
const exprAccepted = "want one of instance_id, instance_type, availability_zone, private_ip, private_dns_name, " +
	"fleet_id, node_id, node_name, node.meta.<key> or hook.<name>.job_id"

var metaKeyPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

// template is a parsed template value: literal text and expressions.
type template []templatePart

// templatePart is literal text (expr "") or one expression.
type templatePart struct {
	lit  string
	expr string
}

// parseTemplate splits s into literal text and {{expressions}} and checks
// every expression's form (not what a hook reference names: see hookRefs).
func parseTemplate(s string) (template, error) {
	var t template
	rest := s
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if rest != "" {
				t = append(t, templatePart{lit: rest})
			}
			return t, nil
		}
		if i > 0 {
			t = append(t, templatePart{lit: rest[:i]})
		}
		j := strings.Index(rest[i+2:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("%s opens {{ without closing it with }}", shown(s))
		}
		expr := strings.TrimSpace(rest[i+2 : i+2+j])
		if err := checkExpr(expr); err != nil {
			return nil, err
		}
		t = append(t, templatePart{expr: expr})
		rest = rest[i+2+j+2:]
	}
}

// checkExpr checks that expr is a known expression.
func checkExpr(expr string) error {
	switch expr {
	case exprInstanceID, exprInstanceType, exprZone, exprPrivateIP, exprPrivateDNS, exprFleetID, exprNodeID, exprNodeName:
		return nil
	}
	if key, ok := strings.CutPrefix(expr, exprNodeMetaPrefix); ok {
		if !metaKeyPattern.MatchString(key) {
			return fmt.Errorf("{{%s}} names node meta key %s, want letters, digits, '_', '.' or '-'", expr, shown(key))
		}
		return nil
	}
	if name, ok := hookRef(expr); ok {
		if !namePattern.MatchString(name) {
			return fmt.Errorf("{{%s}} names hook %s, which is not a hook name (%s)", expr, shown(name), nameAccepted)
		}
		return nil
	}
	return fmt.Errorf("{{%s}} is not a known expression: %s", expr, exprAccepted)
}

// hookRef returns the hook name of a {{hook.<name>.job_id}} expression.
func hookRef(expr string) (string, bool) {
	rest, ok := strings.CutPrefix(expr, exprHookPrefix)
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, exprHookJobID)
}

// hookRefs returns the hooks the template's {{hook.<name>.job_id}} name.
func (t template) hookRefs() []string {
	var names []string
	for _, p := range t {
		if name, ok := hookRef(p.expr); ok {
			names = append(names, name)
		}
	}
	return names
}

// facts are what expressions render to: an instance and the record of its
// hooks so far.
type facts struct {
	inst Instance
	rec  Record
}

// value returns what expr renders to and, when that is empty, why.
func (f facts) value(expr string) (string, string) {
	switch expr {
	case exprInstanceID:
		return f.inst.ID, "the instance id is unknown"
	case exprInstanceType:
		return f.inst.Type, "the instance type is unknown"
	case exprZone:
		return f.inst.Zone, "the availability zone is unknown"
	case exprPrivateIP:
		return f.inst.PrivateIP, "the instance has no private IP address"
	case exprPrivateDNS:
		return f.inst.PrivateDNS, "the instance has no private DNS name"
	case exprFleetID:
		return f.inst.FleetID, "the fleet id is unknown"
	case exprNodeID:
		return f.inst.NodeID, "the instance has no Nomad node"
	case exprNodeName:
		return f.inst.NodeName, "the instance has no Nomad node"
	}
	if key, ok := strings.CutPrefix(expr, exprNodeMetaPrefix); ok {
		return f.inst.NodeMeta[key], "the node has no meta key " + key
	}
	if name, ok := hookRef(expr); ok {
		st, found := f.rec.Steps[name]
		switch {
		case !found:
			return "", "hook " + name + " has not run"
		case st.State != StateOK:
			return "", "hook " + name + " is " + st.State + ", not ok"
		case st.JobID == 0:
			return "", "hook " + name + " recorded no AWX job"
		}
		return strconv.Itoa(st.JobID), ""
	}
	return "", "it is not a known expression"
}

// render returns the template with every expression replaced. An
// expression that renders empty is an error that names it.
func (t template) render(f facts) (string, error) {
	var b strings.Builder
	for _, p := range t {
		if p.expr == "" {
			b.WriteString(p.lit)
			continue
		}
		v, why := f.value(p.expr)
		if v == "" {
			return "", fmt.Errorf("{{%s}} is empty: %s", p.expr, why)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// renderValue parses and renders one template value of a setting; errors
// name the setting.
func renderValue(setting, value string, f facts) (string, error) {
	t, err := parseTemplate(value)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	s, err := t.render(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	return s, nil
}

// renderMap renders every value of m; errors name the setting and key.
func renderMap(setting string, m map[string]string, f facts) (map[string]string, error) {
	out := make(map[string]string, len(m))
	for _, k := range sortedKeys(m) {
		v, err := renderValue(setting+" "+k, m[k], f)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// limitOperators are the characters of Ansible host patterns that a limit
// may not contain, besides whitespace: separators of several patterns (','
// and ':'), exclusion, intersection, wildcards, ranges and regular
// expressions. Each would make the limit more than one host.
const limitOperators = ",:!&*?[]~"

// limitOperatorsShown is what the errors about limits show as refused.
const limitOperatorsShown = ", : ! & * ? [ ] ~ or whitespace"

// limitInstanceExprs is what the errors about limits show as the
// expressions that name the instance.
const limitInstanceExprs = "{{instance_id}}, {{private_ip}}, {{private_dns_name}}, {{node_id}}, {{node_name}} or {{node.meta.<key>}}"

// limitOperator returns the first character of s that a single host may
// not contain.
func limitOperator(s string) (rune, bool) {
	for _, c := range s {
		if unicode.IsSpace(c) || strings.ContainsRune(limitOperators, c) {
			return c, true
		}
	}
	return 0, false
}

// describeRune names a character for an error message.
func describeRune(c rune) string {
	switch {
	case c == ' ':
		return "a space"
	case unicode.IsSpace(c):
		return "whitespace " + strconv.QuoteRune(c)
	}
	return strconv.QuoteRune(c)
}

// perInstance reports whether expr names one instance (so that a limit
// holding it is about that instance only).
func perInstance(expr string) bool {
	switch expr {
	case exprInstanceID, exprPrivateIP, exprPrivateDNS, exprNodeID, exprNodeName:
		return true
	}
	return strings.HasPrefix(expr, exprNodeMetaPrefix)
}

// checkLimit checks the template of a limit as configured: at least one
// expression about the instance, and literal text without host-pattern
// operators. It returns every problem.
func (t template) checkLimit() []string {
	var problems []string
	named := false
	for _, p := range t {
		if p.expr != "" {
			named = named || perInstance(p.expr)
			continue
		}
		if c, bad := limitOperator(p.lit); bad {
			problems = append(problems, fmt.Sprintf("whose text has %s, an Ansible host-pattern operator or separator: want a single AWX host, without %s, such as %s (a pattern would run the job against more hosts than the instance)",
				describeRune(c), limitOperatorsShown, defaultLimit))
		}
	}
	if !named {
		problems = append(problems, fmt.Sprintf("which names no instance: want a single AWX host written with at least one of %s, such as %s (a limit without one, such as all or a group, runs the job of every instance against the same hosts)",
			limitInstanceExprs, defaultLimit))
	}
	return problems
}

// renderLimit renders the limit of an awx or awx_callback hook and makes
// sure it is a single host: not empty, and no value of its expressions (nor
// its text) holds a host-pattern operator. Errors name the setting, the
// value that was wrong and what is accepted.
func renderLimit(setting, value string, f facts) (string, error) {
	t, err := parseTemplate(value)
	if err != nil {
		return "", fmt.Errorf("%s: %w", setting, err)
	}
	var b strings.Builder
	for _, p := range t {
		if p.expr == "" {
			if c, bad := limitOperator(p.lit); bad {
				return "", fmt.Errorf("%s is %s, whose text has %s: a limit must be a single AWX host, without %s", setting, shown(value), describeRune(c), limitOperatorsShown)
			}
			b.WriteString(p.lit)
			continue
		}
		v, why := f.value(p.expr)
		if v == "" {
			return "", fmt.Errorf("%s: {{%s}} is empty: %s", setting, p.expr, why)
		}
		if c, bad := limitOperator(v); bad {
			return "", fmt.Errorf("%s is %s, whose {{%s}} is %s, which has %s: the limit must render to a single AWX host, without %s (else the job would run against more hosts than the instance)",
				setting, shown(value), p.expr, shown(v), describeRune(c), limitOperatorsShown)
		}
		b.WriteString(v)
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("%s is %s, which renders empty: the limit must render to a single AWX host (an empty limit would run the job against the whole inventory)", setting, shown(value))
	}
	return b.String(), nil
}
