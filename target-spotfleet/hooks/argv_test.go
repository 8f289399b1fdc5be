package hooks

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitCommand(t *testing.T) {
	cases := []struct {
		in      string
		want    []string
		wantErr string
	}{
		{in: "/bin/echo hello  world", want: []string{"/bin/echo", "hello", "world"}},
		{in: `/bin/sh -c 'echo "$HOME" | wc -c'`, want: []string{"/bin/sh", "-c", `echo "$HOME" | wc -c`}},
		{in: `a "b c" d`, want: []string{"a", "b c", "d"}},
		{in: `a "say \"hi\" \\ \$x \n"`, want: []string{"a", `say "hi" \ $x \n`}},
		{in: `a b\ c \'q\'`, want: []string{"a", "b c", "'q'"}},
		{in: `a '' ""`, want: []string{"a", "", ""}},
		{in: `a x'y'"z"`, want: []string{"a", "xyz"}},
		{in: "a\tb\nc", want: []string{"a", "b", "c"}},
		{in: "   ", want: nil},
		{in: `/bin/reg --ip {{ private_ip }} x{{ node.meta.a b }}y`, want: []string{"/bin/reg", "--ip", "{{ private_ip }}", "x{{ node.meta.a b }}y"}},
		{in: `a {{ private_ip`, wantErr: "has a {{ at character 3 that is never closed with }}"},
		{in: `a 'b`, wantErr: "has a single quote at character 3 that is never closed"},
		{in: `a "b`, wantErr: "has a double quote at character 3 that is never closed"},
		{in: `a \`, wantErr: "ends with a lone backslash"},
		{in: `a > out`, wantErr: "has an unquoted '>' at character 3: no shell runs the command"},
		{in: `a; b`, wantErr: "has an unquoted ';' at character 2"},
		{in: `echo $HOME`, wantErr: "has an unquoted '$' at character 6"},
		{in: `ls *.log`, wantErr: "has an unquoted '*' at character 4"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := splitCommand(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}
