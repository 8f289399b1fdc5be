package localcloud

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
)

// DumpLogs writes the last lastN lines of every log file of the cloud (moto,
// Nomad server, clients, autoscalers) and the event timeline to w; tests call
// it when they fail.
func (c *Cloud) DumpLogs(w io.Writer, lastN int) {
	files, _ := filepath.Glob(filepath.Join(c.logsDir, "*.log"))
	sort.Strings(files)
	for _, f := range files {
		lines, total := tail(f, lastN)
		fmt.Fprintf(w, "==> %s (last %d of %d lines)\n", f, len(lines), total)
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
	fmt.Fprintln(w, "==> local cloud events")
	for _, e := range c.Events() {
		fmt.Fprintln(w, e.String())
	}
}

// tail returns the last n lines of a file and its line count.
func tail(path string, n int) ([]string, int) {
	f, err := os.Open(path)
	if err != nil {
		return []string{"(" + err.Error() + ")"}, 0
	}
	defer f.Close()
	ring := make([]string, 0, n)
	total := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		total++
		if n <= 0 {
			continue
		}
		if len(ring) == n {
			ring = append(ring[1:], sc.Text())
		} else {
			ring = append(ring, sc.Text())
		}
	}
	return ring, total
}
