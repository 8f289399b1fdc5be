// Package awsconf turns the plugins' agent-level AWS settings into SDK
// configuration, the way the stock aws-asg plugin reads them.
package awsconf

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// Agent-level configuration keys, shared with the stock aws-asg plugin where
// the name exists there.
const (
	KeyRegion             = "aws_region"
	KeyAccessKeyID        = "aws_access_key_id"
	KeySecretAccessKey    = "aws_secret_access_key"
	KeySessionToken       = "aws_session_token"
	KeyCredentialProvider = "aws_credential_provider"
	KeyEndpoint           = "aws_endpoint"

	// DefaultRegion is used when neither the config nor the environment names one.
	DefaultRegion = "us-east-1"

	// CredentialProviderEC2Role reads credentials from the instance profile.
	CredentialProviderEC2Role = "ec2_role"
)

// Keys returns the agent-level keys Parse reads, in the order the reference
// (docs/reference/target-spotfleet.md) lists them. Parse reads nothing else,
// so a key missing here is never read (and its documentation is checked
// against this list).
func Keys() []string {
	return []string{KeyRegion, KeyAccessKeyID, KeySecretAccessKey, KeySessionToken, KeyCredentialProvider, KeyEndpoint}
}

// Settings are the parsed AWS settings. Secrets stay in here and are never
// printed: String leaves them out.
type Settings struct {
	Region             string
	accessKeyID        string
	secretAccessKey    string
	sessionToken       string
	CredentialProvider string
	Endpoint           string
}

// String describes the settings without any secret.
func (s Settings) String() string {
	creds := "default chain"
	switch {
	case s.accessKeyID != "":
		creds = "static"
	case s.CredentialProvider != "":
		creds = s.CredentialProvider
	}
	ep := s.Endpoint
	if ep == "" {
		ep = "AWS"
	}
	return fmt.Sprintf("region=%s credentials=%s endpoint=%s", s.Region, creds, ep)
}

// GoString describes the settings without any secret, so that %#v does not
// print the fields either.
func (s Settings) GoString() string { return "awsconf.Settings{" + s.String() + "}" }

// Parse validates the AWS keys of a plugin config map. It needs no network.
// Every problem is reported at once, joined with "; ". A message names the
// key, its value when the value is not secret, and what is accepted; the
// values of aws_access_key_id, aws_secret_access_key and aws_session_token
// never appear in it.
func Parse(config map[string]string) (Settings, error) {
	cfg := make(map[string]string, len(Keys()))
	for _, k := range Keys() {
		if v, ok := config[k]; ok {
			cfg[k] = v
		}
	}
	s := Settings{
		Region:             strings.TrimSpace(cfg[KeyRegion]),
		accessKeyID:        cfg[KeyAccessKeyID],
		secretAccessKey:    cfg[KeySecretAccessKey],
		sessionToken:       cfg[KeySessionToken],
		CredentialProvider: cfg[KeyCredentialProvider],
		Endpoint:           strings.TrimSpace(cfg[KeyEndpoint]),
	}
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	hasKey, hasSecret, hasToken := s.accessKeyID != "", s.secretAccessKey != "", s.sessionToken != ""
	switch {
	case hasKey && !hasSecret:
		bad("%s is set but %s is not: the two must be set together, or neither to use the default credential chain", KeyAccessKeyID, KeySecretAccessKey)
	case hasSecret && !hasKey:
		bad("%s is set but %s is not: the two must be set together, or neither to use the default credential chain", KeySecretAccessKey, KeyAccessKeyID)
	}
	if hasToken && !(hasKey && hasSecret) {
		var missing []string
		if !hasKey {
			missing = append(missing, KeyAccessKeyID)
		}
		if !hasSecret {
			missing = append(missing, KeySecretAccessKey)
		}
		bad("%s is set without %s: a session token is used only with static credentials, so set it together with %s and %s, or remove it",
			KeySessionToken, strings.Join(missing, " and "), KeyAccessKeyID, KeySecretAccessKey)
	}

	switch s.CredentialProvider {
	case "":
	case CredentialProviderEC2Role:
		if hasKey || hasSecret || hasToken {
			bad("%s %q conflicts with the static credentials (%s, %s, %s): set either the static credentials or %s = %q, not both",
				KeyCredentialProvider, s.CredentialProvider, KeyAccessKeyID, KeySecretAccessKey, KeySessionToken,
				KeyCredentialProvider, CredentialProviderEC2Role)
		}
	default:
		bad("invalid %s %q: accepted values are %q or unset (default credential chain)", KeyCredentialProvider, s.CredentialProvider, CredentialProviderEC2Role)
	}

	if s.Endpoint != "" {
		u, err := url.Parse(s.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("invalid %s %q: want an http:// or https:// URL such as http://127.0.0.1:5000", KeyEndpoint, s.Endpoint)
		}
	}

	if len(errs) > 0 {
		return Settings{}, errors.New(strings.Join(errs, "; "))
	}
	return s, nil
}

// Config builds the SDK configuration. It reads the environment and shared
// config files but makes no network call; credentials resolve on first use.
// SDK-level retries are turned off: callers retry with their own policy.
func (s Settings) Config(ctx context.Context) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading default AWS config: %w", err)
	}
	if s.Region != "" {
		cfg.Region = s.Region
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	switch {
	case s.accessKeyID != "":
		cfg.Credentials = credentials.NewStaticCredentialsProvider(s.accessKeyID, s.secretAccessKey, s.sessionToken)
	case s.CredentialProvider == CredentialProviderEC2Role:
		cfg.Credentials = aws.NewCredentialsCache(ec2rolecreds.New())
	}
	return cfg, nil
}

// EC2 returns an EC2 client for the settings.
func (s Settings) EC2(cfg aws.Config) *ec2.Client {
	return ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
	})
}

// SQS returns an SQS client for the settings.
func (s Settings) SQS(cfg aws.Config) *sqs.Client {
	return sqs.NewFromConfig(cfg, func(o *sqs.Options) {
		if s.Endpoint != "" {
			o.BaseEndpoint = aws.String(s.Endpoint)
		}
	})
}
