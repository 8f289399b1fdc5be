package localcloud

import (
	"fmt"
	"net"
	"strconv"
	"sync"
)

// handedOut remembers every port this process has handed out, so that two
// services started close together never receive the same port even if the
// kernel would offer it twice.
var (
	portsMu   sync.Mutex
	handedOut = map[int]bool{}
)

// freePort returns a loopback TCP port that is currently free for both TCP
// and UDP (Serf uses both). The port is not reserved: the caller starts a
// process on it soon and retries with new ports if that process fails to bind.
func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var lastErr error
	for range 50 {
		l, err := listenFresh()
		if err != nil {
			lastErr = err
			continue
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			lastErr = err
			continue
		}
		_ = u.Close()
		handedOut[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("find a free port on 127.0.0.1: %v", lastErr)
}

// listenLoopback listens on a free loopback TCP port that was never handed
// out by freePort (a process may be about to bind such a port), and marks it
// handed out.
func listenLoopback() (net.Listener, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	var lastErr error
	for range 50 {
		l, err := listenFresh()
		if err != nil {
			lastErr = err
			continue
		}
		handedOut[l.Addr().(*net.TCPAddr).Port] = true
		return l, nil
	}
	return nil, fmt.Errorf("listen on a free port of 127.0.0.1: %v", lastErr)
}

// listenFresh listens on a free loopback TCP port that was never handed out;
// portsMu must be held.
func listenFresh() (net.Listener, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if handedOut[l.Addr().(*net.TCPAddr).Port] {
		_ = l.Close()
		return nil, fmt.Errorf("port %d was handed out already", l.Addr().(*net.TCPAddr).Port)
	}
	return l, nil
}

// freePorts returns n distinct free ports.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		ports = append(ports, p)
	}
	return ports, nil
}
