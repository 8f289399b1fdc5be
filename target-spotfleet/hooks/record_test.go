package hooks

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRecordRoundTrip(t *testing.T) {
	rec := Record{Steps: map[string]Step{
		"join":      {State: StateStarted, At: time.Unix(1733100005, 0).UTC()},
		"configure": {State: StateOK, JobID: 1001, At: time.Unix(1733100000, 0).UTC()},
		"forget":    {State: StateFailed, JobID: 7, At: time.Unix(1733100100, 0).UTC()},
	}}

	s := rec.String()

	require.Equal(t, "configure=ok/1001/1733100000;forget=failed/7/1733100100;join=started/0/1733100005", s)
	back, err := ParseRecord(s)
	require.NoError(t, err)
	require.Equal(t, rec, back)
	require.Equal(t, s, back.String())
}

func TestParseRecordOfNothingIsEmpty(t *testing.T) {
	rec, err := ParseRecord("")
	require.NoError(t, err)
	require.Empty(t, rec.Steps)
	require.Equal(t, "", rec.String())
	require.Equal(t, "", Record{}.String())
	require.True(t, Record{}.Done(nil))
}

func TestParseRecordErrors(t *testing.T) {
	cases := map[string]string{
		"configure":                  `step "configure" has no hook name`,
		"configure=ok/1001":          `step "configure=ok/1001": want name=state/job_id/unix_time`,
		"configure=done/1/1":         `step "configure=done/1/1" has state "done", want started, ok or failed`,
		"configure=ok/x/1":           `has job id "x", want a whole number`,
		"configure=ok/1/-5":          `has time "-5", want Unix seconds`,
		"a=ok/1/1;a=ok/1/1":          "hook a appears twice",
		"Bad=ok/1/1":                 `step "Bad=ok/1/1" has no hook name`,
		"a=ok/1/1;b=ok/1;c=nope/0/0": `step "b=ok/1": want`,
	}
	for in, want := range cases {
		_, err := ParseRecord(in)
		require.ErrorContains(t, err, want, in)
		require.ErrorContains(t, err, "reading hook record")
	}
}

func TestRecordOfSixHooksFitsInATag(t *testing.T) {
	// The longest names ParsePolicy accepts for six hooks: 71 characters
	// together, with job ids of 10 digits.
	var hooks []*Hook
	rec := Record{Steps: map[string]Step{}}
	for i := 0; i < 6; i++ {
		n := 11
		if i == 0 {
			n = 10
		}
		name := fmt.Sprintf("%c%s", 'a'+i, strings.Repeat("x", n))
		hooks = append(hooks, &Hook{Name: name, Type: TypeAWX})
		rec.Steps[name] = Step{State: StateStarted, JobID: 9999999999, At: time.Unix(1999999999, 0)}
	}
	_, err := ParsePolicy(policyOf(hooks), awxAgent(t))
	require.NoError(t, err, "these names are accepted")

	require.LessOrEqual(t, len(rec.String()), MaxRecordLen)
	require.Equal(t, recordLen(hooks), len(rec.String()), "the bound ParsePolicy checks is exact")

	// Typical names leave plenty of room.
	typical := Record{Steps: map[string]Step{}}
	for _, n := range []string{"configure", "enroll", "join", "register", "monitor", "admit"} {
		typical.Steps[n] = Step{State: StateStarted, JobID: 1234567890, At: time.Unix(1733100000, 0)}
	}
	require.LessOrEqual(t, len(typical.String()), MaxRecordLen)
}

func policyOf(hooks []*Hook) map[string]string {
	var names []string
	cfg := map[string]string{}
	for _, h := range hooks {
		names = append(names, h.Name)
		cfg["hook_"+h.Name+"_type"] = "awx"
		cfg["hook_"+h.Name+"_job_template"] = "7"
	}
	cfg["launch_hooks"] = strings.Join(names, ",")
	return cfg
}

func TestRecordDone(t *testing.T) {
	hooks := []*Hook{{Name: "a"}, {Name: "b"}}
	require.False(t, Record{}.Done(hooks))
	require.False(t, Record{Steps: map[string]Step{"a": {State: StateOK}, "b": {State: StateStarted}}}.Done(hooks))
	require.True(t, Record{Steps: map[string]Step{"a": {State: StateOK}, "b": {State: StateOK}, "c": {State: StateFailed}}}.Done(hooks))
}
