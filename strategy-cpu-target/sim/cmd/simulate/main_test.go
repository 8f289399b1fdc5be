package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseSpec(t *testing.T) {
	name, path, opts, err := parseSpec("burst=/data/b.csv,column=cpu,step=1s,resample=10s,interpolate=true")
	require.NoError(t, err)
	require.Equal(t, "burst", name)
	require.Equal(t, "/data/b.csv", path)
	require.Equal(t, "cpu", opts.Column)
	require.Equal(t, time.Second, opts.Step)
	require.Equal(t, 10*time.Second, opts.Resample)
	require.True(t, opts.Interpolate)

	name, _, opts, err = parseSpec("/data/wiki.csv,from=2012-03-05 00:00:00,to=2012-03-11 23:00:00")
	require.NoError(t, err)
	require.Equal(t, "wiki", name)
	require.Equal(t, time.Date(2012, 3, 11, 23, 0, 0, 0, time.UTC), opts.To)

	for spec, want := range map[string]string{
		"a.csv,step=soon":  `step="soon": want a positive duration`,
		"a.csv,colum=cpu":  `unknown setting "colum"`,
		"a.csv,column":     `"column" is not key=value`,
		"a.csv,from=today": `from="today"`,
		"name=":            "no file named",
	} {
		_, _, _, err := parseSpec(spec)
		require.ErrorContains(t, err, want, spec)
	}
}
