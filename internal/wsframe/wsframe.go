// Package wsframe builds client-side WebSocket frames (RFC 6455 5.2) for
// the relay's own clients: the load generator and the tests' raw clients,
// which need exact control over what goes on the wire. Pure functions.
package wsframe

import (
	"crypto/rand"
	"encoding/binary"
)

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
