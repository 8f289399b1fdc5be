package fleet

import "github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"

// ErrorCode returns the AWS error code carried by err, or "" (see awsretry).
func ErrorCode(err error) string { return awsretry.ErrorCode(err) }

// IsThrottling reports whether err says the caller was rate limited.
func IsThrottling(err error) bool { return awsretry.IsThrottling(err) }

// IsServerFault reports whether err is a transient fault on AWS's side (5xx).
func IsServerFault(err error) bool { return awsretry.IsServerFault(err) }

// IsRetryable reports whether repeating the same call may succeed: throttling,
// a fault on AWS's side or a network failure, but never the caller's own
// cancellation or deadline.
func IsRetryable(err error) bool { return awsretry.IsRetryable(err) }

// IsNotFound reports whether err says the fleet request or instance does not exist.
func IsNotFound(err error) bool { return awsretry.IsNotFound(err) }

// IsAccessDenied reports whether err says an IAM permission is missing.
func IsAccessDenied(err error) bool { return awsretry.IsAccessDenied(err) }
