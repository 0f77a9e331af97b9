package edge

import "github.com/realtime-relay/realtime/actors"

// Client frames (text frames, and pings to answer) reach their
// connection's actor through one goroutine, the forwarder. A read
// goroutine only puts the frame on Server.frames: a channel send, about
// 250 bytes of stack below gws's frame handler. The
// send to the actor itself takes about 700 more (protoactor's send, the
// mailbox, the dispatcher), which from the frame handler grows the read
// goroutine's stack from 2 to 4 KiB for the connection's lifetime: 2 KiB
// for every connection that ever subscribed (see keepalive.go). One
// forwarder keeps each connection's frames in order, as the channel does;
// it costs a goroutine hop per client frame, and client frames are few (a
// dashboard's subscribes). What one connection may have waiting for its
// actor is bounded, or a client could queue frames faster than they are
// decoded, without end (wsEvents.forward).

// clientFrame is a text frame, or a ping's payload, on its way to its
// connection's actor.
type clientFrame struct {
	actor *actors.Conn
	data  []byte
	ping  bool
}

// forward hands f to its actor.
func (f clientFrame) forward() {
	if f.ping {
		f.actor.Pong(f.data)
	} else {
		f.actor.Text(f.data)
	}
}

// frameQueue is how many frames wait for the forwarder before a read
// goroutine blocks on the send, and stops reading its client until there
// is room.
const frameQueue = 1024

// forwardFrames passes each frame on to its actor until stop closes, then
// the frames still queued. A read goroutine still running after that (a
// Shutdown that timed out) blocks once the queue is full.
func (s *Server) forwardFrames(stop <-chan struct{}) {
	for {
		select {
		case f := <-s.frames:
			f.forward()
		case <-stop:
			for len(s.frames) > 0 { // the only receiver: what it sees stays
				(<-s.frames).forward()
			}
			return
		}
	}
}
