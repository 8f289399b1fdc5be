package awsretry_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/stretchr/testify/require"

	"github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"
)

// badServer is a TCP server that answers each request according to its
// path, the way a broken network or an unhappy AWS endpoint would. The SDK
// clients below talk to it, so the errors under test are exactly the ones the
// SDK returns, wrapping included.
type badServer struct {
	ln   net.Listener
	hang chan struct{}
	wg   sync.WaitGroup
}

func newBadServer(t *testing.T) *badServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &badServer{ln: ln, hang: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() {
		close(s.hang)
		_ = ln.Close()
		s.wg.Wait()
	})
	return s
}

func (s *badServer) url(path string) string { return "http://" + s.ln.Addr().String() + path }

func (s *badServer) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.answer(c.(*net.TCPConn))
		}()
	}
}

func (s *badServer) answer(c *net.TCPConn) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	// Read the whole request first: closing with unread input would turn
	// every case into a broken pipe on the client's side.
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return
	}
	respond := func(status int, contentType, extraHeader, body string) {
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n%s",
			status, http.StatusText(status), contentType, extraHeader, len(body), body)
	}
	ec2Error := func(status int, code string) {
		respond(status, "text/xml", "", `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>`+code+
			`</Code><Message>`+code+` from the test server</Message></Error></Errors><RequestID>req-1</RequestID></Response>`)
	}
	switch strings.TrimPrefix(req.URL.Path, "/") {
	case "reset": // RST instead of an answer
		_ = c.SetLinger(0)
	case "eof": // the connection closes before any answer
	case "midbody": // the answer breaks off in the middle of its body
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: text/xml\r\nContent-Length: 4000\r\n\r\n<DescribeSpotFleetRequestsResponse><spotFleetRequestConfigSet>")
	case "hang":
		<-s.hang
	case "throttle":
		ec2Error(http.StatusServiceUnavailable, "RequestLimitExceeded")
	case "internal":
		ec2Error(http.StatusInternalServerError, "InternalError")
	case "unauthorized":
		ec2Error(http.StatusForbidden, "UnauthorizedOperation")
	case "notfound":
		ec2Error(http.StatusBadRequest, "InvalidSpotFleetRequestId.NotFound")
	case "garbage": // a complete answer that is not valid XML
		respond(http.StatusOK, "text/xml", "", "<DescribeSpotFleetRequestsResponse><spotFleetRequestConfigSet></wrong></DescribeSpotFleetRequestsResponse>")
	case "sqs-throttle":
		respond(http.StatusBadRequest, "application/x-amz-json-1.0", "x-amzn-query-error: RequestThrottled;Sender\r\n",
			`{"__type":"com.amazonaws.sqs#RequestThrottled","message":"slow down"}`)
	case "sqs-denied":
		respond(http.StatusForbidden, "application/x-amz-json-1.0", "x-amzn-query-error: AccessDenied;Sender\r\n",
			`{"__type":"com.amazon.coral.service#AccessDeniedException","message":"no"}`)
	}
}

// sdkRetryer is the SDK's standard retryer with attempts tries and no pause, so
// that cases which let the SDK retry do not slow the test down; it keeps the SDK's own retries (when a case asks for them) from
// pausing.
func sdkRetryer(attempts int) func() aws.Retryer {
	return func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = attempts
			o.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	}
}

func ec2Client(endpoint string, sdkAttempts int, attemptTimeout time.Duration) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
		HTTPClient:   &http.Client{Timeout: attemptTimeout, Transport: &http.Transport{DisableKeepAlives: true}},
		Retryer:      sdkRetryer(sdkAttempts)(),
	})
}

func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "http://" + addr
}

type class struct {
	throttle, server, network, canceled, notFound, denied, retryable bool
}

func requireClass(t *testing.T, err error, want class) {
	t.Helper()
	require.Error(t, err)
	got := class{
		throttle:  awsretry.IsThrottling(err),
		server:    awsretry.IsServerFault(err),
		network:   awsretry.IsNetwork(err),
		canceled:  awsretry.IsCanceled(err),
		notFound:  awsretry.IsNotFound(err),
		denied:    awsretry.IsAccessDenied(err),
		retryable: awsretry.IsRetryable(err),
	}
	require.Equal(t, want, got, "classification of %v", err)
}

func TestClassifiesRealSDKErrors(t *testing.T) {
	srv := newBadServer(t)
	refused := closedPort(t)
	cases := []struct {
		name           string
		endpoint       string
		sdkAttempts    int
		attemptTimeout time.Duration // http.Client.Timeout: one attempt
		callerTimeout  time.Duration // the caller's own context deadline
		callerCancel   time.Duration // the caller cancels after this
		want           class
		code           string
	}{
		{name: "connection refused", endpoint: refused, sdkAttempts: 1, want: class{network: true, retryable: true}},
		{name: "connection refused after the SDK's own retries", endpoint: refused, sdkAttempts: 3, want: class{network: true, retryable: true}},
		{name: "connection reset", endpoint: srv.url("/reset"), sdkAttempts: 1, want: class{network: true, retryable: true}},
		{name: "EOF before the response", endpoint: srv.url("/eof"), sdkAttempts: 1, want: class{network: true, retryable: true}},
		{name: "unexpected EOF mid-response", endpoint: srv.url("/midbody"), sdkAttempts: 3, want: class{network: true, retryable: true}},
		{name: "timeout of one attempt", endpoint: srv.url("/hang"), sdkAttempts: 1, attemptTimeout: 100 * time.Millisecond, want: class{network: true, retryable: true}},
		{name: "caller's deadline", endpoint: srv.url("/hang"), sdkAttempts: 1, callerTimeout: 100 * time.Millisecond, want: class{canceled: true}},
		{name: "caller's cancellation", endpoint: srv.url("/hang"), sdkAttempts: 3, callerCancel: 100 * time.Millisecond, want: class{canceled: true}},
		{name: "throttled", endpoint: srv.url("/throttle"), sdkAttempts: 2, want: class{throttle: true, server: true, retryable: true}, code: "RequestLimitExceeded"},
		{name: "internal error", endpoint: srv.url("/internal"), sdkAttempts: 1, want: class{server: true, retryable: true}, code: "InternalError"},
		{name: "unauthorized", endpoint: srv.url("/unauthorized"), sdkAttempts: 3, want: class{denied: true}, code: "UnauthorizedOperation"},
		{name: "not found", endpoint: srv.url("/notfound"), sdkAttempts: 3, want: class{notFound: true}, code: "InvalidSpotFleetRequestId.NotFound"},
		{name: "a complete response that is not valid XML", endpoint: srv.url("/garbage"), sdkAttempts: 1, want: class{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.callerTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.callerTimeout)
				defer cancel()
			}
			if tc.callerCancel > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				time.AfterFunc(tc.callerCancel, cancel)
			}
			_, err := ec2Client(tc.endpoint, tc.sdkAttempts, tc.attemptTimeout).
				DescribeSpotFleetRequests(ctx, &ec2.DescribeSpotFleetRequestsInput{})
			var opErr *smithy.OperationError
			require.ErrorAs(t, err, &opErr, "the SDK wraps every failure in an OperationError")
			requireClass(t, err, tc.want)
			require.Equal(t, tc.code, awsretry.ErrorCode(err))
		})
	}
}

func TestAttemptTimeoutLooksLikeDeadlineButIsRetried(t *testing.T) {
	// The trap IsCanceled avoids: the SDK's error for a timed-out attempt
	// matches context.DeadlineExceeded although the caller's context is fine.
	srv := newBadServer(t)
	_, err := ec2Client(srv.url("/hang"), 1, 50*time.Millisecond).DescribeSpotFleetRequests(context.Background(), &ec2.DescribeSpotFleetRequestsInput{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.True(t, awsretry.IsRetryable(err))
}

func TestClassifiesRealSQSErrors(t *testing.T) {
	srv := newBadServer(t)
	cases := []struct {
		path string
		want class
		code string
	}{
		{path: "/sqs-throttle", want: class{throttle: true, retryable: true}, code: "RequestThrottled"},
		{path: "/sqs-denied", want: class{denied: true}, code: "AccessDenied"},
		{path: "/reset", want: class{network: true, retryable: true}},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			c := sqs.New(sqs.Options{
				Region:       "us-east-1",
				BaseEndpoint: aws.String(srv.url(tc.path)),
				Credentials:  credentials.NewStaticCredentialsProvider("AKID", "SECRET", ""),
				Retryer:      sdkRetryer(1)(),
			})
			_, err := c.ReceiveMessage(context.Background(), &sqs.ReceiveMessageInput{QueueUrl: aws.String(srv.url(tc.path))})
			requireClass(t, err, tc.want)
			require.Equal(t, tc.code, awsretry.ErrorCode(err))
		})
	}
}

func TestClassifiesPlainErrors(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want class
	}{
		{name: "plain error", err: errors.New("boom")},
		{name: "plain context.Canceled", err: fmt.Errorf("waiting: %w", context.Canceled), want: class{canceled: true}},
		{name: "plain deadline is not a network error", err: context.DeadlineExceeded},
		{name: "dial error outside the SDK", err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, want: class{network: true, retryable: true}},
		{name: "DNS name not found", err: &smithyhttp.RequestSendError{Err: &url.Error{Op: "Post", URL: "https://ec2.nowhere.invalid/",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "ec2.nowhere.invalid", IsNotFound: true}}}}},
		{name: "generic API error", err: &smithy.GenericAPIError{Code: "Throttling"}, want: class{throttle: true, retryable: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { requireClass(t, tc.err, tc.want) })
	}
	require.False(t, awsretry.IsRetryable(nil))
	require.False(t, awsretry.IsNetwork(nil))
	require.False(t, awsretry.IsCanceled(nil))
	require.Equal(t, "", awsretry.ErrorCode(nil))
}
