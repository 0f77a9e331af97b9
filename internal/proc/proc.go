// Package proc answers questions about other processes from Linux's /proc.
// It holds no state; its functions are safe from any goroutine.
package proc

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// ListensOn reports whether process pid holds the listening TCP socket on
// addr's port: the socket's inode from /proc/net/tcp and /proc/net/tcp6,
// among the links of /proc/<pid>/fd. A process that starts a child on a
// port that was free a moment ago uses it to tell the child's answer from
// that of another process that took the port first. Where /proc cannot
// tell (not Linux), it says yes; of a process it cannot see (one that has
// exited), no.
func ListensOn(pid int, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return true
	}
	// Lines are "sl local_address rem_address st ... inode ...", with the
	// local address as hex IP:PORT and st 0A for LISTEN.
	suffix := fmt.Sprintf(":%04X", p)
	inodes := make(map[string]bool)
	read := false
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		read = true
		for line := range strings.Lines(string(b)) {
			f := strings.Fields(line)
			if len(f) > 9 && strings.HasSuffix(f[1], suffix) && f[3] == "0A" {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if !read {
		return true
	}
	fds := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(fds)
	if err != nil {
		return false // gone (a child that could not listen exits at once), or not ours to see
	}
	for _, e := range ents {
		if link, err := os.Readlink(fds + "/" + e.Name()); err == nil && inodes[link] {
			return true
		}
	}
	return false
}
