package actors

import (
	"errors"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/protocol"
	"github.com/realtime-relay/realtime/internal/telemetry"
)

// Close codes the relay sends (RFC 6455 and the protocol's private range).
const (
	CloseNormal         = 1000
	CloseUnsupported    = 1003
	ClosePolicy         = 1008
	CloseTooLarge       = 1009
	CloseInternalError  = 1011
	CloseRestarting     = 1012
	CloseTokenExpired   = 4001
	CloseTooManyDenials = 4003
	CloseSlowConsumer   = 4008
)

// Socket is a connection's WebSocket, as its outbox writes it. The edge
// implements it. TryWrite, Write, WritePing and WritePong are called by
// one goroutine at a time (whoever holds the outbox's writing turn); Close
// may be called concurrently with them.
type Socket interface {
	// TryWrite writes the concatenation of parts as one text frame without
	// blocking. taken=false means nothing was taken (another write holds
	// the socket, or it has no way to write without blocking): write
	// parts with Write. done=false means the socket could not take all of
	// it at once: it keeps the rest (parts may be reused), and the next
	// Write sends it first.
	TryWrite(parts [][]byte) (taken, done bool, err error)
	// Write writes what an incomplete TryWrite left, then the concatenation
	// of parts as one text frame (none when parts is empty), blocking until
	// the socket takes it or its write timeout passes.
	Write(parts [][]byte) error
	// WritePing writes a ping frame, blocking as Write does.
	WritePing() error
	// WritePong writes a pong frame with payload (at most 125 bytes: a
	// client's ping's), blocking as Write does.
	WritePong(payload []byte) error
	// Close writes a close frame with code, waiting at most timeout for a
	// stuck write, and closes the connection.
	Close(code uint16, timeout time.Duration)
}

// ConnParams describe a verified, upgraded connection.
type ConnParams struct {
	Claims     auth.Claims
	Socket     Socket
	RemoteAddr string
	// Handled, when not nil, is called with each frame passed with Text,
	// and each payload passed with Pong, once the actor has handled it, so
	// that the reader can bound how much waits for the actor.
	Handled func(data []byte)
}

// conn is the actor that owns one WebSocket connection: its subscriptions,
// its outbound queue and its token deadline. The edge's read goroutine sends
// it decoded client frames; channels push their messages into its outbox
// directly (see outbox), and the actor never blocks on the network.
type conn struct {
	// Static after construction.
	cfg     *Config
	remote  string
	handled func(data []byte) // ConnParams.Handled, never nil

	// Owned by the actor.
	claims auth.Claims
	// subs are the channels subscribed to: a slice, not a map, since a
	// map with one entry costs about 200 B per connection, and a lookup
	// among at most MaxSubscriptions (100) comes only with a sub or unsub.
	subs      []string
	out       *outbox // shared with channels and writers; see outbox
	closing   bool
	forbidden int
	limiter   tokenBucket
	timerGen  uint64 // bumped on refresh to disarm the old token timer
	// tokenTimer fires the expiring warning, then the expiry (each arming
	// replaces it): one timer, not two, because every byte here is paid
	// per idle connection. Pings have none: the edge schedules them.
	tokenTimer *time.Timer
}

// connSupervisor stops a connection actor that panics: its Stopped handler
// then removes its subscriptions and closes its socket. Restarting it would
// lose the fields that say which channels to leave.
var connSupervisor = actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive {
	return actor.StopDirective
})

// connProps are shared by every connection actor: per-connection Props
// would cost a few hundred bytes per idle connection. Each connection gets
// its parameters in its first message, connInit.
func connProps(cfg *Config) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor {
		return &conn{cfg: cfg}
	}, actor.WithGuardian(connSupervisor), actor.WithDispatcher(cfg.workers))
}

// init sets the connection up from its parameters and starts its timers.
func (c *conn) init(ctx actor.Context, p *connInit) {
	c.remote, c.claims, c.handled = p.RemoteAddr, p.Claims, p.Handled
	if c.handled == nil {
		c.handled = func([]byte) {}
	}
	c.out = newOutbox(c.cfg, p.Socket, ctx.Self())
	c.cfg.outboxes.add(ctx.Self().Id, c.out)
	c.limiter = tokenBucket{
		rate: c.cfg.SubscribeRate, burst: float64(c.cfg.SubscribeBurst),
		tokens: float64(c.cfg.SubscribeBurst), at: c.cfg.Now(),
	}
	c.armDeadline(ctx)
}

func (c *conn) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *connInit:
		c.init(ctx, m)
	case *writeFailed:
		// The socket may still be open (a write timed out): close it, or a
		// client that keeps sending would keep it forever. No close frame
		// gets through after a failed write (see edge's socket).
		c.close(ctx, CloseInternalError, telemetry.CloseWriteError)
	case *clientText:
		c.text(ctx, m.Frame)
		c.handled(m.Frame)
	case *timerFired:
		c.timerFired(ctx, m)
	case *pingMsg:
		c.control(control{ping: true})
	case *pongMsg:
		pong := m.Payload
		if pong == nil {
			pong = []byte{} // an empty ping's: a pong is still owed
		}
		c.control(control{pong: pong})
		c.handled(m.Payload)
	case *closeConn:
		c.close(ctx, m.Code, m.Reason)
	case *socketClosed:
		reason := m.Reason
		if reason == "" {
			reason = telemetry.CloseClient
		}
		c.close(ctx, 0, reason)
		ctx.Stop(ctx.Self())
	case *crashConnForTest:
		panic("crashConnForTest")
	case *actor.Stopped:
		// Reached by a normal stop and by the supervisor after a panic; in
		// the latter case nothing was cleaned up yet.
		if c.out == nil {
			return // stopped before its init
		}
		c.close(ctx, CloseInternalError, telemetry.CloseActorFailure)
		c.cfg.outboxes.remove(ctx.Self().Id)
		c.tokenTimer.Stop()
	}
}

// control has the outbox write ctl's frames with its next write; a closing
// connection's outbox refuses them.
func (c *conn) control(ctl control) {
	if c.out.requestControl(ctl) {
		c.out.flush()
	}
}

// text decodes a client's frame and acts on it. A frame that is not JSON
// closes the connection (1008); one that is JSON but not a valid request
// gets an err.
func (c *conn) text(ctx actor.Context, frame []byte) {
	if c.closing {
		return // a closing connection's frames are not even decoded
	}
	f, err := protocol.DecodeClient(frame)
	switch {
	case errors.Is(err, protocol.ErrBadJSON):
		c.close(ctx, ClosePolicy, telemetry.CloseProtocol)
	case err != nil:
		c.cfg.Metrics.ClientErrors.Inc()
		c.reply(protocol.AppendErr(nil, f.ID, protocol.CodeBadRequest, err.Error()))
	default:
		c.command(ctx, f)
	}
}

func (c *conn) command(ctx actor.Context, f protocol.ClientFrame) {
	if c.closing {
		return
	}
	switch f.Op {
	case protocol.OpSub:
		c.sub(ctx, f)
	case protocol.OpUnsub:
		c.unsub(ctx, f)
	case protocol.OpRefresh:
		c.refresh(ctx, f)
	}
}

func (c *conn) sub(ctx actor.Context, f protocol.ClientFrame) {
	if !c.limiter.take(c.cfg.Now()) {
		c.fail(f.ID, protocol.CodeLimit, "too many subscribe requests, slow down")
		return
	}
	if err := c.claims.CheckSubscribe(f.Channel); err != nil {
		if errors.Is(err, auth.ErrForbidden) {
			c.deny(ctx, f)
			return
		}
		c.fail(f.ID, protocol.CodeBadRequest, "invalid channel name")
		return
	}
	if slices.Contains(c.subs, f.Channel) {
		c.fail(f.ID, protocol.CodeBadRequest, "already subscribed")
		return
	}
	if len(c.subs) >= c.cfg.MaxSubscriptions {
		c.fail(f.ID, protocol.CodeLimit, "too many subscriptions on this connection")
		return
	}
	c.subs = append(c.subs, f.Channel)
	m := &subscribe{
		Channel: f.Channel, Conn: ctx.Self(), ID: f.ID,
	}
	if f.Since != nil {
		m.HasSince, m.SinceEpoch, m.SinceOffset = true, f.Since.Epoch, f.Since.Offset
	}
	ctx.Send(c.cfg.registry, m)
}

// deny answers a subscribe outside the token's namespace, writes the audit
// line and closes the connection once it has been denied too often.
func (c *conn) deny(ctx actor.Context, f protocol.ClientFrame) {
	c.cfg.Metrics.NamespaceDenied.Inc()
	// The logger is built here, not per connection: an idle connection
	// should not pay for a handler clone it almost never uses.
	c.cfg.Logger.Warn("namespace violation", "account_id", c.claims.Subject, "remote_addr", c.remote,
		"site", c.claims.Site, "dash", c.claims.Dash, "channel", f.Channel)
	c.forbidden++
	c.fail(f.ID, protocol.CodeForbidden, "channel is outside the token's namespace")
	if c.forbidden >= c.cfg.ForbiddenLimit {
		c.closeAfterQueued(ctx, CloseTooManyDenials, telemetry.CloseForbidden)
	}
}

func (c *conn) unsub(ctx actor.Context, f protocol.ClientFrame) {
	if !c.limiter.take(c.cfg.Now()) {
		c.fail(f.ID, protocol.CodeLimit, "too many unsubscribe requests, slow down")
		return
	}
	i := slices.Index(c.subs, f.Channel)
	if i < 0 {
		c.fail(f.ID, protocol.CodeBadRequest, "not subscribed")
		return
	}
	c.subs = slices.Delete(c.subs, i, i+1)
	// The channel acks: after its ack, no message of the channel follows.
	ctx.Send(c.cfg.registry, &unsubscribe{Channel: f.Channel, Conn: ctx.Self(), ID: f.ID, Ack: true})
}

func (c *conn) refresh(ctx actor.Context, f protocol.ClientFrame) {
	claims, err := c.cfg.Verifier.Verify(f.Token, auth.RoleSubscribe, c.cfg.Now())
	if err != nil {
		c.cfg.Metrics.AuthDenied(auth.DenyReason(err))
		c.fail(f.ID, protocol.CodeForbidden, "refresh token rejected: "+auth.DenyReason(err))
		return
	}
	if claims.Site != c.claims.Site || claims.Dash != c.claims.Dash || claims.Subject != c.claims.Subject {
		c.fail(f.ID, protocol.CodeForbidden, "refresh token is for another site, dashboard or account")
		return
	}
	c.claims = claims
	c.armDeadline(ctx)
	c.reply(protocol.AppendRefreshAck(nil, f.ID, claims.ExpiresAt.Unix()))
}

func (c *conn) fail(id protocol.ID, code protocol.Code, msg string) {
	c.reply(protocol.AppendErr(nil, id, code, msg))
}

// reply queues one of the connection's own frames (an ack, an err, an
// expiring warning) and writes it. A full queue closes the connection with
// 4008 (see outbox.push).
func (c *conn) reply(frame []byte) {
	if c.closing {
		return
	}
	if c.out.push(frame, 0, false) {
		c.out.flush()
	}
}

func (c *conn) timerFired(ctx actor.Context, m *timerFired) {
	if c.closing {
		return
	}
	switch m.Kind {
	case timerExpiring:
		if m.Gen == c.timerGen {
			c.reply(protocol.AppendExpiring(nil, c.claims.ExpiresAt.Unix()))
			c.armToken(ctx, timerExpired, max(c.claims.ExpiresAt.Sub(c.cfg.Now()), 0))
		}
	case timerExpired:
		if m.Gen == c.timerGen {
			c.cfg.Metrics.TokenExpiries.Inc()
			c.close(ctx, CloseTokenExpired, telemetry.CloseExpired)
		}
	}
}

// armDeadline schedules the expiring warning for the current token (at once
// when less than the lead time is left), replacing the timer of an earlier
// token; the warning then arms the expiry.
func (c *conn) armDeadline(ctx actor.Context) {
	c.timerGen++
	left := c.claims.ExpiresAt.Sub(c.cfg.Now())
	c.armToken(ctx, timerExpiring, max(left-c.cfg.ExpiringLead, 0))
}

func (c *conn) armToken(ctx actor.Context, kind timerKind, d time.Duration) {
	msg := &timerFired{Kind: kind, Gen: c.timerGen}
	self, root := ctx.Self(), ctx.ActorSystem().Root
	if c.tokenTimer != nil {
		c.tokenTimer.Stop()
	}
	c.tokenTimer = time.AfterFunc(d, func() { root.Send(self, msg) })
}

// close ends the connection once: it leaves every channel, then closes the
// socket with code (none when code is 0: the client closed it) from a
// goroutine, since a stuck client must not block the actor.
func (c *conn) close(ctx actor.Context, code uint16, reason string) {
	if !c.leave(ctx, reason) {
		return
	}
	c.out.close()
	if code != 0 {
		go c.out.sock.Close(code, c.cfg.CloseTimeout)
	}
}

// closeAfterQueued is close for a connection whose queued reply explains
// the close (the err of the denial that ends it): the writer writes what
// is queued first, then the close frame. A plain close would drop the
// reply, or race it against the close frame.
func (c *conn) closeAfterQueued(ctx actor.Context, code uint16, reason string) {
	if !c.leave(ctx, reason) {
		return
	}
	if c.out.closeAfterQueued(code, c.cfg.CloseTimeout) {
		c.out.flush()
	}
}

// leave marks the connection closing and leaves every channel; it reports
// false when the connection was already closing.
func (c *conn) leave(ctx actor.Context, reason string) bool {
	if c.closing {
		return false
	}
	c.closing = true
	c.cfg.Metrics.ConnectionClosed(reason)
	for _, ch := range c.subs {
		ctx.Send(c.cfg.registry, &unsubscribe{Channel: ch, Conn: ctx.Self()})
	}
	c.subs = nil
	return true
}

// tokenBucket rate-limits a connection's requests: rate tokens a second, at
// most burst saved up.
type tokenBucket struct {
	rate, burst, tokens float64
	at                  time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	b.tokens = min(b.burst, b.tokens+now.Sub(b.at).Seconds()*b.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
