// Package edge is the relay's network front: the fasthttp server with the
// WebSocket upgrade (fasthttp Hijack + gws UpgradeFromConn), the publish
// endpoints, health checks, and the admin handler with metrics and pprof.
// It never listens by itself: the caller passes listeners to Serve.
//
// Concurrency: fasthttp runs each request on its own goroutine; every
// upgraded connection has one gws read goroutine, which decodes client
// frames and hands them to the connection's actor (package actors), which
// owns all per-connection state. Writes come from whoever holds the
// connection's writing turn in package actors (a channel actor, the
// connection actor, or a writer goroutine); socket.go frames them itself
// (over TLS it also encrypts them, taking the records from the connection
// under the TLS one: tlsrecords.go) and serialises them, and gws's own
// writes, under the socket's mutex. The
// Server itself only keeps the set of open connections (guarded by mu) and
// a draining flag (atomic), both for graceful shutdown.
package edge
