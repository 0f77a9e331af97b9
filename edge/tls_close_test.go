package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestTLSStalledClientClosedAtCloseTimeout: over TLS, a client that
// stopped reading is closed within the close timeout, as over TCP, so that
// Shutdown is not held by it. crypto/tls's own Close would first try to
// write a close_notify alert for 5 s to a client whose buffers are full.
func TestTLSStalledClientClosedAtCloseTimeout(t *testing.T) {
	srv := serveTLS(t, func(cfg *edge.Config) { cfg.Actors.CloseTimeout = 200 * time.Millisecond })
	addr, clientConf, tokens := srv.Addr, srv.ClientConf, srv.Tokens
	ch := testutil.Channel("stalled")

	// A WSS client that subscribes and then never reads, with a small
	// receive buffer.
	stalled := dialRawTLS(t, srv, 4<<10, tokens.SubscribeToken(t))
	stalled.Send(`{"op":"sub","id":1,"ch":"` + ch + `"}`)

	// About 400 KiB for it: more than its socket buffers hold, less than
	// its 1 MiB queue, so it is not a slow consumer yet.
	client := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{TLSClientConfig: clientConf}}
	defer client.CloseIdleConnections()
	live, _, err := testutil.DialURL(t, "wss://"+addr+"/v1/ws?token="+tokens.SubscribeToken(t), nil, clientConf)
	require.NoError(t, err)
	live.Subscribe(1, ch)
	srv.waitMetric(t, "realtime_subscriptions", 2)
	pub, data := tokens.PublishToken(t), strings.Repeat("x", 32<<10)
	for range 12 {
		publishTLS(t, client, addr, pub, ch, data)
		live.NextOp("msg") // the channel has written it to both
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	assert.NoError(t, srv.stop(ctx), "with a close timeout of 200 ms, well within 4 s")
}

// publishTLS publishes data to ch over HTTPS.
func publishTLS(t *testing.T, client *http.Client, addr, token, ch, data string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "https://"+addr+"/v1/publish",
		strings.NewReader(`{"channel":"`+ch+`","event":"E","data":"`+data+`"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, body.String())
}

// TestTLSSlowReaderGetsEverything: over TLS, as over TCP, what a client's
// socket cannot take at once is written later, intact and in order, while
// a client that keeps up is not held up. The relay writes TLS records with
// the non-blocking writes it uses for plain frames (recordConn), which
// count a frame the kernel refused in part: the count proves that path
// ran, which before it was never taken over TLS.
func TestTLSSlowReaderGetsEverything(t *testing.T) {
	srv := serveTLS(t, func(cfg *edge.Config) {
		cfg.SocketSendBufferBytes = 16 << 10
		cfg.Actors.SendQueueBytes = 64 << 20
	})
	ch := testutil.Channel("slow-tls")
	// Not read until every message is published: 1.3 MiB, far more than
	// the kernel buffers hold.
	stalled := dialRawTLS(t, srv, 0, srv.Tokens.SubscribeToken(t))
	stalled.Send(`{"op":"sub","id":1,"ch":"` + ch + `"}`)
	live, _, err := testutil.DialURL(t, "wss://"+srv.Addr+"/v1/ws?token="+srv.Tokens.SubscribeToken(t), nil, srv.ClientConf)
	require.NoError(t, err)
	live.Subscribe(1, ch)
	srv.waitMetric(t, "realtime_subscriptions", 2)

	client := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{TLSClientConfig: srv.ClientConf}}
	defer client.CloseIdleConnections()
	pub := srv.Tokens.PublishToken(t)
	requireSlowReaderGetsEverything(t, func(data string) { publishTLS(t, client, srv.Addr, pub, ch, data) }, live, stalled)
	assert.Positive(t, srv.metric(t, "realtime_socket_writes_blocked_total"), "no write went the non-blocking way, or none had to wait")
}

// dialRawTLS upgrades a WSS connection whose reads the test makes itself,
// with a receive buffer of readBuffer bytes (0: the kernel's default).
func dialRawTLS(t *testing.T, srv *tlsServer, readBuffer int, token string) *testutil.RawConn {
	t.Helper()
	return testutil.UpgradeRaw(t, tls.Client(testutil.DialTCP(t, srv.Addr, readBuffer), srv.ClientConf), srv.Addr, token)
}

// Over TLS, as over TCP, a silent client is closed as a dead peer: the
// keepalive moves the read deadline of the TLS connection, under which
// crypto/tls is reading.
func TestTLSDeadPeerRemoved(t *testing.T) {
	const keepalive = 300 * time.Millisecond
	srv := serveTLS(t, func(cfg *edge.Config) {
		cfg.PingInterval = time.Hour
		cfg.KeepaliveTimeout = keepalive
	})
	start := time.Now()
	dialRawTLS(t, srv, 0, srv.Tokens.SubscribeToken(t))
	srv.waitMetric(t, "realtime_connections", 1)
	srv.waitMetric(t, "realtime_connections", 0)
	assert.GreaterOrEqual(t, time.Since(start), keepalive, "closed before its keepalive timeout")
	assert.InDelta(t, 1, srv.metric(t, `realtime_connections_closed_total{reason="dead_peer"}`), 0)
}
