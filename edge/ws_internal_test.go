package edge

import (
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/sockettest"
)

// TestListenerSendBuffer checks what Serve relies on: a connection
// accepted from a listener with SO_SNDBUF set inherits it (Linux doubles
// the value), so upgrades need no setsockopt of their own.
func TestListenerSendBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	require.True(t, limitListenerSendBuffer(ln, 48<<10))
	server, _ := sockettest.Accept(t, ln)
	assert.Equal(t, 2*48<<10, sockettest.IntOption(t, server, syscall.SOL_SOCKET, syscall.SO_SNDBUF))

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
