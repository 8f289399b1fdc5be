package nomadnode

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// fakeNomadHTTP answers /v1/node/<id> and /v1/node/<id>/allocations as Nomad
// does, for a node whose drain completes after a few reads, and fails the
// reads it is told to fail with Nomad's answer during a leader election.
type fakeNomadHTTP struct {
	mu        sync.Mutex
	reads     int
	failReads map[int]bool // read number -> answer 500 "No cluster leader"
	doneAfter int          // the drain completes at this read
	cancelAt  int          // someone cancels the drain at this read (0: never)
	marks     map[string]string
	allocsRun int // reads of allocations that still show a running alloc
}

func (f *fakeNomadHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if strings.HasSuffix(r.URL.Path, "/allocations") {
		status := api.AllocClientStatusComplete
		if f.allocsRun > 0 {
			f.allocsRun--
			status = api.AllocClientStatusRunning
		}
		_ = json.NewEncoder(w).Encode([]*api.Allocation{{ID: "a1", ClientStatus: status}})
		return
	}
	f.reads++
	if f.failReads[f.reads] {
		http.Error(w, "No cluster leader", http.StatusInternalServerError)
		return
	}
	n := &api.Node{ID: "n1", Status: api.NodeStatusReady, SchedulingEligibility: api.NodeSchedulingIneligible,
		LastDrain: &api.DrainMetadata{Status: api.DrainStatusDraining, Meta: f.marks}}
	switch {
	case f.cancelAt > 0 && f.reads >= f.cancelAt:
		n.LastDrain.Status = api.DrainStatusCanceled
	case f.reads >= f.doneAfter:
		n.LastDrain.Status = api.DrainStatusComplete
	default:
		n.DrainStrategy = &api.DrainStrategy{}
	}
	_ = json.NewEncoder(w).Encode(n)
}

func newHTTPClient(t *testing.T, h http.Handler) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var testMarks = map[string]string{"drained_by": "nomad-autoscaler", "spot_fleet_request_id": "sfr-1"}

func TestWaitDrainedRidesOutALeaderElection(t *testing.T) {
	f := &fakeNomadHTTP{failReads: map[int]bool{2: true, 3: true, 4: true}, doneAfter: 6, marks: testMarks, allocsRun: 2}
	c := newHTTPClient(t, f)
	var transient []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err := WaitDrained(ctx, c, "n1", WaitOptions{Marks: testMarks, Poll: Backoff{Base: time.Millisecond, Max: 2 * time.Millisecond},
		OnTransient: func(err error) { transient = append(transient, err) }})

	if err != nil {
		t.Fatalf("WaitDrained: %v", err)
	}
	if len(transient) != 3 {
		t.Errorf("rode out %d transient errors, want 3: %v", len(transient), transient)
	}
	for _, e := range transient {
		if !strings.Contains(e.Error(), "No cluster leader") {
			t.Errorf("transient error %q does not carry Nomad's answer", e)
		}
	}
	if f.allocsRun != 0 {
		t.Errorf("returned while the node still ran an allocation")
	}
}

func TestWaitDrainedStopsWhenTheDrainIsCancelled(t *testing.T) {
	f := &fakeNomadHTTP{doneAfter: 100, cancelAt: 3, marks: testMarks}
	c := newHTTPClient(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	err := WaitDrained(ctx, c, "n1", WaitOptions{Marks: testMarks, Poll: Backoff{Base: time.Millisecond, Max: time.Millisecond}})

	if !errors.Is(err, ErrDrainEnded) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("err = %v, want a cancelled drain", err)
	}
}

func TestWaitDrainedRefusesSomeoneElsesDrain(t *testing.T) {
	f := &fakeNomadHTTP{doneAfter: 1, marks: map[string]string{"message": "operator maintenance"}}
	c := newHTTPClient(t, f)

	err := WaitDrained(context.Background(), c, "n1", WaitOptions{Marks: testMarks, Poll: Backoff{Base: time.Millisecond}})

	if !errors.Is(err, ErrDrainEnded) {
		t.Fatalf("err = %v, want ErrDrainEnded: a drain that is not ours is never taken as ours", err)
	}
}

func TestWaitDrainedGivesUpWhenContextEnds(t *testing.T) {
	f := &fakeNomadHTTP{failReads: map[int]bool{}, doneAfter: 1 << 30, marks: testMarks}
	for i := 1; i < 1000; i++ {
		f.failReads[i] = true
	}
	c := newHTTPClient(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	err := WaitDrained(ctx, c, "n1", WaitOptions{Marks: testMarks, Poll: Backoff{Base: time.Millisecond, Max: 5 * time.Millisecond}})

	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "No cluster leader") {
		t.Fatalf("err = %v, want the deadline with the last Nomad error", err)
	}
}

func TestIsTransient(t *testing.T) {
	c := newHTTPClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/node/leader":
			http.Error(w, "No cluster leader", http.StatusInternalServerError)
		case "/v1/node/gone":
			http.Error(w, "node not found", http.StatusNotFound)
		case "/v1/node/denied":
			http.Error(w, "Permission denied", http.StatusForbidden)
		}
	}))
	for id, want := range map[string]bool{"leader": true, "gone": false, "denied": false} {
		_, err := c.NodeInfo(context.Background(), id)
		if got := IsTransient(err); got != want {
			t.Errorf("IsTransient(%v) = %t, want %t", err, got, want)
		}
	}
	// A connection refused (nothing listens) is transient.
	dead, _ := NewClient(&api.Config{Address: "http://127.0.0.1:1"})
	if _, err := dead.NodeInfo(context.Background(), "x"); !IsTransient(err) {
		t.Errorf("IsTransient(%v) = false for a refused connection", err)
	}
	if IsTransient(context.Canceled) {
		t.Error("a cancelled context is not transient")
	}
}
