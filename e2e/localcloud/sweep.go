package localcloud

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ownerEnv is set on every process the local cloud starts (and inherited by
// Nomad's logmon and executor processes): "<pid>:<start time>" of the Go
// process that owns the cloud. If that process dies without Close (test
// timeout, kill -9), the next Start finds and stops what it left behind.
const ownerEnv = "LOCALCLOUD_OWNER"

var (
	ownerOnce sync.Once
	ownerVal  string
)

// ownerTag identifies this process for ownerEnv.
func ownerTag() string {
	ownerOnce.Do(func() {
		k, _ := keyOf(os.Getpid())
		ownerVal = fmt.Sprintf("%d:%d", k.pid, k.start)
	})
	return ownerVal
}

// ownerOf returns the owner key recorded in a process's environment.
func ownerOf(pid int) (procKey, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return procKey{}, false
	}
	prefix := []byte(ownerEnv + "=")
	for _, kv := range bytes.Split(b, []byte{0}) {
		if !bytes.HasPrefix(kv, prefix) {
			continue
		}
		p, s, ok := strings.Cut(string(kv[len(prefix):]), ":")
		if !ok {
			return procKey{}, false
		}
		pid, err1 := strconv.Atoi(p)
		start, err2 := strconv.ParseUint(s, 10, 64)
		if err1 != nil || err2 != nil {
			return procKey{}, false
		}
		return procKey{pid: pid, start: start}, true
	}
	return procKey{}, false
}

var linkRe = regexp.MustCompile(`^lc([0-9]+)-[0-9]+$`)

// sweepOrphans stops the processes, and removes the data-dir links, mounts
// and cgroups, that local clouds of processes that died without Close left
// behind. Things owned by live processes (other tests running now) are never
// touched.
func sweepOrphans() []string {
	var did []string
	self := os.Getpid()
	var roots []procKey
	for _, p := range listProcs() {
		if p.pid == self {
			continue
		}
		owner, ok := ownerOf(p.pid)
		if !ok || owner.alive() {
			continue
		}
		roots = append(roots, p.procKey)
	}
	var wg sync.WaitGroup
	for _, r := range roots {
		did = append(did, fmt.Sprintf("stopped orphaned process %d", r.pid))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cg, _ := killTree(r, 2*time.Second)
			removeTaskCgroups(cg)
		}()
	}
	wg.Wait()

	deadOwner := func(pid string) bool {
		_, err := os.Stat("/proc/" + pid)
		return os.IsNotExist(err)
	}
	links, _ := filepath.Glob(filepath.Join(os.TempDir(), "lc*-*"))
	for _, l := range links {
		m := linkRe.FindStringSubmatch(filepath.Base(l))
		if m == nil || !deadOwner(m[1]) {
			continue
		}
		target, err := os.Readlink(l)
		if err != nil {
			continue // not a link of ours
		}
		if err := removeDataDir(target); err == nil {
			did = append(did, "removed orphaned client data dir "+target)
		}
		_ = os.Remove(l)
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/localcloud-*")
	for _, d := range cgroups {
		name := filepath.Base(d)
		pid, _, ok := strings.Cut(strings.TrimPrefix(name, "localcloud-"), "-")
		if ok && deadOwner(pid) {
			removeCgroups(name)
			did = append(did, "removed orphaned cgroup "+d)
		}
	}
	return did
}
