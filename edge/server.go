package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/valyala/fasthttp"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/telemetry"
)

// Server is the public HTTP and WebSocket front of one relay.
type Server struct {
	// Static after New.
	cfg      Config
	log      *slog.Logger
	metrics  *telemetry.Metrics
	verifier *auth.Verifier
	hub      *actors.Hub
	http     *fasthttp.Server
	upgrader *gws.Upgrader
	origins  map[string]bool
	limiter  *siteLimiter // nil when publishes are not rate-limited

	draining atomic.Bool
	// sendBufferPerConn is set when a listener could not take SO_SNDBUF
	// for its connections (TLS), so each upgrade sets it.
	sendBufferPerConn atomic.Bool
	// open counts connections from the accepted upgrade to the end of
	// their read loop; it enforces MaxConnections.
	open atomic.Int64
	// readLoops tracks each upgrade from its acceptance to the end of its
	// read goroutine, so Shutdown can wait for them.
	readLoops sync.WaitGroup

	mu    sync.Mutex
	conns map[*wsConn]struct{} // guarded by mu
	// listeners are those passed to Serve, and listenersClosed is set when
	// Shutdown closes them: fasthttp only knows a listener once its Serve
	// has begun, and ignores a Shutdown that came before. Guarded by mu.
	listeners       []net.Listener
	listenersClosed bool
}

// New validates cfg and builds a Server with its actors; it does not listen.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		metrics:  telemetry.New(auth.DenyReasons),
		verifier: &auth.Verifier{Keys: cfg.Keys, Leeway: cfg.Leeway},
		conns:    make(map[*wsConn]struct{}),
	}
	ac := cfg.Actors
	ac.Verifier, ac.Metrics, ac.Logger, ac.Now = s.verifier, s.metrics, cfg.Logger, cfg.Now
	hub, err := actors.New(ac)
	if err != nil {
		return nil, err
	}
	s.hub = hub
	if s.cfg.KeepaliveTimeout == 0 {
		// Two missed pings and some slack for a slow network.
		s.cfg.KeepaliveTimeout = 2*hub.PingInterval() + 5*time.Second
	}
	if len(cfg.AllowedOrigins) > 0 {
		s.origins = make(map[string]bool, len(cfg.AllowedOrigins))
		for _, o := range cfg.AllowedOrigins {
			s.origins[o] = true
		}
	}
	if cfg.PublishRatePerSite > 0 {
		s.limiter = newSiteLimiter(cfg.PublishRatePerSite)
	}
	s.upgrader = gws.NewUpgrader(wsEvents{s}, &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxFrameBytes,
		ReadBufferSize:     cfg.ReadBufferBytes,
		CheckUtf8Enabled:   true,
		// Message handlers must run in order per connection.
		ParallelEnabled:  false,
		ParallelGolimit:  1, // unused with ParallelEnabled off, but allocated per connection
		Recovery:         gws.Recovery,
		HandshakeTimeout: cfg.WriteTimeout,
		NewSession:       func() gws.SessionStorage { return &session{} },
	})
	s.http = &fasthttp.Server{
		Handler:            s.route,
		ErrorHandler:       s.httpError,
		Name:               "realtime",
		ReadTimeout:        cfg.ReadTimeout,
		WriteTimeout:       cfg.WriteTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		MaxRequestBodySize: max(cfg.maxPublishBody(), cfg.maxBatchBody()),
		ReadBufferSize:     cfg.MaxHeaderBytes,
		// Off: fasthttp then returns its request reader (ReadBufferSize)
		// and hijack wrapper to its pools when the hijack handler returns,
		// instead of leaving them to the GC, and closes the connection,
		// which upgrade has detached (detachableConn).
		KeepHijackedConns:             false,
		CloseOnShutdown:               true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		SecureErrorLogMessage:         true,
		Logger:                        fasthttpLogger{s.log},
		DisableHeaderNamesNormalizing: false,
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.tune(ln)
	return s.serve(ln)
}

// ServeTLS serves HTTPS and WSS on the TCP listener ln until Shutdown. ln
// is tuned as Serve tunes it before TLS wraps it: a TLS listener hides
// its socket.
func (s *Server) ServeTLS(ln net.Listener, conf *tls.Config) error {
	s.tune(ln)
	return s.serve(tls.NewListener(ln, conf))
}

// tune sets the listener's socket options (tuneListener), or, when it
// cannot, has every upgrade set SO_SNDBUF itself.
func (s *Server) tune(ln net.Listener) {
	if !tuneListener(ln, s.cfg.SocketSendBufferBytes) {
		s.sendBufferPerConn.Store(true)
	}
}

func (s *Server) serve(ln net.Listener) error {
	s.mu.Lock()
	if s.listenersClosed {
		s.mu.Unlock()
		return ln.Close()
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.http.Serve(detachListener{ln})
	if s.draining.Load() {
		return nil
	}
	return err
}

// detachListener hands fasthttp connections that an upgrade can detach.
type detachListener struct{ net.Listener }

func (l detachListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*tls.Conn); ok {
		// fasthttp recognises TLS by the methods of *tls.Conn.
		return &detachableTLSConn{Conn: tc}, nil
	}
	return &detachableConn{Conn: c}, nil
}

// detacher is a connection whose Close does nothing once detached: fasthttp
// closes a hijacked connection when the hijack handler returns
// (KeepHijackedConns off), and an upgraded WebSocket must outlive it. This
// lets fasthttp recycle its 8 KiB request reader, which otherwise was two
// thirds of a connect's garbage (GC work, and GC headroom in memory per
// connection).
type detacher interface {
	// detach returns the connection, which the caller now owns and closes.
	detach() net.Conn
	// reserve sets what to undo if fasthttp closes the connection without
	// its hijack handler ever running (it skips it when resetting the
	// deadlines fails), so that an upgrade counted for Shutdown and
	// MaxConnections is not counted forever. Called by the request's
	// handler, on the connection's serving goroutine.
	reserve(release func())
	// lingerOnClose makes Close half-close and drain the connection first
	// (see lingeringClose). Called by httpError, on the serving goroutine.
	lingerOnClose()
}

// detachment is the state both detachable connection types share: two
// types, because fasthttp recognises TLS by the methods of *tls.Conn.
type detachment struct {
	detached atomic.Bool
	release  func() // see reserve; touched only by the serving goroutine
	linger   bool   // see lingerOnClose; touched only by the serving goroutine
}

func (d *detachment) reserve(release func()) { d.release = release }
func (d *detachment) lingerOnClose()         { d.linger = true }

// take marks c detached and returns it.
func (d *detachment) take(c net.Conn) net.Conn { d.detached.Store(true); return c }

// close closes c unless it was detached, undoing a reservation that no
// upgrade took.
func (d *detachment) close(c net.Conn) error {
	if d.detached.Load() {
		return nil
	}
	if r := d.release; r != nil {
		d.release = nil
		r()
	}
	if d.linger {
		lingeringClose(c)
	}
	return c.Close()
}

// A refused request's connection lingers at most this long, reading and
// discarding at most lingerBytes, before it is closed.
const (
	lingerTimeout = 2 * time.Second
	lingerBytes   = 64 << 20
)

// lingeringClose prepares c, whose request fasthttp refused before reading
// all of it (a body over the limit, headers too large), for Close. Closing
// a socket with unread input makes the kernel send a reset, not an end of
// stream, and a client still writing its body then gets "connection reset
// by peer" instead of the 413 already sent: the clear error is lost. So the
// response is followed by an end of stream (half-close), and what the
// client still sends is read and discarded until it closes, lingerBytes, or
// lingerTimeout, as Apache's lingering close does. Over TLS both steps act
// on the TCP socket: the bytes are discarded, not decrypted, and the
// client already has the response.
func lingeringClose(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	hc, ok := c.(interface{ CloseWrite() error })
	if !ok || hc.CloseWrite() != nil || c.SetReadDeadline(time.Now().Add(lingerTimeout)) != nil {
		return
	}
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}

// fasthttp serves a connection as TLS (IsTLS, no plain-HTTP error on an
// unfinished handshake) when it has these methods of *tls.Conn.
var _ interface {
	Handshake() error
	ConnectionState() tls.ConnectionState
} = (*detachableTLSConn)(nil)

type detachableConn struct {
	net.Conn
	detachment
}

func (c *detachableConn) detach() net.Conn { return c.take(c.Conn) }
func (c *detachableConn) Close() error     { return c.close(c.Conn) }

type detachableTLSConn struct {
	*tls.Conn
	detachment
}

func (c *detachableTLSConn) detach() net.Conn { return c.take(c.Conn) }
func (c *detachableTLSConn) Close() error     { return c.close(c.Conn) }

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Shutdown drains the server: at once /readyz, new upgrades and new
// publishes answer 503; after drainDelay (for load balancers to notice)
// every WebSocket is closed with 1012; publishes in flight are answered;
// it returns when all of that is done or ctx ends.
func (s *Server) Shutdown(ctx context.Context, drainDelay time.Duration) error {
	s.mu.Lock() // see handleUpgrade: no upgrade is counted after this
	s.draining.Store(true)
	s.mu.Unlock()
	if drainDelay > 0 {
		t := time.NewTimer(drainDelay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	s.closeAll(actors.CloseRestarting, telemetry.CloseShutdown)
	httpDone := make(chan error, 1)
	go func() {
		err := s.http.ShutdownWithContext(ctx)
		// A Serve that fasthttp did not know of yet: closing its listener
		// ends it. The others are closed already, so errors are expected.
		s.mu.Lock()
		s.listenersClosed = true
		for _, ln := range s.listeners {
			_ = ln.Close()
		}
		s.mu.Unlock()
		httpDone <- err
	}()
	loopsDone := make(chan struct{})
	go func() { s.readLoops.Wait(); close(loopsDone) }()
	var err error
	select {
	case err = <-httpDone:
		select {
		case <-loopsDone:
		case <-ctx.Done():
			err = ctx.Err()
		}
	case <-ctx.Done():
		err = ctx.Err()
	}
	// Stop the actors even past the deadline, briefly: it stops every
	// channel's timers and frees their memory.
	stopCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		stopCtx, cancel = context.WithTimeout(context.Background(), time.Second)
		defer cancel()
	}
	return errors.Join(err, s.hub.Stop(stopCtx))
}

// Metrics returns the relay's metrics.
func (s *Server) Metrics() *telemetry.Metrics { return s.metrics }

// Hub returns the relay's actors, for tests that inject faults.
func (s *Server) Hub() *actors.Hub { return s.hub }

// ConnsForTest returns the actor handles of the open connections.
func (s *Server) ConnsForTest() []*actors.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*actors.Conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c.actor)
	}
	return out
}

// closeAll asks every open connection to close with code.
func (s *Server) closeAll(code uint16, reason string) {
	s.mu.Lock()
	conns := make([]*wsConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.actor.Close(code, reason)
	}
}

// The publish endpoints' paths: routed here, and counted by httpError when
// fasthttp refuses their request before route.
const (
	pathPublish      = "/v1/publish"
	pathPublishBatch = "/v1/publish/batch"
)

func (s *Server) route(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/v1/ws":
		s.handleUpgrade(ctx)
	case pathPublish:
		s.handlePublish(ctx, false)
	case pathPublishBatch:
		s.handlePublish(ctx, true)
	case "/healthz":
		writeJSON(ctx, fasthttp.StatusOK, healthBody)
	case "/readyz":
		status, body := s.readiness()
		writeJSON(ctx, status, body)
	default:
		writeError(ctx, fasthttp.StatusNotFound, codeNotFound, "no such endpoint")
	}
}

// The bodies of /healthz and /readyz, on both listeners.
var (
	healthBody   = []byte(`{"status":"ok"}`)
	readyBody    = []byte(`{"status":"ready"}`)
	drainingBody = errorBody(codeUnavailable, "draining")
)

// readiness answers /readyz: 503 from the moment Shutdown begins.
func (s *Server) readiness() (status int, body []byte) {
	if s.draining.Load() {
		return fasthttp.StatusServiceUnavailable, drainingBody
	}
	return fasthttp.StatusOK, readyBody
}

// httpError answers what fasthttp rejects before our handler runs, in the
// same JSON error format as everything else.
func (s *Server) httpError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	if d, ok := ctx.Conn().(detacher); ok && !(errors.As(err, &ne) && ne.Timeout()) {
		// fasthttp closes the connection after this answer, maybe with the
		// rest of the request unread, which the client may still be
		// sending. (A client that timed out is not sending.)
		d.lingerOnClose()
	}
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		if p := string(ctx.Path()); p == pathPublish || p == pathPublishBatch {
			// Refused before the handler: counted here, as the handler
			// counts its own 413s.
			s.metrics.Published(telemetry.PublishTooLarge)
		}
		writeError(ctx, fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "request body too large")
	case errors.As(err, &small) || errors.Is(err, fasthttp.ErrSmallReadBuffer):
		writeError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, codeTooLarge, "request headers too large")
	default:
		if errors.As(err, &ne) && ne.Timeout() {
			writeError(ctx, fasthttp.StatusRequestTimeout, codeBadRequest, "request timed out")
			return
		}
		writeError(ctx, fasthttp.StatusBadRequest, codeBadRequest, "malformed HTTP request")
	}
}

// fasthttpLogger routes fasthttp's own messages into our logger, at debug:
// they are mostly about clients that misbehave, which metrics already count.
// Only the format is kept: the arguments can carry request bytes, a query
// string with a token among them.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "format", format)
}
