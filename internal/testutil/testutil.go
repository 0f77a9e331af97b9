// Package testutil starts real relays on 127.0.0.1 with random ports and
// drives them with real WebSocket and HTTP clients, for the tests of every
// package. Each helper cleans up with t.Cleanup and bounds every wait.
//
// Concurrency: a Client's read goroutine feeds a buffered channel that the
// test goroutine reads; everything else runs on the test goroutine.
package testutil

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/protocol"
)

// Site and Dash are the namespace of the tokens the helpers mint by default.
const (
	Site = "ari:cloud:jira::site/0b7f-test"
	Dash = "dash-1"
)

// Wait bounds every wait of the helpers: long enough for a loaded 2-core CI
// machine under -race, short enough that a broken test fails in seconds.
const Wait = 10 * time.Second

// Relay is a running relay.
type Relay struct {
	Server   *edge.Server
	Key      auth.Key
	Addr     string // host:port of the public listener
	AdminURL string
	logs     *SyncBuffer
}

// StartRelay starts a relay with a fresh key; configure may change the
// config before it starts. It is shut down when the test ends.
func StartRelay(t testing.TB, configure ...func(*edge.Config)) *Relay {
	t.Helper()
	logs := &SyncBuffer{}
	srv, key, ln := NewServer(t, logs, configure...)
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	admin := &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: Wait}
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	go func() { _ = admin.Serve(adminLn) }()
	r := &Relay{Server: srv, Key: key, Addr: ln.Addr().String(), AdminURL: "http://" + adminLn.Addr().String(), logs: logs}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Wait)
		defer cancel()
		if !srv.Draining() {
			require.NoError(t, srv.Shutdown(ctx, 0))
		}
		select {
		case <-served:
		case <-time.After(Wait):
			t.Errorf("Serve did not return within %v of Shutdown", Wait)
		}
		_ = admin.Close()
		// The helpers' requests go through http.DefaultTransport. goleak
		// once found one of its idle connections alive after every relay
		// had stopped: likely a spare connection it dialled that never
		// sent a byte, which the listener's TCP_DEFER_ACCEPT keeps from
		// the relay (so Shutdown cannot close it) until the kernel gives
		// up on it. The relay is gone: its idle connections go too.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	return r
}

// NewServer builds a relay with a fresh key, logging to logs (JSON, debug
// level), and listens on a random loopback port; configure may change the
// config first. It does not serve: StartRelay serves it over HTTP, and a
// test may serve it over TLS.
func NewServer(t testing.TB, logs io.Writer, configure ...func(*edge.Config)) (*edge.Server, auth.Key, net.Listener) {
	t.Helper()
	key, err := auth.GenerateKey("test")
	require.NoError(t, err)
	keys, err := auth.NewKeyring(key)
	require.NoError(t, err)
	cfg := edge.Config{
		Keys:   keys,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	for _, f := range configure {
		f(&cfg)
	}
	srv, err := edge.New(cfg)
	require.NoError(t, err)
	ln, err := srv.Listen("127.0.0.1:0")
	require.NoError(t, err)
	return srv, key, ln
}

// Logs returns everything the relay logged so far.
func (r *Relay) Logs() string { return r.logs.String() }

// URL returns the http URL of path on the public listener.
func (r *Relay) URL(path string) string { return "http://" + r.Addr + path }

// Channel returns the channel of gadget in the default namespace.
func Channel(gadget string) string { return Site + "/" + Dash + "/" + gadget }

// Token mints a token with the given claims; zero times mean issued now,
// valid for an hour.
func (r *Relay) Token(t testing.TB, c auth.Claims) string {
	t.Helper()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.ExpiresAt.IsZero() {
		c.ExpiresAt = c.IssuedAt.Add(time.Hour)
	}
	tok, err := auth.Mint(r.Key, c)
	require.NoError(t, err)
	return tok
}

// SubscribeToken mints a subscribe token for the default namespace.
func (r *Relay) SubscribeToken(t testing.TB) string {
	return r.Token(t, auth.Claims{Subject: "acct-1", Site: Site, Dash: Dash, Role: auth.RoleSubscribe})
}

// PublishToken mints a publish token for the default site.
func (r *Relay) PublishToken(t testing.TB) string {
	return r.Token(t, auth.Claims{Subject: "backend", Site: Site, Role: auth.RolePublish})
}

// Post sends a JSON body to path with the bearer token and returns the
// status and response body.
func (r *Relay) Post(t testing.TB, path, token, body string) (int, string) {
	t.Helper()
	return r.PostType(t, path, "application/json", token, body)
}

// PostType is Post with the given Content-Type; empty token means no
// Authorization header.
func (r *Relay) PostType(t testing.TB, path, contentType, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.URL(path), strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}

// Get fetches url (a full URL: r.URL(path) or r.AdminURL+path) and returns
// the status and body.
func (r *Relay) Get(t testing.TB, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: Wait}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// Published is where a publish landed.
type Published struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

// Publication is the body of one publish.
type Publication struct {
	Channel        string `json:"channel"`
	Event          string `json:"event"`
	Data           string `json:"data"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Publish publishes one message and requires a 200; it returns the offset.
func (r *Relay) Publish(t testing.TB, token, channel, event, data string) uint64 {
	t.Helper()
	return r.PublishOne(t, token, Publication{Channel: channel, Event: event, Data: data}).Offset
}

// PublishOne publishes p and requires a 200.
func (r *Relay) PublishOne(t testing.TB, token string, p Publication) Published {
	t.Helper()
	res, err := r.TryPublish(token, p)
	require.NoError(t, err)
	return res
}

// TryPublish publishes p and returns an error unless it is answered 200.
// It does not touch a testing.TB, so other goroutines may call it.
func (r *Relay) TryPublish(token string, p Publication) (Published, error) {
	var res Published
	body, err := json.Marshal(p)
	if err != nil {
		return res, err
	}
	req, err := http.NewRequest(http.MethodPost, r.URL("/v1/publish"), bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: Wait}).Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, err
	}
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("publish answered %d: %s", resp.StatusCode, b)
	}
	return res, json.Unmarshal(b, &res)
}

// Metrics returns the text of /metrics.
func (r *Relay) Metrics(t testing.TB) string {
	t.Helper()
	status, body := r.Get(t, r.AdminURL+"/metrics")
	require.Equal(t, http.StatusOK, status)
	return body
}

// Metric returns the value of one series of /metrics, named exactly as
// written there (`realtime_connections`, `realtime_publishes_total{result="ok"}`).
// It fails the test when the series is missing.
func (r *Relay) Metric(t testing.TB, series string) float64 {
	t.Helper()
	v, ok := MetricValue(r.Metrics(t), series)
	require.True(t, ok, "no series %s in /metrics", series)
	return v
}

// WaitMetric waits until series has the value want.
func (r *Relay) WaitMetric(t testing.TB, series string, want float64) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		text, err := r.metricsText()
		if !assert.NoError(c, err) {
			return
		}
		v, ok := MetricValue(text, series)
		assert.True(c, ok, "no series %s in /metrics", series)
		assert.InDelta(c, want, v, 0, series)
	}, Wait, 10*time.Millisecond)
}

// metricsText fetches /metrics without failing the test, for use inside
// Eventually, whose condition runs on another goroutine.
func (r *Relay) metricsText() (string, error) {
	resp, err := (&http.Client{Timeout: Wait}).Get(r.AdminURL + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// MetricValue returns the value of series in text, /metrics as written.
func MetricValue(text, series string) (float64, bool) {
	for line := range strings.Lines(text) {
		rest, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		return v, err == nil
	}
	return 0, false
}

// Client is a real WebSocket client of a relay.
type Client struct {
	t      testing.TB
	conn   *gws.Conn
	frames chan protocol.ServerFrame
	closed chan struct{}
	// code is the close code the server sent (0 when none); written by the
	// read goroutine before closed is closed.
	code uint16
	// pings counts the pings the server sent (each answered with a pong),
	// pongs the pongs it sent.
	pings, pongs atomic.Int64
}

// Dial connects with token and requires the upgrade to succeed.
func (r *Relay) Dial(t testing.TB, token string) *Client {
	t.Helper()
	c, resp, err := r.DialRaw(t, token, nil)
	require.NoError(t, err, "upgrade failed: %v", resp)
	return c
}

// DialRaw connects with token and extra headers; on a refused upgrade it
// returns the HTTP response.
func (r *Relay) DialRaw(t testing.TB, token string, header http.Header) (*Client, *http.Response, error) {
	t.Helper()
	return DialURL(t, "ws://"+r.Addr+"/v1/ws?token="+token, header, nil)
}

// DialURL connects to any relay's WebSocket URL (ws:// or, with tlsConf,
// wss://); on a refused upgrade it returns the HTTP response.
func DialURL(t testing.TB, url string, header http.Header, tlsConf *tls.Config) (*Client, *http.Response, error) {
	t.Helper()
	c := &Client{t: t, frames: make(chan protocol.ServerFrame, 4096), closed: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{
		Addr:             url,
		RequestHeader:    header,
		TlsConfig:        tlsConf,
		HandshakeTimeout: Wait,
	})
	if err != nil {
		return nil, resp, err
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { c.Close() })
	return c, resp, nil
}

// Send writes a text frame.
func (c *Client) Send(text string) {
	c.t.Helper()
	require.NoError(c.t, c.conn.WriteString(text))
}

// Raw returns the underlying connection, for tests that misbehave.
func (c *Client) Raw() *gws.Conn { return c.conn }

// Next returns the next frame from the server, failing the test after Wait.
func (c *Client) Next() protocol.ServerFrame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-time.After(Wait):
		c.t.Fatalf("no frame from the server within %v", Wait)
		return protocol.ServerFrame{}
	}
}

// NextOp returns the next frame, requiring its op.
func (c *Client) NextOp(op string) protocol.ServerFrame {
	c.t.Helper()
	f := c.Next()
	require.Equal(c.t, op, f.Op, "frame: %+v", f)
	return f
}

// Subscribe sends a sub and requires its ack.
func (c *Client) Subscribe(id uint64, channel string) protocol.ServerFrame {
	c.t.Helper()
	c.Send(`{"op":"sub","id":` + itoa(id) + `,"ch":` + quote(channel) + `}`)
	ack := c.NextOp("ack")
	require.NotNil(c.t, ack.ID)
	require.Equal(c.t, id, *ack.ID)
	return ack
}

// SubscribeSince sends a sub that asks to recover after offset of epoch and
// requires its ack, which it returns.
func (c *Client) SubscribeSince(id uint64, channel, epoch string, offset uint64) protocol.ServerFrame {
	c.t.Helper()
	c.Send(`{"op":"sub","id":` + itoa(id) + `,"ch":` + quote(channel) +
		`,"since":{"epoch":` + quote(epoch) + `,"offset":` + itoa(offset) + `}}`)
	ack := c.NextOp("ack")
	require.NotNil(c.t, ack.ID)
	require.Equal(c.t, id, *ack.ID)
	require.NotNil(c.t, ack.Recovered, "a sub ack always says whether it recovered")
	return ack
}

// Pings returns how many pings the server has sent so far.
func (c *Client) Pings() int64 { return c.pings.Load() }

// Pongs returns how many pongs the server has sent so far.
func (c *Client) Pongs() int64 { return c.pongs.Load() }

// NoFrame requires that no frame arrives within d.
func (c *Client) NoFrame(d time.Duration) {
	c.t.Helper()
	select {
	case f := <-c.frames:
		c.t.Fatalf("unexpected frame %+v", f)
	case <-time.After(d):
	}
}

// WaitClosed waits for the server to close the connection and returns the
// close code it sent (0 when the connection ended without one).
func (c *Client) WaitClosed() uint16 {
	c.t.Helper()
	select {
	case <-c.closed:
		return c.code
	case <-time.After(Wait):
		c.t.Fatalf("connection not closed within %v", Wait)
		return 0
	}
}

// Closed is closed when the connection has ended.
func (c *Client) Closed() <-chan struct{} { return c.closed }

// Close closes the connection from the client side.
func (c *Client) Close() {
	_ = c.conn.WriteClose(1000, nil)
	_ = c.conn.NetConn().Close()
}

// gws callbacks, on the client's read goroutine.

func (c *Client) OnOpen(*gws.Conn) {}

func (c *Client) OnClose(_ *gws.Conn, err error) {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.code = ce.Code
	}
	close(c.closed)
}

func (c *Client) OnPing(conn *gws.Conn, p []byte) {
	_ = conn.WritePong(p)
	c.pings.Add(1)
}

func (c *Client) OnPong(*gws.Conn, []byte) { c.pongs.Add(1) }

func (c *Client) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	frames, err := protocol.SplitServerFrames(m.Bytes())
	if err != nil {
		panic("server sent an undecodable frame: " + err.Error() + ": " + m.Data.String())
	}
	for _, f := range frames {
		c.frames <- f
	}
}

// SyncBuffer is a bytes.Buffer safe for concurrent use, for captured logs.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Clock is a settable clock for Config.Now: tests move it instead of
// sleeping.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock set to the real time now.
func NewClock() *Clock { return &Clock{now: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// LeakOptions are the goleak options for packages that start relays:
// fasthttp keeps a process-wide date-updating goroutine, and its worker
// pool's cleaner notices the stop only after its sleep (up to 10s);
// protoactor's dead-letter throttle, started by a message to an actor that
// has stopped (a socket closing after its connection actor), lives for its
// 1s period whether or not the system is shut down.
var LeakOptions = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
	goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
}
