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
