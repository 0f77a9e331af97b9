package edge_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestMetricsExposed checks that /metrics on the admin listener has every
// series operators rely on, including zeros for label values not seen yet.
func TestMetricsExposed(t *testing.T) {
	r := testutil.StartRelay(t)
	ch := testutil.Channel("g")
	c := r.Dial(t, r.SubscribeToken(t))
	c.Subscribe(1, ch)
	requireLive(t, r, r.PublishToken(t), ch, c)

	text := r.Metrics(t)
	for _, name := range []string{
		"realtime_connections ",
		"realtime_connections_accepted_total ",
		`realtime_connections_rejected_total{reason="unauthorized"} `,
		`realtime_connections_rejected_total{reason="origin"} `,
		`realtime_connections_rejected_total{reason="draining"} `,
		`realtime_connections_rejected_total{reason="limit"} `,
		"realtime_subscriptions ",
		"realtime_channels ",
		`realtime_publishes_total{result="ok"} `,
		`realtime_publishes_total{result="duplicate"} `,
		`realtime_publishes_total{result="bad_request"} `,
		`realtime_publishes_total{result="unauthorized"} `,
		`realtime_publishes_total{result="forbidden"} `,
		`realtime_publishes_total{result="too_large"} `,
		`realtime_publishes_total{result="unavailable"} `,
		"realtime_messages_delivered_total ",
		"realtime_written_bytes_total ",
		"realtime_socket_writes_total ",
		"realtime_socket_writes_blocked_total ",
		`realtime_replays_total{outcome="recovered"} `,
		`realtime_replays_total{outcome="not_recovered"} `,
		"realtime_slow_consumer_disconnects_total ",
		"realtime_token_expiries_total ",
		`realtime_auth_denied_total{reason="expired"} `,
		`realtime_auth_denied_total{reason="signature"} `,
		"realtime_namespace_denied_total ",
		"realtime_channel_restarts_total ",
		"realtime_publish_to_write_seconds_bucket{",
		"realtime_publish_to_write_seconds_count ",
		"process_",
		"go_",
	} {
		assert.True(t, hasLinePrefix(text, name), "no series %q in /metrics", name)
	}
	assert.InDelta(t, 1, r.Metric(t, "realtime_connections"), 0)
	assert.InDelta(t, 1, r.Metric(t, "realtime_connections_accepted_total"), 0)
	assert.InDelta(t, 1, r.Metric(t, "realtime_subscriptions"), 0)
	assert.InDelta(t, 1, r.Metric(t, "realtime_channels"), 0)
	assert.InDelta(t, 1, r.Metric(t, `realtime_publishes_total{result="ok"}`), 0)
	r.WaitMetric(t, "realtime_messages_delivered_total", 1)
	r.WaitMetric(t, "realtime_publish_to_write_seconds_count", 1)
	assert.Positive(t, r.Metric(t, "realtime_written_bytes_total"))
}

func hasLinePrefix(text, prefix string) bool {
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// TestPublishTooLargeCounted: every 413 of the publish endpoints is counted
// as too_large: a batch of more messages than MaxBatch, and a body that the
// server refuses before the handler runs.
func TestPublishTooLargeCounted(t *testing.T) {
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.MaxDataBytes, cfg.MaxBatch = 1024, 2 })
	pub := r.PublishToken(t)
	item := `{"channel":"` + testutil.Channel("g") + `","event":"E","data":"x"}`
	status, body := r.Post(t, "/v1/publish/batch", pub, `{"messages":[`+item+","+item+","+item+`]}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, status, body)
	status, body = r.Post(t, "/v1/publish", pub, `{"channel":"`+testutil.Channel("g")+`","event":"E","data":"`+strings.Repeat("x", 64<<10)+`"}`)
	require.Equal(t, http.StatusRequestEntityTooLarge, status, body)
	assert.InDelta(t, 2, r.Metric(t, `realtime_publishes_total{result="too_large"}`), 0)
	assert.InDelta(t, 0, r.Metric(t, `realtime_publishes_total{result="bad_request"}`), 0)
}
