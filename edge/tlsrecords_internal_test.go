package edge

import (
	"bytes"
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRecordConnLosesNoRecord: records that another goroutine writes while
// the socket collects and takes (crypto/tls answering a key update from
// the read loop) all come out of take, whole and in the order written,
// whichever take they land in. Under -race it also checks the locking.
func TestRecordConnLosesNoRecord(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	rc := &recordConn{Conn: server}
	defer rc.Close()
	rc.startCapture()

	const n = 2000
	written := make(chan struct{})
	go func() {
		defer close(written)
		for i := range n {
			record := []byte("<" + strconv.Itoa(i) + ">")
			k, err := rc.Write(record)
			assert.NoError(t, err)
			assert.Equal(t, len(record), k)
		}
	}()
	var got []byte
	for last := false; !last; {
		select {
		case <-written:
			last = true // one more take, after the last record
		default:
		}
		rc.collect(make([]byte, 0, 64))
		got = append(got, rc.take()...)
	}
	var want bytes.Buffer
	for i := range n {
		want.WriteString("<" + strconv.Itoa(i) + ">")
	}
	require.Equal(t, want.String(), string(got))
}
