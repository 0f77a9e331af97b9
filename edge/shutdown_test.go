package edge_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestGracefulShutdown drains a relay with clients connected: at once it
// stops taking work, after the drain delay it closes every client with
// 1012, and Shutdown returns nil within its deadline.
func TestGracefulShutdown(t *testing.T) {
	// The drain delay only has to outlast the handful of requests below.
	const drainDelay, deadline = 1500 * time.Millisecond, 5 * time.Second
	r := testutil.StartRelay(t)
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	ch := testutil.Channel("g")
	clients := make([]*testutil.Client, 3)
	for i := range clients {
		clients[i] = r.Dial(t, sub)
		clients[i].Subscribe(1, ch)
	}
	status, _ := r.Get(t, r.URL("/readyz"))
	require.Equal(t, http.StatusOK, status)

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- r.Server.Shutdown(ctx, drainDelay) }()
	require.Eventually(t, r.Server.Draining, testutil.Wait, time.Millisecond)

	// At once: not ready, no new work, but still alive.
	for _, url := range []string{r.URL("/readyz"), r.AdminURL + "/readyz"} {
		status, body := r.Get(t, url)
		assert.Equal(t, http.StatusServiceUnavailable, status, url)
		code, _ := apiError(t, body)
		assert.Equal(t, "unavailable", code, "the JSON error every other error has")
	}
	for _, url := range []string{r.URL("/healthz"), r.AdminURL + "/healthz"} {
		status, _ := r.Get(t, url)
		assert.Equal(t, http.StatusOK, status, url)
	}
	status, body := r.Post(t, "/v1/publish", pub, marshal(t, testutil.Publication{Channel: ch, Event: "E", Data: "x"}))
	assert.Equal(t, http.StatusServiceUnavailable, status, body)
	assert.Equal(t, "unavailable", decodeResult(t, body).Error.Code)
	status, body = r.Post(t, "/v1/publish/batch", pub, marshal(t, map[string]any{"messages": []testutil.Publication{{Channel: ch, Event: "E", Data: "x"}}}))
	assert.Equal(t, http.StatusServiceUnavailable, status, body)
	_, resp, err := r.DialRaw(t, sub, nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "unavailable", errorCode(t, resp))
	require.Less(t, time.Since(start), drainDelay, "the checks above took longer than the drain delay")

	for _, c := range clients {
		assert.Equal(t, uint16(actors.CloseRestarting), c.WaitClosed())
		assert.GreaterOrEqual(t, time.Since(start), drainDelay, "closed before the drain delay ended")
	}
	select {
	case err := <-done:
		assert.NoError(t, err)
		assert.Less(t, time.Since(start), deadline)
	case <-time.After(deadline + time.Second):
		t.Fatal("Shutdown did not return within its deadline")
	}
	assert.InDelta(t, len(clients), r.Metric(t, `realtime_connections_closed_total{reason="shutdown"}`), 0)
	assert.InDelta(t, 0, r.Metric(t, "realtime_connections"), 0)
	assert.InDelta(t, 1, r.Metric(t, `realtime_connections_rejected_total{reason="draining"}`), 0)
	assert.InDelta(t, 2, r.Metric(t, `realtime_publishes_total{result="unavailable"}`), 0)
}

// TestShutdownWithoutClients returns at once when there is nothing to drain.
func TestShutdownWithoutClients(t *testing.T) {
	r := testutil.StartRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	require.NoError(t, r.Server.Shutdown(ctx, 0))
	assert.True(t, r.Server.Draining())
}

// TestShutdownBeforeServe covers a signal that arrives before Serve has
// started: Serve must not then accept connections forever.
func TestShutdownBeforeServe(t *testing.T) {
	key, err := auth.GenerateKey("test")
	require.NoError(t, err)
	keys, err := auth.NewKeyring(key)
	require.NoError(t, err)
	srv, err := edge.New(edge.Config{Keys: keys, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx, 0))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		assert.NoError(t, err)
	case <-time.After(testutil.Wait):
		_ = ln.Close()
		t.Fatal("Serve kept accepting after Shutdown")
	}
}

// TestShutdownCutsHalfSentRequests: clients that sent half a request and
// stopped do not hold Shutdown for the read timeout (here an hour): their
// reads are cut and they are told that the relay is draining.
func TestShutdownCutsHalfSentRequests(t *testing.T) {
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.ReadTimeout = time.Hour })
	dial := func(request string) (net.Conn, *bufio.Reader) {
		nc, err := net.DialTimeout("tcp", r.Addr, testutil.Wait)
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		require.NoError(t, nc.SetDeadline(time.Now().Add(testutil.Wait)))
		_, err = io.WriteString(nc, request)
		require.NoError(t, err)
		return nc, bufio.NewReader(nc)
	}
	// Half a head, after a whole request: fasthttp answers the first when
	// it has to wait for the rest of the second, so the answer shows that
	// it is waiting.
	_, head := dial("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nPOST /v1/publish HTTP/1.1\r\nHost: x\r\n")
	resp, err := http.ReadResponse(head, nil)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	// Half a body: "100 Continue" shows that fasthttp is reading it.
	nc, body := dial("POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
		"Authorization: Bearer " + r.PublishToken(t) + "\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n")
	line, err := body.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "HTTP/1.1 100 Continue\r\n", line)
	_, err = body.ReadString('\n')
	require.NoError(t, err)
	_, err = io.WriteString(nc, `{"channel":"`)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	require.NoError(t, r.Server.Shutdown(ctx, 0), "not held by the half-sent requests")
	for name, br := range map[string]*bufio.Reader{"half a head": head, "half a body": body} {
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err, name)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err, name)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, name+": "+string(b))
		code, _ := apiError(t, string(b))
		assert.Equal(t, "unavailable", code, name)
	}
}

// TestShutdownCutsHalfHandshakes: a TLS client that sent half a handshake
// and stopped does not hold Shutdown for the read timeout (here an hour).
func TestShutdownCutsHalfHandshakes(t *testing.T) {
	srv := serveTLS(t, func(cfg *edge.Config) { cfg.ReadTimeout = time.Hour })
	half, err := net.DialTimeout("tcp", srv.Addr, testutil.Wait)
	require.NoError(t, err)
	defer half.Close()
	require.NoError(t, half.SetDeadline(time.Now().Add(testutil.Wait)))
	_, err = half.Write([]byte{0x16, 0x03, 0x01, 0x01, 0x00, 0x01}) // a 256-byte handshake record: its head and first byte
	require.NoError(t, err)
	// A whole request after it: answered, so the listener accepted the
	// half handshake's connection before it.
	client := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{TLSClientConfig: srv.ClientConf}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + srv.Addr + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	require.NoError(t, srv.stop(ctx), "not held by the half handshake")
	_, err = io.ReadAll(half)
	require.NoError(t, err, "closed, not timed out")
}

// TestShutdownTwice calls Shutdown again while the first call drains and
// after it has returned: a second SIGTERM must not panic (protoactor's
// system cannot be stopped twice). A call whose own deadline passes first
// returns that; the others return the first call's result.
func TestShutdownTwice(t *testing.T) {
	r := testutil.StartRelay(t)
	c := r.Dial(t, r.SubscribeToken(t))
	c.Subscribe(1, testutil.Channel("g"))

	// The first call drains until its context is cancelled.
	firstCtx, cancelFirst := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { first <- r.Server.Shutdown(firstCtx, time.Hour) }()
	require.Eventually(t, r.Server.Draining, testutil.Wait, time.Millisecond)

	impatient, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, r.Server.Shutdown(impatient, 0), context.DeadlineExceeded, "its own deadline: the first is still draining")

	ctx, cancel2 := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel2()
	second := make(chan error, 1)
	go func() { second <- r.Server.Shutdown(ctx, 0) }()
	cancelFirst()
	var err error
	select {
	case err = <-first:
		require.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the first Shutdown did not return")
	}
	assert.Equal(t, err, <-second, "the first's result")
	assert.Equal(t, err, r.Server.Shutdown(ctx, 0), "after the first has returned")
	assert.Equal(t, uint16(actors.CloseRestarting), c.WaitClosed())
}
