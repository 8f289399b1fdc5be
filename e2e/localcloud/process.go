package localcloud

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procKey identifies one process: a PID plus its start time (in clock ticks
// since boot), so that a reused PID is never mistaken for the original.
type procKey struct {
	pid   int
	start uint64
}

// procStat is the part of /proc/<pid>/stat that the local cloud needs.
type procStat struct {
	procKey
	ppid  int
	state byte
}

// readStat parses /proc/<pid>/stat. The command name may contain spaces and
// parentheses, so the fields are read after the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0]=state f[1]=ppid ... f[19]=starttime (field 22 of the whole line).
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat ppid: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return procStat{procKey: procKey{pid: pid, start: start}, ppid: ppid, state: f[0][0]}, nil
}

// listProcs reads every process of the host from /proc.
func listProcs() []procStat {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out = append(out, st)
		}
	}
	return out
}

// treeOf returns the processes in the trees rooted at roots (roots included,
// when still present), found by walking parent PIDs in one /proc snapshot.
func treeOf(roots []procKey) []procKey {
	procs := listProcs()
	children := map[int][]procStat{}
	byPID := map[int]procStat{}
	for _, p := range procs {
		children[p.ppid] = append(children[p.ppid], p)
		byPID[p.pid] = p
	}
	seen := map[int]bool{}
	var out []procKey
	queue := []int{}
	for _, r := range roots {
		if p, ok := byPID[r.pid]; ok && p.start == r.start && !seen[r.pid] {
			seen[r.pid] = true
			out = append(out, p.procKey)
			queue = append(queue, r.pid)
		}
	}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if seen[c.pid] {
				continue
			}
			seen[c.pid] = true
			out = append(out, c.procKey)
			queue = append(queue, c.pid)
		}
	}
	return out
}

// keyOf returns the identity of a running PID.
func keyOf(pid int) (procKey, bool) {
	st, err := readStat(pid)
	if err != nil {
		return procKey{}, false
	}
	return st.procKey, true
}

// alive reports whether the process still exists, is the same process (start
// time) and is not a zombie.
func (k procKey) alive() bool {
	st, err := readStat(k.pid)
	if err != nil || st.start != k.start {
		return false
	}
	return st.state != 'Z' && st.state != 'X'
}

// ProcessTree returns pid and the PIDs of all its descendants (a /proc
// parent-PID walk), or nil when pid does not exist.
func ProcessTree(pid int) []int {
	k, ok := keyOf(pid)
	if !ok {
		return nil
	}
	var out []int
	for _, p := range treeOf([]procKey{k}) {
		out = append(out, p.pid)
	}
	return out
}

// Alive reports whether a process with this PID exists and is not a zombie.
func Alive(pid int) bool {
	k, ok := keyOf(pid)
	return ok && k.alive()
}

// killTree stops the whole process tree rooted at root: it collects every
// descendant before signalling (children of Nomad may live in other process
// groups or sessions and are re-parented once their parent dies), sends
// SIGTERM, waits up to grace (collecting processes spawned meanwhile), then
// sends SIGKILL to the rest and waits for them to go.
func killTree(root procKey, grace time.Duration) ([]string, error) {
	return killTreeRootFirst(root, 0, grace)
}

// killTreeRootFirst is killTree that, when rootFirst > 0, first sends
// SIGTERM to the root alone and gives it up to rootFirst to stop its own
// children (the autoscaler agent shuts its plugins down, which removes
// their sockets in /tmp); whatever is left of the tree, collected before
// and meanwhile, is then stopped as killTree does.
func killTreeRootFirst(root procKey, rootFirst, grace time.Duration) ([]string, error) {
	known := map[procKey]bool{}
	collect := func() {
		var roots []procKey
		roots = append(roots, root)
		for k := range known {
			roots = append(roots, k)
		}
		for _, k := range treeOf(roots) {
			known[k] = true
		}
	}
	signalAll := func(sig syscall.Signal) {
		for k := range known {
			if k.alive() {
				_ = syscall.Kill(k.pid, sig)
			}
		}
	}
	anyAlive := func() bool {
		for k := range known {
			if k.alive() {
				return true
			}
		}
		return false
	}
	wait := func(d time.Duration, sig syscall.Signal) bool {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			collect()
			if !anyAlive() {
				return true
			}
			signalAll(sig) // new arrivals get the same treatment
			time.Sleep(100 * time.Millisecond)
		}
		collect()
		return !anyAlive()
	}

	collect()
	if rootFirst > 0 && root.alive() {
		_ = syscall.Kill(root.pid, syscall.SIGTERM)
		deadline := time.Now().Add(rootFirst)
		for time.Now().Before(deadline) && root.alive() {
			time.Sleep(100 * time.Millisecond)
			collect()
		}
		collect()
	}
	keys := make([]procKey, 0, len(known))
	for k := range known {
		keys = append(keys, k)
	}
	cgroups := cgroupDirsOf(keys)
	// go-plugin servers (the agent's plugins, a Nomad client's logmon and
	// executors) die of SIGTERM without removing their /tmp/pluginNNNN
	// sockets: note them now, remove them once the tree is gone.
	sockets := pluginSockets(keys)
	signalAll(syscall.SIGTERM)
	if wait(grace, syscall.SIGTERM) {
		removeSockets(sockets)
		return cgroups, nil
	}
	signalAll(syscall.SIGKILL)
	if wait(5*time.Second, syscall.SIGKILL) {
		removeSockets(sockets)
		return cgroups, nil
	}
	var left []string
	for k := range known {
		if k.alive() {
			left = append(left, strconv.Itoa(k.pid))
		}
	}
	return cgroups, fmt.Errorf("processes still alive after SIGKILL: %s", strings.Join(left, ","))
}

// pluginSockets returns the paths of the go-plugin sockets
// (os.TempDir()/pluginNNNN) that the processes hold open, found through
// their file descriptors and /proc/net/unix.
func pluginSockets(keys []procKey) []string {
	inodes := map[string]bool{}
	for _, k := range keys {
		dir := "/proc/" + strconv.Itoa(k.pid) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			link, err := os.Readlink(dir + "/" + e.Name())
			if ino, ok := strings.CutPrefix(link, "socket:["); err == nil && ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	prefix := filepath.Join(os.TempDir(), "plugin")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(line)
		if len(f) >= 8 && inodes[f[6]] && strings.HasPrefix(f[7], prefix) && !strings.Contains(f[7][len(prefix):], "/") {
			out = append(out, f[7])
		}
	}
	return out
}

// removeSockets removes the socket files left by stopped processes.
func removeSockets(paths []string) {
	for _, p := range paths {
		if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(p)
		}
	}
}

// spawnReq asks the spawner thread to start a command.
type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)

// startCmd starts cmd from one OS thread that never exits. Children get
// Pdeathsig=SIGKILL, which the kernel sends when the *thread* that forked them
// dies: keeping that thread alive for the life of the process makes the signal
// mean "the test binary died" (for example a test timeout), never "some
// goroutine's thread was recycled".
func startCmd(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives forever
			for r := range spawnCh {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // keep terminal signals (Ctrl-C) for us to handle
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	r := spawnReq{cmd: cmd, errc: make(chan error, 1)}
	spawnCh <- r
	return <-r.errc
}

// process is one child process the local cloud started, with its output in a
// log file.
type process struct {
	name    string
	cmd     *exec.Cmd
	key     procKey
	logPath string
	logFile *os.File
	done    chan struct{}
	waitErr error

	// rootFirst, when set, makes stop signal the process alone first and
	// wait up to that long before stopping its tree (killTreeRootFirst).
	rootFirst time.Duration

	stopOnce sync.Once
	stopErr  error
}

// startProcess runs bin with args, stdout and stderr appended to logPath.
func startProcess(name, bin string, args []string, dir, logPath string, env []string) (*process, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log file for %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = append(env, ownerEnv+"="+ownerTag())
	if err := startCmd(cmd); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, logFile: lf, done: make(chan struct{})}
	p.key, _ = keyOf(cmd.Process.Pid)
	if p.key.pid == 0 {
		p.key = procKey{pid: cmd.Process.Pid}
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process ID.
func (p *process) pid() int { return p.key.pid }

// exited reports whether the process has exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitErr returns the result of Wait once the process has exited.
func (p *process) exitErr() error {
	select {
	case <-p.done:
		return p.waitErr
	default:
		return nil
	}
}

// stop terminates the process and its whole tree (idempotent).
func (p *process) stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		var err error
		if p.key.start != 0 {
			var cgroups []string
			cgroups, err = killTreeRootFirst(p.key, p.rootFirst, grace)
			defer removeTaskCgroups(cgroups) // once the processes are reaped
		} else if !p.exited() {
			_ = p.cmd.Process.Kill()
		}
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			err = errors.Join(err, fmt.Errorf("%s (pid %d) was not reaped", p.name, p.pid()))
		}
		_ = p.logFile.Close()
		if err != nil {
			p.stopErr = fmt.Errorf("stop %s: %w", p.name, err)
		}
	})
	return p.stopErr
}
