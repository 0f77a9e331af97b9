// Package actors holds the relay's actors, and is the only package that
// imports protoactor.
//
// The registry actor is the parent and supervisor of every channel actor: it
// owns the map from channel name to PID and routes publish, subscribe and
// unsubscribe messages to the channel, spawning it on first use and stopping
// it when it reports itself idle (no subscribers, nothing retained). A
// channel actor owns its subscriber list and its History (offsets and the
// replay buffer, behind a small interface so that a shared store can replace
// memory later); it encodes each message once and queues the same bytes in
// every subscriber's outbox, with no actor message per subscriber. When it
// crashes, the registry restarts it: its subscribers survive (they live in
// a struct captured by the producer) and get a reset frame, and its History
// starts over with a new epoch.
//
// A connection actor owns one WebSocket's subscriptions, its token deadline
// and its outbox; it decodes the client's frames, writes a ping when the
// edge, which keeps the ping schedule, asks for one, and answers the
// client's pings. Whoever first queues into an idle outbox flushes it (but
// a batch's messages hold their outboxes for the batch request, which
// writes them to each connection in one write): a channel after the
// publishes already in its mailbox (so a burst becomes one write), with
// non-blocking writes on its own goroutine, split across goroutines for a
// large fan-out, and a slice of outboxes at a time with
// the mailbox served between slices, so that a publish arriving mid-fan-out
// joins it (channel.flushSlice); a writer goroutine starts only for a
// write that would block or finds the socket busy, a ping, a close, or a
// connection still receiving after a few inline writes. A connection that
// panics is stopped, which removes its subscriptions.
//
// Concurrency: every actor's state is touched only from its own mailbox, so
// none needs a lock; the exceptions are a connection's outbox, shared by
// the channels and the connection that queue into it and whoever holds its
// writing turn, under its mutex (outbox.go); the node's directory of
// outboxes (directory.go); and a publish request's answers and adopted
// outboxes, under its mutex (replies.go). Messages between actors are plain data
// (messages.go), so that a later multi-node relay can carry them. Mailboxes
// run on long-lived worker goroutines (32 per core), or on a new one when
// all are busy (dispatch.go). Hub is the package's API for the edge and is safe
// for concurrent use.
package actors
