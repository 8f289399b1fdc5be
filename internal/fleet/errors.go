package fleet

import (
	"errors"
	"net/http"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// throttlingCodes are the error codes EC2 (and the SDK) use when a caller is
// rate limited. They are always worth retrying after a pause.
var throttlingCodes = map[string]bool{
	"RequestLimitExceeded":      true,
	"Throttling":                true,
	"ThrottlingException":       true,
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

// notFoundCodes mean the thing asked about does not exist (any more).
var notFoundCodes = map[string]bool{
	"InvalidSpotFleetRequestId.NotFound":  true,
	"InvalidSpotFleetRequestId.Malformed": true,
	"InvalidInstanceID.NotFound":          true,
	"InvalidInstanceID.Malformed":         true,
}

// ErrorCode returns the AWS error code carried by err, or "".
func ErrorCode(err error) string {
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		return respErr.HTTPStatusCode()
	}
	return 0
}

// IsThrottling reports whether err says the caller was rate limited.
func IsThrottling(err error) bool {
	return err != nil && (throttlingCodes[ErrorCode(err)] || httpStatus(err) == http.StatusTooManyRequests)
}

// IsServerFault reports whether err is a transient fault on AWS's side (5xx).
func IsServerFault(err error) bool {
	return err != nil && (serverFaultCodes[ErrorCode(err)] || httpStatus(err) >= 500)
}

// IsRetryable reports whether repeating the same call may succeed.
func IsRetryable(err error) bool {
	return IsThrottling(err) || IsServerFault(err)
}

// IsNotFound reports whether err says the fleet request or instance does not exist.
func IsNotFound(err error) bool {
	return notFoundCodes[ErrorCode(err)]
}
