package bench

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// publishTimeout bounds one publish request.
const publishTimeout = 10 * time.Second

// clientIdleTimeout closes a publisher's connection left idle this long;
// the client's cleaner goroutine ends at most this long after its phase.
const clientIdleTimeout = 5 * time.Second

// benchEvent is the event name of every message the bench publishes.
const benchEvent = "Bench"

// publisher posts messages over one keep-alive HTTP connection at a steady
// request rate. Each publisher runs on its own goroutine and owns its
// buffers; it shares only atomics with the run.
type publisher struct {
	// Static after construction.
	client   *fasthttp.HostClient
	url      string
	auth     string   // "Bearer <publish token>"
	channels []string // names of the channels it publishes to, in turn
	indexes  []int    // their indexes into published
	batch    int
	payload  int
	// published counts successful publishes per channel, shared by all
	// publishers and read by the run.
	published []atomic.Int64
	ctr       *counters

	// Owned by the publisher's goroutine.
	next    int // index into channels of the next message
	body    []byte
	req     *fasthttp.Request  // reused: the same URL and headers each time
	res     *fasthttp.Response // reused
	lastErr error
}

// newClient returns the keep-alive client the publishers share: up to one
// connection each, closed after clientIdleTimeout unused. It is
// fasthttp's: net/http's client costs two goroutine hand-offs and a dozen
// allocations a request, and in batches to dashboards its requests were a
// quarter of the load generator's CPU, on the cores the relay is measured
// on.
func newClient(base *url.URL, roots *x509.CertPool, publishers int) *fasthttp.HostClient {
	d := net.Dialer{Timeout: defaultDialTimeout}
	return &fasthttp.HostClient{
		Addr: hostPort(base),
		// net's dialer: fasthttp's default caches DNS answers in a
		// goroutine of its own that lives as long as the process.
		Dial:                     func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) },
		MaxConns:                 publishers,
		MaxIdleConnDuration:      clientIdleTimeout,
		ReadTimeout:              publishTimeout,
		WriteTimeout:             publishTimeout,
		NoDefaultUserAgentHeader: true,
		IsTLS:                    base.Scheme == "https",
		TLSConfig:                tlsConfig(base, roots),
	}
}

// schedule is when one publisher sends: its k-th request at first + k
// intervals.
type schedule struct {
	first    time.Time
	interval time.Duration
}

// staggered is the schedule of publisher i of p, each sending reqRate
// requests a second from start. The publishers take turns, i/p of an
// interval apart, so that together they post evenly at p*reqRate. Started
// together they would send p requests at the same instant: a burst whose
// writes the relay coalesces (cheaper per message than the rate deserves)
// and whose latency it pays for (the last of the p waits for the others).
func staggered(start time.Time, reqRate float64, i, p int) schedule {
	interval := time.Duration(float64(time.Second) / reqRate)
	return schedule{first: start.Add(interval * time.Duration(i) / time.Duration(p)), interval: interval}
}

func (s schedule) at(k int) time.Time { return s.first.Add(time.Duration(k) * s.interval) }

// run publishes on its schedule until end. A publisher that falls behind
// sends at once until it has caught up, but never past end (plus one
// interval of grace), so the achieved rate shows whether the target was
// held.
func (p *publisher) run(ctx context.Context, s schedule, end time.Time) {
	stop := end.Add(s.interval)
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for k := 0; ; k++ {
		at := s.at(k)
		if !at.Before(end) || !time.Now().Before(stop) {
			return
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return
		}
		p.publish()
	}
}

// publish sends one request of p.batch messages, stamped with the time of
// the call.
func (p *publisher) publish() {
	now := time.Now()
	first := p.next
	b := p.body[:0]
	if p.batch > 1 {
		b = append(b, `{"messages":[`...)
	}
	for i := range p.batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"channel":`...)
		b = protocol.AppendString(b, p.channels[p.next])
		b = append(b, `,"event":"`+benchEvent+`","data":"`...)
		b = appendPayload(b, now, p.payload)
		b = append(b, `"}`...)
		p.next = (p.next + 1) % len(p.channels)
	}
	if p.batch > 1 {
		b = append(b, `]}`...)
	}
	p.body = b

	ok := p.do(b)
	// A batch answers per message, in order; count what went through.
	for i := range p.batch {
		ch := (first + i) % len(p.channels)
		if ok == nil || (p.batch > 1 && ok[i]) {
			p.published[p.indexes[ch]].Add(1)
			p.ctr.published.Add(1)
		} else {
			p.ctr.publishErrors.Add(1)
		}
	}
}

// do posts body and returns nil when every message was published, or
// which ones were (all false when the request failed).
func (p *publisher) do(body []byte) []bool {
	if p.req == nil {
		p.req, p.res = &fasthttp.Request{}, &fasthttp.Response{}
		p.req.SetRequestURI(p.url)
		p.req.Header.SetMethod(http.MethodPost)
		p.req.Header.Set("Authorization", p.auth)
		p.req.Header.SetContentType("application/json")
	}
	p.req.SetBodyRaw(body)
	if err := p.client.DoTimeout(p.req, p.res, publishTimeout); err != nil {
		return p.failed(err)
	}
	resp := p.res.Body()
	if code := p.res.StatusCode(); code != http.StatusOK {
		return p.failed(fmt.Errorf("HTTP %d: %s", code, truncate(string(resp), 200)))
	}
	if p.batch == 1 || !bytes.Contains(resp, []byte(`"error"`)) {
		return nil
	}
	// Some items failed: the rare path, so plain encoding/json.
	var r struct {
		Results []struct {
			Error json.RawMessage `json:"error"`
		} `json:"results"`
	}
	if err := json.Unmarshal(resp, &r); err != nil || len(r.Results) != p.batch {
		return p.failed(fmt.Errorf("bad batch answer: %s", truncate(string(resp), 200)))
	}
	ok := make([]bool, p.batch)
	for i, res := range r.Results {
		ok[i] = res.Error == nil
	}
	p.lastErr = fmt.Errorf("batch item failed: %s", truncate(string(resp), 200))
	return ok
}

func (p *publisher) failed(err error) []bool {
	p.lastErr = err
	return make([]bool, p.batch)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
