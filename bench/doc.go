// Package bench is the load generator behind `realtime bench`: it starts a
// relay as a child process (or drives one given by URL), opens WebSocket
// subscribers and HTTP publishers against it, and measures delivery
// (loss, duplicates, order), end-to-end latency, throughput and the CPU and
// memory each side spent.
//
// Run is the entry point. Everything a run owns (the child processes, the
// connections, the counters) lives in one run value and ends with Run.
// ServeBaseline is the other: the physical baseline server that
// Config.Baseline starts as a child (`realtime bench --baseline-serve`).
//
// Concurrency. The goroutine that calls Run orchestrates: it starts the
// target, dials, starts the publishers, prints progress and collects the
// result; no other goroutine touches the run's plain fields.
//   - Each subscriber connection has one reader that owns its socket
//     reads, its pongs (its only writes after the sub frame) and its
//     delivery bookkeeping; Run reads that bookkeeping only after the reader
//     has ended it (done). The reader is a poller (poller_linux.go: one
//     goroutine per core and an epoll instance, reading each socket once
//     per readiness) for every connection it can take, and a goroutine of
//     its own for churn's, slow's stopped ones and TLS ones. Run ends a
//     polled connection by shutting its reading down, which the poller sees.
//   - In churn a subscription's reader also drops its connection when the
//     read deadline of its reconnect slot fires and dials the next one; it
//     swaps the connection under the subscriber's connMu, which closeAll
//     takes to close it. In slow, a stopped subscriber's reader blocks on
//     a channel that closeAll also releases.
//   - Each publisher goroutine owns its HTTP request buffers; published
//     counts per channel are atomics shared with Run.
//   - Latencies go to a few histogram shards, each guarded by its mutex; a
//     reader takes its shard's lock once per frame, not per message.
//   - Global progress counters are atomics, added once per frame.
//
// The load generator shares the machine with the relay when the relay is a
// child, so it is lean: a subscriber reads frames into a reused buffer and
// scans only the bytes it needs, with no per-message allocation, and most
// need no goroutine.
package bench
