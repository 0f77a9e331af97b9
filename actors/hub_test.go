package actors

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
