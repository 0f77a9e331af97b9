package edge_test

import (
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// shortToken mints a subscribe token of the default namespace that expires
// in one to two seconds (exp has whole seconds).
func shortToken(t *testing.T, r *testutil.Relay) (string, time.Time) {
	t.Helper()
	now := time.Now()
	exp := now.Add(2 * time.Second).Truncate(time.Second)
	return r.Token(t, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: testutil.Dash,
		Role: auth.RoleSubscribe, IssuedAt: now, ExpiresAt: exp}), exp
}

func TestTokenExpiryCloses4001(t *testing.T) {
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.ExpiringLead = time.Minute })
	tok, exp := shortToken(t, r)
	c := r.Dial(t, tok)
	// Less than the lead remains: the warning comes at once.
	f := c.NextOp("expiring")
	assert.Equal(t, exp.Unix(), f.Exp)
	c.Subscribe(1, testutil.Channel("g"))

	assert.Equal(t, uint16(actors.CloseTokenExpired), c.WaitClosed())
	assert.False(t, time.Now().Before(exp), "closed before the token's exp")
	assert.InDelta(t, 1, r.Metric(t, "realtime_token_expiries_total"), 0)
	r.WaitMetric(t, `realtime_connections_closed_total{reason="expired"}`, 1)
	r.WaitMetric(t, "realtime_subscriptions", 0)
}

func TestRefresh(t *testing.T) {
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.ExpiringLead = time.Minute })
	short, exp := shortToken(t, r)
	refreshed := r.Dial(t, short)
	refreshed.NextOp("expiring")
	// control has the same token and is not refreshed: its close proves that
	// the old deadline has passed.
	control := r.Dial(t, short)
	control.NextOp("expiring")

	otherDash := r.Token(t, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: "dash-2", Role: auth.RoleSubscribe})
	otherSub := r.Token(t, auth.Claims{Subject: "acct-2", Site: testutil.Site, Dash: testutil.Dash, Role: auth.RoleSubscribe})
	otherSite := r.Token(t, auth.Claims{Subject: "acct-1", Site: "ari:cloud:jira::site/other", Dash: testutil.Dash, Role: auth.RoleSubscribe})
	publish := r.Token(t, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: testutil.Dash, Role: auth.RolePublish})
	for i, tok := range []string{otherDash, otherSub, otherSite, publish, "not-a-token"} {
		id := uint64(10 + i)
		refreshed.Send(`{"op":"refresh","id":` + u(id) + `,"token":"` + tok + `"}`)
		f := refreshed.NextOp("err")
		assert.Equal(t, "forbidden", f.Code, "token %d", i)
		require.NotNil(t, f.ID)
		assert.Equal(t, id, *f.ID)
	}

	longExp := time.Now().Add(time.Hour).Truncate(time.Second)
	valid := r.Token(t, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: testutil.Dash,
		Role: auth.RoleSubscribe, ExpiresAt: longExp})
	refreshed.Send(`{"op":"refresh","id":3,"token":"` + valid + `"}`)
	ack := refreshed.NextOp("ack")
	require.NotNil(t, ack.ID)
	assert.Equal(t, uint64(3), *ack.ID)
	assert.Equal(t, longExp.Unix(), ack.Exp)

	assert.Equal(t, uint16(actors.CloseTokenExpired), control.WaitClosed())
	require.False(t, time.Now().Before(exp))
	// Past the old exp, the refreshed connection still works.
	ch := testutil.Channel("g")
	refreshed.Subscribe(4, ch)
	requireLive(t, r, r.PublishToken(t), ch, refreshed)
	select {
	case <-refreshed.Closed():
		t.Fatal("the refreshed connection was closed")
	default:
	}
	assert.InDelta(t, 1, r.Metric(t, "realtime_token_expiries_total"), 0)
}

func TestNamespaceDenial(t *testing.T) {
	r := testutil.StartRelay(t)
	tok := r.SubscribeToken(t)
	c := r.Dial(t, tok)
	remote := c.Raw().NetConn().LocalAddr().String()
	denied := []string{
		testutil.Site + "/dash-2/g",
		"ari:cloud:jira::site/other/" + testutil.Dash + "/g",
		testutil.Site + "/dash-10/g",
		"ari:cloud:jira::site/0b7f-test-2/" + testutil.Dash + "/g", // the site is a prefix of this one
		testutil.Site + "/dash-2/g2",
	}
	require.Len(t, denied, 5, "the default limit is 5 denials")
	for i, ch := range denied {
		id := uint64(i + 1)
		c.Send(`{"op":"sub","id":` + u(id) + `,"ch":"` + ch + `"}`)
		f := c.NextOp("err")
		assert.Equal(t, "forbidden", f.Code, ch)
		require.NotNil(t, f.ID)
		assert.Equal(t, id, *f.ID)
		r.WaitMetric(t, "realtime_namespace_denied_total", float64(i+1))
		if i < len(denied)-1 {
			// Still open: a subscription in its namespace works.
			c.Subscribe(100+id, testutil.Channel("ok-"+u(id)))
		}
	}
	assert.Equal(t, uint16(actors.CloseTooManyDenials), c.WaitClosed())
	r.WaitMetric(t, `realtime_connections_closed_total{reason="forbidden"}`, 1)

	logs := r.Logs()
	assert.NotContains(t, logs, tok, "a token must never be logged")
	var audits []map[string]any
	for line := range strings.Lines(logs) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), line)
		if rec["msg"] == "namespace violation" {
			audits = append(audits, rec)
		}
	}
	require.Len(t, audits, len(denied))
	for i, rec := range audits {
		assert.Equal(t, "acct-1", rec["account_id"])
		assert.Equal(t, testutil.Site, rec["site"])
		assert.Equal(t, testutil.Dash, rec["dash"])
		assert.Equal(t, denied[i], rec["channel"])
		assert.Equal(t, remote, rec["remote_addr"])
	}
}

func TestChannelCrashResetsSubscribers(t *testing.T) {
	r := testutil.StartRelay(t)
	pub, sub := r.PublishToken(t), r.SubscribeToken(t)
	ch := testutil.Channel("crashy")
	a, b := r.Dial(t, sub), r.Dial(t, sub)
	oldEpoch := a.Subscribe(1, ch).Epoch
	b.Subscribe(1, ch)
	_, last := publishN(t, r, pub, ch, 2)
	requireMsgs(t, a, ch, 1, last)
	requireMsgs(t, b, ch, 1, last)

	r.Server.Hub().CrashChannelForTest(ch)
	var newEpoch string
	for _, c := range []*testutil.Client{a, b} {
		f := c.NextOp("reset")
		assert.Equal(t, ch, f.Ch)
		assert.NotEqual(t, oldEpoch, f.Epoch)
		assert.Equal(t, uint64(0), f.Offset)
		newEpoch = f.Epoch
	}
	r.WaitMetric(t, "realtime_channel_restarts_total", 1)

	// Live delivery goes on in the new epoch.
	res := r.PublishOne(t, pub, testutil.Publication{Channel: ch, Event: "AfterCrash", Data: "x"})
	assert.Equal(t, newEpoch, res.Epoch)
	assert.Equal(t, uint64(1), res.Offset)
	requireMsgs(t, a, ch, 1, 1)
	requireMsgs(t, b, ch, 1, 1)
	assert.InDelta(t, 2, r.Metric(t, "realtime_subscriptions"), 0)

	// A reconnect that asks to recover across the crash cannot.
	c := r.Dial(t, sub)
	ack := c.SubscribeSince(1, ch, oldEpoch, last)
	assert.False(t, *ack.Recovered)
	assert.Equal(t, newEpoch, ack.Epoch)
	requireLive(t, r, pub, ch, a, b, c)
}

func TestConnActorCrash(t *testing.T) {
	r := testutil.StartRelay(t)
	sub := r.SubscribeToken(t)
	ch := testutil.Channel("g")
	crashed := r.Dial(t, sub)
	crashed.Subscribe(1, ch)
	conns := r.Server.ConnsForTest()
	require.Len(t, conns, 1)
	victim := conns[0]
	other := r.Dial(t, sub)
	other.Subscribe(1, ch)
	r.WaitMetric(t, "realtime_subscriptions", 2)

	victim.CrashForTest()
	assert.Equal(t, uint16(actors.CloseInternalError), crashed.WaitClosed())
	r.WaitMetric(t, "realtime_subscriptions", 1)
	r.WaitMetric(t, "realtime_connections", 1)
	r.WaitMetric(t, `realtime_connections_closed_total{reason="actor_failure"}`, 1)
	requireLive(t, r, r.PublishToken(t), ch, other)
}

func TestChannelPassivates(t *testing.T) {
	const retention = time.Second
	clock := testutil.NewClock()
	r := testutil.StartRelay(t, clocked(clock, retention))
	pub := r.PublishToken(t)
	ch := testutil.Channel("idle")
	c := r.Dial(t, r.SubscribeToken(t))
	epoch := c.Subscribe(1, ch).Epoch
	requireLive(t, r, pub, ch, c)
	c.Send(`{"op":"unsub","id":2,"ch":"` + ch + `"}`)
	ack := c.NextOp("ack")
	require.NotNil(t, ack.ID)
	assert.Equal(t, uint64(2), *ack.ID)
	r.WaitMetric(t, "realtime_subscriptions", 0)
	// Its message is still retained: the channel must stay.
	assert.InDelta(t, 1, r.Metric(t, "realtime_channels"), 0)

	clock.Advance(retention + time.Millisecond)
	r.WaitMetric(t, "realtime_channels", 0)

	// It comes back with a new epoch, from offset 0.
	ack = c.Subscribe(3, ch)
	assert.NotEqual(t, epoch, ack.Epoch)
	assert.Equal(t, uint64(0), ack.Offset)
	assert.InDelta(t, 1, r.Metric(t, "realtime_channels"), 0)
}

func TestDeadPeerRemoved(t *testing.T) {
	const ping, keepalive = 50 * time.Millisecond, 400 * time.Millisecond
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.PingInterval = ping
		cfg.KeepaliveTimeout = keepalive
	})
	sub := r.SubscribeToken(t)
	alive := r.Dial(t, sub)
	start := time.Now()
	dead := r.DialStalled(t, sub)
	r.WaitMetric(t, "realtime_connections", 2)
	r.WaitMetric(t, "realtime_connections", 1)
	elapsed := time.Since(start)
	assert.GreaterOrEqual(t, elapsed, keepalive, "removed before its keepalive timeout")
	assert.Less(t, elapsed, keepalive+testutil.Wait/2)
	assert.InDelta(t, 1, r.Metric(t, `realtime_connections_closed_total{reason="dead_peer"}`), 0)
	// The server ended the TCP connection.
	require.NoError(t, dead.SetReadDeadline(time.Now().Add(testutil.Wait)))
	_, err := io.Copy(io.Discard, dead)
	assertNotTimeout(t, err)

	// A client that answers pings outlives several keepalive timeouts.
	require.Eventually(t, func() bool { return alive.Pings() >= int64(3*keepalive/ping) }, testutil.Wait, ping)
	ch := testutil.Channel("g")
	alive.Subscribe(1, ch)
	requireLive(t, r, r.PublishToken(t), ch, alive)
}

// A client heard from is not a dead peer, pinged or not: here nothing pings
// it, and it only sends unsolicited pongs, the heartbeat RFC 6455 5.5.3
// allows. Once silent for the keepalive timeout, it is closed as one.
func TestHeardClientIsNoDeadPeer(t *testing.T) {
	const keepalive, beat = time.Second, 100 * time.Millisecond
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.PingInterval = time.Hour
		cfg.KeepaliveTimeout = keepalive
	})
	c := r.DialStalled(t, r.SubscribeToken(t))
	r.WaitMetric(t, "realtime_connections", 1)
	var gap time.Duration // the longest silence, should this goroutine stall
	last := time.Now()
	for start := last; time.Since(start) < 3*keepalive; time.Sleep(beat) {
		c.WriteFrame(0xA, nil) // an unsolicited pong: a heartbeat (RFC 6455 5.5.3)
		gap, last = max(gap, time.Since(last)), time.Now()
	}
	if gap >= keepalive {
		t.Skipf("the test stalled for %v, longer than the keepalive timeout: nothing to conclude", gap)
	}
	assert.InDelta(t, 1, r.Metric(t, "realtime_connections"), 0, "a client heard every %v was closed", beat)
	r.WaitMetric(t, "realtime_connections", 0)
	assert.GreaterOrEqual(t, time.Since(last), keepalive, "closed before its keepalive timeout")
	assert.InDelta(t, 1, r.Metric(t, `realtime_connections_closed_total{reason="dead_peer"}`), 0)
}

// A ping interval or keepalive timeout under a millisecond is refused with
// ErrConfig, as is a negative one; zero takes the defaults, and 1 ms is
// allowed.
func TestKeepaliveConfigValidated(t *testing.T) {
	key, err := auth.GenerateKey("test")
	require.NoError(t, err)
	keys, err := auth.NewKeyring(key)
	require.NoError(t, err)
	for _, cfg := range []edge.Config{
		{PingInterval: time.Microsecond},
		{KeepaliveTimeout: time.Microsecond},
		{PingInterval: -time.Second},
	} {
		cfg.Keys = keys
		_, err := edge.New(cfg)
		assert.ErrorIs(t, err, edge.ErrConfig, "ping interval %v, keepalive timeout %v", cfg.PingInterval, cfg.KeepaliveTimeout)
	}
	for _, cfg := range []edge.Config{{}, {PingInterval: time.Millisecond, KeepaliveTimeout: time.Millisecond}} {
		cfg.Keys = keys
		s, err := edge.New(cfg)
		require.NoError(t, err, "ping interval %v, keepalive timeout %v", cfg.PingInterval, cfg.KeepaliveTimeout)
		require.NoError(t, s.Shutdown(t.Context(), 0))
	}
}

// Connections made together are not pinged together: each one's first
// ping falls at a random point of its first interval. Pinged in step, a
// relay's clients after a deploy (or a bench's) put every ping and pong
// into the same second, every interval, for ever.
func TestPingsSpreadOverTheInterval(t *testing.T) {
	const interval, conns = 2 * time.Second, 20
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.PingInterval = interval })
	sub := r.SubscribeToken(t)
	clients := make([]*testutil.Client, conns)
	for i := range clients {
		clients[i] = r.Dial(t, sub)
	}
	dialed := time.Now()
	first := make([]time.Duration, conns) // since dialed, 0 until the first ping
	for pinged := 0; pinged < conns; time.Sleep(2 * time.Millisecond) {
		require.Less(t, time.Since(dialed), interval+testutil.Wait, "%d of %d connections pinged", pinged, conns)
		for i, c := range clients {
			if first[i] == 0 && c.Pings() > 0 {
				first[i] = time.Since(dialed)
				pinged++
			}
		}
	}
	spread := slices.Max(first) - slices.Min(first)
	// 20 points drawn from 2 s all fall within 0.5 s with a chance of
	// about 1 in 10^10; pinged in step, they fall within milliseconds.
	assert.Greater(t, spread, interval/4, "first pings at %v", first)
}
