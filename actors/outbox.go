package actors

import (
	"sync"
	"time"

	"github.com/realtime-relay/realtime/internal/telemetry"
)

// newline separates the JSON objects that one coalesced frame carries.
var newline = []byte{'\n'}

// outbox is a connection's bounded outbound queue, shared by the connection
// actor (which adds) and the connection's writer goroutine (which drains).
// The writer exists only while there is something to write: the first push
// into an idle outbox starts it, and it exits once it finds the queue empty.
// Whatever queues while the writer is inside a socket write goes out in its
// next write: that is the coalescing, one write per batch, not per message.
// The bound therefore measures exactly how far the client is behind its
// socket, never how busy the server's own goroutines are.
type outbox struct {
	mu sync.Mutex
	// Guarded by mu.
	// parts holds the queued frames with a newline between each two, ready
	// to be written as one WebSocket frame without copying them together.
	parts [][]byte
	// times holds the arrival time (Unix ns) of each queued published
	// message, for the publish-to-write histogram.
	times   []int64
	frames  int
	msgs    int
	bytes   int
	ping    bool // the next batch starts with a ping frame
	writing bool // a writer goroutine is running
	closed  bool // the connection is closing: queue nothing more
	// closeCode, when not 0, is a close that waits for what is queued: the
	// writer writes it, then closes the socket with closeCode, waiting at
	// most closeTimeout for the close frame. See closeAfterQueued.
	closeCode    uint16
	closeTimeout time.Duration
	// spare is the parts slice of the previous batch, reused so that a
	// steady stream allocates no new slices.
	spare [][]byte
}

// push queues a frame. It returns ok=false when the frame would take the
// queue past maxBytes or maxFrames (the client is too slow), and start=true
// when the caller must start the writer goroutine.
func (o *outbox) push(frame []byte, receivedAt int64, isMsg bool, maxBytes, maxFrames int) (ok, start bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return true, false
	}
	if o.frames+1 > maxFrames || o.bytes+len(frame)+1 > maxBytes {
		return false, false
	}
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
	return true, o.startLocked()
}

// requestPing asks for a ping frame; start is as for push.
func (o *outbox) requestPing() (start bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.ping = true
	return o.startLocked()
}

func (o *outbox) startLocked() bool {
	if o.writing {
		return false
	}
	o.writing = true
	return true
}

// close drops what is queued and stops the writer after its current write.
func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed, o.closeCode = true, 0
	o.parts, o.times, o.spare = nil, nil, nil
	o.frames, o.msgs, o.bytes, o.ping = 0, 0, 0, false
}

// closeAfterQueued queues nothing more, but unlike close keeps what is
// queued: the writer writes it and then closes the socket with code. start
// is as for push.
func (o *outbox) closeAfterQueued(code uint16, timeout time.Duration) (start bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed, o.ping = true, false
	o.closeCode, o.closeTimeout = code, timeout
	return o.startLocked()
}

// next takes everything queued as a batch for the writer goroutine, or
// returns nil (and marks the writer stopped) when there is nothing.
func (o *outbox) next(prev *batch) *batch {
	o.mu.Lock()
	defer o.mu.Unlock()
	if prev != nil && !o.closed {
		clear(prev.parts) // do not pin the frames of messages already written
		o.spare = prev.parts[:0]
	}
	if o.closeCode != 0 && o.frames == 0 {
		b := &batch{closeCode: o.closeCode, closeTimeout: o.closeTimeout}
		o.closeCode, o.writing = 0, false
		return b
	}
	if (o.closed && o.closeCode == 0) || (o.frames == 0 && !o.ping) {
		o.writing = false
		return nil
	}
	b := &batch{parts: o.parts, times: o.times, frames: o.frames, msgs: o.msgs, bytes: max(o.bytes-1, 0), ping: o.ping}
	o.parts, o.spare = o.spare, nil
	o.times = nil
	o.frames, o.msgs, o.bytes, o.ping = 0, 0, 0, false
	return b
}

// batch is what the writer goroutine writes in one go: an optional ping,
// then every queued frame as one WebSocket text frame.
type batch struct {
	parts  [][]byte
	times  []int64
	frames int
	msgs   int
	bytes  int
	ping   bool
	// closeCode, when not 0, makes this batch a close frame and nothing else.
	closeCode    uint16
	closeTimeout time.Duration
}

// writeLoop is the writer goroutine: it writes batches until the outbox is
// empty, and reports a failed write to the actor through failed.
func (o *outbox) writeLoop(sock Socket, m *telemetry.Metrics, failed func()) {
	var b *batch
	for {
		if b = o.next(b); b == nil {
			return
		}
		if b.closeCode != 0 {
			sock.Close(b.closeCode, b.closeTimeout)
			return
		}
		if err := b.write(sock, m); err != nil {
			o.mu.Lock()
			code, timeout := o.closeCode, o.closeTimeout
			o.mu.Unlock()
			o.close()
			if code != 0 {
				sock.Close(code, timeout) // the close was waiting for this write
			}
			failed()
			return
		}
	}
}

func (b *batch) write(sock Socket, m *telemetry.Metrics) error {
	if b.ping {
		if err := sock.WritePing(); err != nil {
			return err
		}
	}
	if b.frames == 0 {
		return nil
	}
	if err := sock.Write(b.parts); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for _, t := range b.times {
		m.PublishToWrite.Update(float64(now-t) / 1e9)
	}
	m.MessagesDelivered.Add(b.msgs)
	m.BytesWritten.Add(b.bytes)
	m.SocketWrites.Inc()
	return nil
}
