package bench

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
