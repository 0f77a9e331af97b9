package actors

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/telemetry"
)

// countingSocket is a Socket that counts what it is asked to write and
// never blocks, so the benchmark measures the actors, not the kernel.
type countingSocket struct {
	frames *atomic.Int64
	writes *atomic.Int64
}

func (s countingSocket) TryWrite(parts [][]byte) (taken, done bool, err error) {
	return true, true, s.Write(parts)
}
func (s countingSocket) Write(parts [][]byte) error {
	s.frames.Add(int64(len(parts)+1) / 2) // frames interleaved with newlines
	s.writes.Add(1)
	return nil
}
func (s countingSocket) WritePing() error            { return nil }
func (s countingSocket) WritePong([]byte) error      { return nil }
func (s countingSocket) Close(uint16, time.Duration) {}

func newBenchHub(tb testing.TB) *Hub { return newTestHub(tb, nil) }

// newTestHub is newBenchHub with configure applied to its Config first.
func newTestHub(tb testing.TB, configure func(*Config)) *Hub {
	key, err := auth.GenerateKey("bench")
	if err != nil {
		tb.Fatal(err)
	}
	ring, err := auth.NewKeyring(key)
	if err != nil {
		tb.Fatal(err)
	}
	// Queues large enough that the scheduler's unfairness on a loaded
	// 2-core machine (a writer goroutine left waiting while its actor runs)
	// never trips the slow-consumer cut-off: this measures throughput, the
	// cut-off has its own tests.
	cfg := Config{
		Verifier: &auth.Verifier{Keys: ring}, Metrics: telemetry.New(auth.DenyReasons),
		SendQueueMessages: 1 << 20, SendQueueBytes: 1 << 30,
	}
	if configure != nil {
		configure(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return h
}

func waitFor(tb testing.TB, n *atomic.Int64, want int64) {
	deadline := time.Now().Add(30 * time.Second)
	for n.Load() < want {
		if time.Now().After(deadline) {
			tb.Fatalf("only %d of %d frames written", n.Load(), want)
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// BenchmarkFanout measures one publish delivered to every subscriber of a
// channel, through the registry, the channel actor, the connection actors
// and their outboxes (socket writes are free here). ns/op is per
// publish; the deliveries/s metric is the fan-out throughput.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 100, 1000} {
		b.Run("subs="+strconv.Itoa(subs), func(b *testing.B) {
			h := newBenchHub(b)
			defer h.Stop(b.Context())
			var frames, writes atomic.Int64
			ch := "site/dash/gadget"
			claims := auth.Claims{Subject: "a", Site: "site", Dash: "dash", Role: auth.RoleSubscribe, ExpiresAt: time.Now().Add(time.Hour)}
			for range subs {
				c := h.Connect(ConnParams{Claims: claims, Socket: countingSocket{&frames, &writes}})
				c.Text(subFrame(1, ch))
			}
			waitFor(b, &frames, int64(subs)) // every ack written
			frames.Store(0)
			writes.Store(0)
			data := ciphertext(256)
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				if _, err := h.Publish(Publication{Channel: ch, Event: "e", Data: data}); err != nil {
					b.Fatal(err)
				}
				n++
				// Keep delivery at most 100 publishes behind: publishing
				// flat out would measure an overload, where slow-consumer
				// cut-offs are the correct answer.
				if n%100 == 0 {
					waitFor(b, &frames, int64((n-100)*subs))
				}
			}
			if sc := h.cfg.Metrics.SlowConsumers.Get(); sc > 0 {
				b.Logf("slow consumers: %d", sc)
			}
			waitFor(b, &frames, int64(n*subs))
			b.StopTimer()
			b.ReportMetric(float64(n*subs)/b.Elapsed().Seconds(), "deliveries/s")
			b.ReportMetric(float64(frames.Load())/float64(max(writes.Load(), 1)), "frames/write")
		})
	}
}

// ciphertext returns n bytes of data as a publisher sends it: base64 of
// encrypted bytes, which needs no escaping in JSON. (Zero bytes, as these
// benchmarks once used, escape to six bytes each and measured escaping.)
func ciphertext(n int) string {
	return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xa7, 0x3c, 0xf1}, n/4*3))[:n]
}

// BenchmarkPublishBatch measures a batch of 50 publishes to 50 channels of
// 1 or 10 subscribers each, the shape of a batch publish across many
// channels (1000x10 in BENCHMARKS): the cost per publish of the registry,
// the channel actors and the answers (socket writes are free here). ns/op
// is per batch.
func BenchmarkPublishBatch(b *testing.B) {
	const channels = 50
	for _, subs := range []int{1, 10} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			h := newBenchHub(b)
			defer h.Stop(b.Context())
			var frames, writes atomic.Int64
			claims := auth.Claims{Subject: "a", Site: "site", Dash: "dash", Role: auth.RoleSubscribe, ExpiresAt: time.Now().Add(time.Hour)}
			batch := make([]Publication, channels)
			data := ciphertext(64)
			for i := range batch {
				ch := "site/dash/g" + strconv.Itoa(i)
				for range subs {
					c := h.Connect(ConnParams{Claims: claims, Socket: countingSocket{&frames, &writes}})
					c.Text(subFrame(1, ch))
				}
				batch[i] = Publication{Channel: ch, Event: "e", Data: data}
			}
			waitFor(b, &frames, int64(channels*subs)) // every ack written
			frames.Store(0)
			b.ReportAllocs()
			b.ResetTimer()
			n := 0
			for b.Loop() {
				_, errs := h.PublishBatch(batch)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				n++
			}
			waitFor(b, &frames, int64(n*channels*subs))
		})
	}
}
