package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Result is what a run measured. Rates are per second, latencies in
// milliseconds, CPU in seconds unless the name says otherwise.
type Result struct {
	Scenario Scenario `json:"scenario"`
	// Target is "child" for a relay the run started, else its URL.
	Target string `json:"target"`

	Channels     int     `json:"channels,omitempty"`
	Subs         int     `json:"subs_per_channel,omitempty"`
	Gadgets      int     `json:"gadgets,omitempty"` // channels per connection
	TargetRate   float64 `json:"target_rate,omitempty"`
	Batch        int     `json:"batch,omitempty"`
	PayloadBytes int     `json:"payload_bytes,omitempty"`
	// Seconds is how long publishing (or holding, for connect) lasted.
	Seconds float64 `json:"seconds"`

	// Connections opened, and how fast (connects per second, upgrade and
	// token check included).
	Conns          int     `json:"conns"`
	ConnectsPerSec float64 `json:"connects_per_sec"`
	ConnectErrors  int     `json:"connect_errors"`
	SubscribeErrs  int     `json:"subscribe_errors,omitempty"`

	Published       int64   `json:"published"`
	PublishErrors   int64   `json:"publish_errors"`
	PublishedPerSec float64 `json:"published_per_sec"`
	// Expected is published x subscribers of each channel.
	Expected        int64   `json:"expected"`
	Delivered       int64   `json:"delivered"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	Lost            int64   `json:"lost"`
	Duplicated      int64   `json:"duplicated"`
	Reordered       int64   `json:"reordered"`
	// Extra counts offsets past what the bench published: someone else
	// publishing to its channels, or a publish that failed on the bench's
	// side but went through.
	Extra int64 `json:"extra"`
	// Resets counts reset frames (a channel actor restarted).
	Resets int64 `json:"resets"`
	// Disconnected counts subscriptions that ended before the run did;
	// CloseCodes says with which close codes.
	Disconnected int            `json:"disconnected"`
	CloseCodes   map[uint16]int `json:"close_codes,omitempty"`

	Latency *Latency `json:"latency_ms,omitempty"`
	// Server is measured from /proc of a child relay; nil for a URL.
	Server *ServerStats `json:"server,omitempty"`
	// LoadgenCPUSeconds is this process's own CPU over the same window.
	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`

	// Ramp only: each step, and the highest rate a step held.
	Steps        []Step  `json:"steps,omitempty"`
	CapacityRate float64 `json:"capacity_rate,omitempty"`

	// Churn and Slow are those scenarios' own figures.
	Churn *ChurnStats `json:"churn,omitempty"`
	Slow  *SlowStats  `json:"slow,omitempty"`

	// Baseline is the same scenario against the physical baseline, and
	// Ratio the relay's figures over the baseline's (with --baseline).
	Baseline *Result `json:"baseline,omitempty"`
	Ratio    *Ratio  `json:"ratio_to_baseline,omitempty"`

	// FDLimit is this process's open-file limit after raising it.
	FDLimit int `json:"fd_limit"`
	// StoppedBy says what, other than the relay, stopped the run short:
	// the open-file limit or the ephemeral ports. Empty when nothing did.
	StoppedBy string `json:"stopped_by,omitempty"`
	// FirstError is the first connect, subscribe or publish error seen.
	FirstError string `json:"first_error,omitempty"`
	// Failures lists why the run failed (loss, duplicates, thresholds);
	// empty means it passed.
	Failures []string `json:"failures"`
}

// Latency summarises end-to-end latency: publish call to receipt.
type Latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// ServerStats is the child relay's resource use.
type ServerStats struct {
	// CPUSeconds is user + system time over the measured window.
	CPUSeconds float64 `json:"cpu_seconds"`
	// CPUMicrosPerMsg is CPUSeconds per delivered message, in µs (the
	// same number is seconds per million deliveries).
	CPUMicrosPerMsg float64 `json:"cpu_us_per_delivered_msg,omitempty"`
	// CPUMicrosPerConn is, for connect, the CPU spent accepting the
	// connections (upgrade and token check) per connection, in µs.
	CPUMicrosPerConn float64 `json:"cpu_us_per_conn,omitempty"`
	RSSBytes         int64   `json:"rss_bytes"`
	// BytesPerConn is the RSS growth from ready to all connections open,
	// per connection.
	BytesPerConn int64 `json:"bytes_per_conn"`
	FDs          int   `json:"open_fds"`
	FDLimit      int   `json:"fd_limit"`
}

// ChurnStats is what churn measured of the reconnects.
type ChurnStats struct {
	TargetRate float64 `json:"target_reconnect_rate"`
	// Reconnects counts resubscribes with since that were answered, and
	// PerSec them over the run's duration.
	Reconnects int64   `json:"reconnects"`
	PerSec     float64 `json:"reconnects_per_sec"`
	// Recovered counts the answers with recovered:true in the stream's
	// epoch; NotRecovered the others.
	Recovered    int64   `json:"recovered"`
	NotRecovered int64   `json:"not_recovered"`
	RecoveredPct float64 `json:"recovered_pct"`
	// Errors counts reconnects that failed (dial, upgrade, no answer in
	// time) and were tried again.
	Errors int64 `json:"reconnect_errors"`
	// Replayed counts deliveries that came from the relay's replay buffer
	// (included in Result.Delivered).
	Replayed int64 `json:"replayed"`
	// Latency is from dropping a connection to the ack on the next one:
	// dial, upgrade with token check, and sub.
	Latency *Latency `json:"reconnect_ms,omitempty"`
	// ServerCPUMicros is the child's CPU over the run per reconnect, in
	// µs, its deliveries included; zero when not measured.
	ServerCPUMicros float64 `json:"server_cpu_us_per_reconnect,omitempty"`
}

// SlowStats is what slow measured. Result.Latency is the fast subscribers'
// latency while the slow ones were stopped; NoSlow theirs in the first
// phase, when everyone read.
type SlowStats struct {
	Fraction float64 `json:"fraction"`
	SlowSubs int     `json:"slow_subs"`
	FastSubs int     `json:"fast_subs"`
	// How the slow subscribers' connections ended, seen by them once they
	// read again: a 4008 close frame, another close code, or the
	// connection's end (the relay could not write its close frame to a
	// client that did not read); NotClosed were still open.
	Closed4008  int `json:"closed_4008"`
	ClosedOther int `json:"closed_other"`
	ClosedConn  int `json:"closed_conn"`
	NotClosed   int `json:"not_closed"`
	// RelayDisconnects is the growth of the child's
	// realtime_slow_consumer_disconnects_total over the second phase; -1
	// when it was not read (a URL target).
	RelayDisconnects int64 `json:"relay_slow_disconnects"`
	// RelayCloses is the growth of the child's
	// realtime_connections_closed_total by reason over the second phase,
	// the fast subscribers' included; nil when not read or none.
	RelayCloses map[string]int64 `json:"relay_closes,omitempty"`
	// CutoffSeconds is how long after the slow subscribers stopped the
	// relay had closed them all, by that count; zero when it had not by
	// the end of the phase (or was not read).
	CutoffSeconds float64  `json:"cutoff_seconds"`
	NoSlow        *Latency `json:"no_slow_latency_ms,omitempty"`
	// P99Ratio is the fast subscribers' p99 with slow ones over without.
	P99Ratio float64 `json:"p99_ratio"`
	// NoSlowRSSBytes is the child's RSS at the end of the first phase,
	// PeakRSSBytes the highest seen in the second.
	NoSlowRSSBytes int64 `json:"no_slow_rss_bytes,omitempty"`
	PeakRSSBytes   int64 `json:"peak_rss_bytes,omitempty"`
}

// Step is one attempt at one rate of a ramp. Refine marks the steps that
// bisect between the highest rate held and the lowest failed.
type Step struct {
	TargetRate      float64 `json:"target_rate"`
	PublishedPerSec float64 `json:"published_per_sec"`
	DeliveredPerSec float64 `json:"delivered_per_sec"`
	P99             float64 `json:"p99_ms"`
	ServerCPUMicros float64 `json:"server_cpu_us_per_msg,omitempty"`
	LoadgenCPU      float64 `json:"loadgen_cpu_seconds"`
	Held            bool    `json:"held"`
	Refine          bool    `json:"refine"`
	Why             string  `json:"why,omitempty"`
	// Final: no later attempt could hold (a subscription was closed), so
	// the ramp ended here.
	Final   bool     `json:"final,omitempty"`
	Latency *Latency `json:"-"`
}

// Ratio is the relay's figure divided by the baseline's, each measured in
// the same run; zero where either side has no figure. Above 1 means the
// relay has more of it: good for capacity, bad for CPU and latency.
type Ratio struct {
	// Capacity compares ramp capacities (publishes/s held).
	Capacity float64 `json:"capacity,omitempty"`
	// DeliveredPerSec compares delivered messages per second.
	DeliveredPerSec float64 `json:"delivered_per_sec,omitempty"`
	// CPUPerMsg compares server CPU per delivered message (ramp: at each
	// side's capacity step).
	CPUPerMsg float64 `json:"cpu_per_msg,omitempty"`
	// P99 compares p99 latency.
	P99 float64 `json:"p99,omitempty"`
	// BytesPerConn compares server memory per connection.
	BytesPerConn float64 `json:"bytes_per_conn,omitempty"`
	// ConnectsPerSec compares connect rates.
	ConnectsPerSec float64 `json:"connects_per_sec,omitempty"`
}

func ratioOf(relay, base *Result) *Ratio {
	div := func(a, b float64) float64 {
		if a <= 0 || b <= 0 {
			return 0
		}
		return a / b
	}
	q := &Ratio{
		Capacity:        div(relay.CapacityRate, base.CapacityRate),
		DeliveredPerSec: div(relay.DeliveredPerSec, base.DeliveredPerSec),
		ConnectsPerSec:  div(relay.ConnectsPerSec, base.ConnectsPerSec),
	}
	if relay.Latency != nil && base.Latency != nil {
		q.P99 = div(relay.Latency.P99, base.Latency.P99)
	}
	if relay.Server != nil && base.Server != nil {
		q.CPUPerMsg = div(relay.Server.CPUMicrosPerMsg, base.Server.CPUMicrosPerMsg)
		q.BytesPerConn = div(float64(relay.Server.BytesPerConn), float64(base.Server.BytesPerConn))
	}
	return q
}

// OK reports whether the run passed.
func (r *Result) OK() bool { return len(r.Failures) == 0 }

func latencyOf(h *hdrhistogram.Histogram) *Latency {
	if h.TotalCount() == 0 {
		return nil
	}
	ms := func(us int64) float64 { return float64(us) / 1e3 }
	return &Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// WriteJSON writes r as one line of JSON.
func (r *Result) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteTable writes r as a table for people.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("scenario", "%s (target %s)", r.Scenario, r.Target)
	if r.Scenario != ScenarioConnect {
		phases := ""
		if r.Slow != nil {
			phases = " (two phases)"
		}
		gadgets := ""
		if r.Gadgets > 1 {
			gadgets = fmt.Sprintf(" (dashboards of %d: %d channels per connection)", r.Gadgets, r.Gadgets)
		}
		row("shape", "%d channels x %d subs%s, %s msg/s target, batch %d, %d-byte payload, %.1fs%s",
			r.Channels, r.Subs, gadgets, num(r.TargetRate), r.Batch, r.PayloadBytes, r.Seconds, phases)
	}
	row("connections", "%s (%s connects/s, %d errors)", formatCount(int64(r.Conns)), num(r.ConnectsPerSec), r.ConnectErrors)
	if r.Scenario != ScenarioConnect {
		row("published", "%s (%s/s, %d errors)", formatCount(r.Published), num(r.PublishedPerSec), r.PublishErrors)
		row("delivered", "%s of %s (%s/s)", formatCount(r.Delivered), formatCount(r.Expected), num(r.DeliveredPerSec))
		row("lost / dup / reordered", "%d / %d / %d  (extra %d, resets %d, disconnected %d)",
			r.Lost, r.Duplicated, r.Reordered, r.Extra, r.Resets, r.Disconnected)
	}
	latency := func(k string, l *Latency) {
		if l != nil {
			row(k, "p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f  (n=%s)",
				l.P50, l.P90, l.P99, l.P999, l.Max, formatCount(l.Count))
		}
	}
	if sl := r.Slow; sl != nil {
		latency("fast latency ms, no slow", sl.NoSlow)
		latency("fast latency ms, slow", r.Latency)
	} else {
		latency("latency ms", r.Latency)
	}
	if c := r.Churn; c != nil {
		row("reconnects", "%s (%s/s of %s/s target, %d errors)", formatCount(c.Reconnects), num(c.PerSec), num(c.TargetRate), c.Errors)
		row("recovered", "%s (%.2f%%), not recovered %d, replayed %s msgs",
			formatCount(c.Recovered), c.RecoveredPct, c.NotRecovered, formatCount(c.Replayed))
		latency("reconnect ms", c.Latency)
		if c.ServerCPUMicros > 0 {
			row("server cpu per reconnect", "%.1f µs (deliveries included)", c.ServerCPUMicros)
		}
	}
	if sl := r.Slow; sl != nil {
		row("slow subscribers", "%d of %d (%.0f%%) stopped reading; closed: %d with 4008, %d connection ended, %d other code; %d not closed",
			sl.SlowSubs, sl.SlowSubs+sl.FastSubs, 100*sl.Fraction, sl.Closed4008, sl.ClosedConn, sl.ClosedOther, sl.NotClosed)
		relay := "not measured (not a child relay)"
		if sl.RelayDisconnects >= 0 {
			relay = fmt.Sprintf("%d slow-consumer disconnects", sl.RelayDisconnects)
			if sl.CutoffSeconds > 0 {
				relay += fmt.Sprintf(", all within %.1fs of the stop", sl.CutoffSeconds)
			}
			relay += "; connections closed by reason:"
			if len(sl.RelayCloses) == 0 {
				relay += " none"
			}
			for _, reason := range slices.Sorted(maps.Keys(sl.RelayCloses)) {
				relay += fmt.Sprintf(" %s %d", reason, sl.RelayCloses[reason])
			}
		}
		row("relay count", "%s", relay)
		row("fast p99 slow / no slow", "x%.2f", sl.P99Ratio)
		if sl.PeakRSSBytes > 0 {
			row("server rss", "%s without slow, peak %s with", bytesHuman(sl.NoSlowRSSBytes), bytesHuman(sl.PeakRSSBytes))
		}
	}
	if s := r.Server; s != nil {
		cpu := fmt.Sprintf("%.2fs", s.CPUSeconds)
		if s.CPUMicrosPerMsg > 0 {
			cpu += fmt.Sprintf(" (%.2f µs per delivered msg = %.2f s per million)", s.CPUMicrosPerMsg, s.CPUMicrosPerMsg)
		}
		if s.CPUMicrosPerConn > 0 {
			cpu += fmt.Sprintf(" accepting (%.1f µs per connection)", s.CPUMicrosPerConn)
		}
		row("server cpu", "%s", cpu)
		row("server memory", "RSS %s, %s bytes per connection, %d/%d fds",
			bytesHuman(s.RSSBytes), formatCount(s.BytesPerConn), s.FDs, s.FDLimit)
	} else {
		row("server cpu / memory", "not measured (not a child relay)")
	}
	row("loadgen cpu", "%.2fs", r.LoadgenCPUSeconds)
	steps(row, "  ramp step", r.Steps)
	if r.Scenario == ScenarioRamp {
		row("capacity", "%s publishes/s", num(r.CapacityRate))
	}
	if b := r.Baseline; b != nil {
		row("baseline", "%s", b.summary())
		steps(row, "  baseline step", b.Steps)
		q := r.Ratio
		row("relay / baseline", "capacity x%.2f, delivered/s x%.2f, server cpu per msg x%.2f, p99 x%.2f, bytes per conn x%.2f, connects/s x%.2f",
			q.Capacity, q.DeliveredPerSec, q.CPUPerMsg, q.P99, q.BytesPerConn, q.ConnectsPerSec)
	}
	if r.StoppedBy != "" {
		row("stopped by", "%s", r.StoppedBy)
	}
	if r.FirstError != "" {
		row("first error", "%s", r.FirstError)
	}
	if r.OK() {
		row("result", "PASS")
	} else {
		row("result", "FAIL: %s", strings.Join(r.Failures, "; "))
	}
	return tw.Flush()
}

func steps(row func(k, format string, a ...any), name string, steps []Step) {
	for _, st := range steps {
		mark := "held"
		if !st.Held {
			mark = "FAILED: " + st.Why
		}
		key := name
		if st.Refine {
			key += " (refine)"
		}
		row(key, "%s msg/s: published %s/s, delivered %s/s, p99 %.2f ms, server %.2f µs/msg: %s",
			num(st.TargetRate), num(st.PublishedPerSec), num(st.DeliveredPerSec), st.P99, st.ServerCPUMicros, mark)
	}
}

// summary is the baseline's result on one line.
func (r *Result) summary() string {
	var b strings.Builder
	if r.Scenario == ScenarioRamp {
		fmt.Fprintf(&b, "capacity %s/s, ", num(r.CapacityRate))
	}
	if r.Scenario != ScenarioConnect {
		fmt.Fprintf(&b, "delivered %s/s, lost %d, ", num(r.DeliveredPerSec), r.Lost)
	} else {
		fmt.Fprintf(&b, "%s connects/s, ", num(r.ConnectsPerSec))
	}
	if r.Latency != nil {
		fmt.Fprintf(&b, "p99 %.2f ms, ", r.Latency.P99)
	}
	if s := r.Server; s != nil {
		if r.Scenario != ScenarioConnect {
			fmt.Fprintf(&b, "server %.2f µs/msg, ", s.CPUMicrosPerMsg)
		}
		fmt.Fprintf(&b, "%s bytes/conn", formatCount(s.BytesPerConn))
	}
	return strings.TrimSuffix(b.String(), ", ")
}

func num(f float64) string {
	if f >= 100 {
		return formatCount(int64(f + 0.5))
	}
	return fmt.Sprintf("%.1f", f)
}

func bytesHuman(n int64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 10<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
}
