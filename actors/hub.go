package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Errors returned by Hub.Publish.
var (
	// ErrUnavailable means the channel could not take the message (its
	// actor crashed while handling it, its history failed, or the hub is
	// stopping); the publisher may retry with the same idempotency key.
	ErrUnavailable = errors.New("actors: channel unavailable")
)

// Publication is one message to publish.
type Publication struct {
	Channel        string
	Event          string
	Data           string
	IdempotencyKey string
	// ReceivedAt is when the request arrived, for latency metrics. Zero
	// means now.
	ReceivedAt time.Time
}

// PublishResult says where a publication landed.
type PublishResult struct {
	Epoch     string
	Offset    uint64
	Duplicate bool
}

// Hub runs the actor system of one relay: the registry that supervises the
// channel actors, and the connection actors. It is safe for concurrent use.
type Hub struct {
	// Static after New.
	cfg       *Config
	system    *actor.ActorSystem
	registry  *actor.PID
	connProps *actor.Props
}

// New validates cfg, fills in its defaults and starts the actors.
func New(cfg Config) (*Hub, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(minLevel{cfg.Logger.Handler(), slog.LevelWarn}).With("component", "protoactor")
	}))
	cfg.outboxes = newDirectory()
	cfg.workers = newWorkers()
	cfg.root = system.Root
	h := &Hub{cfg: &cfg, system: system}
	h.connProps = connProps(h.cfg)
	h.registry = system.Root.Spawn(registryProps(h.cfg))
	h.cfg.registry = h.registry
	return h, nil
}

// Publish appends p to its channel and fans it out, waiting for the channel's
// answer. The caller has already validated and authorized p.
func (h *Hub) Publish(p Publication) (PublishResult, error) {
	results, errs := h.PublishBatch([]Publication{p})
	return results[0], errs[0]
}

// PublishBatch publishes ps concurrently across channels (in order within a
// channel) and returns one result or error per publication, in order.
func (h *Hub) PublishBatch(ps []Publication) ([]PublishResult, []error) {
	now := time.Now()
	msgs := make([]publish, len(ps))
	for i, p := range ps {
		at := p.ReceivedAt
		if at.IsZero() {
			at = now
		}
		msgs[i] = publish{
			Channel: p.Channel, Event: p.Event, Data: p.Data,
			IdempotencyKey: p.IdempotencyKey, ReceivedAt: at.UnixNano(),
		}
	}
	answers := publishAll(h.system, h.registry, msgs, h.cfg.PublishTimeout, h.cfg.BatchHold)
	results := make([]PublishResult, len(ps))
	errs := make([]error, len(ps))
	for i, r := range answers {
		switch {
		case r == nil:
			errs[i] = fmt.Errorf("%w: no answer within %v", ErrUnavailable, h.cfg.PublishTimeout)
		case r.Err != "":
			errs[i] = ErrUnavailable
		default:
			results[i] = PublishResult{Epoch: r.Epoch, Offset: r.Offset, Duplicate: r.Duplicate}
		}
	}
	return results, errs
}

// Conn is the edge's handle on a connection actor. Its methods only send
// messages, so they never block and are safe from any goroutine.
type Conn struct {
	pid  *actor.PID
	root *actor.RootContext
}

// Connect starts the actor of a verified, upgraded connection.
func (h *Hub) Connect(p ConnParams) *Conn {
	pid := h.system.Root.Spawn(h.connProps)
	// Sent before Connect returns, so before any frame the edge passes on.
	h.system.Root.Send(pid, &connInit{p})
	return &Conn{pid: pid, root: h.system.Root}
}

// Ping asks the connection to ping its client, with its next write.
func (c *Conn) Ping() { c.root.Send(c.pid, pingDue) }

// Pong asks the connection to answer its client's ping, whose payload it
// owns from here, with its next write.
func (c *Conn) Pong(payload []byte) { c.root.Send(c.pid, &pongMsg{Payload: payload}) }

// Text passes a text frame the client sent, undecoded; the actor owns it
// from here.
func (c *Conn) Text(frame []byte) { c.root.Send(c.pid, &clientText{Frame: frame}) }

// Close asks the connection to close with code; reason is a telemetry.Close*
// label.
func (c *Conn) Close(code uint16, reason string) {
	c.root.Send(c.pid, &closeConn{Code: code, Reason: reason})
}

// SocketClosed tells the connection that its socket is gone; reason is a
// telemetry.Close* label, or empty for a client that went away.
func (c *Conn) SocketClosed(reason string) { c.root.Send(c.pid, &socketClosed{Reason: reason}) }

// CrashForTest makes the connection actor panic.
func (c *Conn) CrashForTest() { c.root.Send(c.pid, &crashConnForTest{}) }

// CrashChannelForTest makes the actor of channel panic (creating it first
// if needed).
func (h *Hub) CrashChannelForTest(channel string) {
	h.system.Root.Send(h.registry, &crashForTest{Channel: channel})
}

// Stop stops the registry, and with it every channel actor, then the actor
// system. Connections must be closed first (the edge does that on drain).
func (h *Hub) Stop(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- h.system.Root.PoisonFuture(h.registry).Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	h.system.Shutdown()
	h.cfg.workers.close()
	return err
}

// minLevel drops records below a level: protoactor logs routine lifecycle
// events at Info, which would drown ours.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.level && m.Handler.Enabled(ctx, l)
}

func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{m.Handler.WithAttrs(as), m.level}
}

func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{m.Handler.WithGroup(name), m.level}
}
