package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// Every message between actors is plain data (strings, numbers, byte slices
// that are never written after they are sent, PIDs), so that a later
// multi-node relay can carry them over the network unchanged.

// channelMessage is a message that the registry routes to a channel actor.
type channelMessage interface {
	channelName() string
}

// publish asks a channel to append a message and fan it out. The channel
// answers the sender with a publishResult.
type publish struct {
	Channel        string
	Event          string
	Data           string
	IdempotencyKey string
	// ReceivedAt is when the edge received the request, in Unix nanoseconds,
	// for the publish-to-write latency histogram.
	ReceivedAt int64
	// Index is the publish's place in its request, echoed in the answer.
	Index int
	// Batch says the request holds more than one message: the outboxes
	// this publish kicks are written when the whole request is answered
	// (see replies), so that a connection subscribed to several of its
	// channels gets them in one write.
	Batch bool
}

// errUnavailable is publishResult.Err for a message the channel could not
// take (its history failed, or handling it crashed the actor).
const errUnavailable = "unavailable"

// publishResult answers a publish.
type publishResult struct {
	Index     int // the publish's Index
	Epoch     string
	Offset    uint64
	Duplicate bool
	// Err is empty on success, else the reason the message was not accepted.
	Err string
}

// subscribe adds Conn to a channel's subscribers. The channel queues the
// ack (and any replay) in Conn's outbox, and only then live messages.
type subscribe struct {
	Channel     string
	Conn        *actor.PID
	ID          protocol.ID
	HasSince    bool
	SinceEpoch  string
	SinceOffset uint64
}

// unsubscribe removes Conn from a channel's subscribers. With Ack set, the
// channel queues the ack for request ID (the registry starts the channel
// if it is gone), so that no message of the channel follows the ack.
type unsubscribe struct {
	Channel string
	Conn    *actor.PID
	ID      protocol.ID
	Ack     bool
}

// crashForTest makes a channel actor panic, to exercise supervision.
type crashForTest struct {
	Channel string
}

func (m *publish) channelName() string      { return m.Channel }
func (m *subscribe) channelName() string    { return m.Channel }
func (m *unsubscribe) channelName() string  { return m.Channel }
func (m *crashForTest) channelName() string { return m.Channel }

// channelIdle tells the registry that a channel has no subscribers and nothing
// retained. Received is how many routed messages it has handled so far: the
// registry stops the channel only if it has routed no more than that, so a
// message in flight is never lost to passivation.
type channelIdle struct {
	Channel  string
	Received uint64
}

// idleTick is a channel's timer asking it to look at whether it can
// passivate.
type idleTick struct{}

// flushNow is a channel actor's note to itself to flush the outboxes it
// kicked: it runs after the publishes already in the mailbox, so a burst
// of them goes out in one write per subscriber.
type flushNow struct{}

// Messages from the edge to a connection actor.

// connInit is a connection actor's first message: what it serves. Unlike the
// other messages it holds a live Socket and a callback (Handled); it never
// leaves its node, as the connection it describes cannot either.
type connInit struct {
	ConnParams
}

// pingMsg asks a connection to ping its client: the edge keeps the
// schedule (keepalive.go there), the actor writes the ping in its turn.
type pingMsg struct{}

// pingDue is the one pingMsg every ping sends: it carries nothing.
var pingDue = &pingMsg{}

// pongMsg asks a connection to answer its client's ping with a pong that
// echoes Payload (at most 125 bytes).
type pongMsg struct {
	Payload []byte
}

// clientText is a text frame that the client sent, not yet decoded: the
// read goroutine that got it must stay shallow (see the edge's OnMessage).
type clientText struct {
	Frame []byte
}

// closeConn asks a connection to close its socket with Code; Reason is the
// telemetry.Close* label.
type closeConn struct {
	Code   uint16
	Reason string
}

// crashConnForTest makes a connection actor panic, to exercise supervision.
type crashConnForTest struct{}

// socketClosed tells a connection actor that its socket is gone. Reason is a
// telemetry.Close* label when the edge knows it, else empty.
type socketClosed struct {
	Reason string
}

// Messages a connection actor sends itself.

// writeFailed reports that a write to the connection's socket failed (on
// whichever goroutine held the writing turn): the socket is unusable.
type writeFailed struct{}

// timerFired is a connection timer; Gen lets the actor ignore a timer that
// was replaced (by a refresh) after it was armed.
type timerFired struct {
	Kind timerKind
	Gen  uint64
}

type timerKind uint8

const (
	timerExpiring timerKind = iota + 1
	timerExpired
)
