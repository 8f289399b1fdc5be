package awsretry

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// throttlingCodes are the error codes AWS services use when a caller is rate
// limited (EC2: RequestLimitExceeded; SQS: RequestThrottled,
// ThrottlingException). They are always worth retrying after a pause.
var throttlingCodes = map[string]bool{
	"RequestLimitExceeded":      true,
	"Throttling":                true,
	"ThrottlingException":       true,
	"ThrottledException":        true,
	"RequestThrottled":          true,
	"RequestThrottledException": true,
	"TooManyRequestsException":  true,
	"EC2ThrottledException":     true,
	"SlowDown":                  true,
}

// serverFaultCodes are the codes AWS uses for transient faults on its side.
var serverFaultCodes = map[string]bool{
	"InternalError":      true,
	"InternalFailure":    true,
	"ServiceUnavailable": true,
	"Unavailable":        true,
}

// notFoundCodes mean the thing asked about does not exist (any more), or its
// id is malformed so that it can never exist.
var notFoundCodes = map[string]bool{
	"InvalidSpotFleetRequestId.NotFound":          true,
	"InvalidSpotFleetRequestId.Malformed":         true,
	"InvalidInstanceID.NotFound":                  true,
	"InvalidInstanceID.Malformed":                 true,
	"InvalidLaunchTemplateId.NotFound":            true,
	"InvalidLaunchTemplateName.NotFoundException": true,
	"AWS.SimpleQueueService.NonExistentQueue":     true,
	"QueueDoesNotExist":                           true,
}

// accessDeniedCodes mean the caller's IAM policy does not allow the call
// (EC2: UnauthorizedOperation, formerly Client.UnauthorizedOperation; SQS and
// most JSON services: AccessDenied / AccessDeniedException).
var accessDeniedCodes = map[string]bool{
	"UnauthorizedOperation":        true,
	"Client.UnauthorizedOperation": true,
	"AccessDenied":                 true,
	"AccessDeniedException":        true,
}

// ErrorCode returns the AWS error code carried by err, or "".
func ErrorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

// HTTPStatus returns the HTTP status of the response that failed with err, or
// 0 when there was none (the request was never answered).
func HTTPStatus(err error) int {
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) && respErr.Response != nil && respErr.Response.Response != nil {
		return respErr.HTTPStatusCode()
	}
	return 0
}

// IsThrottling reports whether err says the caller was rate limited.
func IsThrottling(err error) bool {
	return err != nil && (throttlingCodes[ErrorCode(err)] || HTTPStatus(err) == http.StatusTooManyRequests)
}

// IsServerFault reports whether err is a transient fault on AWS's side (5xx).
func IsServerFault(err error) bool {
	return err != nil && (serverFaultCodes[ErrorCode(err)] || HTTPStatus(err) >= 500)
}

// IsNotFound reports whether err says the resource (fleet request, instance,
// launch template, queue) does not exist.
func IsNotFound(err error) bool {
	return notFoundCodes[ErrorCode(err)]
}

// IsAccessDenied reports whether err says the caller lacks the IAM permission
// for the call.
func IsAccessDenied(err error) bool {
	return accessDeniedCodes[ErrorCode(err)]
}

// IsCanceled reports whether err says the caller's own context ended: the SDK
// wraps that as a smithy.CanceledError (context ended while the request was
// in flight) or an aws.RequestCanceledError (context ended during the SDK's
// own retry pause); both have a CanceledError method. A plain
// context.Canceled counts too. Such an error is never retried.
//
// A timeout of a single attempt (http.Client.Timeout) is not a cancellation,
// although it also matches errors.Is(err, context.DeadlineExceeded): the SDK
// returns it as a RequestSendError, which IsNetwork accepts.
func IsCanceled(err error) bool {
	if err == nil {
		return false
	}
	var c interface{ CanceledError() bool }
	if errors.As(err, &c) && c.CanceledError() {
		return true
	}
	return errors.Is(err, context.Canceled)
}

// IsNetwork reports whether err is a transport failure that a new attempt may
// not meet: connection refused or reset, a broken pipe, the connection closed
// before or in the middle of the response (EOF, unexpected EOF), or the
// timeout of one attempt. This is the SDK's shape of them:
//
//   - the request could not be sent or no response came back:
//     *smithyhttp.RequestSendError wrapping the *url.Error of net/http (a
//     *net.OpError with the syscall errno, io.EOF, or a timeout);
//   - the response broke off while its body was read: a
//     *smithy.DeserializationError wrapping io.ErrUnexpectedEOF (the SDK does
//     not retry this one itself).
//
// A DNS name that does not exist is not transient (a wrong endpoint), and
// neither is the caller's own cancellation (see IsCanceled).
func IsNetwork(err error) bool {
	if err == nil || IsCanceled(err) {
		return false
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	var sendErr *smithyhttp.RequestSendError
	if errors.As(err, &sendErr) {
		return true
	}
	var deserErr *smithy.DeserializationError
	if errors.As(err, &deserErr) {
		return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || brokenConnection(err)
	}
	// Not wrapped by the SDK (a hand-made client, a test double): judge the
	// transport error itself.
	var urlErr *url.Error
	var opErr *net.OpError
	if errors.As(err, &urlErr) || errors.As(err, &opErr) {
		return true
	}
	return brokenConnection(err) || errors.Is(err, io.ErrUnexpectedEOF)
}

// brokenConnection reports the syscall errors and messages of a connection
// that went away.
func brokenConnection(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	msg := err.Error()
	return strings.Contains(msg, "connection reset") || strings.Contains(msg, "use of closed network connection")
}

// IsRetryable reports whether repeating the same call may succeed: the caller
// was throttled, AWS failed on its side, or the network failed. The caller's
// own cancellation or deadline is never retryable.
func IsRetryable(err error) bool {
	if err == nil || IsCanceled(err) {
		return false
	}
	return IsThrottling(err) || IsServerFault(err) || IsNetwork(err)
}
