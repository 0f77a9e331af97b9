package edge

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/sockettest"
	"github.com/realtime-relay/realtime/internal/wsframe"
)

// readFrame reads one text frame and returns its payload.
func readFrame(t *testing.T, r io.Reader) []byte {
	t.Helper()
	opcode, p, err := wsframe.ReadServerFrame(r)
	require.NoError(t, err)
	require.Equal(t, byte(0x1), opcode)
	return p
}

// A frame larger than the kernel takes at once is left pending by TryWrite
// and finished, intact and before the next frame, by Write.
func TestSocketFinishesPartialWrite(t *testing.T) {
	server, client := sockettest.Pair(t)
	// The relay's default send buffer; the client's receive buffer fixed
	// small (tiny ones make loopback TCP crawl on delayed ACKs).
	require.NoError(t, server.SetWriteBuffer(64<<10))
	require.NoError(t, client.SetReadBuffer(64<<10))
	s := newSocket(server, 5*time.Second, nil)
	require.NotNil(t, s.raw, "a TCP connection writes without blocking")

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB, far more than both buffers
	taken, done, err := s.TryWrite([][]byte{big[:100], big[100:]})
	require.NoError(t, err)
	require.True(t, taken)
	require.False(t, done, "4 MiB cannot fit in the socket buffers of a client that is not reading")

	got := make(chan [][]byte, 1)
	go func() {
		var frames [][]byte
		for range 2 {
			frames = append(frames, readFrame(t, client))
		}
		got <- frames
	}()
	require.NoError(t, s.Write([][]byte{[]byte("next"), []byte(" frame")}))
	select {
	case frames := <-got:
		assert.Equal(t, big, frames[0])
		assert.Equal(t, []byte("next frame"), frames[1])
	case <-time.After(10 * time.Second):
		t.Fatal("frames not received")
	}

	// With the buffers drained, a small frame goes out at once.
	go func() {
		got <- [][]byte{readFrame(t, client)}
	}()
	_, done, err = s.TryWrite([][]byte{[]byte("small")})
	require.NoError(t, err)
	assert.True(t, done)
	assert.Equal(t, [][]byte{[]byte("small")}, <-got)
}

// Every frame that the kernel could not take at once counts once as a
// write that blocked: one that TryWrite left for Write to finish, and one
// that a Write, with no TryWrite before it (a writer goroutine's), had to
// wait for. Frames taken at once do not count.
func TestSocketCountsWritesThatWait(t *testing.T) {
	server, client := sockettest.Pair(t)
	require.NoError(t, server.SetWriteBuffer(64<<10))
	require.NoError(t, client.SetReadBuffer(64<<10))
	blocked := metrics.NewSet().NewCounter("blocked")
	s := newSocket(server, 10*time.Second, blocked)
	require.NotNil(t, s.raw)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB, far more than both buffers

	// readAll reads n frames in the background, once start is closed.
	readAll := func(n int, start <-chan struct{}) <-chan [][]byte {
		got := make(chan [][]byte, 1)
		go func() {
			<-start
			var frames [][]byte
			for range n {
				frames = append(frames, readFrame(t, client))
			}
			got <- frames
		}()
		return got
	}
	receive := func(got <-chan [][]byte) [][]byte {
		t.Helper()
		select {
		case frames := <-got:
			return frames
		case <-time.After(10 * time.Second):
			t.Fatal("frames not received")
			return nil
		}
	}

	// A TryWrite cut short, finished by a Write with nothing more.
	start := make(chan struct{})
	got := readAll(1, start)
	_, done, err := s.TryWrite([][]byte{big})
	require.NoError(t, err)
	require.False(t, done)
	assert.Equal(t, uint64(1), blocked.Get())
	close(start)
	require.NoError(t, s.Write(nil))
	assert.Equal(t, big, receive(got)[0])
	assert.Equal(t, uint64(1), blocked.Get(), "finishing a frame counted already")

	// A blocking Write that finds the buffers full: the client reads only
	// once it has counted (or after 10 s, and the count below fails).
	start = make(chan struct{})
	got = readAll(1, start)
	go func() {
		defer close(start)
		for deadline := time.Now().Add(10 * time.Second); blocked.Get() < 2 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}()
	require.NoError(t, s.Write([][]byte{big}))
	assert.Equal(t, big, receive(got)[0])
	assert.Equal(t, uint64(2), blocked.Get(), "a Write that waited for the client")

	// A small frame into drained buffers, both ways.
	start = make(chan struct{})
	close(start)
	got = readAll(2, start)
	_, done, err = s.TryWrite([][]byte{[]byte("small")})
	require.NoError(t, err)
	require.True(t, done)
	require.NoError(t, s.Write([][]byte{[]byte("small")}))
	assert.Len(t, receive(got), 2)
	assert.Equal(t, uint64(2), blocked.Get(), "frames taken at once")
}

// A connection without a file descriptor (TLS) cannot write without
// blocking: TryWrite keeps the whole frame and Write sends it.
func TestSocketWithoutFDDefersToWrite(t *testing.T) {
	server, client := net.Pipe()
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	s := newSocket(server, 5*time.Second, nil)
	require.Nil(t, s.raw)

	parts := [][]byte{[]byte(`{"op":"msg"}`), []byte("\n"), []byte(`{"op":"msg"}`)}
	taken, done, err := s.TryWrite(parts)
	require.NoError(t, err)
	require.False(t, taken, "nothing taken: the caller writes it with Write")
	require.False(t, done)
	got := make(chan []byte, 1)
	go func() {
		got <- readFrame(t, client)
	}()
	require.NoError(t, s.Write(parts))
	assert.Equal(t, []byte("{\"op\":\"msg\"}\n{\"op\":\"msg\"}"), <-got)
}

// Frame headers use the shortest length encoding RFC 6455 allows.
func TestFrameLengthEncodings(t *testing.T) {
	s := newSocket(nil, time.Second, nil)
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		payload := bytes.Repeat([]byte{'x'}, n)
		s.setFrameLocked(finText, [][]byte{payload[:n/2], payload[n/2:]})
		hdr := s.pending[0]
		want := map[bool]int{true: 2, false: 4}[n < 126]
		if n > 0xffff {
			want = 10
		}
		assert.Len(t, hdr, want, "n=%d", n)
		assert.Equal(t, byte(0x81), hdr[0])
		var wire []byte
		for _, p := range s.pending { // what would be written, empty parts left out
			wire = append(wire, p...)
		}
		assert.Equal(t, payload, readFrame(t, bytes.NewReader(wire)))
		s.releasePendingLocked()
	}
}

// A non-blocking write works after the deadline of an earlier blocking
// write (here a ping's) has lapsed: a lapsed deadline fails any write that
// checks it, and writes often come long after the last ping.
func TestSocketTryWriteAfterLapsedDeadline(t *testing.T) {
	server, client := sockettest.Pair(t)
	s := newSocket(server, 5*time.Second, nil)
	require.NoError(t, s.WritePing())
	opcode, _, err := wsframe.ReadServerFrame(client)
	require.NoError(t, err)
	require.Equal(t, byte(0x9), opcode)
	// The ping's deadline lapses, as it does when the next write comes
	// later than the write timeout (set here rather than waited for).
	require.NoError(t, server.SetWriteDeadline(time.Now().Add(-time.Second)))

	_, done, err := s.TryWrite([][]byte{[]byte("after")})
	require.NoError(t, err)
	assert.True(t, done)
	assert.Equal(t, []byte("after"), readFrame(t, client))
}

// TryWrite never waits for the socket's lock: a blocking write holding it
// (gws's pong to a client that does not read) must not hold up a channel's
// flush. It takes nothing, and the caller writes with Write later.
func TestSocketTryWriteDoesNotWaitForABusySocket(t *testing.T) {
	server, client := sockettest.Pair(t)
	s := newSocket(server, 5*time.Second, nil)
	s.mu.Lock() // a blocking write in progress
	taken, done, err := s.TryWrite([][]byte{[]byte("later")})
	require.NoError(t, err)
	assert.False(t, taken)
	assert.False(t, done)
	s.mu.Unlock()
	require.NoError(t, s.Write([][]byte{[]byte("later")}))
	assert.Equal(t, []byte("later"), readFrame(t, client))
}

// A failed write ends writing on the socket: a frame cut short would turn
// whatever followed it, a close frame included, into garbage.
func TestSocketFailedWriteIsFinal(t *testing.T) {
	server, _ := sockettest.Pair(t)
	s := newSocket(server, 5*time.Second, nil)
	require.NoError(t, server.Close())
	_, _, err := s.TryWrite([][]byte{[]byte("x")})
	require.Error(t, err)
	assert.ErrorIs(t, s.WritePing(), errSocketClosed)
	assert.ErrorIs(t, s.Write([][]byte{[]byte("y")}), errSocketClosed)
	_, err = writeLocked{server, s}.Write([]byte{0x8a, 0})
	assert.ErrorIs(t, err, errSocketClosed)
}

// TestCloseCutsAStuckWrite: a blocking write to a client that does not read
// ends at Close's deadline, not at the (much longer) write timeout, so a
// close never waits behind it.
func TestCloseCutsAStuckWrite(t *testing.T) {
	server, client := sockettest.Pair(t)
	require.NoError(t, server.SetWriteBuffer(64<<10))
	require.NoError(t, client.SetReadBuffer(64<<10))
	s := newSocket(server, time.Minute, nil)
	big := bytes.Repeat([]byte("x"), 4<<20)
	taken, done, err := s.TryWrite([][]byte{big})
	require.NoError(t, err)
	require.True(t, taken)
	require.False(t, done)

	wrote := make(chan error, 1)
	go func() { wrote <- s.Write(nil) }() // blocks: the client never reads
	s.cutWritesAt(time.Now().Add(50 * time.Millisecond))
	select {
	case err := <-wrote:
		assert.Error(t, err, "cut at Close's deadline")
	case <-time.After(10 * time.Second):
		t.Fatal("a stuck write outlived Close's deadline")
	}
}

// TestSocketWritevFailureIsFinal: a write that fails in writev itself (the
// peer reset the connection), not because the socket was closed here,
// also ends writing: nothing can follow a frame cut in the middle.
func TestSocketWritevFailureIsFinal(t *testing.T) {
	server, client := sockettest.Pair(t)
	require.NoError(t, client.SetLinger(0))
	require.NoError(t, client.Close()) // RST
	s := newSocket(server, 5*time.Second, nil)
	var err error
	for range 100 { // the reset arrives with the next segments at the latest
		if _, _, err = s.TryWrite([][]byte{bytes.Repeat([]byte("x"), 1<<10)}); err != nil {
			break
		}
	}
	require.Error(t, err)
	assert.NotErrorIs(t, err, errSocketClosed, "writev's own error")
	assert.ErrorIs(t, s.Write([][]byte{[]byte("y")}), errSocketClosed)
	assert.ErrorIs(t, s.WritePing(), errSocketClosed)
}
