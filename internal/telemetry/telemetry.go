// Package telemetry owns the relay's Prometheus metrics: one metrics.Set per
// server (tests start many servers, and registering a name twice panics),
// with every metric and every label combination created up front so that
// dashboards see zeros instead of missing series.
//
// Concurrency: a Metrics is built once and then only read; the counters,
// gauges and histograms it points to are safe for concurrent use.
package telemetry

import (
	"io"

	"github.com/VictoriaMetrics/metrics"
)

// Reasons a connection attempt is rejected before the upgrade.
const (
	RejectUnauthorized = "unauthorized"
	RejectOrigin       = "origin"
	RejectDraining     = "draining"
	RejectLimit        = "limit"
	RejectBadRequest   = "bad_request"
)

var rejectReasons = []string{RejectUnauthorized, RejectOrigin, RejectDraining, RejectLimit, RejectBadRequest}

// Publish results, as labels of realtime_publishes_total.
const (
	PublishOK           = "ok"
	PublishDuplicate    = "duplicate"
	PublishBadRequest   = "bad_request"
	PublishUnauthorized = "unauthorized"
	PublishForbidden    = "forbidden"
	PublishTooLarge     = "too_large"
	PublishRateLimited  = "rate_limited"
	PublishUnavailable  = "unavailable"
)

var publishResults = []string{PublishOK, PublishDuplicate, PublishBadRequest, PublishUnauthorized,
	PublishForbidden, PublishTooLarge, PublishRateLimited, PublishUnavailable}

// Reasons a connection ends, as labels of realtime_connections_closed_total.
const (
	CloseClient       = "client"
	CloseExpired      = "expired"
	CloseSlow         = "slow_consumer"
	CloseForbidden    = "forbidden"
	CloseProtocol     = "protocol"
	CloseShutdown     = "shutdown"
	CloseWriteError   = "write_error"
	CloseInternal     = "internal"
	CloseFrameTooBig  = "frame_too_large"
	CloseDeadPeer     = "dead_peer"
	CloseUnsupported  = "unsupported_data"
	CloseActorFailure = "actor_failure"
	CloseFlood        = "flood"
)

var closeReasons = []string{CloseClient, CloseExpired, CloseSlow, CloseForbidden, CloseProtocol, CloseShutdown,
	CloseWriteError, CloseInternal, CloseFrameTooBig, CloseDeadPeer, CloseUnsupported, CloseActorFailure, CloseFlood}

// Metrics holds every metric of one relay. Fields are static after New.
type Metrics struct {
	set *metrics.Set

	ConnectionsOpen     *metrics.Gauge
	ConnectionsAccepted *metrics.Counter
	connectionsRejected map[string]*metrics.Counter
	connectionsClosed   map[string]*metrics.Counter
	SubscriptionsOpen   *metrics.Gauge
	ChannelsLive        *metrics.Gauge
	ChannelRestarts     *metrics.Counter
	publishes           map[string]*metrics.Counter
	MessagesDelivered   *metrics.Counter
	BytesWritten        *metrics.Counter
	SocketWrites        *metrics.Counter
	// SocketWritesBlocked counts writes the kernel could not take at once,
	// finished by a writer goroutine: clients behind their socket.
	SocketWritesBlocked *metrics.Counter
	ReplaysRecovered    *metrics.Counter
	ReplaysNotRecovered *metrics.Counter
	SlowConsumers       *metrics.Counter
	TokenExpiries       *metrics.Counter
	authDenied          map[string]*metrics.Counter
	NamespaceDenied     *metrics.Counter
	ClientErrors        *metrics.Counter
	// PublishToWrite is the time from the publish request's arrival to the
	// socket write that carried the message: one observation per write,
	// for its oldest message.
	PublishToWrite *metrics.PrometheusHistogram
	// PublishDuration is the time the publish handler took, per request.
	PublishDuration *metrics.PrometheusHistogram
}

// latencyBuckets spans 50µs to ~3.3s; the default Prometheus buckets start at
// 5ms, too coarse for a relay whose p50 is well under a millisecond.
var latencyBuckets = metrics.ExponentialBuckets(50e-6, 2, 17)

// New creates the metrics of one relay. denyReasons are the labels of
// realtime_auth_denied_total (auth.DenyReasons), passed in because telemetry
// must not import auth.
func New(denyReasons []string) *Metrics {
	s := metrics.NewSet()
	m := &Metrics{
		set:                 s,
		ConnectionsOpen:     s.NewGauge("realtime_connections", nil),
		ConnectionsAccepted: s.NewCounter("realtime_connections_accepted_total"),
		connectionsRejected: labelled(s, "realtime_connections_rejected_total", "reason", rejectReasons),
		connectionsClosed:   labelled(s, "realtime_connections_closed_total", "reason", closeReasons),
		SubscriptionsOpen:   s.NewGauge("realtime_subscriptions", nil),
		ChannelsLive:        s.NewGauge("realtime_channels", nil),
		ChannelRestarts:     s.NewCounter("realtime_channel_restarts_total"),
		publishes:           labelled(s, "realtime_publishes_total", "result", publishResults),
		MessagesDelivered:   s.NewCounter("realtime_messages_delivered_total"),
		BytesWritten:        s.NewCounter("realtime_written_bytes_total"),
		SocketWrites:        s.NewCounter("realtime_socket_writes_total"),
		SocketWritesBlocked: s.NewCounter("realtime_socket_writes_blocked_total"),
		ReplaysRecovered:    s.NewCounter(`realtime_replays_total{outcome="recovered"}`),
		ReplaysNotRecovered: s.NewCounter(`realtime_replays_total{outcome="not_recovered"}`),
		SlowConsumers:       s.NewCounter("realtime_slow_consumer_disconnects_total"),
		TokenExpiries:       s.NewCounter("realtime_token_expiries_total"),
		authDenied:          labelled(s, "realtime_auth_denied_total", "reason", denyReasons),
		NamespaceDenied:     s.NewCounter("realtime_namespace_denied_total"),
		ClientErrors:        s.NewCounter("realtime_client_errors_total"),
		PublishToWrite:      s.NewPrometheusHistogramExt("realtime_publish_to_write_seconds", latencyBuckets),
		PublishDuration:     s.NewPrometheusHistogramExt("realtime_publish_duration_seconds", latencyBuckets),
	}
	return m
}

func labelled(s *metrics.Set, name, label string, values []string) map[string]*metrics.Counter {
	out := make(map[string]*metrics.Counter, len(values))
	for _, v := range values {
		out[v] = s.NewCounter(name + "{" + label + `="` + v + `"}`)
	}
	return out
}

// pick returns the counter for value, or panics: a label outside the fixed
// set is a programming error, not something a client can cause.
func pick(m map[string]*metrics.Counter, value string) *metrics.Counter {
	c, ok := m[value]
	if !ok {
		panic("BUG: unknown metric label " + value)
	}
	return c
}

// ConnectionRejected counts an upgrade refused for reason (Reject*).
func (m *Metrics) ConnectionRejected(reason string) { pick(m.connectionsRejected, reason).Inc() }

// ConnectionClosed counts a connection that ended for reason (Close*).
func (m *Metrics) ConnectionClosed(reason string) { pick(m.connectionsClosed, reason).Inc() }

// Published counts one publish with result (Publish*).
func (m *Metrics) Published(result string) { pick(m.publishes, result).Inc() }

// AuthDenied counts a token rejected for reason (an auth.DenyReason).
func (m *Metrics) AuthDenied(reason string) { pick(m.authDenied, reason).Inc() }

// WritePrometheus writes this relay's metrics followed by the process and Go
// runtime metrics.
func (m *Metrics) WritePrometheus(w io.Writer) {
	m.set.WritePrometheus(w)
	metrics.WriteProcessMetrics(w)
}
