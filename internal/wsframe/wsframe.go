// Package wsframe builds client-side WebSocket frames (RFC 6455 5.2) and
// parses server frames, for the load generator and the tests' raw clients:
// both need exact control over what goes on the wire. No state; safe for
// concurrent use.
package wsframe

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
)

// Errors returned by ReadServerFrame and ParseServerHead.
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
	var h [maxHead]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return 0, nil, err
	}
	head := headLen(h[1])
	if _, err := io.ReadFull(r, h[2:head]); err != nil {
		return 0, nil, err
	}
	_, opcode, size, _, err := ParseServerHead(h[:head])
	if err != nil {
		return 0, nil, err
	}
	if size > MaxServerFrame {
		return 0, nil, ErrTooLarge
	}
	payload = make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return opcode, payload, nil
}

// ParseServerHead parses the head of the unmasked server frame at the
// start of b: its final bit, opcode and payload size, and the head's
// length, which is 0 when b does not hold the whole head yet. The caller
// bounds size: it comes from the wire.
func ParseServerHead(b []byte) (fin bool, opcode byte, size uint64, head int, err error) {
	if len(b) < 2 {
		return false, 0, 0, 0, nil
	}
	if b[1]&0x80 != 0 {
		return false, 0, 0, 0, ErrMasked
	}
	head = headLen(b[1])
	if len(b) < head {
		return false, 0, 0, 0, nil
	}
	switch head {
	case 2:
		size = uint64(b[1] & 0x7f)
	case 4:
		size = uint64(binary.BigEndian.Uint16(b[2:4]))
	default:
		size = binary.BigEndian.Uint64(b[2:10])
	}
	return b[0]&0x80 != 0, b[0] & 0x0f, size, head, nil
}

// maxHead is the longest frame head without a mask: 2 bytes and a 64-bit
// length.
const maxHead = 10

// headLen is the length of an unmasked frame's head, from its second byte.
func headLen(second byte) int {
	switch second & 0x7f {
	case 126:
		return 4
	case 127:
		return maxHead
	}
	return 2
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
