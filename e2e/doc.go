// Package e2e holds the end-to-end tests (build tag e2e) that run the real
// autoscaler agent with this project's plugins on the local cloud of package
// localcloud: moto for EC2 and SQS, a real Nomad server and one real Nomad
// client agent per fleet instance. Run them with `make e2e`.
package e2e
