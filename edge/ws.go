package edge

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lxzan/gws"
	"github.com/valyala/fasthttp"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/telemetry"
)

// wsConn ties a gws connection to its actor.
type wsConn struct {
	// Static after the upgrade.
	actor *actors.Conn
	nc    net.Conn // what gws reads (a *tls.Conn for TLS)
	// heard is when the client was last heard (sinceStart), stored by the
	// read goroutine. pingAt is when its next ping is due (sinceStart), and
	// slot and index its place in the keepalive wheel (slot -1: in none);
	// guarded by Server.mu (see keepalive.go).
	heard       atomic.Int64
	pingAt      int64
	slot, index int
	// unhandled counts the bytes of the frames passed to the actor and
	// not yet handled by it (see forward).
	unhandled atomic.Int64
	// closeReason is set by the read goroutine when it asks the actor to
	// close the connection, as it knows better than the error gws will
	// report; from then on it passes no more frames on.
	closeReason string
}

// handleUpgrade verifies everything before the upgrade, so that an invalid
// token never gets a WebSocket, then upgrades the connection for gws.
func (s *Server) handleUpgrade(ctx *fasthttp.RequestCtx) {
	if !ctx.IsGet() {
		ctx.Response.Header.Set("Allow", fasthttp.MethodGet)
		s.reject(ctx, fasthttp.StatusMethodNotAllowed, telemetry.RejectBadRequest, codeMethodNotAllowed, "WebSocket upgrade must be a GET")
		return
	}
	if origin := ctx.Request.Header.Peek("Origin"); len(origin) > 0 && s.origins != nil && !s.origins[string(origin)] {
		s.reject(ctx, fasthttp.StatusForbidden, telemetry.RejectOrigin, codeForbidden, "origin not allowed")
		return
	}
	claims, err := s.verifier.Verify(string(ctx.QueryArgs().Peek("token")), auth.RoleSubscribe, s.cfg.Now())
	if err != nil {
		s.metrics.AuthDenied(auth.DenyReason(err))
		s.reject(ctx, fasthttp.StatusUnauthorized, telemetry.RejectUnauthorized, codeUnauthorized, "invalid token: "+auth.DenyReason(err))
		return
	}
	h := &ctx.Request.Header
	if !headerHasToken(h.Peek("Connection"), "upgrade") || !headerHasToken(h.Peek("Upgrade"), "websocket") ||
		string(h.Peek("Sec-WebSocket-Version")) != "13" || !validWebSocketKey(h.Peek("Sec-WebSocket-Key")) {
		s.reject(ctx, fasthttp.StatusBadRequest, telemetry.RejectBadRequest, codeBadRequest,
			"not a valid WebSocket upgrade (need Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key of 16 base64 bytes)")
		return
	}
	if n := s.open.Add(1); s.cfg.MaxConnections > 0 && n > int64(s.cfg.MaxConnections) {
		s.open.Add(-1)
		s.reject(ctx, fasthttp.StatusServiceUnavailable, telemetry.RejectLimit, codeUnavailable, "connection limit reached")
		return
	}
	// From here the connection counts for Shutdown, which waits for it (its
	// read goroutine is not fasthttp's). Checked and counted under mu,
	// where Shutdown starts draining, so that no upgrade slips in after
	// Shutdown began to wait.
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		s.open.Add(-1)
		s.reject(ctx, fasthttp.StatusServiceUnavailable, telemetry.RejectDraining, codeUnavailable, "server is draining")
		return
	}
	s.readLoops.Add(1)
	s.mu.Unlock()
	// fasthttp is told to let go of the connection, with no response and
	// no next request: its hijack goroutine runs letGo, and its Close
	// leaves the detached connection alone. The upgrade itself runs here,
	// on fasthttp's serving goroutine, whose stack has long grown: a
	// hijack goroutine starts with 2 KiB and outgrew it on every upgrade
	// (the stack copies were 3-8% of a connect storm's CPU in pprof, and
	// the relay holds about 230 B less per connection without them).
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(letGo)
	s.upgrade(ctx.Conn(), string(h.Peek("Sec-WebSocket-Key")), claims, ctx.RemoteAddr().String())
}

// letGo is the hijack handler of an upgraded connection, which upgrade has
// already taken over.
func letGo(net.Conn) {}

// upgrade takes the connection over from fasthttp (detach), then gws
// writes the 101, and the connection gets its actor and its own read
// goroutine. Detached, the connection leaves fasthttp free to recycle its
// request context and reader when the handler returns, instead of pinning
// them for the connection's lifetime.
func (s *Server) upgrade(nc net.Conn, key string, claims auth.Claims, remote string) {
	// Read the raw connection, not through fasthttp's request reader, which
	// goes back to its pool. A client must wait for the 101 before sending
	// frames (RFC 6455 4.1), so that reader holds nothing more of this
	// connection.
	d, ok := nc.(detacher)
	if !ok {
		panic("BUG: edge: an upgrade on a connection that Serve did not wrap")
	}
	nc = d.detach()
	if s.sendBufferPerConn.Load() {
		limitSendBuffer(nc, s.cfg.SocketSendBufferBytes)
	}
	sock := newSocket(nc, s.cfg.SocketWriteTimeout, s.metrics.SocketWritesBlocked)
	br := bufio.NewReaderSize(nc, s.cfg.ReadBufferBytes)
	req := upgradeRequests.Get().(*http.Request)
	req.Header[secWebSocketKey][0] = key
	socket, err := s.upgrader.UpgradeFromConn(writeLocked{nc, sock}, br, req)
	upgradeRequests.Put(req)
	if err != nil {
		// Detached: fasthttp's Close leaves it to us.
		_ = nc.Close()
		s.open.Add(-1)
		s.readLoops.Done()
		s.metrics.ConnectionRejected(telemetry.RejectBadRequest)
		return
	}
	sock.setUpgraded(socket)
	c := &wsConn{nc: nc, pingAt: sinceStart() + int64(firstPingIn(s.cfg.PingInterval))}
	c.alive()
	socket.Session().Store("", c)
	c.actor = s.hub.Connect(actors.ConnParams{Claims: claims, Socket: sock, RemoteAddr: remote, Handled: c.handled})
	s.metrics.ConnectionsAccepted.Inc()
	s.metrics.ConnectionsOpen.Inc()
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.watch(c)
	s.mu.Unlock()
	// A drain that started while this upgrade was in flight missed it.
	if s.draining.Load() {
		c.actor.Close(actors.CloseRestarting, telemetry.CloseShutdown)
	}
	go socket.ReadLoop() // its OnClose calls readLoops.Done
}

// limitSendBuffer caps the kernel's send buffer of a WebSocket. Left alone,
// Linux autotunes it past a megabyte for a client that stops reading
// (measured with ss -tmi), so such a client would sit on a minute of
// messages in the kernel before the outbound queue's bound, the documented
// one, ever saw it. Serve sets it once on a TCP listener, whose accepted
// connections inherit it; this is for the others (TLS).
func limitSendBuffer(nc net.Conn, n int) {
	if tc, ok := transport(nc).(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(n)
	}
}

// tuneListener sets two options on a TCP listening socket, which Linux
// copies to every connection it accepts (TestTuneListener), so an upgrade
// needs no setsockopt of their own. SO_SNDBUF (see limitSendBuffer): one call
// here instead of one per connection, which measured 5-7% of a connect's
// server CPU. TCP_DEFER_ACCEPT of 1 s: accept returns a connection only once
// its request has arrived, so fasthttp's first read finds it instead of
// parking the worker in the poller until it comes; a client that connects
// and sends nothing is held by the kernel (no descriptor, no goroutine) for
// about a second and then handed over to ReadTimeout as before. It reports
// whether SO_SNDBUF was set: if not, each upgrade sets it. A connection
// established before the listener was tuned has neither: see Listen.
func tuneListener(ln net.Listener, sendBuffer int) bool {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return false
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return false
	}
	return tuneSocket(rc, sendBuffer) == nil
}

// tuneSocket sets tuneListener's options on a socket.
func tuneSocket(rc syscall.RawConn, sendBuffer int) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, sendBuffer)
		// Best effort: without it every connection is served as before.
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, deferAcceptSeconds)
	})
	return errors.Join(err, serr)
}

// Listen listens on the TCP address addr, for Serve or ServeTLS, with the
// socket tuned (tuneListener) before it listens: a client that connects
// between a plain net.Listen and Serve gets an untuned connection, with
// the kernel's autotuned send buffer (megabytes), which lets a client
// that stopped reading stay unnoticed that much longer. No TCP keepalive
// on accepted connections: the relay pings every WebSocket itself and
// fasthttp closes idle HTTP connections, so the kernel's keepalive would
// only cost three setsockopt calls per accepted connection (5% of a
// connect storm's CPU).
func (s *Server) Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{
		KeepAlive: -1,
		Control: func(_, _ string, rc syscall.RawConn) error {
			return tuneSocket(rc, s.cfg.SocketSendBufferBytes)
		},
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

// deferAcceptSeconds is the listener's TCP_DEFER_ACCEPT: Linux rounds it up
// to one retransmission of the SYN-ACK.
const deferAcceptSeconds = 1

// secWebSocketKey is the canonical form gws's Header.Get looks up.
const secWebSocketKey = "Sec-Websocket-Key"

// upgradeRequests pools the requests handed to gws, which reads them only
// inside UpgradeFromConn. handleUpgrade has checked the method, Connection,
// Upgrade and Sec-WebSocket-Version already, so they are constants here,
// and only the key changes. gws would read Sec-WebSocket-Extensions and
// Sec-WebSocket-Protocol only with permessage-deflate or subprotocols
// configured, and neither is.
var upgradeRequests = sync.Pool{New: func() any {
	return &http.Request{Method: http.MethodGet, Header: http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Version": {"13"},
		secWebSocketKey:         {""},
	}}
}}

// validWebSocketKey reports whether key is what RFC 6455 4.1 requires: the
// base64 of 16 bytes. gws only checks that it is there.
func validWebSocketKey(key []byte) bool {
	if len(key) != 24 {
		return false
	}
	var nonce [18]byte // what 24 base64 characters decode to at most
	n, err := base64.StdEncoding.Decode(nonce[:], key)
	return err == nil && n == 16
}

// headerHasToken reports whether a comma-separated header value contains
// token, case-insensitively.
func headerHasToken(value []byte, token string) bool {
	for len(value) > 0 {
		var part []byte
		part, value, _ = bytes.Cut(value, []byte{','})
		if bytes.EqualFold(bytes.TrimSpace(part), []byte(token)) {
			return true
		}
	}
	return false
}

func (s *Server) reject(ctx *fasthttp.RequestCtx, status int, reason string, code errorCode, msg string) {
	s.metrics.ConnectionRejected(reason)
	writeError(ctx, status, code, msg)
}

// wsEvents receives gws's callbacks for every connection, on the
// connection's read goroutine.
type wsEvents struct{ s *Server }

func (e wsEvents) OnOpen(*gws.Conn) {}

func (e wsEvents) OnClose(socket *gws.Conn, err error) {
	s := e.s
	c := connOf(socket)
	reason := c.closeReason
	if reason == "" {
		reason = closeReasonOf(err)
	}
	c.actor.SocketClosed(reason)
	s.mu.Lock()
	delete(s.conns, c)
	s.wheel.remove(c)
	s.mu.Unlock()
	s.metrics.ConnectionsOpen.Dec()
	s.open.Add(-1)
	s.readLoops.Done()
}

// OnPing has the connection's actor answer, through the forwarder: a pong
// written here, as gws would, grows the read goroutine's stack (see
// OnMessage), and waits for the socket behind any stuck write.
func (e wsEvents) OnPing(socket *gws.Conn, payload []byte) {
	c := connOf(socket)
	c.alive()
	e.forward(c, payload, true)
}

func (e wsEvents) OnPong(socket *gws.Conn, _ []byte) { connOf(socket).alive() }

// OnMessage passes the frame on undecoded, through the forwarder, to the
// connection's actor, which decodes it. Decoding here, or sending to the
// actor, would grow the read goroutine's stack, 2 KiB for the connection's
// lifetime (see handoff.go and TestReadGoroutinesKeepTheirFirstStack).
func (e wsEvents) OnMessage(socket *gws.Conn, m *gws.Message) {
	c := connOf(socket)
	c.alive()
	if m.Opcode != gws.OpcodeText {
		c.closeReason = telemetry.CloseUnsupported
		c.actor.Close(actors.CloseUnsupported, telemetry.CloseUnsupported)
	} else {
		e.forward(c, m.Bytes(), false)
	}
	m.Close()
}

// forward passes a copy of data, a text frame or a ping's payload, to c's
// actor through the forwarder, unless the client already has more than
// 16 x MaxFrameBytes (1 MiB by default) waiting for the actor: then it is
// closed (1008, flood). Reading a frame costs less than decoding and
// handling it, so without the bound a client that sends as fast as it can
// would queue frames without end (1.6 GB in 3 s, measured), where
// decoding on the read goroutine once held it back.
func (e wsEvents) forward(c *wsConn, data []byte, ping bool) {
	if c.closeReason != "" {
		return // closing at the read goroutine's request
	}
	if c.unhandled.Add(frameCost(data)) > int64(16*e.s.cfg.MaxFrameBytes) {
		c.closeReason = telemetry.CloseFlood
		c.actor.Close(actors.ClosePolicy, telemetry.CloseFlood)
		return
	}
	e.s.frames <- clientFrame{actor: c.actor, data: bytes.Clone(data), ping: ping}
}

// handled is the actor's word that it has handled data (ConnParams.Handled).
func (c *wsConn) handled(data []byte) { c.unhandled.Add(-frameCost(data)) }

// frameCost is what a frame waiting for the actor counts for: its bytes,
// and its message's, so that a flood of empty pings is bounded too.
func frameCost(data []byte) int64 { return int64(len(data)) + 64 }

// alive notes that the client is there: any frame from it, a pong included,
// proves it. Only noted: the keepalive goroutine reads it (see keepalive.go).
func (c *wsConn) alive() { c.heard.Store(sinceStart()) }

// closeReasonOf maps the error that ended a read loop to a metric label.
func closeReasonOf(err error) string {
	var ce *gws.CloseError
	var code interface{ Uint16() uint16 }
	switch {
	case errors.As(err, &ce):
		return telemetry.CloseClient
	case errors.Is(err, os.ErrDeadlineExceeded):
		return telemetry.CloseDeadPeer
	case errors.Is(err, gws.ErrTextEncoding):
		// gws closed with 1007 but hands us its error, not the code.
		return telemetry.CloseProtocol
	case errors.As(err, &code):
		switch code.Uint16() {
		case actors.CloseTooLarge:
			return telemetry.CloseFrameTooBig
		case 1007, actors.ClosePolicy, 1002:
			return telemetry.CloseProtocol
		}
	}
	return telemetry.CloseClient
}

func connOf(socket *gws.Conn) *wsConn {
	v, _ := socket.Session().Load("")
	return v.(*wsConn)
}

// session is gws's per-connection storage, cut down to the one value we
// keep (gws's default is a map per connection).
type session struct{ c *wsConn }

func (s *session) Len() int {
	if s.c == nil {
		return 0
	}
	return 1
}

func (s *session) Load(string) (any, bool) { return s.c, s.c != nil }
func (s *session) Delete(string)           { s.c = nil }
func (s *session) Store(_ string, v any)   { s.c = v.(*wsConn) }
func (s *session) Range(f func(string, any) bool) {
	if s.c != nil {
		f("", s.c)
	}
}
