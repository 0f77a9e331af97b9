package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/defaults"
)

// Defaults, used where a Config field is zero.
const (
	defaultMaxFrameBytes         = 64 << 10
	defaultMaxDataBytes          = 64 << 10
	defaultMaxBatch              = 100
	defaultMaxHeaderBytes        = 8 << 10
	defaultReadTimeout           = 10 * time.Second
	defaultWriteTimeout          = 10 * time.Second
	defaultIdleTimeout           = 90 * time.Second
	defaultSocketWriteTimeout    = 10 * time.Second
	defaultReadBufferBytes       = 128
	defaultPingInterval          = 25 * time.Second
	defaultSocketSendBufferBytes = 64 << 10
	maxIdempotencyKeyLen         = 256
)

// Config configures an edge Server. Zero values mean the defaults.
type Config struct {
	// Keys verify tokens. Required.
	Keys *auth.Keyring
	// Leeway is the clock skew allowed on a token's nbf and iat. Zero means
	// 30s.
	Leeway time.Duration
	// Actors configures the channel and connection actors; its Verifier,
	// Metrics, Logger and Now are filled in by New.
	Actors actors.Config
	// Logger receives the relay's logs. Nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock for token checks and retention. Nil means time.Now.
	Now func() time.Time

	// AllowedOrigins lists the Origin header values allowed to upgrade.
	// Empty allows every origin; a request without Origin (not a browser)
	// is always allowed.
	AllowedOrigins []string
	// MaxConnections caps open WebSocket connections; more get 503. Zero
	// means no cap (the process's open-file limit still applies).
	MaxConnections int
	// MaxFrameBytes caps a client frame; a larger one closes with 1009.
	// Zero means 64 KiB.
	MaxFrameBytes int
	// MaxDataBytes caps a published message's data; more gets 413. Zero
	// means 64 KiB.
	MaxDataBytes int
	// MaxBatch caps the messages of one batch publish. Zero means 100.
	MaxBatch int
	// MaxHeaderBytes caps a request's headers (and so the token in the
	// query). Zero means 8 KiB.
	MaxHeaderBytes int
	// ReadTimeout bounds reading a request (slow clients), WriteTimeout
	// writing its response, IdleTimeout a keep-alive connection between
	// requests. Zero means 10s, 10s and 90s.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// SocketWriteTimeout bounds one WebSocket write; a client that does not
	// take a write within it is disconnected. Zero means 10s.
	SocketWriteTimeout time.Duration
	// SocketSendBufferBytes caps each WebSocket's kernel send buffer
	// (SO_SNDBUF; Linux doubles it). Zero means 64 KiB: with the outbound
	// queue that bounds what a slow client holds, and it still carries
	// megabytes a second to a client 50 ms away.
	SocketSendBufferBytes int
	// PingInterval is how often the server pings each connection. Zero
	// means 25s.
	PingInterval time.Duration
	// KeepaliveTimeout is how long a connection may stay silent (no frame,
	// no pong) before it is considered dead. Zero means twice the ping
	// interval plus 5s.
	KeepaliveTimeout time.Duration
	// PublishRatePerSite limits publishes per second per site (429 past
	// it), with a burst of twice that. Zero means no limit.
	PublishRatePerSite float64
	// ReadBufferBytes is the per-connection read buffer. Zero means 128 B,
	// paid by every idle connection: a pong (6 B) and several fit in one
	// read; a longer frame (a subscribe, about 200 B) takes two reads, as
	// bufio reads a frame longer than its buffer straight into the frame.
	// Client frames are few: the reads cost less than the 384 B more per
	// connection of a 512 B buffer (twice that in RSS, as the heap grows to
	// twice what it keeps).
	ReadBufferBytes int
}

// ErrConfig reports a Config that cannot work.
var ErrConfig = errors.New("edge: invalid config")

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	defaults.Set(&c.MaxFrameBytes, defaultMaxFrameBytes)
	defaults.Set(&c.MaxDataBytes, defaultMaxDataBytes)
	defaults.Set(&c.MaxBatch, defaultMaxBatch)
	defaults.Set(&c.MaxHeaderBytes, defaultMaxHeaderBytes)
	defaults.Set(&c.ReadTimeout, defaultReadTimeout)
	defaults.Set(&c.WriteTimeout, defaultWriteTimeout)
	defaults.Set(&c.IdleTimeout, defaultIdleTimeout)
	defaults.Set(&c.SocketWriteTimeout, defaultSocketWriteTimeout)
	defaults.Set(&c.ReadBufferBytes, defaultReadBufferBytes)
	defaults.Set(&c.PingInterval, defaultPingInterval)
	if c.KeepaliveTimeout == 0 {
		// Two missed pings and some slack for a slow network.
		c.KeepaliveTimeout = 2*c.PingInterval + 5*time.Second
	}
	defaults.Set(&c.SocketSendBufferBytes, defaultSocketSendBufferBytes)
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Keys == nil:
		return fmt.Errorf("%w: Keys are required", ErrConfig)
	case c.MaxFrameBytes < 128 || c.MaxDataBytes < 1 || c.MaxBatch < 1:
		return fmt.Errorf("%w: frame, data and batch limits must be positive", ErrConfig)
	case c.MaxConnections < 0 || c.PublishRatePerSite < 0:
		return fmt.Errorf("%w: limits must not be negative", ErrConfig)
	case c.PingInterval < time.Millisecond || c.KeepaliveTimeout < time.Millisecond:
		return fmt.Errorf("%w: ping interval %v and keepalive timeout %v must be at least 1ms", ErrConfig, c.PingInterval, c.KeepaliveTimeout)
	}
	return nil
}

// maxPublishBody is the largest single publish body: data may grow six-fold
// when JSON-escaped (\u00XX), plus room for the other fields.
func (c *Config) maxPublishBody() int { return 6*c.MaxDataBytes + 4<<10 }

// maxBatchBody is the largest batch body: a batch is meant for many small
// messages, so it gets 1 KiB of room per message beyond its data, not the
// six-fold escaping allowance of a single publish.
func (c *Config) maxBatchBody() int { return c.MaxBatch * (c.MaxDataBytes + 1<<10) }
