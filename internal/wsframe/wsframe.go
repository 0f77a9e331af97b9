// Package wsframe builds client-side WebSocket frames (RFC 6455 5.2), for
// the load generator and the tests' raw clients, and reads server frames,
// for the tests: both need exact control over what goes on the wire. No
// state; safe for concurrent use.
package wsframe

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
)

// Errors returned by ReadServerFrame.
var (
	// ErrMasked reports a server frame with the mask bit set, which RFC
	// 6455 forbids.
	ErrMasked = errors.New("wsframe: masked frame from a server")
	// ErrTooLarge reports a frame longer than MaxServerFrame.
	ErrTooLarge = errors.New("wsframe: server frame too large")
)

// MaxServerFrame bounds the payload ReadServerFrame accepts: the length
// comes from the wire, and is allocated.
const MaxServerFrame = 64 << 20

// ReadServerFrame reads one unmasked frame from r and returns its opcode
// and payload (fragments are not joined: the relay never fragments).
func ReadServerFrame(r io.Reader) (opcode byte, payload []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		return 0, nil, ErrMasked
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var l [2]byte
		_, err = io.ReadFull(r, l[:])
		n = uint64(binary.BigEndian.Uint16(l[:]))
	case 127:
		var l [8]byte
		_, err = io.ReadFull(r, l[:])
		n = binary.BigEndian.Uint64(l[:])
	}
	if err != nil {
		return 0, nil, err
	}
	if n > MaxServerFrame {
		return 0, nil, ErrTooLarge
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return h[0] & 0x0f, payload, nil
}

// AppendMasked appends one final frame with opcode and payload, masked with
// a random key as a client must.
func AppendMasked(b []byte, opcode byte, payload []byte) []byte {
	b = append(b, 0x80|opcode)
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:]) // crypto/rand.Read never fails on Linux
	b = append(b, mask[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range b[start:] {
		b[start+i] ^= mask[i&3]
	}
	return b
}
