package edge_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/realtime-relay/realtime/internal/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testutil.LeakOptions...) }

func TestPublishReachesSubscriber(t *testing.T) {
	r := testutil.StartRelay(t)
	c := r.Dial(t, r.SubscribeToken(t))
	ch := testutil.Channel("gadget-1")
	ack := c.Subscribe(1, ch)
	assert.Equal(t, ch, ack.Ch)
	assert.Equal(t, uint64(0), ack.Offset)
	require.NotNil(t, ack.Recovered)
	assert.False(t, *ack.Recovered)

	data := "AES256:\u00e9\"quoted\"\\n\x01<tag>&\u2028"
	off := r.Publish(t, r.PublishToken(t), ch, "AddAbsence", data)
	assert.Equal(t, uint64(1), off)
	msg := c.NextOp("msg")
	assert.Equal(t, ch, msg.Ch)
	assert.Equal(t, "AddAbsence", msg.Event)
	assert.Equal(t, data, msg.Data)
	assert.Equal(t, uint64(1), msg.Offset)

	status, _ := r.Post(t, "/v1/publish", r.PublishToken(t), `{}`)
	assert.Equal(t, http.StatusBadRequest, status)
}
