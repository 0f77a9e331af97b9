package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/realtime-relay/realtime/auth"
	loadgen "github.com/realtime-relay/realtime/bench"
)

// bench runs `realtime bench`; it returns the process exit code: 0 when
// the run passed, 1 when it failed its checks or could not run, 2 for bad
// flags. (Package bench is imported as loadgen, since main calls this
// function bench.)
func bench(args []string) int {
	cfg, out, err := benchConfig(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime bench:", err)
		return 2
	}
	if isTerminal(os.Stderr) {
		cfg.Progress = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if out.baselineServe != "" {
		return serveBaseline(ctx, out.baselineServe)
	}
	if out.cpuProfile != "" {
		f, err := os.Create(out.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "realtime bench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "realtime bench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime bench:", err)
		return 1
	}
	if out.json {
		err = res.WriteJSON(os.Stdout)
	} else {
		err = res.WriteTable(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime bench:", err)
		return 1
	}
	if !res.OK() {
		return 1
	}
	return 0
}

// benchConfig parses the bench flags (and their REALTIME_* twins).
func benchConfig(args []string, out io.Writer) (cfg loadgen.Config, opts benchOutput, err error) {
	f := newEnvFlags("bench")
	f.SetOutput(out)
	scenario := f.String("scenario", "fanout", "load shape: fanout, connect, ramp, churn or slow")
	url := f.String("url", "", "base URL of a running relay (http://host:port); empty starts one as a child process")
	key := f.String("key", "", "kid:secret of the relay at --url (standard base64 secret); not needed for a child")
	caFile := f.String("ca-file", "", "PEM file of the CAs an https --url's certificate must chain to (a private CA, or a self-signed certificate); empty means the system's")
	var serverArgs stringList
	f.Var(&serverArgs, "server-arg", "extra `flag` of the child's realtime serve, e.g. --server-arg=--send-queue-bytes=65536; repeatable (the environment twin holds one); slow adds --send-queue-bytes=32768 unless given")
	serverBin := f.String("server-binary", "", "realtime binary to start as the child; empty means this one")
	serverLog := f.Bool("server-log", false, "copy the child's log (warn and above) to stderr")
	site := f.String("site", "ari:cloud:jira::site/bench", "site claim of the bench's tokens and prefix of its channels")
	channels := f.Int("channels", 10, "fanout/ramp/churn/slow: number of channels")
	subs := f.Int("subs", 10, "fanout/ramp/churn/slow: subscriber connections per channel")
	gadgets := f.Int("gadgets", 1, "fanout/ramp: channels per connection: each connection subscribes to one dashboard's gadgets (consecutive channels), and publishers keep a dashboard's channels together")
	rate := f.Float64("rate", 1000, "target publishes per second over all publishers; ramp: the first step's rate")
	duration := f.Duration("duration", 0, "how long to publish (default 10s); ramp: each step's length (default 5s); slow: each of its two phases")
	payload := f.Int("payload", 64, "bytes of data per message (a timestamp plus padding; at least 20)")
	batch := f.Int("batch", 1, "messages per publish request; above 1 uses /v1/publish/batch")
	publishers := f.Int("publishers", 4, "concurrent keep-alive publishing connections")
	conns := f.Int("conns", 1000, "connect: number of connections to open")
	concurrency := f.Int("concurrency", 64, "dials in flight at once, every scenario")
	hold := f.Duration("hold", 0, "connect: how long to hold the connections idle before measuring (default 5s)")
	sourceAddrs := f.Int("source-addrs", 8, "loopback source addresses to dial from (127.0.0.2, .3, ...), when the target is on loopback")
	rampFactor := f.Float64("ramp-factor", 1.5, "ramp: rate multiplier from one step to the next")
	rampMax := f.Float64("ramp-max-rate", 0, "ramp: stop at this rate; 0 means no cap")
	rampAttempts := f.Int("ramp-attempts", 2, "ramp: runs of a step before it counts as failed (1: no second try)")
	rampRefine := f.Int("ramp-refine", 2, "ramp: steps after the first failed one that bisect between the highest rate held and the lowest failed; -1 means none (0 means the default, 2)")
	reconnectRate := f.Float64("reconnect-rate", 1000, "churn: target reconnects per second, spread over all subscriptions")
	slowFraction := f.Float64("slow-fraction", 0.1, "slow: share of each channel's subscribers that stop reading in the second phase")
	maxP99Ratio := f.Float64("max-p99-ratio", 2, "slow: fail when the fast subscribers' p99 with slow ones is above this times their p99 without")
	maxP99 := f.Duration("max-p99", 0, "fail when p99 latency is above this; ramp: the bound each step must hold (default 50ms); slow: the fast subscribers' bound; 0 means none")
	minRate := f.Float64("min-rate", 0, "fail when fewer publishes per second were achieved (ramp: capacity); 0 means none")
	drain := f.Duration("drain-timeout", 0, "after publishing, how long to wait for deliveries to stop arriving (default 5s)")
	baseline := f.Bool("baseline", false, "also run the scenario against a minimal gws server (no actors, auth or buffers) and report the relay as ratios of it; child target only")
	baselineServe := f.String("baseline-serve", "", "internal, used by --baseline: serve the baseline on this address instead of benchmarking")
	jsonOut := f.Bool("json", false, "print the result as one JSON line instead of a table")
	cpuProfile := f.String("cpuprofile", "", "write the load generator's own CPU profile to this file (the child relay's is on its admin listener)")
	if err := f.parse(args); err != nil {
		return cfg, opts, err
	}
	if f.NArg() > 0 {
		return cfg, opts, fmt.Errorf("unexpected argument %q", f.Arg(0))
	}
	cfg = loadgen.Config{
		Scenario:      loadgen.Scenario(*scenario),
		URL:           *url,
		ServerBinary:  *serverBin,
		ServerArgs:    serverArgs,
		Site:          *site,
		Channels:      *channels,
		Subs:          *subs,
		Gadgets:       *gadgets,
		Rate:          *rate,
		Duration:      *duration,
		PayloadBytes:  *payload,
		Batch:         *batch,
		Publishers:    *publishers,
		Conns:         *conns,
		Concurrency:   *concurrency,
		Hold:          *hold,
		SourceAddrs:   *sourceAddrs,
		RampFactor:    *rampFactor,
		RampMaxRate:   *rampMax,
		RampAttempts:  *rampAttempts,
		RampRefine:    *rampRefine,
		MaxP99:        *maxP99,
		MinRate:       *minRate,
		DrainTimeout:  *drain,
		ReconnectRate: *reconnectRate,
		SlowFraction:  *slowFraction,
		MaxP99Ratio:   *maxP99Ratio,
		Baseline:      *baseline,
	}
	if *serverLog {
		cfg.ServerStderr = os.Stderr
	}
	if *key != "" {
		keys, err := auth.ParseKeys(*key)
		if err != nil {
			return cfg, opts, fmt.Errorf("--key: %w", err)
		}
		cfg.Key = keys[0]
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return cfg, opts, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return cfg, opts, fmt.Errorf("--ca-file: no PEM certificate in %s", *caFile)
		}
	}
	switch {
	case *url != "" && *key == "":
		return cfg, opts, errors.New("--url needs --key (kid:secret of the relay)")
	case *url == "" && *key != "":
		return cfg, opts, errors.New("--key is only for --url; a child relay gets a generated key")
	}
	return cfg, benchOutput{json: *jsonOut, cpuProfile: *cpuProfile, baselineServe: *baselineServe}, nil
}

// benchOutput is what the command does around the run, beside the Config.
type benchOutput struct {
	json       bool   // one JSON line instead of the table
	cpuProfile string // file for the load generator's CPU profile
	// baselineServe, when set, makes the command the baseline's child
	// process: serve it on this address until SIGTERM.
	baselineServe string
}

// serveBaseline runs the baseline child of --baseline until SIGTERM.
func serveBaseline(ctx context.Context, addr string) int {
	ln, err := listenTCP(addr)
	if err == nil {
		err = loadgen.ServeBaseline(ctx, ln)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime bench --baseline-serve:", err)
		return 1
	}
	return 0
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// listenTCP listens on addr with TCP keepalive off for the accepted
// connections, as edge.Server.Listen does (see there why), for a
// like-for-like baseline.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}
