//go:build tools

// Package nomadbuild pins the Nomad version the local cloud runs.
package nomadbuild

import _ "github.com/hashicorp/nomad"
