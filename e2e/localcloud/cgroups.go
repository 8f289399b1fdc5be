package localcloud

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cgroupDirsOf returns the cgroup directories (below /sys/fs/cgroup) that
// the processes belong to, read from /proc/<pid>/cgroup.
func cgroupDirsOf(keys []procKey) []string {
	set := map[string]bool{}
	for _, k := range keys {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(k.pid) + "/cgroup")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 || parts[2] == "/" || parts[2] == "" {
				continue
			}
			path := filepath.Clean(parts[2])
			var bases []string
			if parts[1] == "" { // cgroup v2
				bases = []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}
			} else {
				bases = append(bases, filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(parts[1], "name=")))
				for _, ctl := range strings.Split(parts[1], ",") {
					bases = append(bases, filepath.Join("/sys/fs/cgroup", strings.TrimPrefix(ctl, "name=")))
				}
			}
			for _, b := range bases {
				d := filepath.Join(b, path)
				if st, err := os.Stat(d); err == nil && st.IsDir() {
					set[d] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for d := range set {
		out = append(out, d)
	}
	return out
}

// removeTaskCgroups removes, deepest first, the cgroup directories that
// Nomad created for the stopped processes (v1 freezer cgroups of raw_exec
// tasks live under /nomad/<uuid> whatever the cgroup_parent, for example).
// Only directories below a "nomad" or "localcloud-" cgroup are touched, and
// rmdir fails on a cgroup that still has processes, so this is best effort
// and never disturbs a live cgroup.
func removeTaskCgroups(dirs []string) {
	var mine []string
	for _, d := range dirs {
		if strings.Contains(d, "/nomad/") || strings.Contains(d, "/localcloud-") {
			mine = append(mine, d)
		}
	}
	sort.Slice(mine, func(i, j int) bool { return len(mine[i]) > len(mine[j]) })
	// A cgroup stays busy until its exited processes are reaped, which for
	// orphans is up to init: retry for a short while.
	for try := 0; try < 20 && len(mine) > 0; try++ {
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		var busy []string
		for _, d := range mine {
			if err := syscall.Rmdir(d); errors.Is(err, syscall.EBUSY) {
				busy = append(busy, d)
			}
		}
		mine = busy
	}
}
