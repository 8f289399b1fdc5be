package awsconf

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Secret values used by the tests: no error message or printed form of the
// settings may contain any of them.
const (
	testAccessKeyID     = "AKIAIOSFODNN7SECRETID"
	testSecretAccessKey = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"
	testSessionToken    = "FwoGZXIvYXdzEJr-SECRETTOKEN-abcdef"
)

var testSecrets = []string{testAccessKeyID, testSecretAccessKey, testSessionToken}

func requireNoSecret(t *testing.T, s string) {
	t.Helper()
	for _, secret := range testSecrets {
		require.NotContains(t, s, secret, "a secret value leaked")
	}
}

func TestParseRefusesBadAWSSettings(t *testing.T) {
	cases := []struct {
		name string
		cfg  map[string]string
		// wantErr are substrings the error must contain.
		wantErr []string
		// wantProblems is how many problems the error reports ("; " separated).
		wantProblems int
	}{
		{
			name:         "access key without secret",
			cfg:          map[string]string{KeyAccessKeyID: testAccessKeyID},
			wantErr:      []string{"aws_access_key_id is set but aws_secret_access_key is not", "must be set together"},
			wantProblems: 1,
		},
		{
			name:         "secret without access key",
			cfg:          map[string]string{KeySecretAccessKey: testSecretAccessKey},
			wantErr:      []string{"aws_secret_access_key is set but aws_access_key_id is not", "must be set together"},
			wantProblems: 1,
		},
		{
			name:         "session token alone",
			cfg:          map[string]string{KeySessionToken: testSessionToken},
			wantErr:      []string{"aws_session_token is set without aws_access_key_id and aws_secret_access_key", "only with static credentials"},
			wantProblems: 1,
		},
		{
			name:         "session token with access key only",
			cfg:          map[string]string{KeySessionToken: testSessionToken, KeyAccessKeyID: testAccessKeyID},
			wantErr:      []string{"aws_session_token is set without aws_secret_access_key", "must be set together"},
			wantProblems: 2,
		},
		{
			name:         "session token with secret only",
			cfg:          map[string]string{KeySessionToken: testSessionToken, KeySecretAccessKey: testSecretAccessKey},
			wantErr:      []string{"aws_session_token is set without aws_access_key_id", "must be set together"},
			wantProblems: 2,
		},
		{
			name: "static keys with ec2_role",
			cfg: map[string]string{KeyAccessKeyID: testAccessKeyID, KeySecretAccessKey: testSecretAccessKey,
				KeyCredentialProvider: CredentialProviderEC2Role},
			wantErr:      []string{`aws_credential_provider "ec2_role" conflicts with the static credentials`, "not both"},
			wantProblems: 1,
		},
		{
			name:         "half static keys with ec2_role",
			cfg:          map[string]string{KeyAccessKeyID: testAccessKeyID, KeyCredentialProvider: CredentialProviderEC2Role},
			wantErr:      []string{"must be set together", `aws_credential_provider "ec2_role" conflicts`},
			wantProblems: 2,
		},
		{
			name:         "unknown provider",
			cfg:          map[string]string{KeyCredentialProvider: "vault"},
			wantErr:      []string{`invalid aws_credential_provider "vault"`, `"ec2_role"`, "unset"},
			wantProblems: 1,
		},
		{
			name:         "endpoint without scheme",
			cfg:          map[string]string{KeyEndpoint: "localhost:5000"},
			wantErr:      []string{`invalid aws_endpoint "localhost:5000"`, "http:// or https://"},
			wantProblems: 1,
		},
		{
			name: "every problem at once",
			cfg: map[string]string{KeySessionToken: testSessionToken, KeyCredentialProvider: "vault",
				KeyEndpoint: "ftp://example.com"},
			wantErr: []string{"aws_session_token is set without", `invalid aws_credential_provider "vault"`,
				`invalid aws_endpoint "ftp://example.com"`},
			wantProblems: 3,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.cfg)
			require.Error(t, err)
			msg := err.Error()
			for _, w := range tc.wantErr {
				require.Contains(t, msg, w)
			}
			require.Len(t, strings.Split(msg, "; "), tc.wantProblems, "problems in %q", msg)
			requireNoSecret(t, msg)
		})
	}
}

func TestParseAcceptsGoodAWSSettings(t *testing.T) {
	cases := []struct {
		name      string
		cfg       map[string]string
		wantCreds string
	}{
		{name: "nothing set", cfg: map[string]string{}, wantCreds: "credentials=default chain"},
		{name: "static keys", cfg: map[string]string{KeyAccessKeyID: testAccessKeyID, KeySecretAccessKey: testSecretAccessKey},
			wantCreds: "credentials=static"},
		{name: "static keys with session token", cfg: map[string]string{KeyAccessKeyID: testAccessKeyID,
			KeySecretAccessKey: testSecretAccessKey, KeySessionToken: testSessionToken}, wantCreds: "credentials=static"},
		{name: "ec2 role", cfg: map[string]string{KeyCredentialProvider: CredentialProviderEC2Role}, wantCreds: "credentials=ec2_role"},
		{name: "endpoint and region", cfg: map[string]string{KeyEndpoint: "http://127.0.0.1:5000", KeyRegion: "eu-west-1",
			"nomad_address": "http://127.0.0.1:4646"}, wantCreds: "credentials=default chain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse(tc.cfg)
			require.NoError(t, err)
			require.Contains(t, s.String(), tc.wantCreds)
		})
	}
}

func TestParsedSettingsNeverPrintSecrets(t *testing.T) {
	s, err := Parse(map[string]string{KeyAccessKeyID: testAccessKeyID, KeySecretAccessKey: testSecretAccessKey,
		KeySessionToken: testSessionToken, KeyRegion: "eu-west-1"})
	require.NoError(t, err)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		out := fmt.Sprintf(verb, s)
		requireNoSecret(t, out)
		require.Contains(t, out, "region=eu-west-1", "verb %s", verb)
		out = fmt.Sprintf(verb, &s)
		requireNoSecret(t, out)
	}
	// The secrets still reach the SDK.
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_PROFILE", "")
	cfg, err := s.Config(context.Background())
	require.NoError(t, err)
	creds, err := cfg.Credentials.Retrieve(context.Background())
	require.NoError(t, err)
	require.Equal(t, testAccessKeyID, creds.AccessKeyID)
	require.Equal(t, testSecretAccessKey, creds.SecretAccessKey)
	require.Equal(t, testSessionToken, creds.SessionToken)
}
