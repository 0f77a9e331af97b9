package bench

import (
	"bytes"
	"strconv"
	"time"
)

// The relay's server frames are JSON objects written by its own encoder
// (internal/protocol), one or more per WebSocket message separated by '\n'.
// The bench reads only a few fields of them, so it scans bytes for the keys
// it needs instead of decoding: this is the load generator's hot path.
// The keys it looks for inside a msg ("ch", "offset", and the timestamp at
// the start of "data") cannot occur inside the bench's own data, which is
// digits and padding only.

var (
	keyOp     = []byte(`"op":"`)
	keyOffset = []byte(`"offset":`)
	keyData   = []byte(`"data":"`)
	keyCode   = []byte(`"code":"`)
	keyEpoch  = []byte(`"epoch":"`)
	keyCh     = []byte(`"ch":"`)
	keyID     = []byte(`"id":`)
	// keyRecovered is in an ack that recovered a since.
	keyRecovered = []byte(`"recovered":true`)
)

// A msg object in the layout of the relay's encoder (protocol.AppendMsg):
// these pieces in this order, with a string between each two.
var (
	msgStart  = []byte(`{"op":"msg","ch":"`)
	msgEvent  = []byte(`,"event":"`)
	msgData   = []byte(`,"data":"`)
	msgOffset = []byte(`,"offset":`)
)

// msgFields are what the bench reads of a msg object.
type msgFields struct {
	ch       []byte
	offset   uint64
	numbered bool  // it has an offset
	sent     int64 // unix ns, when timed
	timed    bool  // the data is the bench's, with its send time
}

// cutMsg reads the msg object at the start of p, written in the layout of
// the relay's encoder, with one pass over its bytes, and returns what
// follows it and its '\n'. ok is false for any other object, or a msg in
// another layout or with an escaped quote, which the general path (a
// search for each key) then reads. This is the load generator's hottest
// path: the general one scans a msg about four times.
func cutMsg(p []byte) (m msgFields, rest []byte, ok bool) {
	if p, ok = bytes.CutPrefix(p, msgStart); !ok {
		return m, nil, false
	}
	if m.ch, p, ok = cutString(p); !ok {
		return m, nil, false
	}
	if p, ok = bytes.CutPrefix(p, msgEvent); !ok {
		return m, nil, false
	}
	if _, p, ok = cutString(p); !ok {
		return m, nil, false
	}
	if p, ok = bytes.CutPrefix(p, msgData); !ok {
		return m, nil, false
	}
	var data []byte
	if data, p, ok = cutString(p); !ok {
		return m, nil, false
	}
	if p, ok = bytes.CutPrefix(p, msgOffset); !ok {
		return m, nil, false
	}
	var i int
	m.offset, i = leadingUint(p)
	if i == 0 || i == len(p) || p[i] != '}' {
		return m, nil, false
	}
	if p = p[i+1:]; len(p) > 0 {
		if p[0] != '\n' {
			return m, nil, false
		}
		p = p[1:]
	}
	m.numbered = true
	m.sent, m.timed = payloadTime(data)
	return m, p, true
}

// cutString returns the JSON string content at the start of p, which ends
// at the first quote, and what follows that quote; ok is false when there
// is no quote, or an escaped one.
func cutString(p []byte) (s, rest []byte, ok bool) {
	i := bytes.IndexByte(p, '"')
	if i < 0 || i > 0 && p[i-1] == '\\' {
		return nil, nil, false
	}
	return p[:i], p[i+1:], true
}

// payloadPrefix starts every data the bench publishes; the unix-nanosecond
// send time follows in tsDigits digits.
const (
	payloadPrefix = 't'
	tsDigits      = 19
	paddingByte   = 'x'
)

// appendPayload appends the data of a message sent at t, padded to size
// bytes (size >= minPayloadBytes).
func appendPayload(dst []byte, t time.Time, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadPrefix)
	ns := t.UnixNano()
	// Zero-pad to a fixed width so the scan can rely on it.
	var digits [tsDigits]byte
	for i := tsDigits - 1; i >= 0; i-- {
		digits[i] = byte('0' + ns%10)
		ns /= 10
	}
	dst = append(dst, digits[:]...)
	for len(dst)-start < size {
		dst = append(dst, paddingByte)
	}
	return dst
}

// nextObject cuts the first '\n'-separated object off p.
func nextObject(p []byte) (obj, rest []byte) {
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return p, nil
}

// stringAfter returns the JSON string value (unescaped content, which the
// relay's ops and codes never need) that follows key in obj.
func stringAfter(obj, key []byte) []byte {
	i := bytes.Index(obj, key)
	if i < 0 {
		return nil
	}
	v := obj[i+len(key):]
	if j := bytes.IndexByte(v, '"'); j >= 0 {
		return v[:j]
	}
	return nil
}

// uintAfter returns the unsigned integer that follows key in obj.
func uintAfter(obj, key []byte) (uint64, bool) {
	i := bytes.Index(obj, key)
	if i < 0 {
		return 0, false
	}
	return parseUint(obj[i+len(key):])
}

// parseUint parses the leading decimal digits of b.
func parseUint(b []byte) (uint64, bool) {
	n, digits := leadingUint(b)
	return n, digits > 0
}

// leadingUint parses the leading decimal digits of b and says how many
// there were.
func leadingUint(b []byte) (n uint64, digits int) {
	for ; digits < len(b) && b[digits] >= '0' && b[digits] <= '9'; digits++ {
		n = n*10 + uint64(b[digits]-'0')
	}
	return n, digits
}

// sentAt returns the send time (unix ns) carried in a msg object's data, or
// false if the data is not the bench's.
func sentAt(obj []byte) (int64, bool) {
	i := bytes.Index(obj, keyData)
	if i < 0 {
		return 0, false
	}
	return payloadTime(obj[i+len(keyData):])
}

// payloadTime returns the send time (unix ns) at the start of a data the
// bench published, or false if d is not one.
func payloadTime(d []byte) (int64, bool) {
	if len(d) < 1+tsDigits || d[0] != payloadPrefix {
		return 0, false
	}
	n, ok := parseUint(d[1 : 1+tsDigits])
	return int64(n), ok
}

// formatCount writes n with thousands separators, for the human table.
func formatCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	if n < 0 {
		return "-" + formatCount(-n)
	}
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}
