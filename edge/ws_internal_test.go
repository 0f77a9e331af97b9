package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/sockettest"
)

// TestTuneListener checks what Serve relies on: a connection accepted from
// a tuned listener inherits its SO_SNDBUF (Linux doubles the value), so
// upgrades need no setsockopt of their own; and with TCP_DEFER_ACCEPT,
// Accept returns a connection only once it has sent something.
func TestTuneListener(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer ln.Close()
	require.True(t, tuneListener(ln, 48<<10))

	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	// The kernel holds a silent connection for deferAcceptSeconds (1 s);
	// a tenth of that passes with nothing accepted.
	require.NoError(t, ln.SetDeadline(time.Now().Add(100*time.Millisecond)))
	_, err = ln.Accept()
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "a connection that sent nothing was accepted")

	_, err = client.Write([]byte("G"))
	require.NoError(t, err)
	require.NoError(t, ln.SetDeadline(time.Now().Add(10*time.Second)))
	server, err := ln.AcceptTCP()
	require.NoError(t, err)
	defer server.Close()
	assert.Equal(t, 2*48<<10, sockettest.IntOption(t, server, syscall.SOL_SOCKET, syscall.SO_SNDBUF))

	// A listener that is not TCP is left to the per-connection path.
	assert.False(t, tuneListener(struct{ net.Listener }{ln}, 48<<10))
}

// TestListenTunesBeforeItListens: a client that connects between Listen
// and Serve (a test's first client, a load balancer's first probe) gets a
// connection with the listener's SO_SNDBUF, not the kernel's autotuned
// megabytes, which would let a client that stopped reading go unnoticed
// that much longer.
func TestListenTunesBeforeItListens(t *testing.T) {
	s := newTestServer(t, Config{SocketSendBufferBytes: 48 << 10})
	ln, err := s.Listen("127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	_, err = client.Write([]byte("G")) // past TCP_DEFER_ACCEPT
	require.NoError(t, err)
	require.NoError(t, ln.(*net.TCPListener).SetDeadline(time.Now().Add(10*time.Second)))
	server, err := ln.(*net.TCPListener).AcceptTCP()
	require.NoError(t, err)
	defer server.Close()
	assert.Equal(t, 2*48<<10, sockettest.IntOption(t, server, syscall.SOL_SOCKET, syscall.SO_SNDBUF))
	assert.Positive(t, sockettest.IntOption(t, ln.(*net.TCPListener), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT))
}

// TestShutdownCutsALinger: a connection lingering after a refused request
// (its client neither sends the rest nor closes) does not outlive Shutdown
// for the linger's time, here an hour: Shutdown's cut ends it as any read,
// and the socket is closed.
func TestShutdownCutsALinger(t *testing.T) {
	defer func(d time.Duration) { lingerTimeout = d }(lingerTimeout)
	lingerTimeout = time.Hour
	s := newTestServer(t, Config{MaxDataBytes: 1024})
	ln, err := s.Listen("127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()

	client, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer client.Close()
	require.NoError(t, client.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = client.Write([]byte("POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"))
	require.NoError(t, err)
	br := bufio.NewReader(client)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	_, _ = io.Copy(io.Discard, resp.Body)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx, 0))
	require.NoError(t, <-served)
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the relay half-closed")
	// A lingering relay reads and discards what the client still sends; a
	// closed socket answers it with a reset, which fails a later write.
	assert.Eventually(t, func() bool {
		_, err := client.Write([]byte("x"))
		return err != nil
	}, 10*time.Second, time.Millisecond, "the lingering connection was closed")
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

// TestDetachment: a detached connection outlives fasthttp's Close and
// deadline resets, which it makes before a hijack handler runs, and whose
// zero deadline would undo a WebSocket's own; one not detached is closed.
func TestDetachment(t *testing.T) {
	server, client := sockettest.Pair(t)
	var served servedConns
	d := &detachableConn{Conn: server}
	served.add(&d.detachment, server)
	require.NoError(t, d.Close())
	_, err := client.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "not detached: closed")

	server, client = sockettest.Pair(t)
	d = &detachableConn{Conn: server}
	served.add(&d.detachment, server)
	nc := d.detach()
	require.NoError(t, nc.SetReadDeadline(longAgo), "the WebSocket's own deadline (a dead peer's)")
	require.NoError(t, d.SetDeadline(time.Time{}), "fasthttp's reset before the hijack")
	require.NoError(t, d.SetReadDeadline(time.Time{}))
	require.NoError(t, d.SetWriteDeadline(time.Time{}))
	require.NoError(t, d.Close(), "fasthttp's Close after the hijack handler")
	_, err = client.Write([]byte("x"))
	require.NoError(t, err)
	_, err = nc.Read(make([]byte, 1))
	require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the WebSocket's deadline kept")
	require.NoError(t, nc.SetReadDeadline(time.Time{}))
	_, err = nc.Write([]byte("x"))
	require.NoError(t, err, "still open for the WebSocket")
	_, err = client.Read(make([]byte, 1))
	require.NoError(t, err)
}

// TestServeTLSTunesTheTCPListener: ServeTLS sets the listener's options on
// its TCP socket before TLS hides it, so TLS connections need no
// setsockopt of their own either.
func TestServeTLSTunesTheTCPListener(t *testing.T) {
	s := newTestServer(t, Config{})
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.ServeTLS(ln, &tls.Config{MinVersion: tls.VersionTLS12}) }()

	require.Eventually(t, func() bool { return sockettest.IntOption(t, ln, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT) > 0 },
		10*time.Second, time.Millisecond, "TCP_DEFER_ACCEPT on the TLS listener's socket")
	assert.Equal(t, 2*s.cfg.SocketSendBufferBytes, sockettest.IntOption(t, ln, syscall.SOL_SOCKET, syscall.SO_SNDBUF))
	assert.False(t, s.sendBufferPerConn.Load(), "no setsockopt per connection")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, s.Shutdown(ctx, 0))
	require.NoError(t, <-served)
}

// TestCutReadsOutlastLaterDeadlines: once Shutdown cut the reads of served
// connections, a deadline fasthttp sets later (it sets one before every
// request) does not undo the cut, and a connection accepted after the cut
// is cut too.
func TestCutReadsOutlastLaterDeadlines(t *testing.T) {
	var served servedConns
	before, client := sockettest.Pair(t)
	d := &detachableConn{Conn: before}
	served.add(&d.detachment, before)
	served.cutReads()
	after, lateClient := sockettest.Pair(t)
	late := &detachableConn{Conn: after}
	served.add(&late.detachment, after)
	for name, c := range map[string]*detachableConn{"served at the cut": d, "accepted after it": late} {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Hour)), name)
		require.NoError(t, c.SetDeadline(time.Now().Add(time.Hour)), name)
	}
	for name, c := range map[string]net.Conn{"served at the cut": client, "accepted after it": lateClient} {
		_, err := c.Write([]byte("x"))
		require.NoError(t, err, name)
	}
	for name, c := range map[string]*detachableConn{"served at the cut": d, "accepted after it": late} {
		// Not the byte the client sent: a read whose deadline passed
		// fails before it looks for data.
		_, err := c.Read(make([]byte, 1))
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, name)
	}
}

// newTestServer builds a Server of cfg with a fresh key and no logging
// (the tests in package edge cannot use testutil, which imports edge),
// shut down when the test ends if the test did not.
func newTestServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	key, err := auth.GenerateKey("test")
	require.NoError(t, err)
	cfg.Keys, err = auth.NewKeyring(key)
	require.NoError(t, err)
	cfg.Logger = slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		if !s.Draining() { // not shut down by the test
			assert.NoError(t, s.Shutdown(context.Background(), 0))
		}
	})
	return s
}
