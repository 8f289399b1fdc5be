package localcloud

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// MotoURL returns the base URL of moto_server (http://127.0.0.1:<port>).
func (c *Cloud) MotoURL() string { return c.motoURL }

// EC2 returns an EC2 client for moto (static credentials test/test, us-east-1).
func (c *Cloud) EC2() *ec2.Client { return c.ec2 }

// SQS returns an SQS client for moto (static credentials test/test, us-east-1).
func (c *Cloud) SQS() *sqs.Client { return c.sqs }

// AWSConfig returns an aws.Config for moto: static credentials, us-east-1 and
// BaseEndpoint set to moto's URL, so any aws-sdk-go-v2 client built from it
// talks only to moto.
func (c *Cloud) AWSConfig() aws.Config {
	return aws.Config{
		Region:       DefaultRegion,
		Credentials:  credentials.NewStaticCredentialsProvider("test", "test", ""),
		BaseEndpoint: aws.String(c.motoURL),
	}
}

// findMoto locates moto_server.
func findMoto(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	p, err := exec.LookPath("moto_server")
	if err != nil {
		return "", fmt.Errorf("localcloud: moto_server not found on PATH (install it with: pip install 'moto[server]'): %w", err)
	}
	return p, nil
}

// startMoto runs moto_server on a free loopback port and waits until it
// answers HTTP; it retries with another port if the first one was taken.
func (c *Cloud) startMoto(ctx context.Context) error {
	bin, err := findMoto(c.cfg.MotoBin)
	if err != nil {
		return err
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		p, err := startProcess("moto_server", bin,
			[]string{"-H", "127.0.0.1", "-p", strconv.Itoa(port)},
			c.cfg.WorkDir, filepath.Join(c.logsDir, "moto.log"), os.Environ())
		if err != nil {
			return fmt.Errorf("localcloud: %w", err)
		}
		c.track(p)
		url := "http://127.0.0.1:" + strconv.Itoa(port)
		if err := waitHTTP(ctx, url+"/", p, 60*time.Second); err != nil {
			_ = p.stop(2 * time.Second)
			lastErr = fmt.Errorf("localcloud: wait for moto_server on %s: %w", url, err)
			if p.exited() {
				continue // most likely the port was taken meanwhile
			}
			return lastErr
		}
		c.moto, c.motoURL = p, url
		awsCfg := c.AWSConfig()
		c.ec2 = ec2.NewFromConfig(awsCfg)
		c.sqs = sqs.NewFromConfig(awsCfg)
		return nil
	}
	return lastErr
}

// waitHTTP polls url until any HTTP response arrives, p exits, or the
// timeout or ctx ends.
func waitHTTP(ctx context.Context, url string, p *process, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := hc.Do(req); err == nil {
			_ = resp.Body.Close()
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("process exited (%v); see %s", p.exitErr(), p.logPath)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
