package edge_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestRefusedRequestAnsweredNotReset: a client still sending a request that
// the relay refused before reading it all (a body over the limit, headers
// over the limit) gets the error response, not "connection reset by peer".
// The request is far larger than the socket buffers, so the relay refuses
// it while the client is still writing.
func TestRefusedRequestAnsweredNotReset(t *testing.T) {
	const huge = 16 << 20
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.MaxDataBytes = 1024 })
	pub := r.PublishToken(t)
	t.Run("body over the limit", func(t *testing.T) {
		status, body := r.Post(t, "/v1/publish", pub, `{"channel":"`+testutil.Channel("g")+`","event":"E","data":"`+strings.Repeat("x", huge)+`"}`)
		assert.Equal(t, http.StatusRequestEntityTooLarge, status, body)
		code, _ := apiError(t, body)
		assert.Equal(t, "too_large", code)
	})
	t.Run("headers over the limit", func(t *testing.T) {
		resp, body := rawHTTP(t, r, http.MethodGet, "/healthz", http.Header{"X-Padding": {strings.Repeat("p", huge)}})
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, body)
	})
	t.Run("body over the limit, over TLS", func(t *testing.T) {
		srv := serveTLS(t, func(cfg *edge.Config) { cfg.MaxDataBytes = 1024 })
		client := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{TLSClientConfig: srv.ClientConf}}
		defer client.CloseIdleConnections()
		req, err := http.NewRequest(http.MethodPost, "https://"+srv.Addr+"/v1/publish", strings.NewReader(strings.Repeat("x", huge)))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+srv.Tokens.PublishToken(t))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, string(body))
	})
	status, _ := r.Get(t, r.URL("/healthz"))
	assert.Equal(t, http.StatusOK, status)
}

// tlsServer is an edge.Server serving HTTPS and WSS on a random loopback
// port until stop or the end of the test.
type tlsServer struct {
	*edge.Server
	Addr       string
	ClientConf *tls.Config     // trusts the server's certificate
	Tokens     *testutil.Relay // mints tokens of the server's key
	served     chan error
	stopped    bool
}

// serveTLS starts it with a fresh key; configure may change the config.
func serveTLS(t *testing.T, configure ...func(*edge.Config)) *tlsServer {
	t.Helper()
	srv, key, ln := testutil.NewServer(t, io.Discard, configure...)
	certFile, keyFile, pool := testutil.SelfSignedCert(t, t.TempDir())
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	s := &tlsServer{
		Server:     srv,
		Addr:       ln.Addr().String(),
		ClientConf: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		Tokens:     &testutil.Relay{Key: key},
		served:     make(chan error, 1),
	}
	go func() {
		s.served <- srv.ServeTLS(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}()
	t.Cleanup(func() {
		if !s.stopped {
			ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
			defer cancel()
			assert.NoError(t, s.stop(ctx))
		}
	})
	return s
}

// metric returns the value of one series of the server's metrics.
func (s *tlsServer) metric(t *testing.T, series string) float64 {
	t.Helper()
	var b bytes.Buffer
	s.Metrics().WritePrometheus(&b)
	v, ok := testutil.MetricValue(b.String(), series)
	require.True(t, ok, "no series %s", series)
	return v
}

// waitMetric waits until series has the value want.
func (s *tlsServer) waitMetric(t *testing.T, series string, want float64) {
	t.Helper()
	require.Eventually(t, func() bool { return s.metric(t, series) == want }, testutil.Wait, 10*time.Millisecond, "%s never %v", series, want)
}

// stop shuts the server down within ctx and waits for ServeTLS to return.
func (s *tlsServer) stop(ctx context.Context) error {
	s.stopped = true
	err := s.Shutdown(ctx, 0)
	return errors.Join(err, <-s.served)
}
