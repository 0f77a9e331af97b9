package edge

import (
	"context"
	"crypto/tls"
	"errors"
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
	// frames carries client frames to the forwarder (handoff.go).
	frames chan clientFrame
	// wheel holds every connection until its next keepalive check
	// (keepalive.go); guarded by mu.
	wheel *wheel
	// stopBackground, closed by Shutdown, ends the keepalive goroutine
	// (keepalive.go) and the forwarder, and background is done when both
	// have.
	stopBackground chan struct{}
	background     sync.WaitGroup
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
	// served are the connections fasthttp serves; Shutdown cuts their reads.
	served servedConns

	// shutdownOnce lets the first Shutdown run; shutdownErr is its result,
	// written before shutdownDone is closed.
	shutdownOnce sync.Once
	shutdownDone chan struct{}
	shutdownErr  error
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
		served:   servedConns{lingerTimeout: lingerTimeout},

		shutdownDone: make(chan struct{}),
	}
	ac := cfg.Actors
	ac.Verifier, ac.Metrics, ac.Logger, ac.Now = s.verifier, s.metrics, cfg.Logger, cfg.Now
	hub, err := actors.New(ac)
	if err != nil {
		return nil, err
	}
	s.hub = hub
	s.frames = make(chan clientFrame, frameQueue)
	s.wheel = newWheel(&s.cfg, sinceStart())
	s.stopBackground = make(chan struct{})
	s.background.Go(func() { s.keepAlive(s.stopBackground) })
	s.background.Go(func() { s.forwardFrames(s.stopBackground) })
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
// its socket. Under TLS, each connection is a recordConn, so that a
// WebSocket's socket can write its records itself.
func (s *Server) ServeTLS(ln net.Listener, conf *tls.Config) error {
	s.tune(ln)
	return s.serve(tls.NewListener(recordListener{ln}, conf))
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
	err := s.http.Serve(detachListener{ln, &s.served})
	if s.draining.Load() {
		return nil
	}
	return err
}

// Draining reports whether Shutdown has begun.
func (s *Server) Draining() bool { return s.draining.Load() }

// Shutdown drains the server: at once /readyz, new upgrades and new
// publishes answer 503; after drainDelay (for load balancers to notice)
// every WebSocket is closed with 1012 and every request still arriving is
// cut with 503 (servedConns.cutReads); publishes in flight are answered;
// it returns when all of that is done or ctx ends.
//
// It drains once: a later or concurrent call (a second SIGTERM, say) waits
// for the first to finish, or for its own ctx, and returns the first's
// result. Stopping the actors twice would panic inside protoactor.
func (s *Server) Shutdown(ctx context.Context, drainDelay time.Duration) error {
	first := false
	s.shutdownOnce.Do(func() { first = true })
	if first {
		s.shutdownErr = s.shutdown(ctx, drainDelay)
		close(s.shutdownDone)
		return s.shutdownErr
	}
	select {
	case <-s.shutdownDone:
		return s.shutdownErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) shutdown(ctx context.Context, drainDelay time.Duration) error {
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
	s.served.cutReads()
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
	close(s.stopBackground) // Shutdown drains once
	s.background.Wait()
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
			if s.draining.Load() { // maybe Shutdown's cut, not the client
				writeJSON(ctx, fasthttp.StatusServiceUnavailable, drainingBody)
				return
			}
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
