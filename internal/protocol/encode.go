package protocol

import (
	"slices"
	"strconv"
	"unicode/utf8"
)

// Code is the machine-readable reason in an err frame. Values double as
// metric labels.
type Code string

// Error codes sent to clients.
const (
	// CodeBadRequest means the frame could not be decoded or is not valid.
	CodeBadRequest Code = "bad_request"
	// CodeForbidden means the token does not allow this.
	CodeForbidden Code = "forbidden"
	// CodeLimit means a per-connection or per-server limit was hit.
	CodeLimit Code = "limit"
	// CodeUnavailable means the server cannot serve this now; retry later.
	CodeUnavailable Code = "unavailable"
)

// frameOverhead covers the keys and punctuation of any frame, so that
// pre-growing dst by it plus the string lengths makes the common case (no
// escapes) a single allocation at most.
const frameOverhead = 96

// AppendMsg appends a msg frame: one published message on channel.
func AppendMsg(dst []byte, channel, event, data string, offset uint64) []byte {
	dst = slices.Grow(dst, len(channel)+len(event)+len(data)+frameOverhead)
	dst = append(dst, `{"op":"msg","ch":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"event":`...)
	dst = AppendString(dst, event)
	dst = append(dst, `,"data":`...)
	dst = AppendString(dst, data)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	return append(dst, '}')
}

// AppendSubAck appends the ack of a sub: the stream position the
// subscription starts at, and whether the requested since could be resumed
// without loss. recovered is always written, also when false.
func AppendSubAck(dst []byte, id ID, channel, epoch string, offset uint64, recovered bool) []byte {
	dst = slices.Grow(dst, len(channel)+len(epoch)+frameOverhead)
	dst = append(dst, `{"op":"ack"`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"ch":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"epoch":`...)
	dst = AppendString(dst, epoch)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	if recovered {
		return append(dst, `,"recovered":true}`...)
	}
	return append(dst, `,"recovered":false}`...)
}

// AppendAck appends a bare ack, as sent for unsub.
func AppendAck(dst []byte, id ID) []byte {
	dst = append(dst, `{"op":"ack"`...)
	dst = appendID(dst, id)
	return append(dst, '}')
}

// AppendRefreshAck appends the ack of a refresh; exp is the new token's
// expiry in Unix seconds.
func AppendRefreshAck(dst []byte, id ID, exp int64) []byte {
	dst = append(dst, `{"op":"ack"`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"exp":`...)
	dst = strconv.AppendInt(dst, exp, 10)
	return append(dst, '}')
}

// AppendErr appends an err frame; msg is human-readable text.
func AppendErr(dst []byte, id ID, code Code, msg string) []byte {
	dst = slices.Grow(dst, len(code)+len(msg)+frameOverhead)
	dst = append(dst, `{"op":"err"`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"code":`...)
	dst = AppendString(dst, string(code))
	dst = append(dst, `,"msg":`...)
	dst = AppendString(dst, msg)
	return append(dst, '}')
}

// AppendExpiring appends an expiring frame: the connection's token expires
// at exp (Unix seconds) unless refreshed.
func AppendExpiring(dst []byte, exp int64) []byte {
	dst = append(dst, `{"op":"expiring","exp":`...)
	dst = strconv.AppendInt(dst, exp, 10)
	return append(dst, '}')
}

// AppendReset appends a reset frame: channel's stream restarted as epoch,
// and delivery continues after offset.
func AppendReset(dst []byte, channel, epoch string, offset uint64) []byte {
	dst = slices.Grow(dst, len(channel)+len(epoch)+frameOverhead)
	dst = append(dst, `{"op":"reset","ch":`...)
	dst = AppendString(dst, channel)
	dst = append(dst, `,"epoch":`...)
	dst = AppendString(dst, epoch)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	return append(dst, '}')
}

func appendID(dst []byte, id ID) []byte {
	if !id.Set {
		return dst
	}
	dst = append(dst, `,"id":`...)
	return strconv.AppendUint(dst, id.N, 10)
}

// safeASCII[c] is true for the ASCII bytes copied verbatim into a JSON
// string. Unlike encoding/json's default, <, > and & are not escaped:
// frames are not embedded in HTML.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string literal. The output is the same
// as encoding/json's with HTML escaping off: " and \ are escaped, control
// characters as \b \f \n \r \t or \u00XX, U+2028 and U+2029 as \u2028 and
// \u2029 (JavaScript parsers older than ES2019 treat them as line ends),
// and each byte of invalid UTF-8 as \ufffd. So json.Unmarshal gives back
// exactly s whenever s is valid UTF-8.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0 // s[start:i] is pending, to be copied in one go
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
