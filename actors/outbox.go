package actors

import (
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/realtime-relay/realtime/internal/telemetry"
)

// newline separates the JSON objects that one coalesced frame carries.
var newline = []byte{'\n'}

// maxInlineWrites is how many batches a flush writes on the caller's
// goroutine before it leaves the rest to a writer goroutine: a connection
// that keeps receiving must not hold a channel actor in its flush.
const maxInlineWrites = 4

// maxIdleParts is the largest queue slice an idle outbox keeps for reuse.
const maxIdleParts = 64

// writeState says who, if anyone, is responsible for writing an outbox.
type writeState uint8

const (
	// idle: nothing is queued and nobody is writing; the next push kicks.
	idle writeState = iota
	// kicked: something is queued and the pusher that set this state owes
	// a flush; later pushes only queue, and go out with that flush.
	kicked
	// flushing: a flush (on the goroutine that kicked the outbox) or a
	// writer goroutine is writing without blocking; it takes whatever is
	// queued when its write returns, at once.
	flushing
	// writing: a writer goroutine is writing blocking, waiting for the
	// client (or for the socket, busy with another write); it takes
	// whatever is queued when its write returns.
	writing
)

// outbox is a connection's bounded outbound queue. Channel actors push
// deliveries into it directly and the connection actor pushes its own
// replies; a channel's messages therefore reach the queue in offset order
// with no actor hop per subscriber.
//
// Writing is cheap when the socket has room: the first push into an idle
// outbox kicks it, and the pusher flushes it on its own goroutine with a
// non-blocking write (a channel actor after its current burst of
// publishes, see channel.flushSlice, so that a burst goes out in one
// write).
// Only a write that would block (or finds the socket busy), a ping, a
// close, or a connection still receiving after a few inline writes starts
// a writer goroutine, which waits for the socket and exits once the queue
// is empty.
// Whatever queues while a write is in progress goes out in the next one:
// that is the coalescing, one write per batch, not per message. The bound
// therefore measures how far the client is behind its socket, not how busy
// the server's own goroutines are: frames queued but not yet offered to the
// socket (the outbox is kicked) are written first when they would pass it
// (see makeRoomLocked).
//
// A batch request holds the outboxes its messages go to until its last
// channel answers (see pushHeld and replies), so that a batch goes out in
// one write: while an outbox is held, nobody takes its queue (a kick's
// flush does nothing, and a flush or writer goroutine whose write returns
// leaves it kicked), and the last hold released flushes it. Only the
// bound cuts through a hold (see makeRoomLocked).
type outbox struct {
	// Static after newOutbox. The bounds and metrics come from cfg, which
	// every outbox shares: each byte here is paid per connection.
	sock Socket
	conn *actor.PID // told about a write failure or an overflow
	cfg  *Config

	mu sync.Mutex
	// Guarded by mu.
	// parts holds the queued frames with a newline between each two, ready
	// to be written as one WebSocket frame without copying them together.
	parts [][]byte
	// oldest is the arrival time (Unix ns) of the oldest queued published
	// message, 0 when none: the publish-to-write histogram takes one
	// observation per write, the longest wait in it, not one per message.
	oldest int64
	frames int
	msgs   int
	bytes  int
	ctl    control // the control frames the next batch starts with
	state  writeState
	closed bool // the connection is closing: queue nothing more
	// closeCode, when not 0, is a close that waits for what is queued: the
	// writer writes it, then closes the socket with closeCode, waiting at
	// most closeTimeout for the close frame. See closeAfterQueued.
	closeCode    uint16
	closeTimeout time.Duration

	// room wakes pushers waiting for a flush to take the queue (see
	// makeRoomLocked); made on the first wait, as few outboxes ever have
	// one. waiters counts them. Guarded by mu.
	room    *sync.Cond
	waiters int32
	// holds counts the holds of batch requests (see pushHeld): while it is
	// not 0, only makeRoomLocked takes the queue. heldBy is the request
	// that took the last of them, which needs no second one. Guarded by mu.
	holds  int32
	heldBy *replies

	// cur is the batch being written, owned by the holder of the writing
	// turn (see next).
	cur batch
}

func newOutbox(cfg *Config, sock Socket, conn *actor.PID) *outbox {
	return &outbox{sock: sock, conn: conn, cfg: cfg}
}

// push queues a frame and reports whether the caller kicked the outbox and
// so must call flush (at once, or after more pushes). A frame that would
// take the queue past its bounds means the client is too slow: the outbox
// closes and tells its connection, which closes with 4008. isMsg marks a
// published message (counted as delivered); receivedAt is when its publish
// arrived, 0 when unknown.
func (o *outbox) push(frame []byte, receivedAt int64, isMsg bool) (kick bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.admitLocked(1, len(frame)+1) {
		return false
	}
	o.appendLocked(frame, receivedAt, isMsg)
	return o.kickLocked()
}

// pushHeld queues a batch's message, as push does, and holds the outbox
// for the batch's request, by: whoever is flushing or writing it, or owes
// it a flush, leaves the queue until the hold is released (see release),
// so that the batch's messages from all its channels go out in one write.
// It reports whether it took a hold, which the caller must release: not
// when the frame was refused, nor when by holds the outbox already (a
// dashboard's other gadgets), so that a request releases each outbox
// once, not once per channel. A kick goes to the hold: its flush is owed
// by the last release.
func (o *outbox) pushHeld(frame []byte, receivedAt int64, by *replies) (held bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.admitLocked(1, len(frame)+1) {
		return false
	}
	o.appendLocked(frame, receivedAt, true)
	o.kickLocked()
	if o.holds > 0 && o.heldBy == by {
		return false
	}
	o.holds++
	o.heldBy = by
	return true
}

// release drops a hold that pushHeld took and reports whether the caller
// must flush the outbox: the last hold went while something waits to be
// written (the outbox is kicked).
func (o *outbox) release() (flush bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.holds--
	if o.holds == 0 {
		o.heldBy = nil
	}
	return o.holds == 0 && o.state == kicked
}

// releaseAll releases a hold on each of held (an outbox may appear more
// than once) and returns, in held's array, the outboxes to flush.
func releaseAll(held []*outbox) []*outbox {
	flush := held[:0]
	for _, o := range held {
		if o.release() {
			flush = append(flush, o)
		}
	}
	clear(held[len(flush):])
	return flush
}

// pushSubscribed queues a subscription's ack and, when the history could
// recover the client, the replay after it: both, or, when the replay would
// take the queue past its bounds beside what it holds already, the ack
// alone built as recovered=false. Such a client is told to refetch rather
// than cut off with 4008. The choice is made under the queue's lock, so
// frames that other channels queue meanwhile cannot tip it over the bound.
// kick is as for push; recovered is what the queued ack says.
func (o *outbox) pushSubscribed(ack func(recovered bool) []byte, recoverable bool, replay [][]byte) (recovered, kick bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if recoverable {
		a := ack(true)
		n := len(a) + 1
		for _, f := range replay {
			n += len(f) + 1
		}
		if o.makeRoomLocked(len(replay)+1, n) {
			o.appendLocked(a, 0, false)
			for _, f := range replay {
				o.appendLocked(f, 0, true)
			}
			return true, o.kickLocked()
		}
	}
	a := ack(false)
	if !o.admitLocked(1, len(a)+1) {
		return false, false
	}
	o.appendLocked(a, 0, false)
	return false, o.kickLocked()
}

// admitLocked reports whether the outbox is open with room for frames more
// frames of n bytes in all (newlines included), making room as
// makeRoomLocked does, and closes it as too slow (see overflowLocked) when
// it is open without.
func (o *outbox) admitLocked(frames, n int) bool {
	if o.makeRoomLocked(frames, n) {
		return true
	}
	if !o.closed {
		o.overflowLocked()
	}
	return false
}

// makeRoomLocked reports whether the outbox is open with room for frames
// more frames of n bytes in all. Frames queued while the outbox is kicked
// or flushing have not been offered to the socket yet: they wait for the
// server (a channel finishing its burst of publishes, a batch request
// waiting for its last channel, a write that does not block), not for the
// client. So when they are in the way they are written first, held or
// not, and only a client behind its socket (the outbox is writing) meets
// the bound. mu is released while they are written.
func (o *outbox) makeRoomLocked(frames, n int) bool {
	for !o.closed && !o.hasRoomLocked(frames, n) {
		switch o.state {
		case kicked:
			// Taking over the flush is safe: whoever kicked the outbox
			// still flushes it later, and then finds it written (see
			// flush).
			o.mu.Unlock()
			o.write(o.take(true))
			o.mu.Lock()
		case flushing:
			// Its write does not block, and then it takes the queue.
			if o.room == nil {
				o.room = sync.NewCond(&o.mu)
			}
			o.waiters++
			o.room.Wait()
			o.waiters--
		default:
			return false
		}
	}
	return !o.closed
}

// wakeLocked wakes the pushers waiting for room (see makeRoomLocked), who
// see whether they have it now: the queue was taken, the flush handed the
// writing to a writer goroutine or left it to a hold, or the outbox
// closed.
func (o *outbox) wakeLocked() {
	if o.waiters > 0 {
		o.room.Broadcast()
	}
}

// hasRoomLocked reports whether frames more frames of n bytes in all fit
// the queue's bounds.
func (o *outbox) hasRoomLocked(frames, n int) bool {
	return o.frames+frames <= o.cfg.SendQueueMessages && o.bytes+n <= o.cfg.SendQueueBytes
}

// overflowLocked closes the outbox of a client too slow for its bounds
// and tells its connection, which closes with 4008.
func (o *outbox) overflowLocked() {
	o.closeLocked()
	o.cfg.Metrics.SlowConsumers.Inc()
	o.cfg.root.Send(o.conn, &closeConn{Code: CloseSlowConsumer, Reason: telemetry.CloseSlow})
}

func (o *outbox) appendLocked(frame []byte, receivedAt int64, isMsg bool) {
	if o.frames > 0 {
		o.parts = append(o.parts, newline)
	}
	o.parts = append(o.parts, frame)
	o.frames++
	o.bytes += len(frame) + 1
	if isMsg {
		o.msgs++
		if o.oldest == 0 {
			o.oldest = receivedAt
		}
	}
}

// requestControl asks for the control frames in ctl, on top of those
// already owed: a ping, or a pong that echoes a client's ping, the latest
// of its pings being the one answered (RFC 6455 5.5.3). kick is as for
// push; a closed outbox refuses.
func (o *outbox) requestControl(ctl control) (kick bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return false
	}
	o.ctl.ping = o.ctl.ping || ctl.ping
	if ctl.pong != nil {
		o.ctl.pong = ctl.pong
	}
	return o.kickLocked()
}

func (o *outbox) kickLocked() bool {
	if o.state != idle {
		return false
	}
	o.state = kicked
	return true
}

// close drops what is queued and stops the writing after the current write.
func (o *outbox) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closeLocked()
}

func (o *outbox) closeLocked() {
	o.wakeLocked()
	o.closed, o.closeCode = true, 0
	o.parts, o.oldest = nil, 0
	o.frames, o.msgs, o.bytes, o.ctl = 0, 0, 0, control{}
}

// closeAfterQueued queues nothing more, but unlike close keeps what is
// queued: it is written, and then the socket is closed with code. kick is
// as for push.
func (o *outbox) closeAfterQueued(code uint16, timeout time.Duration) (kick bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed, o.ctl = true, control{}
	o.closeCode, o.closeTimeout = code, timeout
	return o.kickLocked()
}

// flush writes what is queued, for the pusher that kicked the outbox: on
// the calling goroutine while the socket takes the bytes at once, and
// through a writer goroutine when it would block (or for a ping or a
// close). Calling it when the outbox is not kicked does nothing, so a
// second flush of the same kick is harmless; nor when it is held (see
// pushHeld): the last release flushes it.
func (o *outbox) flush() {
	o.write(o.take(false))
}

// write is flush from its first batch, b (nil: nothing to write).
func (o *outbox) write(b *batch) {
	for i := 0; b != nil; i, b = i+1, o.next() {
		if b.ctl.any() || b.closeCode != 0 || i == maxInlineWrites {
			o.handOff(b, false)
			return
		}
		taken, done, err := o.sock.TryWrite(b.parts)
		switch {
		case err != nil:
			o.failed()
			return
		case !taken: // the socket is busy with a blocking write
			o.handOff(b, false)
			return
		case !done: // the socket counts it as a write that blocked
			o.handOff(b, true)
			return
		}
		b.written(o.cfg.Metrics)
	}
}

// handOff passes the writing turn from a flush to a writer goroutine.
func (o *outbox) handOff(b *batch, pending bool) {
	o.setState(writing)
	go o.writeLoop(b, pending)
}

// take starts a flush: it turns a kicked outbox into a flushing one and
// returns its first batch, or nil when the outbox was not kicked or, unless
// force, is held.
func (o *outbox) take(force bool) *batch {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state != kicked || o.holds > 0 && !force {
		return nil
	}
	o.state = flushing
	return o.nextLocked(force)
}

// next moves everything queued into o.cur and returns it, or returns nil
// when there is nothing (the outbox is then idle) or the outbox is held
// (it is then kicked, and the last release flushes it). Only the holder
// of the writing turn calls it; the batch is its own until its next call.
func (o *outbox) next() *batch {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.nextLocked(false)
}

func (o *outbox) nextLocked(force bool) *batch {
	defer o.wakeLocked() // the queue is taken, or the outbox idle
	b := &o.cur
	clear(b.parts) // do not pin the frames of messages already written
	b.parts = b.parts[:0]
	if o.closeCode != 0 && o.frames == 0 {
		*b = batch{closeCode: o.closeCode, closeTimeout: o.closeTimeout}
		o.closeCode = 0
		return b
	}
	if o.closed {
		*b = batch{} // free the slices of a closed connection
	}
	// A closed outbox has nothing queued: close and closeAfterQueued
	// drop the control frames, and push and requestControl refuse.
	if o.frames == 0 && !o.ctl.any() {
		o.state = idle
		// A burst's slices would otherwise stay with an idle connection.
		if cap(b.parts) > maxIdleParts {
			b.parts = nil
		}
		if cap(o.parts) > maxIdleParts {
			o.parts = nil
		}
		return nil
	}
	if o.holds > 0 && !force {
		// A batch request is waiting for its last channel; it writes
		// this with the rest of its messages.
		o.state = kicked
		return nil
	}
	// Swap the slices, so that a steady stream allocates none.
	o.parts, b.parts = b.parts, o.parts
	b.frames, b.msgs, b.bytes, b.ctl, b.oldest = o.frames, o.msgs, max(o.bytes-1, 0), o.ctl, o.oldest
	o.frames, o.msgs, o.bytes, o.ctl, o.oldest = 0, 0, 0, control{}, 0
	return b
}

// batch is what one write takes: its control frames, then every queued
// frame as one WebSocket text frame.
type batch struct {
	parts  [][]byte
	oldest int64 // see outbox.oldest
	frames int
	msgs   int
	bytes  int
	ctl    control
	// closeCode, when not 0, makes this batch a close frame and nothing else.
	closeCode    uint16
	closeTimeout time.Duration
}

// writeLoop is the writer goroutine. It owns the writing until the outbox
// is empty: it writes first (or, when pending, finishes what TryWrite left
// of it), then every batch queued meanwhile.
func (o *outbox) writeLoop(first *batch, pending bool) {
	b := first
	if pending {
		if err := o.finish(b); err != nil {
			o.failed()
			return
		}
		b = o.next()
	}
	for ; b != nil; b = o.next() {
		if b.closeCode != 0 {
			o.mu.Lock()
			o.state = idle
			o.mu.Unlock()
			o.sock.Close(b.closeCode, b.closeTimeout)
			return
		}
		if err := o.writeBatch(b); err != nil {
			o.failed()
			return
		}
	}
}

// writeBatch writes b on the writer goroutine. Frames are first offered
// without blocking, with the outbox flushing, as a flush offers them, so
// that a push that finds no room meanwhile waits for the queue to be taken
// (makeRoomLocked). Only what must wait for the client (the socket could
// not take it all, or is busy, or has no way to write without blocking;
// or a control frame) is written blocking, with the outbox writing,
// and then a push that finds no room meets the bound.
func (o *outbox) writeBatch(b *batch) error {
	if !b.ctl.any() && b.frames > 0 {
		o.setState(flushing)
		taken, done, err := o.sock.TryWrite(b.parts)
		switch {
		case err != nil:
			return err // failed resets the state
		case taken && done:
			b.written(o.cfg.Metrics)
			return nil
		case taken:
			o.setState(writing)
			return o.finish(b)
		}
	}
	o.setState(writing)
	return b.write(o.sock, o.cfg.Metrics)
}

// finish writes, blocking, what a TryWrite of b left with the socket.
func (o *outbox) finish(b *batch) error {
	if err := o.sock.Write(nil); err != nil {
		return err
	}
	b.written(o.cfg.Metrics)
	return nil
}

// setState moves the outbox to state, for the holder of the writing turn
// (nobody else changes it meanwhile), and wakes the pushers waiting for
// room, who see whether they still may wait.
func (o *outbox) setState(state writeState) {
	o.mu.Lock()
	o.state = state
	o.wakeLocked()
	o.mu.Unlock()
}

// failed handles a write that failed: the socket is gone (or stuck past
// its timeout). A close that was waiting for the write still goes out.
func (o *outbox) failed() {
	o.mu.Lock()
	code, timeout := o.closeCode, o.closeTimeout
	o.closeLocked()
	o.state = idle
	o.mu.Unlock()
	if code != 0 {
		o.sock.Close(code, timeout)
	}
	o.cfg.root.Send(o.conn, &writeFailed{})
}

func (b *batch) write(sock Socket, m *telemetry.Metrics) error {
	if b.ctl.ping {
		if err := sock.WritePing(); err != nil {
			return err
		}
	}
	if b.ctl.pong != nil {
		if err := sock.WritePong(b.ctl.pong); err != nil {
			return err
		}
	}
	if b.frames == 0 {
		return nil
	}
	if err := sock.Write(b.parts); err != nil {
		return err
	}
	b.written(m)
	return nil
}

// written counts a batch that the socket took.
func (b *batch) written(m *telemetry.Metrics) {
	if b.oldest != 0 {
		m.PublishToWrite.Update(float64(time.Now().UnixNano()-b.oldest) / 1e9)
	}
	m.MessagesDelivered.Add(b.msgs)
	m.BytesWritten.Add(b.bytes)
	m.SocketWrites.Inc()
}

// control is what a batch writes before its frames, blocking, on a writer
// goroutine: the relay's ping, and the pong that answers the client's.
type control struct {
	ping bool
	pong []byte // the payload to echo; nil: no pong owed
}

func (c control) any() bool { return c.ping || c.pong != nil }
