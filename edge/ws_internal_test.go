package edge

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

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

func TestSiteLimiter(t *testing.T) {
	l := newSiteLimiter(10) // 10/s, a burst of 20
	t0 := time.Unix(1000, 0)
	assert.True(t, l.allow("a", 20, t0))
	assert.False(t, l.allow("a", 1, t0), "the burst is spent")
	assert.True(t, l.allow("a", 5, t0.Add(500*time.Millisecond)), "5 tokens back after 0.5 s")
	assert.False(t, l.allow("a", 1, t0.Add(500*time.Millisecond)))
	assert.True(t, l.allow("b", 20, t0), "sites are apart")

	// Past maxIdleBuckets sites, a new one sweeps the idle buckets, at most
	// once a second.
	for i := range maxIdleBuckets {
		l.allow("s"+strconv.Itoa(i), 1, t0)
	}
	l.allow("late", 1, t0.Add(10*time.Second))
	assert.Less(t, len(l.sites), 10, "idle buckets dropped")
	for i := range maxIdleBuckets {
		l.allow("t"+strconv.Itoa(i), 20, t0.Add(10*time.Second)) // busy: spent
	}
	n := len(l.sites)
	l.allow("later", 1, t0.Add(10500*time.Millisecond))
	assert.Equal(t, n+1, len(l.sites), "no second sweep within the second")
}
