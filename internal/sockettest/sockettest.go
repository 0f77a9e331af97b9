// Package sockettest holds test helpers for real loopback TCP sockets: an
// accepted connection with its client end, and socket options read back.
// It imports nothing of the relay, so that tests inside package edge can
// use it (internal/testutil imports edge). Safe for concurrent use.
package sockettest

import (
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// Accept dials ln and returns the connection it accepts and the client's
// end; both are closed when the test ends.
func Accept(t testing.TB, ln net.Listener) (server, client *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	s, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

// Pair returns both ends of a fresh loopback TCP connection.
func Pair(t testing.TB) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return Accept(t, ln)
}

// IntOption reads an integer socket option of c, a connection or a
// listener (getsockopt).
func IntOption(t testing.TB, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	require.NoError(t, err)
	var v int
	var gerr error
	require.NoError(t, rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), level, opt) }))
	require.NoError(t, gerr)
	return v
}
