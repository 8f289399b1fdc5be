package hooks

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

func TestParseAgentTokenSources(t *testing.T) {
	const secret = "tok-9d8c7b6a5f"
	tokenFile := writeFile(t, "token", secret+"\n")
	t.Setenv("TEST_AWX_TOKEN", secret)
	cases := []struct {
		name       string
		cfg        map[string]string
		wantString string
	}{
		{
			name:       "token from a file, trailing /api/v2/ tolerated",
			cfg:        map[string]string{"awx_url": "https://awx.example.com/api/v2/", "awx_token_file": tokenFile},
			wantString: "AWX https://awx.example.com, token from file " + tokenFile,
		},
		{
			name:       "token from the environment, trailing slash tolerated",
			cfg:        map[string]string{"awx_url": "https://awx.example.com/", "awx_token_env": "TEST_AWX_TOKEN"},
			wantString: "AWX https://awx.example.com, token from env TEST_AWX_TOKEN",
		},
		{
			name:       "token set, AWX under a path",
			cfg:        map[string]string{"awx_url": "http://10.0.0.2:8052/awx/api/v2", "awx_token": secret},
			wantString: "AWX http://10.0.0.2:8052/awx, token set",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := map[string]string{"aws_region": "us-east-1", "nomad_address": "http://127.0.0.1:4646"}
			for k, v := range tc.cfg {
				cfg[k] = v
			}
			a, err := ParseAgent(cfg)
			require.NoError(t, err)
			require.True(t, a.AWXConfigured())
			require.Equal(t, tc.wantString, a.String())
			require.NotContains(t, a.String(), secret)
			require.Equal(t, []string{secret}, a.Secrets())
		})
	}
}

func TestParseAgentWithoutAWXIsNotAnError(t *testing.T) {
	a, err := ParseAgent(map[string]string{"aws_region": "us-east-1"})
	require.NoError(t, err)
	require.False(t, a.AWXConfigured())
	require.Equal(t, "AWX not configured", a.String())
	require.Empty(t, a.Secrets())

	var none *Agent
	require.False(t, none.AWXConfigured())
	require.Equal(t, "AWX not configured", none.String())
	require.Empty(t, none.Secrets())
}

func TestAgentKeys(t *testing.T) {
	require.Equal(t, []string{"awx_url", "awx_token", "awx_token_file", "awx_token_env", "awx_ca_file"}, AgentKeys())
}

func TestParseAgentErrors(t *testing.T) {
	const secret = "tok-never-shown"
	tokenFile := writeFile(t, "token", secret)
	emptyFile := writeFile(t, "empty", " \n")
	notPEM := writeFile(t, "ca.pem", "not a certificate")
	cases := []struct {
		name    string
		cfg     map[string]string
		wantErr string
	}{
		{
			name:    "two token sources",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token": secret, "awx_token_file": tokenFile},
			wantErr: "awx_token and awx_token_file are set, want one token source only",
		},
		{
			name:    "url without a token",
			cfg:     map[string]string{"awx_url": "https://awx.example.com"},
			wantErr: "awx_url is set but no token is: set awx_token_file (a file holding the token) or awx_token_env (the name of an environment variable holding it)",
		},
		{
			name:    "token without a url",
			cfg:     map[string]string{"awx_token": secret},
			wantErr: "awx_token is set but awx_url is not: set awx_url to the base URL of AWX",
		},
		{
			name:    "empty token file",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token_file": emptyFile},
			wantErr: "awx_token_file is \"" + emptyFile + "\", which is empty: want a file that holds the AWX token",
		},
		{
			name:    "missing token file",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token_file": "/nonexistent/awx-token"},
			wantErr: `awx_token_file is "/nonexistent/awx-token", which cannot be read (no such file or directory): want a file that holds the AWX token`,
		},
		{
			name:    "unset environment variable",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token_env": "TEST_AWX_TOKEN_UNSET_4F"},
			wantErr: `awx_token_env is "TEST_AWX_TOKEN_UNSET_4F", but that environment variable is empty or not set in the agent's environment`,
		},
		{
			name:    "bad environment variable name",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token_env": "$AWX_TOKEN"},
			wantErr: `awx_token_env is "$AWX_TOKEN", want the name of an environment variable`,
		},
		{
			name:    "url without a scheme",
			cfg:     map[string]string{"awx_url": "awx.example.com", "awx_token": secret},
			wantErr: `awx_url is "awx.example.com", which has no scheme; want the http:// or https:// base URL of AWX, such as https://awx.example.com`,
		},
		{
			name:    "url with another scheme",
			cfg:     map[string]string{"awx_url": "ftp://awx.example.com", "awx_token": secret},
			wantErr: `awx_url is "ftp://awx.example.com", whose scheme is "ftp"`,
		},
		{
			name:    "url with a password",
			cfg:     map[string]string{"awx_url": "https://admin:hunter2@awx.example.com", "awx_token": secret},
			wantErr: `awx_url "https://admin:xxxxx@awx.example.com" must not carry user information`,
		},
		{
			name:    "CA file that is not PEM",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token": secret, "awx_ca_file": notPEM},
			wantErr: "awx_ca_file is \"" + notPEM + "\", which holds no PEM certificate",
		},
		{
			name:    "CA file that is missing",
			cfg:     map[string]string{"awx_url": "https://awx.example.com", "awx_token": secret, "awx_ca_file": "/nonexistent/ca.pem"},
			wantErr: `awx_ca_file is "/nonexistent/ca.pem", which cannot be read (no such file or directory)`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseAgent(tc.cfg)
			require.Nil(t, a)
			require.ErrorContains(t, err, tc.wantErr)
			require.NotContains(t, err.Error(), secret)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestAgentTrustsTheCAFileForAWX(t *testing.T) {
	f := newFakeAWX(t)
	f.addTemplate(7, "configure")
	tlsSrv := httptest.NewUnstartedServer(f.srv.Config.Handler)
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	ca := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})))
	tokenFile := writeFile(t, "token", fakeToken)

	trusting, err := ParseAgent(map[string]string{"awx_url": tlsSrv.URL, "awx_token_file": tokenFile, "awx_ca_file": ca})
	require.NoError(t, err)
	require.Contains(t, trusting.String(), "CA from "+ca)
	r, _ := newTestRunner(t, trusting)
	out := r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), trusting).Launch, testInstance(), Record{}, nil)
	require.True(t, out.OK, "%v", out.Err)

	// Without the CA the same AWX is not trusted, which is said at once
	// rather than retried like a network blip until the hook's timeout.
	untrusting, err := ParseAgent(map[string]string{"awx_url": tlsSrv.URL, "awx_token_file": tokenFile})
	require.NoError(t, err)
	r, _ = newTestRunner(t, untrusting)
	begin := time.Now()
	out = r.Launch(context.Background(), mustPolicy(t, awxPolicy("7"), untrusting).Launch, testInstance(), Record{}, nil)
	require.False(t, out.OK)
	require.ErrorContains(t, out.Err, "POST /api/v2/job_templates/7/launch/: AWX's TLS certificate is not trusted (")
	require.ErrorContains(t, out.Err, "set awx_ca_file in the agent's target plugin config to the CA that signed it")
	require.Less(t, time.Since(begin), 5*time.Second)
}
