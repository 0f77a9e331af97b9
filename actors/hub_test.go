package actors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/protocol"
)

// An empty batch is answered at once, and a stopped hub fails publishes
// at once rather than at the publish timeout.
func TestPublishAnswersPromptly(t *testing.T) {
	h := newBenchHub(t)
	h.cfg.PublishTimeout = time.Minute

	start := time.Now()
	results, errs := h.PublishBatch(nil)
	assert.Empty(t, results)
	assert.Empty(t, errs)

	res, err := h.Publish(Publication{Channel: "site/dash/g", Event: "e", Data: "x"})
	require.NoError(t, err)
	assert.Equal(t, uint64(1), res.Offset)

	require.NoError(t, h.Stop(context.Background()))
	_, err = h.Publish(Publication{Channel: "site/dash/g", Event: "e", Data: "x"})
	assert.ErrorIs(t, err, ErrUnavailable)
	assert.Less(t, time.Since(start), 10*time.Second, "something waited for the publish timeout")
}

// A replay is recovered only if it fits the outbound queue together with
// the ack before it; otherwise the client is told to refetch rather than
// cut off with 4008.
func TestReplayFitsWithItsAck(t *testing.T) {
	frame := make([]byte, 99) // 100 bytes queued with its newline
	frames := func(n int) [][]byte {
		fs := make([][]byte, n)
		for i := range fs {
			fs[i] = frame
		}
		return fs
	}
	c := Config{SendQueueMessages: 3, SendQueueBytes: 1 << 20}
	assert.True(t, c.replayFits(frames(2)))
	assert.False(t, c.replayFits(frames(3)), "three messages and the ack")
	c = Config{SendQueueMessages: 100, SendQueueBytes: maxAckBytes + 200}
	assert.True(t, c.replayFits(frames(2)))
	assert.False(t, c.replayFits(frames(3)))
}

// TestBatchHoldsOutboxesBriefly: a batch request writes what its fast
// channels queued after maxBatchHold, without waiting for a channel that
// is stuck (here in mid-fan-out until the test lets it go).
func TestBatchHoldsOutboxesBriefly(t *testing.T) {
	release := make(chan struct{})
	stuck := "site/dash/stuck"
	h := newTestHub(t, func(cfg *Config) {
		cfg.PublishTimeout = time.Minute // so that only the hold can end the wait
		cfg.BeforeDeliverForTest = func(channel string, _ uint64, _ int) {
			if channel == stuck {
				<-release
			}
		}
	})
	defer func() { _ = h.Stop(t.Context()) }()
	letGo := sync.OnceFunc(func() { close(release) })
	defer letGo() // before Stop, which waits for the stuck channel

	claims := auth.Claims{Subject: "a", Site: "site", Dash: "dash", Role: auth.RoleSubscribe, ExpiresAt: time.Now().Add(time.Hour)}
	var fast, slow recordingSocket
	for ch, sock := range map[string]*recordingSocket{"site/dash/fast": &fast, stuck: &slow} {
		c := h.Connect(ConnParams{Claims: claims, Socket: sock})
		c.Frame(protocol.ClientFrame{Op: protocol.OpSub, Channel: ch, ID: protocol.ID{N: 1, Set: true}})
	}
	written := func(s *recordingSocket) int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.writes)
	}
	require.Eventually(t, func() bool { return written(&fast) == 1 && written(&slow) == 1 },
		10*time.Second, time.Millisecond, "acks written")

	done := make(chan struct{})
	go func() {
		defer close(done)
		h.PublishBatch([]Publication{
			{Channel: "site/dash/fast", Event: "e", Data: "x"},
			{Channel: stuck, Event: "e", Data: "x"},
		})
	}()
	// That the two are written together when both answer in time is
	// edge's TestBatchIsOneFramePerConnection.
	require.Eventually(t, func() bool { return written(&fast) == 2 },
		10*time.Second, time.Millisecond, "the fast channel's message written while the other channel is stuck")
	letGo()
	<-done
	require.Eventually(t, func() bool { return written(&slow) == 2 },
		10*time.Second, time.Millisecond, "the stuck channel's message written once it went on")
}
