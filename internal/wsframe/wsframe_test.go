package wsframe

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendMasked(t *testing.T) {
	for _, n := range []int{0, 125, 126, 0xffff, 0x10000} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i)
		}
		f := AppendMasked([]byte("x"), 0x1, payload)[1:]
		require.Equal(t, byte(0x81), f[0])
		var hdr, length int
		switch f[1] & 0x7f {
		case 126:
			hdr, length = 4, int(f[2])<<8|int(f[3])
		case 127:
			hdr, length = 10, int(f[6])<<24|int(f[7])<<16|int(f[8])<<8|int(f[9])
		default:
			hdr, length = 2, int(f[1]&0x7f)
		}
		assert.Equal(t, byte(0x80), f[1]&0x80, "masked")
		assert.Equal(t, n, length)
		mask := f[hdr : hdr+4]
		got := f[hdr+4:]
		require.Len(t, got, n)
		for i := range got {
			got[i] ^= mask[i&3]
		}
		assert.Equal(t, payload, got)
	}
}

func TestReadServerFrame(t *testing.T) {
	for _, n := range []int{0, 125, 126, 65535, 65536} {
		head := []byte{0x81, byte(n)}
		switch {
		case n > 0xffff:
			head = binary.BigEndian.AppendUint64([]byte{0x81, 127}, uint64(n))
		case n > 125:
			head = binary.BigEndian.AppendUint16([]byte{0x81, 126}, uint16(n))
		}
		op, p, err := ReadServerFrame(bytes.NewReader(append(head, make([]byte, n)...)))
		require.NoError(t, err, "n=%d", n)
		assert.Equal(t, byte(0x1), op)
		assert.Len(t, p, n)
	}
	_, _, err := ReadServerFrame(bytes.NewReader([]byte{0x81, 0x81, 1, 2, 3, 4, 'x'}))
	assert.ErrorIs(t, err, ErrMasked)
	_, _, err = ReadServerFrame(bytes.NewReader(binary.BigEndian.AppendUint64([]byte{0x81, 127}, 1<<40)))
	assert.ErrorIs(t, err, ErrTooLarge)
	_, _, err = ReadServerFrame(bytes.NewReader([]byte{0x81, 5, 'a'}))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestParseServerHead(t *testing.T) {
	for _, c := range []struct {
		head []byte
		size uint64
	}{
		{[]byte{0x81, 125}, 125},
		{binary.BigEndian.AppendUint16([]byte{0x01, 126}, 300), 300},
		{binary.BigEndian.AppendUint64([]byte{0x81, 127}, 1<<40), 1 << 40},
	} {
		for cut := range len(c.head) {
			_, _, _, head, err := ParseServerHead(c.head[:cut])
			require.NoError(t, err)
			require.Zero(t, head, "%x cut at %d", c.head, cut)
		}
		fin, op, size, head, err := ParseServerHead(append(c.head, 'x'))
		require.NoError(t, err)
		assert.Equal(t, c.head[0]&0x80 != 0, fin)
		assert.Equal(t, byte(0x1), op)
		assert.Equal(t, c.size, size)
		assert.Equal(t, len(c.head), head)
	}
	_, _, _, _, err := ParseServerHead([]byte{0x81, 0x81})
	assert.ErrorIs(t, err, ErrMasked)
}
