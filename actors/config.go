package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/defaults"
	"github.com/realtime-relay/realtime/internal/telemetry"
)

// Defaults, used where a Config field is zero.
const (
	defaultRetention          = 2 * time.Minute
	defaultHistoryMessages    = 1000
	defaultHistoryBytes       = 4 << 20
	defaultSendQueueBytes     = 1 << 20
	defaultSendQueueMessages  = 10000
	defaultMaxSubscriptions   = 100
	defaultExpiringLead       = 60 * time.Second
	defaultForbiddenLimit     = 5
	defaultPublishTimeout     = 5 * time.Second
	defaultBatchHold          = 2 * time.Millisecond
	defaultSubscribeRate      = 50
	defaultSubscribeBurst     = 200
	defaultCloseTimeout       = 2 * time.Second
	defaultKeysPerHistoryItem = 10
)

// Config configures the actors of one relay. Zero values mean the defaults;
// call Validate (New does) after filling them in.
type Config struct {
	// History bounds each channel's replay buffer. Zero Retention means 2m,
	// zero MaxMessages 1,000, zero MaxBytes 4 MiB, zero MaxKeys ten times
	// MaxMessages (idempotency keys outlive the messages that a count or
	// byte cap drops, so a retry within the retention is still recognised).
	History HistoryLimits
	// NewHistory makes the History of a channel (re)starting. Nil means an
	// in-memory history bounded by History.
	NewHistory func(channel string) History

	// SendQueueBytes and SendQueueMessages bound a connection's outbound
	// queue; a client that falls further behind is closed with 4008.
	// Zero means 1 MiB and 10,000.
	SendQueueBytes    int
	SendQueueMessages int
	// MaxSubscriptions per connection. Zero means 100.
	MaxSubscriptions int
	// SubscribeRate (per second) and SubscribeBurst rate-limit a
	// connection's sub and unsub requests. Zero means 50/s and 200.
	SubscribeRate  float64
	SubscribeBurst int
	// ForbiddenLimit is how many forbidden requests a connection may make
	// before it is closed with 4003. Zero means 5.
	ForbiddenLimit int
	// ExpiringLead is how long before its token expires a connection gets
	// the expiring frame. Zero means 60s.
	ExpiringLead time.Duration
	// CloseTimeout bounds the writing of a close frame to a stuck client.
	// Zero means 2s.
	CloseTimeout time.Duration
	// PublishTimeout bounds how long a publish waits for its channel. Zero
	// means 5s.
	PublishTimeout time.Duration
	// BatchHold bounds how long a batch request holds the outboxes of its
	// messages, waiting for its slowest channel, before it writes them
	// (see replies). Zero means 2ms: idle channels answer a batch in
	// tens of microseconds.
	BatchHold time.Duration

	// Verifier checks the tokens of refresh requests. Required.
	Verifier *auth.Verifier
	// Metrics receives the actors' counters. Required.
	Metrics *telemetry.Metrics
	// Logger receives the actors' logs. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for token deadlines and retention. Nil means time.Now.
	Now func() time.Time

	// BeforeDeliverForTest, when set, runs before a channel hands a message
	// to its i-th subscriber (a panic in it crashes the channel mid-fan-out).
	BeforeDeliverForTest func(channel string, offset uint64, i int)

	// registry is set by New, for connection actors to reach the channels.
	registry *actor.PID
	// outboxes is set by New, for channels to reach their subscribers.
	outboxes *directory
	// root is set by New, for outboxes to tell their connection actors.
	root *actor.RootContext
	// workers is set by New: the goroutines that run every actor's mailbox.
	workers *workers
}

// Errors returned by Validate.
var (
	// ErrConfig reports a Config that cannot work.
	ErrConfig = errors.New("actors: invalid config")
)

// setDefaults fills in zero fields.
func (c *Config) setDefaults() {
	defaults.Set(&c.History.Retention, defaultRetention)
	defaults.Set(&c.History.MaxMessages, defaultHistoryMessages)
	defaults.Set(&c.History.MaxBytes, defaultHistoryBytes)
	defaults.Set(&c.History.MaxKeys, c.History.MaxMessages*defaultKeysPerHistoryItem)
	defaults.Set(&c.SendQueueBytes, defaultSendQueueBytes)
	defaults.Set(&c.SendQueueMessages, defaultSendQueueMessages)
	defaults.Set(&c.MaxSubscriptions, defaultMaxSubscriptions)
	defaults.Set(&c.SubscribeRate, defaultSubscribeRate)
	defaults.Set(&c.SubscribeBurst, defaultSubscribeBurst)
	defaults.Set(&c.ForbiddenLimit, defaultForbiddenLimit)
	defaults.Set(&c.ExpiringLead, defaultExpiringLead)
	defaults.Set(&c.CloseTimeout, defaultCloseTimeout)
	defaults.Set(&c.PublishTimeout, defaultPublishTimeout)
	defaults.Set(&c.BatchHold, defaultBatchHold)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.NewHistory == nil {
		limits := c.History
		c.NewHistory = func(string) History { return newMemoryHistory(limits) }
	}
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Verifier == nil:
		return fmt.Errorf("%w: Verifier is required", ErrConfig)
	case c.Metrics == nil:
		return fmt.Errorf("%w: Metrics is required", ErrConfig)
	case c.History.Retention < time.Millisecond:
		return fmt.Errorf("%w: retention %v is below 1ms", ErrConfig, c.History.Retention)
	case c.History.MaxMessages < 1 || c.History.MaxBytes < 1 || c.History.MaxKeys < 1:
		return fmt.Errorf("%w: history caps must be positive", ErrConfig)
	case c.SendQueueBytes < 1 || c.SendQueueMessages < 1:
		return fmt.Errorf("%w: send queue bounds must be positive", ErrConfig)
	case c.MaxSubscriptions < 1:
		return fmt.Errorf("%w: max subscriptions must be positive", ErrConfig)
	case c.SubscribeRate <= 0 || c.SubscribeBurst < 1:
		return fmt.Errorf("%w: subscribe rate and burst must be positive", ErrConfig)
	}
	return nil
}
