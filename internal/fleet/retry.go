package fleet

import "github.com/nomad-spotfleet/nomad-spotfleet/internal/awsretry"

// Retry says how often and how patiently a call is repeated; it is
// awsretry.Retry, kept here so that callers of this package need not import
// awsretry.
type Retry = awsretry.Retry

// DefaultRetry suits the EC2 API's request-rate limits (awsretry.DefaultRetry).
var DefaultRetry = awsretry.DefaultRetry
