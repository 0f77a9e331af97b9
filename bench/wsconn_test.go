package bench

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/internal/sockettest"
)

func TestReadUpgradeResponse(t *testing.T) {
	// RFC 6455 1.3's example key and its accept value.
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	const accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
	f := func(name, resp string, check func(t *testing.T, err error)) {
		t.Run(name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(resp + "FRAMES"))
			err := readUpgradeResponse(br, key)
			check(t, err)
			if err == nil {
				rest, _ := br.Peek(6)
				assert.Equal(t, "FRAMES", string(rest), "the head only is consumed")
			}
		})
	}
	ok := func(t *testing.T, err error) { assert.NoError(t, err) }
	fails := func(msg string) func(*testing.T, error) {
		return func(t *testing.T, err error) { require.Error(t, err); assert.Contains(t, err.Error(), msg) }
	}
	f("101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "+accept+"\r\n\r\n", ok)
	f("header names in any case", "HTTP/1.1 101 Switching Protocols\r\nupgrade:WebSocket\r\nsec-websocket-accept:  "+accept+"\r\n\r\n", ok)
	f("refused", "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}", func(t *testing.T, err error) {
		var ue upgradeError
		require.ErrorAs(t, err, &ue)
		assert.Equal(t, 401, ue.status)
	})
	f("wrong accept", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: AAAA\r\n\r\n", fails("Sec-WebSocket-Accept"))
	f("no upgrade header", "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: "+accept+"\r\n\r\n", fails("Upgrade"))
	f("not HTTP", "SSH-2.0-OpenSSH\r\n\r\n", fails("status line"))
	f("bad header", "HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n", fails("header line"))
}

func TestAppendQueryValue(t *testing.T) {
	assert.Equal(t, "?t=eyJh.b-c_d", string(appendQueryValue([]byte("?t="), "eyJh.b-c_d")))
	assert.Equal(t, "?t=a%2Bb%3D", string(appendQueryValue([]byte("?t="), "a+b=")))
}

// BenchmarkUpgradeResponse compares reading a 101 by hand with net/http's
// ReadResponse, which the load generator used before.
func BenchmarkUpgradeResponse(b *testing.B) {
	key := []byte("dGhlIHNhbXBsZSBub25jZQ==")
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
	r := strings.NewReader(resp)
	br := bufio.NewReaderSize(r, 2<<10)
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(resp)
			br.Reset(r)
			if err := readUpgradeResponse(br, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Reset(resp)
			br.Reset(r)
			res, err := http.ReadResponse(br, nil)
			if err != nil || res.StatusCode != 101 {
				b.Fatal(err)
			}
			sum := sha1.Sum(append(append([]byte(nil), key...), wsGUID...))
			if res.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
				b.Fatal("accept")
			}
		}
	})
}

// serverFrame encodes an unmasked server frame.
func serverFrame(fin bool, op byte, payload []byte) []byte {
	b := []byte{op, 0}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b[1] = byte(n)
	case n <= 0xffff:
		b[1] = 126
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b[1] = 127
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// TestWsConnReads feeds a client real socket bytes cut at awkward places
// and reads them both ways: blocking (readMessage, a reader goroutine's)
// and one non-blocking read at a time (readOnce, a poller's).
func TestWsConnReads(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*readBufferBytes+5) // grows the buffer
	var stream []byte
	stream = append(stream, serverFrame(true, opText, []byte("one"))...)
	stream = append(stream, serverFrame(true, opPing, []byte("p"))...) // between messages
	stream = append(stream, serverFrame(true, opText, []byte("two"))...)
	stream = append(stream, serverFrame(true, opText, big)...)
	stream = append(stream, serverFrame(true, opClose, []byte{0x0f, 0xa8})...) // 4008
	want := []string{"one", "two", string(big)}

	for _, polled := range []bool{false, true} {
		t.Run(map[bool]string{false: "blocking", true: "polled"}[polled], func(t *testing.T) {
			server, client := sockettest.Pair(t)
			rc, err := client.SyscallConn()
			require.NoError(t, err)
			c := &wsConn{nc: client, rc: rc}
			go func() {
				// A byte at a time for the first frames, then the rest.
				for i := range 12 {
					_, _ = server.Write(stream[i : i+1])
					time.Sleep(time.Millisecond) // each its own segment, most of the time
				}
				_, _ = server.Write(stream[12:])
			}()
			var got []string
			var end error
			deadline := time.Now().Add(10 * time.Second)
			for end == nil {
				require.True(t, time.Now().Before(deadline), "read %q so far", got)
				if !polled {
					var p []byte
					if p, end = c.readMessage(); end == nil {
						got = append(got, string(p))
					}
					continue
				}
				var n int
				if n, end = c.readOnce(); n == 0 && end == nil {
					time.Sleep(time.Millisecond) // nothing yet: a poller would wait for epoll
				}
				for end == nil {
					p, ok, err := c.nextMessage()
					if end = err; !ok {
						break
					}
					got = append(got, string(p))
				}
			}
			assert.Equal(t, want, got)
			var ce closeError
			require.ErrorAs(t, end, &ce)
			assert.Equal(t, uint16(4008), ce.code)

			// The ping was answered with a masked pong carrying its payload.
			require.NoError(t, server.SetReadDeadline(time.Now().Add(10*time.Second)))
			var pong [7]byte
			_, err = io.ReadFull(server, pong[:])
			require.NoError(t, err)
			assert.Equal(t, byte(0x80|opPong), pong[0])
			assert.Equal(t, byte(0x80|1), pong[1], "masked, 1 byte")
			assert.Equal(t, byte('p'), pong[6]^pong[2], "payload under the mask")
		})
	}
}

func TestParseServerFrame(t *testing.T) {
	whole := serverFrame(true, opText, bytes.Repeat([]byte("y"), 300)) // 16-bit length
	for cut := range len(whole) {
		_, _, _, n, err := parseServerFrame(whole[:cut])
		require.NoError(t, err)
		require.Zero(t, n, "incomplete at %d bytes", cut)
	}
	fin, op, p, n, err := parseServerFrame(append(whole, 0x81))
	require.NoError(t, err)
	assert.True(t, fin)
	assert.Equal(t, byte(opText), op)
	assert.Len(t, p, 300)
	assert.Equal(t, len(whole), n, "the next frame's byte is not consumed")

	bad := func(b []byte, msg string) {
		t.Helper()
		_, _, _, _, err := parseServerFrame(b)
		require.Error(t, err)
		assert.Contains(t, err.Error(), msg)
	}
	bad([]byte{0x81, 0x81, 0, 0, 0, 0, 'x'}, "masked")
	bad([]byte{0x80, 0}, "opcode") // a continuation: the server never fragments
	bad([]byte{0x83, 0}, "opcode")
	bad([]byte{0x81, 127, 0xff, 0, 0, 0, 0, 0, 0, 0}, "bytes")
}

// dataAndEOF is a connection whose one read returns bytes and io.EOF
// together, as a TLS connection does when close_notify follows them.
type dataAndEOF struct {
	net.Conn
	data []byte
}

func (c *dataAndEOF) Read(p []byte) (int, error) {
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, io.EOF
}

// TestReadMessageBeforeError: the frames read together with an error are
// parsed before the error is returned, so a close frame's code is kept.
func TestReadMessageBeforeError(t *testing.T) {
	c := &wsConn{nc: &dataAndEOF{data: append(serverFrame(true, opText, []byte("last")),
		serverFrame(true, opClose, []byte{0x0f, 0xa8})...)}}
	p, err := c.readMessage()
	require.NoError(t, err)
	assert.Equal(t, "last", string(p))
	_, err = c.readMessage()
	var ce closeError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, uint16(4008), ce.code)
	_, err = c.readMessage()
	assert.Error(t, err)
}

// TestReadOnceNoAlloc: a poller's read of a socket and the parse of what
// it read allocate nothing, once the connection's buffer and read are set
// up: it runs for every readiness of every subscriber.
func TestReadOnceNoAlloc(t *testing.T) {
	server, client := sockettest.Pair(t)
	rc, err := client.SyscallConn()
	require.NoError(t, err)
	c := &wsConn{nc: client, rc: rc}
	frame := serverFrame(true, opText, []byte(`{"op":"msg","ch":"s/d/g","event":"e","data":"x","offset":1}`))
	readOne := func() { // testify's checks would box their arguments
		if _, err := server.Write(frame); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := c.readOnce(); err != nil {
				t.Fatal(err)
			}
			p, ok, err := c.nextMessage()
			if err != nil || ok && len(p) == 0 {
				t.Fatal(err, len(p))
			}
			if ok {
				return
			}
		}
	}
	readOne() // sets up the buffer and the bound read
	assert.Zero(t, testing.AllocsPerRun(200, readOne))
}

// TestFragmentRefused: neither the relay nor the baseline fragments, so a
// message's first fragment is an error, not a message.
func TestFragmentRefused(t *testing.T) {
	c := &wsConn{in: serverFrame(false, opText, []byte("fr"))}
	_, ok, err := c.nextMessage()
	assert.False(t, ok)
	assert.ErrorContains(t, err, "fragmented")
}
