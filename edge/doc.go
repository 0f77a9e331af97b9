// Package edge is the relay's network front: the fasthttp server with the
// WebSocket upgrade (gws UpgradeFromConn on fasthttp's serving goroutine,
// then fasthttp lets the connection go through an empty Hijack), the publish
// endpoints, health checks, and the admin handler with metrics and pprof.
// It never listens by itself: the caller passes listeners to Serve.
//
// Concurrency: fasthttp runs each request on one of its goroutines (an
// upgrade too, up to the start of its read goroutine); every
// upgraded connection has one gws read goroutine, which notes when it heard
// the client and puts each text frame, undecoded, on a channel to one
// forwarder goroutine that hands it to the connection's actor (package
// actors), which decodes it and owns all per-connection state (handoff.go:
// the read goroutine must stay shallow). One keepalive goroutine asks the
// actors for pings and ends dead peers, from a timing wheel (keepalive.go). Writes come from
// whoever holds the connection's writing turn in package actors (a channel
// actor, the connection actor, or a writer goroutine); socket.go frames
// them itself (over TLS it also encrypts them, taking the records from the
// connection under the TLS one: tlsrecords.go) and serialises them, and
// gws's own writes, under the socket's mutex. The Server itself keeps the
// set of open connections and the keepalive wheel (guarded by mu), and a
// draining flag (atomic) for graceful shutdown.
package edge
