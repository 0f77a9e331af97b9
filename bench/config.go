package bench

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/defaults"
)

// Scenario names a load shape. Values double as result labels.
type Scenario string

// Scenarios.
const (
	// ScenarioFanout publishes at a target rate to channels that each have
	// a fixed set of subscribers, and checks every delivery.
	ScenarioFanout Scenario = "fanout"
	// ScenarioConnect opens connections as fast as the concurrency limit
	// allows and holds them idle.
	ScenarioConnect Scenario = "connect"
	// ScenarioRamp runs fanout steps at a rising rate until delivery falls
	// behind or p99 passes MaxP99, bisects between the last rate held and
	// the one that failed for RampRefine more steps, and reports the
	// highest rate held.
	ScenarioRamp Scenario = "ramp"
	// ScenarioChurn publishes as fanout does while every subscription
	// disconnects and resubscribes with since, ReconnectRate times a
	// second over all of them; each reconnect must be recovered and each
	// subscription's stream, replay and live, gapless and without
	// duplicates.
	ScenarioChurn Scenario = "churn"
	// ScenarioSlow publishes as fanout does, first with every subscriber
	// reading, then with SlowFraction of them no longer reading: the relay
	// must close those while the others lose nothing and keep their p99.
	ScenarioSlow Scenario = "slow"
)

const (
	defaultSite         = "ari:cloud:jira::site/bench"
	defaultChannels     = 10
	defaultSubs         = 10
	defaultRate         = 1000
	defaultDuration     = 10 * time.Second
	defaultPayloadBytes = 64
	defaultPublishers   = 4
	defaultConns        = 1000
	defaultConcurrency  = 64
	defaultHold         = 5 * time.Second
	defaultSourceAddrs  = 8
	defaultDrainTimeout = 5 * time.Second
	defaultReadyTimeout = 15 * time.Second
	defaultDialTimeout  = 10 * time.Second
	defaultRampStart    = 100
	defaultRampFactor   = 1.5
	defaultRampAttempts = 2
	defaultRampRefine   = 2
	defaultRampStep     = 5 * time.Second
	defaultRampMaxP99   = 50 * time.Millisecond
	defaultReconnect    = 1000
	defaultSlowFraction = 0.1
	defaultMaxP99Ratio  = 2 // issue 4: fast p99 within 2x of the no-slow run
	// defaultSlowQueue is the child relay's --send-queue-bytes in the slow
	// scenario: small, so that a client that stops reading is cut off
	// within seconds rather than after the relay's 1 MiB default.
	defaultSlowQueue = "--send-queue-bytes=32768"
	// minPayloadBytes fits the timestamp the payload carries.
	minPayloadBytes = 20
)

// Config describes one bench run. Zero values mean the defaults.
type Config struct {
	// Scenario is the load shape. Zero means fanout.
	Scenario Scenario

	// URL is the base URL of a running relay (http://host:port or https).
	// Empty means Run starts a relay itself as a child process, which is
	// also the only way the server's CPU and memory are measured.
	URL string
	// Key signs the bench's tokens; required with URL (the relay must know
	// it), generated for a child relay.
	Key auth.Key
	// ServerBinary is the realtime binary to start as the child. Empty
	// means os.Executable(), i.e. the binary running `realtime bench`.
	ServerBinary string
	// ServerArgs are extra `realtime serve` flags for the child, such as
	// --send-queue-bytes=65536.
	ServerArgs []string
	// ServerStderr receives the child's log (it logs at warn). Nil
	// discards it; the last lines are still quoted if the child fails.
	ServerStderr io.Writer
	// Baseline also runs the scenario against the physical baseline
	// (ServeBaseline, started as `realtime bench --baseline-serve`), and
	// reports the relay's figures as ratios of the baseline's. It needs a
	// child target (no URL).
	Baseline bool
	// RootCAs are the certificate authorities an https URL's certificate
	// must chain to. Nil means the system's.
	RootCAs *x509.CertPool
	// Site is the site claim of every token and the prefix of every
	// channel. Zero means "ari:cloud:jira::site/bench".
	Site string

	// Channels and Subs are the fanout shape: Subs distinct connections
	// subscribe to each of Channels channels. Zero means 10 and 10.
	Channels, Subs int
	// Gadgets is how many channels one connection subscribes to: channels
	// come in dashboards of Gadgets consecutive ones, and each of a
	// dashboard's Subs viewers holds one connection subscribed to all of
	// its gadgets, as a browser showing a dashboard does. Publishers keep
	// a dashboard's channels together, so a Batch of Gadgets messages
	// updates one dashboard. Zero means 1 (a connection per subscription).
	// Fanout and ramp only; Channels must be a multiple of it, and a relay
	// refuses more than its --max-subscriptions (100 by default).
	Gadgets int
	// Rate is the target publish rate in messages per second, over all
	// publishers. Zero means 1000. For ramp it is the first step's rate.
	Rate float64
	// Duration is how long publishing lasts (fanout) or each step lasts
	// (ramp: zero means 5s). Zero means 10s.
	Duration time.Duration
	// PayloadBytes is the size of each message's data: a timestamp and
	// padding. Zero means 64; at least 20.
	PayloadBytes int
	// Batch is the number of messages per publish request; above 1 it uses
	// /v1/publish/batch. Zero means 1.
	Batch int
	// Publishers is the number of concurrent keep-alive publishing
	// connections. Zero means 4.
	Publishers int

	// Conns is the number of connections the connect scenario opens. Zero
	// means 1000.
	Conns int
	// Concurrency bounds dials in flight, for every scenario. Zero means 64.
	Concurrency int
	// Hold is how long connect keeps its connections open and idle before
	// measuring memory. Zero means 5s.
	Hold time.Duration
	// SourceAddrs is how many loopback source addresses (127.0.0.2, .3, ...)
	// subscribers dial from when the target is on loopback, so that one
	// address's ephemeral ports never limit a run. Zero means 8.
	SourceAddrs int

	// RampFactor multiplies the rate from one ramp step to the next. Zero
	// means 1.5.
	RampFactor float64
	// RampMaxRate stops the ramp at this rate. Zero means no cap.
	RampMaxRate float64
	// RampAttempts is how many times a ramp step may run before it counts
	// as failed: on a shared machine one moment of someone else's load
	// should not set the capacity. Zero means 2; 1 means no second try.
	RampAttempts int
	// RampRefine is how many steps, after the first step that fails,
	// bisect the rates between the highest held and the lowest failed
	// (geometric midpoint), to narrow the capacity from within RampFactor
	// to within RampFactor^(1/2^RampRefine): 1.5 becomes 1.11 with 2. Zero
	// means 2; negative means none.
	RampRefine int

	// ReconnectRate is churn's target reconnects per second over all
	// subscriptions: each one reconnects every Channels*Subs/ReconnectRate.
	// Zero means 1000.
	ReconnectRate float64

	// SlowFraction is the share of each channel's subscribers that stop
	// reading in slow's second phase. Zero means 0.1.
	SlowFraction float64
	// MaxP99Ratio fails slow when the fast subscribers' p99 with slow ones
	// is more than this times their p99 without. Zero means 2.
	MaxP99Ratio float64

	// MaxP99 fails the run when the p99 latency passes it; for ramp it is
	// the bound a step must hold; for slow it bounds the fast subscribers.
	// Zero means no bound (ramp: 50ms).
	MaxP99 time.Duration
	// MinRate fails the run when fewer publishes per second were achieved
	// (ramp: when the capacity found is lower). Zero means no bound.
	MinRate float64
	// DrainTimeout is how long to wait, after publishing stops, for
	// deliveries to stop arriving. Zero means 5s.
	DrainTimeout time.Duration

	// Progress receives a progress line every second. Nil means none.
	Progress io.Writer
}

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("bench: invalid config")

func (c *Config) setDefaults() {
	defaults.Set(&c.Scenario, ScenarioFanout)
	defaults.Set(&c.Site, defaultSite)
	defaults.Set(&c.Channels, defaultChannels)
	defaults.Set(&c.Subs, defaultSubs)
	defaults.Set(&c.Gadgets, 1)
	defaults.Set(&c.Rate, defaultRate)
	if c.Scenario == ScenarioRamp {
		defaults.Set(&c.Duration, defaultRampStep)
		defaults.Set(&c.MaxP99, defaultRampMaxP99)
	}
	defaults.Set(&c.Duration, defaultDuration)
	defaults.Set(&c.PayloadBytes, defaultPayloadBytes)
	defaults.Set(&c.Batch, 1)
	defaults.Set(&c.Publishers, defaultPublishers)
	defaults.Set(&c.Conns, defaultConns)
	defaults.Set(&c.Concurrency, defaultConcurrency)
	defaults.Set(&c.Hold, defaultHold)
	defaults.Set(&c.SourceAddrs, defaultSourceAddrs)
	defaults.Set(&c.RampFactor, defaultRampFactor)
	defaults.Set(&c.RampAttempts, defaultRampAttempts)
	defaults.Set(&c.RampRefine, defaultRampRefine)
	defaults.Set(&c.DrainTimeout, defaultDrainTimeout)
	defaults.Set(&c.ReconnectRate, defaultReconnect)
	defaults.Set(&c.SlowFraction, defaultSlowFraction)
	defaults.Set(&c.MaxP99Ratio, defaultMaxP99Ratio)
	if c.Scenario == ScenarioSlow && c.URL == "" && !slices.ContainsFunc(c.ServerArgs, isSendQueueArg) {
		c.ServerArgs = append(slices.Clip(c.ServerArgs), defaultSlowQueue)
	}
}

// isSendQueueArg reports whether a `realtime serve` argument sets the
// send queue (--send-queue-bytes=N or a bare --send-queue-bytes before N).
func isSendQueueArg(a string) bool {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	return strings.HasPrefix(a, "-") && name == "send-queue-bytes"
}

// dashboards is how many dashboards of Gadgets channels there are.
func (c *Config) dashboards() int { return c.Channels / c.Gadgets }

// slowPerChannel is how many of each channel's subscribers slow stops.
// The epsilon keeps 0.1 x 30 from rounding down to 2.
func (c *Config) slowPerChannel() int {
	return int(float64(c.Subs)*c.SlowFraction + 1e-9)
}

// isSlow reports whether the j-th subscriber of a channel is one that slow
// stops: slowPerChannel of them, spread evenly over the channel's.
func (c *Config) isSlow(j int) bool {
	k, n := c.slowPerChannel(), c.Subs
	return (j+1)*k/n > j*k/n
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch c.Scenario {
	case ScenarioFanout, ScenarioConnect, ScenarioRamp, ScenarioChurn, ScenarioSlow:
	default:
		return fmt.Errorf("%w: unknown scenario %q (want fanout, connect, ramp, churn or slow)", ErrConfig, c.Scenario)
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: URL must be http://host:port or https://host:port", ErrConfig)
		}
		if c.Key.ID == "" || len(c.Key.Secret) == 0 {
			return fmt.Errorf("%w: a URL needs the relay's Key (kid:secret)", ErrConfig)
		}
	}
	if c.Baseline && c.URL != "" {
		return fmt.Errorf("%w: the baseline is compared on this machine: it needs a child relay, not a URL", ErrConfig)
	}
	if c.Baseline && (c.Scenario == ScenarioChurn || c.Scenario == ScenarioSlow) {
		return fmt.Errorf("%w: the baseline has no recovery and no slow-consumer policy: --baseline is for fanout, connect and ramp", ErrConfig)
	}
	switch {
	case c.Channels < 1 || c.Subs < 1 || c.Conns < 1 || c.Publishers < 1 || c.Concurrency < 1:
		return fmt.Errorf("%w: channels, subs, conns, publishers and concurrency must be positive", ErrConfig)
	case c.Rate <= 0 || c.Duration <= 0 || c.Hold <= 0 || c.DrainTimeout <= 0:
		return fmt.Errorf("%w: rate and durations must be positive", ErrConfig)
	case c.PayloadBytes < minPayloadBytes:
		return fmt.Errorf("%w: payload must be at least %d bytes (it carries a timestamp)", ErrConfig, minPayloadBytes)
	case c.Batch < 1:
		return fmt.Errorf("%w: batch must be positive", ErrConfig)
	case c.Gadgets < 1 || c.Channels%c.Gadgets != 0:
		return fmt.Errorf("%w: gadgets must divide channels (dashboards of gadgets channels each)", ErrConfig)
	case c.Gadgets > 1 && c.Scenario != ScenarioFanout && c.Scenario != ScenarioRamp:
		return fmt.Errorf("%w: gadgets above 1 is for fanout and ramp", ErrConfig)
	case c.SourceAddrs < 1 || c.SourceAddrs > 250:
		return fmt.Errorf("%w: source addresses must be 1 to 250", ErrConfig)
	case c.RampAttempts < 1:
		return fmt.Errorf("%w: ramp attempts must be at least 1", ErrConfig)
	case c.RampFactor <= 1:
		return fmt.Errorf("%w: ramp factor must be above 1", ErrConfig)
	case c.MaxP99 < 0 || c.MinRate < 0 || c.RampMaxRate < 0 || c.MaxP99Ratio < 0:
		return fmt.Errorf("%w: thresholds must not be negative", ErrConfig)
	case c.ReconnectRate <= 0:
		return fmt.Errorf("%w: reconnect rate must be positive", ErrConfig)
	case c.Scenario == ScenarioSlow && (c.SlowFraction <= 0 || c.slowPerChannel() < 1 || c.slowPerChannel() >= c.Subs):
		return fmt.Errorf("%w: slow fraction %g of %d subscribers per channel must stop at least one and leave at least one reading",
			ErrConfig, c.SlowFraction, c.Subs)
	}
	return nil
}
