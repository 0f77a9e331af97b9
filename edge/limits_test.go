package edge_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

func TestSubscriptionLimit(t *testing.T) {
	const limit = 100 // the default
	r := testutil.StartRelay(t)
	c := r.Dial(t, r.SubscribeToken(t))
	for i := range uint64(limit + 1) {
		c.Send(`{"op":"sub","id":` + u(i+1) + `,"ch":"` + testutil.Channel("g"+u(i)) + `"}`)
	}
	// Acks come from the channels, so they may overtake the err.
	acks := 0
	for range limit + 1 {
		f := c.Next()
		require.NotNil(t, f.ID, "%+v", f)
		if f.Op == "ack" {
			acks++
			continue
		}
		assert.Equal(t, "err", f.Op)
		assert.Equal(t, "limit", f.Code)
		assert.Equal(t, uint64(limit+1), *f.ID)
	}
	assert.Equal(t, limit, acks)
	r.WaitMetric(t, "realtime_subscriptions", limit)
	// After an unsub there is room again.
	c.Send(`{"op":"unsub","id":1000,"ch":"` + testutil.Channel("g0") + `"}`)
	c.NextOp("ack")
	c.Subscribe(1001, testutil.Channel("g-last"))
}

// TestBadFramesClose sends frames that end the connection.
func TestBadFramesClose(t *testing.T) {
	const maxFrame = 64 << 10 // the default
	cases := []struct {
		name   string
		send   func(c *testutil.Client)
		code   uint16
		reason string
	}{
		{"frame over the limit", func(c *testutil.Client) {
			c.Send(`{"op":"sub","id":1,"ch":"x","pad":"` + strings.Repeat("a", maxFrame) + `"}`)
		}, actors.CloseTooLarge, "frame_too_large"},
		{"binary frame", func(c *testutil.Client) {
			require.NoError(t, c.Raw().WriteMessage(gws.OpcodeBinary, []byte(`{"op":"sub"}`)))
		}, actors.CloseUnsupported, "unsupported_data"},
		{"invalid JSON", func(c *testutil.Client) { c.Send(`{"op":"sub",`) }, actors.ClosePolicy, "protocol"},
		{"not JSON at all", func(c *testutil.Client) { c.Send(`hello`) }, actors.ClosePolicy, "protocol"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := testutil.StartRelay(t)
			c := r.Dial(t, r.SubscribeToken(t))
			tc.send(c)
			assert.Equal(t, tc.code, c.WaitClosed())
			r.WaitMetric(t, "realtime_connections", 0)
			r.WaitMetric(t, `realtime_connections_closed_total{reason="`+tc.reason+`"}`, 1)
		})
	}
}

func TestFrameAtTheLimitAccepted(t *testing.T) {
	const maxFrame = 64 << 10
	r := testutil.StartRelay(t)
	c := r.Dial(t, r.SubscribeToken(t))
	ch := testutil.Channel("g")
	frame := `{"op":"sub","id":1,"ch":"` + ch + `","pad":"`
	frame += strings.Repeat("a", maxFrame-len(frame)-2) + `"}`
	require.Len(t, frame, maxFrame)
	c.Send(frame)
	ack := c.NextOp("ack")
	assert.Equal(t, ch, ack.Ch)
}

// TestBadRequests sends valid JSON that is not a valid request: each gets
// err bad_request echoing its id, and the connection stays usable.
func TestBadRequests(t *testing.T) {
	r := testutil.StartRelay(t)
	c := r.Dial(t, r.SubscribeToken(t))
	ch := testutil.Channel("g")
	cases := []struct {
		name  string
		frame string
		id    *uint64 // nil when no id can be echoed
	}{
		{"unknown op", `{"op":"publish","id":1,"ch":"` + ch + `"}`, ptr(1)},
		{"no op", `{"id":2,"ch":"` + ch + `"}`, ptr(2)},
		{"op not a string", `{"op":5,"id":3}`, ptr(3)},
		{"sub without ch", `{"op":"sub","id":4}`, ptr(4)},
		{"ch not a string", `{"op":"sub","id":5,"ch":7}`, ptr(5)},
		{"since not an object", `{"op":"sub","id":6,"ch":"` + ch + `","since":3}`, ptr(6)},
		{"refresh without token", `{"op":"refresh","id":7}`, ptr(7)},
		{"invalid channel", `{"op":"sub","id":8,"ch":"` + testutil.Site + `/` + testutil.Dash + `/bad gadget"}`, ptr(8)},
		{"unsub of a channel not subscribed", `{"op":"unsub","id":9,"ch":"` + ch + `"}`, ptr(9)},
		{"an array", `[1,2]`, nil},
		{"a string", `"sub"`, nil},
		{"id not a number", `{"op":"sub","id":"x","ch":"` + ch + `"}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Send(tc.frame)
			f := c.NextOp("err")
			assert.Equal(t, "bad_request", f.Code)
			assert.NotEmpty(t, f.Msg)
			assert.Equal(t, tc.id, f.ID)
		})
	}
	c.Subscribe(100, ch)
	c.Send(`{"op":"sub","id":101,"ch":"` + ch + `"}`)
	f := c.NextOp("err")
	assert.Equal(t, "bad_request", f.Code, "already subscribed")
	requireLive(t, r, r.PublishToken(t), ch, c)
}

func ptr(n uint64) *uint64 { return &n }

func TestMaxConnections(t *testing.T) {
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.MaxConnections = 2 })
	sub := r.SubscribeToken(t)
	a := r.Dial(t, sub)
	r.Dial(t, sub)
	_, resp, err := r.DialRaw(t, sub, nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "unavailable", errorCode(t, resp))
	assert.InDelta(t, 1, r.Metric(t, `realtime_connections_rejected_total{reason="limit"}`), 0)

	a.Close()
	r.WaitMetric(t, "realtime_connections", 1)
	r.Dial(t, sub)
}

func TestOrigin(t *testing.T) {
	const allowed = "https://dash.example"
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.AllowedOrigins = []string{allowed} })
	sub := r.SubscribeToken(t)
	cases := []struct {
		name   string
		origin string // empty: no Origin header
		status int    // 0: upgraded
	}{
		{"allowed", allowed, 0},
		{"no origin (not a browser)", "", 0},
		{"other origin", "https://evil.example", http.StatusForbidden},
		{"other scheme", "http://dash.example", http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, resp, err := r.DialRaw(t, sub, h)
			if tc.status == 0 {
				require.NoError(t, err)
				c.Subscribe(1, testutil.Channel("g"))
				return
			}
			require.Error(t, err)
			require.NotNil(t, resp)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, "forbidden", errorCode(t, resp))
		})
	}
	assert.InDelta(t, 2, r.Metric(t, `realtime_connections_rejected_total{reason="origin"}`), 0)
}

func TestUpgradeNeedsValidToken(t *testing.T) {
	r := testutil.StartRelay(t)
	other, err := auth.GenerateKey("test")
	require.NoError(t, err)
	forged, err := auth.Mint(other, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: testutil.Dash,
		Role: auth.RoleSubscribe, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)
	cases := []struct {
		name, token string
	}{
		{"no token", ""},
		{"garbage", "not.a.token"},
		{"wrong key", forged},
		{"expired", r.Token(t, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: testutil.Dash, Role: auth.RoleSubscribe,
			IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})},
		{"publish role", r.PublishToken(t)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, resp, err := r.DialRaw(t, tc.token, nil)
			require.Error(t, err)
			require.NotNil(t, resp)
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Empty(t, resp.Header.Get("Upgrade"))
			assert.Equal(t, "unauthorized", errorCode(t, resp))
		})
	}
	assert.InDelta(t, len(cases), r.Metric(t, `realtime_connections_rejected_total{reason="unauthorized"}`), 0)
	assert.InDelta(t, 0, r.Metric(t, "realtime_connections_accepted_total"), 0)
	assert.InDelta(t, 1, r.Metric(t, `realtime_auth_denied_total{reason="expired"}`), 0)
	assert.InDelta(t, 1, r.Metric(t, `realtime_auth_denied_total{reason="wrong_role"}`), 0)
	assert.InDelta(t, 1, r.Metric(t, `realtime_auth_denied_total{reason="signature"}`), 0)
}

// errorCode returns the code of a JSON error response.
func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.NotEmpty(t, body.Error.Message)
	return body.Error.Code
}

// TestSlowConsumer has a client that stops reading while another keeps
// reading: the slow one is cut off with 4008, the fast one gets every
// message, each before the next is published.
func TestSlowConsumer(t *testing.T) {
	const queue, size, maxMessages = 128 << 10, 32 << 10, 2000
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Actors.SendQueueBytes = queue
		cfg.Actors.CloseTimeout = 200 * time.Millisecond
	})
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	ch := testutil.Channel("firehose")
	fast := r.Dial(t, sub)
	fast.Subscribe(1, ch)
	slow := r.DialStalled(t, sub)
	slow.Send(`{"op":"sub","id":1,"ch":"` + ch + `"}`)
	r.WaitMetric(t, "realtime_subscriptions", 2)

	data := strings.Repeat("x", size)
	var maxLatency time.Duration
	var last uint64
	for last < maxMessages {
		start := time.Now()
		last = r.Publish(t, pub, ch, "Tick", data)
		f := fast.NextOp("msg")
		require.Equal(t, last, f.Offset)
		maxLatency = max(maxLatency, time.Since(start))
		if last%4 == 0 && r.Metric(t, "realtime_slow_consumer_disconnects_total") == 1 {
			break
		}
	}
	require.Less(t, last, uint64(maxMessages), "the stalled client was never cut off")
	t.Logf("cut off after %d messages of %d bytes; fast client's worst publish-to-receive %v", last, size, maxLatency)
	assert.Less(t, maxLatency, time.Second)
	r.WaitMetric(t, `realtime_connections_closed_total{reason="slow_consumer"}`, 1)
	r.WaitMetric(t, "realtime_subscriptions", 1)

	// The server ended the stalled client's connection: once the server
	// side is gone, what the client sends is answered with a reset, and
	// its reads stop with an error rather than the deadline. (Waiting for
	// a FIN would mean draining megabytes of kernel buffers first.)
	r.WaitMetric(t, "realtime_connections", 1)
	_, _ = slow.Write([]byte{0x89, 0x80, 0, 0, 0, 0}) // a masked empty ping; it may already fail
	require.NoError(t, slow.SetReadDeadline(time.Now().Add(testutil.Wait)))
	cs := time.Now()
	n, err := io.Copy(io.Discard, slow)
	t.Logf("drained %d bytes in %v: %v", n, time.Since(cs), err)
	assertNotTimeout(t, err)
	// The fast client goes on.
	requireLive(t, r, pub, ch, fast)
}
