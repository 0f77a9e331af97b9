package actors

import (
	"time"

	"github.com/realtime-relay/realtime/internal/telemetry"
)

// newline separates the JSON objects that one coalesced frame carries.
var newline = []byte{'\n'}

// outbox is a connection's outbound queue. It is owned by the connection
// actor; a batch taken from it belongs to the writer goroutine until
// writeDone comes back.
type outbox struct {
	// parts holds the queued frames with a newline between each two, ready
	// to be written as one WebSocket frame without copying them together.
	parts [][]byte
	// times holds the arrival time (Unix ns) of each queued published
	// message, for the publish-to-write histogram.
	times  []int64
	frames int
	msgs   int
	bytes  int
	// ping asks the next batch to start with a ping frame.
	ping bool
	// writing is set while a batch is with the writer goroutine.
	writing bool
}

// fits reports whether one more frame of n bytes stays within the bounds.
func (o *outbox) fits(n, maxBytes, maxFrames int) bool {
	return o.frames+1 <= maxFrames && o.bytes+n+1 <= maxBytes
}

func (o *outbox) add(frame []byte, receivedAt int64, isMsg bool) {
	if o.frames > 0 {
		o.parts = append(o.parts, newline)
	}
	o.parts = append(o.parts, frame)
	o.frames++
	o.bytes += len(frame) + 1
	if isMsg {
		o.msgs++
		if receivedAt != 0 {
			o.times = append(o.times, receivedAt)
		}
	}
}

func (o *outbox) empty() bool { return o.frames == 0 && !o.ping }

// take hands everything queued to a new batch and marks a write in flight.
func (o *outbox) take() *batch {
	b := &batch{parts: o.parts, times: o.times, frames: o.frames, msgs: o.msgs, bytes: max(o.bytes-1, 0), ping: o.ping}
	*o = outbox{writing: true}
	return b
}

// drop forgets what is queued (the connection is closing).
func (o *outbox) drop() {
	*o = outbox{writing: o.writing}
}

// batch is what one writer goroutine writes: an optional ping, then every
// queued frame as one WebSocket text frame, in one socket write.
type batch struct {
	parts  [][]byte
	times  []int64
	frames int
	msgs   int
	bytes  int
	ping   bool
}

// write runs on the writer goroutine: it performs the blocking socket
// writes and counts what went out.
func (b *batch) write(sock Socket, m *telemetry.Metrics) *writeDone {
	if b.ping {
		if err := sock.WritePing(); err != nil {
			return &writeDone{Err: true}
		}
	}
	if b.frames == 0 {
		return &writeDone{}
	}
	if err := sock.Write(b.parts); err != nil {
		return &writeDone{Err: true}
	}
	now := time.Now().UnixNano()
	for _, t := range b.times {
		m.PublishToWrite.Update(float64(now-t) / 1e9)
	}
	m.MessagesDelivered.Add(b.msgs)
	m.BytesWritten.Add(b.bytes)
	m.SocketWrites.Inc()
	return &writeDone{Frames: b.frames, Bytes: b.bytes}
}
