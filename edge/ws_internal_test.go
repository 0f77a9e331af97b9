package edge

import (
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestListenerSendBuffer checks what Serve relies on: a connection
// accepted from a listener with SO_SNDBUF set inherits it (Linux doubles
// the value), so upgrades need no setsockopt of their own.
func TestListenerSendBuffer(t *testing.T) {
	sndbuf := func(t *testing.T, c *net.TCPConn) int {
		rc, err := c.SyscallConn()
		require.NoError(t, err)
		var v int
		var gerr error
		require.NoError(t, rc.Control(func(fd uintptr) {
			v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		}))
		require.NoError(t, gerr)
		return v
	}
	accept := func(t *testing.T, ln net.Listener) *net.TCPConn {
		client, err := net.Dial("tcp", ln.Addr().String())
		require.NoError(t, err)
		t.Cleanup(func() { _ = client.Close() })
		c, err := ln.Accept()
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c.(*net.TCPConn)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	require.True(t, limitListenerSendBuffer(ln, 48<<10))
	assert.Equal(t, 2*48<<10, sndbuf(t, accept(t, ln)))

	// A listener that is not TCP is left to the per-connection path.
	assert.False(t, limitListenerSendBuffer(struct{ net.Listener }{ln}, 48<<10))
}

func TestHeaderHasToken(t *testing.T) {
	f := func(value, token string, want bool) {
		t.Helper()
		assert.Equal(t, want, headerHasToken([]byte(value), token), "%q in %q", token, value)
	}
	f("Upgrade", "upgrade", true)
	f("keep-alive, Upgrade", "upgrade", true)
	f("keep-alive,upgrade ,x", "upgrade", true)
	f("keep-alive", "upgrade", false)
	f("upgrades", "upgrade", false)
	f("", "upgrade", false)
	f(",", "upgrade", false)
}
