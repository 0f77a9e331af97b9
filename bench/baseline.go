package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// The physical baseline is the least a relay can do for the bench's load
// on the same machine: a gws server that speaks just enough of the wire
// protocol (sub, publish, batch publish), with no auth, no actors, no
// queues and no replay buffers. A publish encodes its msg frame once and
// writes it to each subscriber right away, one frame and one write per
// message per subscriber. The relay's figures divided by the baseline's,
// measured in the same run, are what to improve: this machine is shared
// and noisy, so absolute numbers move from run to run while the ratio
// holds.

// ServeBaseline serves the physical baseline on ln until ctx is done, then
// closes every connection. Tokens are not checked.
//
// Concurrency: each channel's mutex orders its offsets and its writes, so
// every subscriber gets a channel's frames in offset order; gws serialises
// the writes of one connection, and b.mu guards the maps.
func ServeBaseline(ctx context.Context, ln net.Listener) error {
	b := &baseline{channels: make(map[string]*baseChannel), conns: make(map[*gws.Conn][]*baseChannel)}
	b.upgrader = gws.NewUpgrader(b, &gws.ServerOption{
		ReadMaxPayloadSize: 64 << 10,
		Recovery:           gws.Recovery,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", func(w http.ResponseWriter, r *http.Request) {
		socket, err := b.upgrader.Upgrade(w, r)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.conns[socket] = nil
		b.mu.Unlock()
		b.wg.Go(socket.ReadLoop)
	})
	mux.HandleFunc("POST /v1/publish", b.handlePublish)
	mux.HandleFunc("POST /v1/publish/batch", b.handlePublish)
	ready := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"status":"ready"}`)) }
	mux.HandleFunc("GET /readyz", ready)
	mux.HandleFunc("GET /healthz", ready)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	_ = srv.Close()
	b.mu.Lock()
	for c := range b.conns {
		_ = c.NetConn().Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type baseline struct {
	upgrader *gws.Upgrader // static after construction
	wg       sync.WaitGroup

	mu       sync.Mutex
	channels map[string]*baseChannel      // guarded by mu
	conns    map[*gws.Conn][]*baseChannel // guarded by mu: each connection's channels
}

// baseChannel is one channel's subscribers and offset.
type baseChannel struct {
	mu     sync.Mutex
	offset uint64      // guarded by mu
	subs   []*gws.Conn // guarded by mu
	frame  []byte      // guarded by mu: reused
}

func (b *baseline) channel(name string) *baseChannel {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := b.channels[name]
	if ch == nil {
		ch = &baseChannel{}
		b.channels[name] = ch
	}
	return ch
}

// publish writes one message to every subscriber of its channel and
// returns its offset.
func (b *baseline) publish(p protocol.Publish) uint64 {
	ch := b.channel(p.Channel)
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.offset++
	ch.frame = protocol.AppendMsg(ch.frame[:0], p.Channel, p.Event, p.Data, ch.offset)
	for _, c := range ch.subs {
		_ = c.WriteMessage(gws.OpcodeText, ch.frame)
	}
	return ch.offset
}

func (b *baseline) handlePublish(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var out []byte
	result := func(offset uint64) {
		out = append(out, `{"epoch":"baseline","offset":`...)
		out = strconv.AppendUint(out, offset, 10)
		out = append(out, '}')
	}
	if r.URL.Path == "/v1/publish" {
		p, err := protocol.DecodePublish(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		result(b.publish(p))
	} else {
		items, err := protocol.DecodeBatch(body, 1000)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		out = append(out, `{"results":[`...)
		for i, item := range items {
			p, err := protocol.DecodeBatchItem(item)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if i > 0 {
				out = append(out, ',')
			}
			result(b.publish(p))
		}
		out = append(out, "]}"...)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

func readBody(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	return io.ReadAll(io.LimitReader(r.Body, 16<<20))
}

// OnMessage answers sub frames; everything else is ignored.
func (b *baseline) OnMessage(socket *gws.Conn, m *gws.Message) {
	defer m.Close()
	f, err := protocol.DecodeClient(m.Bytes())
	if err != nil || f.Op != protocol.OpSub {
		return
	}
	ch := b.channel(f.Channel)
	b.mu.Lock()
	b.conns[socket] = append(b.conns[socket], ch)
	b.mu.Unlock()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.subs = append(ch.subs, socket)
	// Under ch.mu, so the ack precedes every msg of the subscription.
	_ = socket.WriteMessage(gws.OpcodeText, protocol.AppendSubAck(nil, f.ID, f.Channel, "baseline", ch.offset, false))
}

func (b *baseline) OnClose(socket *gws.Conn, _ error) {
	b.mu.Lock()
	chs := b.conns[socket]
	delete(b.conns, socket)
	b.mu.Unlock()
	for _, ch := range chs {
		ch.mu.Lock()
		ch.subs = slices.DeleteFunc(ch.subs, func(c *gws.Conn) bool { return c == socket })
		ch.mu.Unlock()
	}
}

func (b *baseline) OnOpen(*gws.Conn)                  {}
func (b *baseline) OnPing(socket *gws.Conn, p []byte) { _ = socket.WritePong(p) }
func (b *baseline) OnPong(*gws.Conn, []byte)          {}
