package hooks

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Hook types.
const (
	// TypeAWX launches an AWX job template against the instance and follows
	// the job.
	TypeAWX = "awx"
	// TypeAWXCallback waits for the AWX job that the instance starts itself
	// through the template's provisioning callback (host_config_key in its
	// user-data); it launches nothing.
	TypeAWXCallback = "awx_callback"
	// TypeNomad waits for the instance's node to be ready and sets dynamic
	// node metadata.
	TypeNomad = "nomad"
	// TypeExec runs a local command on the plugin's host (no shell).
	TypeExec = "exec"
)

// Failure policies of a launch hook.
const (
	// FailTerminate: the instance is drained if needed, terminated and
	// replaced (the default).
	FailTerminate = "terminate"
	// FailKeep: the instance is kept, never admitted, for debugging.
	FailKeep = "keep"
)

// Policy keys.
const (
	policyKeyLaunch    = "launch_hooks"
	policyKeyTerminate = "terminate_hooks"
	policyKeyPrefix    = "hook_"
)

// Hook settings (hook_<name>_<setting>).
const (
	settingType        = "type"
	settingTimeout     = "timeout"
	settingOnFailure   = "on_failure"
	settingJobTemplate = "job_template"
	settingLimit       = "limit"
	settingExtraVars   = "extra_vars"
	settingMeta        = "meta"
	settingCommand     = "command"
	settingEnv         = "env"
)

// Bounds and defaults of the hook settings.
const (
	maxHooksPerList = 6
	maxTimeout      = 24 * time.Hour
	defaultLimit    = "{{private_ip}}"
)

// defaultTimeouts are the timeouts of each type when hook_<name>_timeout is
// not set.
var defaultTimeouts = map[string]time.Duration{
	TypeAWX:         30 * time.Minute,
	TypeAWXCallback: 30 * time.Minute,
	TypeNomad:       10 * time.Minute,
	TypeExec:        10 * time.Minute,
}

// commonSettings are accepted for every type; typeSettings lists the others.
var (
	commonSettings = []string{settingType, settingTimeout, settingOnFailure}
	typeSettings   = map[string][]string{
		TypeAWX:         {settingJobTemplate, settingLimit, settingExtraVars},
		TypeAWXCallback: {settingJobTemplate, settingLimit},
		TypeNomad:       {settingMeta},
		TypeExec:        {settingCommand, settingEnv},
	}
	hookTypes = []string{TypeAWX, TypeAWXCallback, TypeNomad, TypeExec}
)

// fixedExtraVars are the extra_vars every awx launch carries; a hook's
// extra_vars may not redefine them.
var fixedExtraVars = []string{
	"instance_id", "instance_type", "availability_zone", "spot_fleet_request_id",
	"nomad_node_id", "nomad_node_name", "private_ip", "private_dns_name",
}

// secretSuffixes mark a policy key that would hold a secret.
var secretSuffixes = []string{"_token", "_password", "_secret", "_key"}

const secretRefused = "secrets are never read from a policy (a policy is stored in Nomad and readable by whoever reads jobs): " +
	"set awx_token_file or awx_token_env in the agent's target plugin config"

var (
	namePattern    = regexp.MustCompile(`^[a-z][a-z0-9]{0,31}$`)
	varNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

const nameAccepted = "want a lowercase letter followed by up to 31 lowercase letters or digits (no '_' or '-'), such as configure"

// Spec is the hooks of one scaling policy.
type Spec struct {
	// Launch runs in order on every new instance once its Nomad node
	// registered.
	Launch []*Hook
	// Terminate runs (each once) when an instance leaves: scale-in,
	// interruption, failed launch hook.
	Terminate []*Hook
}

// Hook is one configured hook. ParsePolicy fills it; its template fields
// ({{...}}) are rendered each time the hook runs.
type Hook struct {
	// Name is unique among the policy's hooks.
	Name string
	// Type is TypeAWX, TypeAWXCallback, TypeNomad or TypeExec.
	Type string
	// Timeout bounds one run of the hook; 0 means the type's default.
	Timeout time.Duration
	// OnFailure is FailTerminate or FailKeep for a launch hook, "" for a
	// terminate hook.
	OnFailure string

	// JobTemplate (awx, awx_callback) is the job template: a numeric id,
	// or a name resolved once through the AWX API.
	JobTemplate string
	// Limit (awx, awx_callback) is the template of the AWX limit: the host
	// the job runs against (awx) or the host whose callback job is awaited
	// (awx_callback). It must name one host, the instance: ParsePolicy
	// wants at least one of {{instance_id}}, {{private_ip}},
	// {{private_dns_name}}, {{node_id}}, {{node_name}} or
	// {{node.meta.<key>}} in it and no Ansible host-pattern operator or
	// separator (, : ! & * ? [ ] ~ or whitespace) in its text, and a run
	// fails the hook when a value of its expressions holds one.
	Limit string
	// ExtraVars (awx) are templates of the job's extra variables, added to
	// the fixed ones (see Instance).
	ExtraVars map[string]string
	// Meta (nomad) are templates of the dynamic node metadata set once the
	// node is ready.
	Meta map[string]string
	// Command (exec) is the argv; each word is a template.
	Command []string
	// Env (exec) are templates of environment variables added to the
	// command's environment.
	Env map[string]string
}

// String names the hook and its type, such as "configure(awx)".
func (h *Hook) String() string { return h.Name + "(" + h.Type + ")" }

// timeout returns the hook's timeout, or its type's default.
func (h *Hook) timeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	if d, ok := defaultTimeouts[h.Type]; ok {
		return d
	}
	return 10 * time.Minute
}

// limit returns the hook's limit template, or the default.
func (h *Hook) limit() string {
	if h.Limit != "" {
		return h.Limit
	}
	return defaultLimit
}

// IsPolicyKey reports whether a key of a policy's target block belongs to
// the hooks: launch_hooks, terminate_hooks and every key starting with
// "hook_".
func IsPolicyKey(key string) bool {
	return key == policyKeyLaunch || key == policyKeyTerminate || strings.HasPrefix(key, policyKeyPrefix)
}

// Empty reports whether the spec has no hook at all.
func (s *Spec) Empty() bool { return s == nil || len(s.Launch) == 0 && len(s.Terminate) == 0 }

// String describes the spec for logs, such as
// "launch: configure(awx), join(nomad); terminate: forget(awx)".
func (s *Spec) String() string {
	if s.Empty() {
		return "no hooks"
	}
	list := func(hooks []*Hook) string {
		if len(hooks) == 0 {
			return "none"
		}
		names := make([]string, len(hooks))
		for i, h := range hooks {
			names[i] = h.String()
		}
		return strings.Join(names, ", ")
	}
	return "launch: " + list(s.Launch) + "; terminate: " + list(s.Terminate)
}

// ParsePolicy reads the hooks from a policy's target block (keys for which
// IsPolicyKey is false are ignored). agent is the agent's AWX settings; nil
// means AWX is not configured. It reports every problem at once, joined
// with "; ", each naming the key, its value and what is accepted.
func ParsePolicy(cfg map[string]string, agent *Agent) (*Spec, error) {
	p := &policyParser{cfg: cfg, agent: agent, settings: map[string]map[string]string{}, templates: map[string][]keyedTemplate{}}
	return p.parse()
}

// policyParser holds the state of one ParsePolicy call.
type policyParser struct {
	cfg   map[string]string
	agent *Agent
	errs  []error

	listOf    map[string]string            // hook name -> the list key naming it
	settings  map[string]map[string]string // hook name -> setting -> value
	templates map[string][]keyedTemplate   // hook name -> its parsed templates
}

// keyedTemplate is a parsed template and the key it came from.
type keyedTemplate struct {
	key string
	t   template
}

func (p *policyParser) fail(format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf(format, args...))
}

func (p *policyParser) parse() (*Spec, error) {
	var keys []string
	for _, k := range sortedKeys(p.cfg) {
		if !IsPolicyKey(k) {
			continue
		}
		if isSecretKey(k) {
			// Never echo the value.
			p.fail("%s: %s", k, secretRefused)
			continue
		}
		keys = append(keys, k)
	}

	launch := p.parseList(policyKeyLaunch)
	terminate := p.parseList(policyKeyTerminate)
	p.listOf = map[string]string{}
	for _, n := range launch {
		p.listOf[n] = policyKeyLaunch
	}
	for _, n := range terminate {
		if _, dup := p.listOf[n]; dup {
			p.fail("%s and %s both list hook %s: a hook runs either at launch or at termination; give the second one another name", policyKeyLaunch, policyKeyTerminate, n)
			continue
		}
		p.listOf[n] = policyKeyTerminate
	}

	for _, k := range keys {
		if k == policyKeyLaunch || k == policyKeyTerminate {
			continue
		}
		rest := strings.TrimPrefix(k, policyKeyPrefix)
		name, setting, ok := strings.Cut(rest, "_")
		if !ok || name == "" || setting == "" {
			p.fail("%s is not a hook setting: want hook_<name>_<setting>, such as hook_configure_type", k)
			continue
		}
		if _, listed := p.listOf[name]; !listed {
			p.fail("%s names hook %s, which neither %s nor %s lists", k, name, policyKeyLaunch, policyKeyTerminate)
			continue
		}
		if p.settings[name] == nil {
			p.settings[name] = map[string]string{}
		}
		p.settings[name][setting] = p.cfg[k]
	}

	spec := &Spec{}
	for _, n := range launch {
		if p.listOf[n] == policyKeyLaunch {
			spec.Launch = append(spec.Launch, p.parseHook(n, true))
		}
	}
	for _, n := range terminate {
		if p.listOf[n] == policyKeyTerminate {
			spec.Terminate = append(spec.Terminate, p.parseHook(n, false))
		}
	}
	p.checkRefs(spec)
	p.checkRecordLen(policyKeyLaunch, spec.Launch)
	p.checkRecordLen(policyKeyTerminate, spec.Terminate)

	if len(p.errs) > 0 {
		return nil, fmt.Errorf("hooks of the policy: %w", multiError(p.errs))
	}
	return spec, nil
}

// isSecretKey reports whether a policy key looks like it holds a secret.
func isSecretKey(key string) bool {
	k := strings.ToLower(key)
	for _, suffix := range secretSuffixes {
		if strings.HasSuffix(k, suffix) {
			return true
		}
	}
	return false
}

// parseList reads launch_hooks or terminate_hooks: ordered, comma-separated
// hook names.
func (p *policyParser) parseList(key string) []string {
	raw := p.cfg[key]
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	var names []string
	seen := map[string]bool{}
	for i, item := range strings.Split(raw, ",") {
		name := strings.TrimSpace(item)
		switch {
		case name == "":
			p.fail("%s is %s, whose entry %d is empty: want hook names separated by commas, such as \"configure, join\"", key, shown(raw), i+1)
		case !namePattern.MatchString(name):
			p.fail("%s is %s, which lists %s: %s", key, shown(raw), shown(name), nameAccepted)
		case seen[name]:
			p.fail("%s is %s, which lists %s twice: want each hook once", key, shown(raw), name)
		default:
			seen[name] = true
			names = append(names, name)
		}
	}
	if len(names) > maxHooksPerList {
		p.fail("%s is %s, which lists %d hooks: want at most %d", key, shown(raw), len(names), maxHooksPerList)
	}
	// Even after an error the valid names count as listed, so that their
	// settings are checked and not reported as unlisted.
	return names
}

// parseHook reads the settings of one listed hook.
func (p *policyParser) parseHook(name string, launch bool) *Hook {
	h := &Hook{Name: name}
	s := p.settings[name]
	list := policyKeyTerminate
	if launch {
		list = policyKeyLaunch
	}
	key := func(setting string) string { return policyKeyPrefix + name + "_" + setting }

	rawType, hasType := s[settingType]
	h.Type = strings.TrimSpace(rawType)
	switch {
	case !hasType:
		p.fail("hook %s is listed in %s but %s is not set: want one of %s", name, list, key(settingType), strings.Join(hookTypes, ", "))
	case typeSettings[h.Type] == nil:
		p.fail("%s is %s, want one of %s", key(settingType), shown(rawType), strings.Join(hookTypes, ", "))
	}
	known := typeSettings[h.Type] != nil

	// Settings that do not belong to the type.
	for _, setting := range sortedKeys(s) {
		if contains(commonSettings, setting) || known && contains(typeSettings[h.Type], setting) {
			continue
		}
		if known {
			p.fail("%s is not a setting of a %s hook: want hook_%s_<setting> with <setting> one of %s", key(setting), h.Type, name,
				strings.Join(append(append([]string{}, commonSettings...), typeSettings[h.Type]...), ", "))
		} else if !anyTypeHas(setting) {
			p.fail("%s is not a hook setting: want hook_%s_<setting> with <setting> one of %s", key(setting), name, strings.Join(allSettings(), ", "))
		}
	}

	h.Timeout = defaultTimeouts[h.Type]
	if raw, ok := s[settingTimeout]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		switch {
		case err != nil:
			p.fail("%s is %s, which is not a duration: want a Go duration from 1s to 24h, such as 20m", key(settingTimeout), shown(raw))
		case d <= 0 || d > maxTimeout:
			p.fail("%s is %s, want a duration more than 0 and at most 24h, such as 20m", key(settingTimeout), shown(raw))
		default:
			h.Timeout = d
		}
	}

	if raw, ok := s[settingOnFailure]; ok {
		v := strings.TrimSpace(raw)
		switch {
		case !launch:
			p.fail("%s is set, but %s is a terminate hook: a terminate hook's failure is reported, it never stops the removal of the instance; remove the setting", key(settingOnFailure), name)
		case v == FailTerminate || v == FailKeep:
			h.OnFailure = v
		default:
			p.fail("%s is %s, want %s (drain, terminate and replace the instance; the default) or %s (keep the instance, never admitted, for debugging)",
				key(settingOnFailure), shown(raw), FailTerminate, FailKeep)
		}
	} else if launch {
		h.OnFailure = FailTerminate
	}

	switch h.Type {
	case TypeAWX, TypeAWXCallback:
		if !p.agent.AWXConfigured() {
			p.fail("hook %s is of type %s, but AWX is not configured in the agent: set %s and one of %s, %s (or %s) in the agent's target plugin config",
				name, h.Type, configKeyAWXURL, configKeyAWXTokenFile, configKeyAWXTokenEnv, configKeyAWXToken)
		}
		p.parseJobTemplate(h, key(settingJobTemplate), s)
		h.Limit = defaultLimit
		if raw, ok := s[settingLimit]; ok {
			h.Limit = strings.TrimSpace(raw)
			if h.Limit == "" {
				p.fail("%s is empty: want the AWX host the job is limited to, as a template such as %s (an empty limit would run the job against the whole inventory)", key(settingLimit), defaultLimit)
			}
		}
		if h.Limit != "" {
			p.limitTemplate(name, key(settingLimit), h.Limit)
		}
		if h.Type == TypeAWX {
			if raw, ok := s[settingExtraVars]; ok {
				h.ExtraVars = p.parsePairs(name, key(settingExtraVars), raw, varNamePattern,
					"a variable name (letters, digits and '_', not starting with a digit)", fixedExtraVars,
					"the fixed extra_vars every launch carries")
			}
		}
	case TypeNomad:
		if raw, ok := s[settingMeta]; ok {
			h.Meta = p.parsePairs(name, key(settingMeta), raw, metaKeyPattern,
				"a Nomad meta key (letters, digits, '_', '.' or '-')", nil, "")
		}
	case TypeExec:
		raw, ok := s[settingCommand]
		if !ok || strings.TrimSpace(raw) == "" {
			p.fail("hook %s is of type exec but %s is not set: want a command line such as \"/usr/local/bin/register --ip {{private_ip}}\" (no shell runs it)", name, key(settingCommand))
			break
		}
		argv, err := splitCommand(raw)
		switch {
		case err != nil:
			p.fail("%s is %s, which %v", key(settingCommand), shown(raw), err)
		case len(argv) == 0 || argv[0] == "":
			p.fail("%s is %s, which names no program: want a command line such as \"/usr/local/bin/register --ip {{private_ip}}\"", key(settingCommand), shown(raw))
		default:
			h.Command = argv
			for _, w := range argv {
				p.template(name, key(settingCommand), w)
			}
		}
		if raw, ok := s[settingEnv]; ok {
			h.Env = p.parsePairs(name, key(settingEnv), raw, envNamePattern,
				"an environment variable name (letters, digits and '_', not starting with a digit)", reservedEnv(),
				"the SPOTFLEET_* variables every command gets")
		}
	}
	return h
}

// parseJobTemplate reads hook_<name>_job_template: a numeric id or a name.
func (p *policyParser) parseJobTemplate(h *Hook, key string, s map[string]string) {
	raw, ok := s[settingJobTemplate]
	v := strings.TrimSpace(raw)
	switch {
	case !ok || v == "":
		p.fail("hook %s is of type %s but %s is not set: want the numeric id or the name of an AWX job template", h.Name, h.Type, key)
	case isDigits(v):
		if id, err := strconv.Atoi(v); err != nil || id <= 0 {
			p.fail("%s is %s, want the numeric id (1 or more) or the name of an AWX job template", key, shown(raw))
			return
		}
		h.JobTemplate = v
	default:
		h.JobTemplate = v
	}
}

// template parses a template value of a hook and keeps it for the check of
// its references.
func (p *policyParser) template(name, key, value string) {
	t, err := parseTemplate(value)
	if err != nil {
		p.fail("%s is %s: %v", key, shown(value), err)
		return
	}
	p.templates[name] = append(p.templates[name], keyedTemplate{key: key, t: t})
}

// limitTemplate parses the limit of an awx or awx_callback hook: a template
// that names one host, the instance (see template.checkLimit).
func (p *policyParser) limitTemplate(name, key, value string) {
	t, err := parseTemplate(value)
	if err != nil {
		p.fail("%s is %s: %v", key, shown(value), err)
		return
	}
	for _, problem := range t.checkLimit() {
		p.fail("%s is %s, %s", key, shown(value), problem)
	}
	p.templates[name] = append(p.templates[name], keyedTemplate{key: key, t: t})
}

// parsePairs reads comma-separated key=value pairs whose values are
// templates.
func (p *policyParser) parsePairs(name, key, raw string, keyPattern *regexp.Regexp, keyAccepted string, reserved []string, reservedWhat string) map[string]string {
	out := map[string]string{}
	if strings.TrimSpace(raw) == "" {
		p.fail("%s is empty: want key=value pairs separated by commas, or no setting at all", key)
		return nil
	}
	for _, item := range strings.Split(raw, ",") {
		k, v, ok := strings.Cut(item, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !ok || k == "" || v == "":
			p.fail("%s is %s, whose entry %s is not key=value with a non-empty key and value: want pairs separated by commas, such as \"role=web, rack={{node.meta.rack}}\"", key, shown(raw), shown(strings.TrimSpace(item)))
		case !keyPattern.MatchString(k):
			p.fail("%s is %s, whose key %s is not %s", key, shown(raw), shown(k), keyAccepted)
		case contains(reserved, k):
			p.fail("%s is %s, whose key %s would redefine one of %s (%s): choose another key", key, shown(raw), k, reservedWhat, strings.Join(reserved, ", "))
		case out[k] != "":
			p.fail("%s is %s, which sets %s twice: want each key once", key, shown(raw), k)
		default:
			out[k] = v
			p.template(name, key, v)
		}
	}
	return out
}

// checkRefs checks every {{hook.<name>.job_id}}: a launch hook may name an
// earlier launch hook of type awx or awx_callback; a terminate hook may name
// an earlier such terminate hook only (the record given to Terminate holds
// the terminate steps: it is kept apart from the launch record).
func (p *policyParser) checkRefs(spec *Spec) {
	byName := map[string]*Hook{}
	for _, h := range append(append([]*Hook{}, spec.Launch...), spec.Terminate...) {
		byName[h.Name] = h
	}
	check := func(list []*Hook, launch bool) {
		want := "want an earlier launch hook of type awx or awx_callback"
		listKey := policyKeyLaunch
		if !launch {
			want = "want an earlier terminate hook of type awx or awx_callback"
			listKey = policyKeyTerminate
		}
		earlier := map[string]bool{}
		for _, h := range list {
			for _, kt := range p.templates[h.Name] {
				for _, ref := range kt.t.hookRefs() {
					target, ok := byName[ref]
					switch {
					case !ok:
						p.fail("%s uses {{hook.%s.job_id}}, but no hook is named %s: %s", kt.key, ref, ref, want)
					case !launch && p.listOf[ref] == policyKeyLaunch:
						p.fail("%s uses {{hook.%s.job_id}}, but %s is a launch hook: terminate hooks only see their own list's record (%s), which is kept apart from the launch hooks' one; %s, or pass the value another way", kt.key, ref, ref, policyKeyTerminate, want)
					case target.Type != TypeAWX && target.Type != TypeAWXCallback:
						p.fail("%s uses {{hook.%s.job_id}}, but %s is a %s hook, which has no AWX job: %s", kt.key, ref, ref, target.Type, want)
					case !earlier[ref]:
						p.fail("%s uses {{hook.%s.job_id}}, but %s does not run before %s (%s runs in order): %s", kt.key, ref, ref, h.Name, listKey, want)
					}
				}
			}
			earlier[h.Name] = true
		}
	}
	check(spec.Launch, true)
	check(spec.Terminate, false)
}

// checkRecordLen makes sure the record of a list always fits where the
// plugin keeps it: a tag of its own for the launch hooks (MaxRecordLen), a
// share of a tag for the terminate hooks (MaxTerminateRecordLen).
func (p *policyParser) checkRecordLen(key string, hooks []*Hook) {
	maxLen, where := MaxRecordLen, fmt.Sprintf("the %d an EC2 tag value holds", MaxRecordLen)
	if key == policyKeyTerminate {
		maxLen = MaxTerminateRecordLen
		where = fmt.Sprintf("the %d it may use (the plugin keeps it with the instance's details in one 256-character EC2 tag)", MaxTerminateRecordLen)
	}
	n := recordLen(hooks)
	if n <= maxLen {
		return
	}
	budget := maxLen + 1 - len(hooks)*recordStepOverhead
	if budget < len(hooks) {
		// Even one-letter names do not fit.
		fit := (maxLen + 1) / (1 + recordStepOverhead)
		p.fail("%s is %s, whose progress record could reach %d characters, more than %s: list at most %d hooks (each step of the record takes %d characters besides its hook's name)",
			key, shown(p.cfg[key]), n, where, fit, recordStepOverhead)
		return
	}
	p.fail("%s is %s, whose progress record could reach %d characters, more than %s: use shorter hook names (at most %d characters for these %d names together)",
		key, shown(p.cfg[key]), n, where, budget, len(hooks))
}

// reservedEnv are the variables every exec command gets.
func reservedEnv() []string {
	return []string{envInstanceID, envInstanceType, envZone, envPrivateIP, envPrivateDNS, envFleetID, envNodeID, envNodeName}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func anyTypeHas(setting string) bool {
	for _, settings := range typeSettings {
		if contains(settings, setting) {
			return true
		}
	}
	return false
}

// allSettings lists every setting of any type, for errors.
func allSettings() []string {
	return []string{settingType, settingTimeout, settingOnFailure, settingJobTemplate, settingLimit, settingExtraVars, settingMeta, settingCommand, settingEnv}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// errNotConfigured is returned when an AWX hook runs without AWX settings;
// it is a configuration error (IsConfigError).
var errNotConfigured error = &configError{err: errors.New("AWX is not configured in the agent: set " + configKeyAWXURL + " and " + configKeyAWXTokenFile + " or " + configKeyAWXTokenEnv + " in the agent's target plugin config")}
