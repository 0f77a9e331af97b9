package edge_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
	"github.com/realtime-relay/realtime/internal/wsframe"
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
	tc, err := net.DialTimeout("tcp", addr, testutil.Wait)
	require.NoError(t, err)
	defer tc.Close()
	require.NoError(t, tc.(*net.TCPConn).SetReadBuffer(4<<10))
	stalled := tls.Client(tc, clientConf)
	require.NoError(t, stalled.SetDeadline(time.Now().Add(testutil.Wait)))
	_, err = stalled.Write([]byte("GET /v1/ws?token=" + tokens.SubscribeToken(t) + " HTTP/1.1\r\nHost: x\r\n" +
		"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReaderSize(stalled, 16), nil) // reads the 101's head, little more
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	_, err = stalled.Write(wsframe.AppendMasked(nil, 0x1, []byte(`{"op":"sub","id":1,"ch":"`+ch+`"}`)))
	require.NoError(t, err)

	// About 400 KiB for it: more than its socket buffers hold, less than
	// its 1 MiB queue, so it is not a slow consumer yet.
	client := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{TLSClientConfig: clientConf}}
	defer client.CloseIdleConnections()
	live, _, err := testutil.DialURL(t, "wss://"+addr+"/v1/ws?token="+tokens.SubscribeToken(t), nil, clientConf)
	require.NoError(t, err)
	live.Subscribe(1, ch)
	require.Eventually(t, func() bool {
		var b bytes.Buffer
		srv.Metrics().WritePrometheus(&b)
		return strings.Contains(b.String(), "\nrealtime_subscriptions 2\n")
	}, testutil.Wait, 10*time.Millisecond, "both subscribed")
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
