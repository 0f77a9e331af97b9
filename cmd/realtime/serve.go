package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/edge"
)

// serve runs the relay until SIGTERM or SIGINT, then drains and stops it.
func serve(args []string) error {
	f := newEnvFlags("serve")
	dev := f.Bool("dev", false, "development mode: generated key, 127.0.0.1:8080, text logs, prints ready-to-use tokens")
	listen := f.String("listen", ":8080", "public listener (WebSocket, publish, health)")
	adminListen := f.String("admin-listen", "127.0.0.1:9090", "admin listener (metrics, health, pprof); keep it private")
	keys := f.String("keys", "", "comma-separated kid:secret pairs (secret in standard base64, >= 32 bytes); the first signs new tokens")
	keysFile := f.String("keys-file", "", "file with one kid:secret per line (alternative to --keys)")
	retention := f.Duration("retention", 2*time.Minute, "how long each channel keeps messages for recovery")
	historyMessages := f.Int("history-messages", 1000, "max messages kept per channel")
	historyBytes := f.Int("history-bytes", 4<<20, "max bytes kept per channel")
	maxConns := f.Int("max-connections", 0, "max open WebSocket connections; 0 means no cap")
	maxSubs := f.Int("max-subscriptions", 100, "max subscriptions per connection")
	sendQueue := f.Int("send-queue-bytes", 1<<20, "outbound queue per connection in bytes; a client behind by more is closed with 4008")
	sendBuffer := f.Int("socket-send-buffer", 64<<10, "kernel send buffer per WebSocket in bytes (SO_SNDBUF; the kernel doubles it)")
	maxFrame := f.Int("max-frame-bytes", 64<<10, "max client frame in bytes; larger closes with 1009")
	maxData := f.Int("max-data-bytes", 64<<10, "max published data in bytes; larger gets 413")
	maxBatch := f.Int("max-batch", 100, "max messages per batch publish")
	publishRate := f.Float64("publish-rate-per-site", 0, "publishes per second per site before 429; 0 means no limit")
	origins := f.String("allowed-origins", "", "comma-separated Origin values allowed to connect; empty allows all")
	pingInterval := f.Duration("ping-interval", 25*time.Second, "how often the server pings each connection")
	keepalive := f.Duration("keepalive-timeout", 0, "silence after which a connection is dead; 0 means 2 x ping-interval + 5s")
	expiringLead := f.Duration("expiring-lead", 60*time.Second, "how long before token expiry a client is warned")
	tlsCert := f.String("tls-cert", "", "TLS certificate file (PEM); with --tls-key serves HTTPS and WSS")
	tlsKey := f.String("tls-key", "", "TLS key file (PEM)")
	drainDelay := f.Duration("drain-delay", 0, "on SIGTERM, how long /readyz reports 503 before clients are closed with 1012")
	shutdownTimeout := f.Duration("shutdown-timeout", 15*time.Second, "on SIGTERM, the longest the whole shutdown may take")
	logFormat := f.String("log-format", "json", "log format: json or text")
	logLevel := f.String("log-level", "info", "log level: debug, info, warn or error")
	if err := f.parse(args); err != nil {
		return err
	}

	var ring *auth.Keyring
	var err error
	if *dev {
		if !flagSet(f, "listen") {
			*listen = "127.0.0.1:8080"
		}
		if !flagSet(f, "log-format") {
			*logFormat = "text"
		}
		key, kerr := auth.GenerateKey("dev")
		if kerr != nil {
			return kerr
		}
		ring, err = auth.NewKeyring(key)
	} else {
		ring, err = loadKeys(*keys, *keysFile)
	}
	if err != nil {
		return err
	}
	log, err := newLogger(*logFormat, *logLevel)
	if err != nil {
		return err
	}

	cfg := edge.Config{
		Keys:                  ring,
		Logger:                log,
		MaxConnections:        *maxConns,
		MaxFrameBytes:         *maxFrame,
		MaxDataBytes:          *maxData,
		MaxBatch:              *maxBatch,
		PublishRatePerSite:    *publishRate,
		PingInterval:          *pingInterval,
		KeepaliveTimeout:      *keepalive,
		SocketSendBufferBytes: *sendBuffer,
		Actors: actors.Config{
			History:          actors.HistoryLimits{Retention: *retention, MaxMessages: *historyMessages, MaxBytes: *historyBytes},
			SendQueueBytes:   *sendQueue,
			MaxSubscriptions: *maxSubs,
			ExpiringLead:     *expiringLead,
		},
	}
	for o := range strings.SplitSeq(*origins, ",") {
		// "a, b" as in --keys: an origin never has spaces around it.
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	if *origins != "" && len(cfg.AllowedOrigins) == 0 {
		// Only empty means every origin; a list of none (an unset template
		// variable between commas) must not open the relay to all of them.
		return fmt.Errorf("--allowed-origins %q names no origin (leave it empty to allow every origin)", *origins)
	}
	srv, err := edge.New(cfg)
	if err != nil {
		return err
	}
	ln, err := srv.Listen(*listen)
	if err != nil {
		return err
	}
	scheme := "http"
	var tlsConf *tls.Config
	if *tlsCert != "" || *tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}
	adminLn, err := net.Listen("tcp", *adminListen)
	if err != nil {
		return err
	}
	admin := &http.Server{Handler: srv.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 2)
	go func() {
		if tlsConf != nil {
			errc <- srv.ServeTLS(ln, tlsConf)
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	go func() { errc <- admin.Serve(adminLn) }()
	log.Info("relay listening", "listen", ln.Addr().String(), "admin_listen", adminLn.Addr().String(), "tls", scheme == "https")
	if *dev {
		printDevHelp(ring.Default(), scheme, ln.Addr().String())
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-errc:
		return fmt.Errorf("listener failed: %w", err)
	}
	signal.Stop(sig)

	ctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	start := time.Now()
	err = srv.Shutdown(ctx, *drainDelay)
	log.Info("relay stopped", "took", time.Since(start).String(), "err", errString(err))
	start = time.Now()
	aerr := admin.Shutdown(ctx)
	if errors.Is(aerr, context.DeadlineExceeded) {
		// A request still running on the admin listener (a CPU profile
		// takes its seconds) is cut rather than failing a clean stop.
		aerr = admin.Close()
	}
	log.Info("admin stopped", "took", time.Since(start).String(), "err", errString(aerr))
	return errors.Join(err, aerr)
}

func flagSet(f envFlags, name string) bool {
	set := false
	f.Visit(func(fl *flag.Flag) { set = set || fl.Name == name })
	_, env := os.LookupEnv(envName(name))
	return set || env
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func newLogger(format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be json or text, not %q", format)
}

// printDevHelp prints ready-to-use tokens and commands for --dev. They go to
// stdout, never to the log: tokens are never logged.
func printDevHelp(key auth.Key, scheme, addr string) {
	const site, dash = "ari:cloud:jira::site/dev", "dash-1"
	now := time.Now()
	sub, _ := auth.Mint(key, auth.Claims{Subject: "dev-user", Site: site, Dash: dash, Role: auth.RoleSubscribe, IssuedAt: now, ExpiresAt: now.Add(24 * time.Hour)})
	pub, _ := auth.Mint(key, auth.Claims{Subject: "dev-backend", Site: site, Role: auth.RolePublish, IssuedAt: now, ExpiresAt: now.Add(24 * time.Hour)})
	ws := "ws"
	if scheme == "https" {
		ws = "wss"
	}
	ch := site + "/" + dash + "/gadget-1"
	fmt.Printf(`
realtime dev server: %[1]s://%[2]s  (key %[3]s, valid until restart)

Subscribe token (24h):
  %[4]s
Publish token (24h):
  %[5]s

1. Connect and subscribe, e.g. in a browser console:
  const ws = new WebSocket("%[6]s://%[2]s/v1/ws?token=%[4]s");
  ws.onmessage = e => console.log(e.data);
  ws.onopen = () => ws.send(JSON.stringify({op: "sub", id: 1, ch: "%[7]s"}));

2. Publish:
  curl -s %[1]s://%[2]s/v1/publish -H 'Authorization: Bearer %[5]s' -H 'Content-Type: application/json' \
    -d '{"channel":"%[7]s","event":"AddAbsence","data":"hello"}'

`, scheme, addr, key.ID, sub, pub, ws, ch)
}
