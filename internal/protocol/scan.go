package protocol

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// The helpers in this file walk JSON that json.Valid has already accepted.
// Validation is left to encoding/json so that this file only has to find
// where values start and end, which is simple to get right on valid input;
// on invalid input they never index out of range but their result is
// meaningless.

// trimWS returns b without leading and trailing JSON whitespace.
func trimWS(b []byte) []byte {
	return bytes.Trim(b, " \t\r\n")
}

func isWS(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string literal starting at
// b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); {
		switch b[i] {
		case '\\':
			i += 2
		case '"':
			return i + 1
		default:
			i++
		}
	}
	return len(b)
}

// skipValue returns the index just past the value starting at b[i], which
// is not whitespace. It is iterative, so deep nesting costs no stack.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	default: // number, true, false, null
		for i < len(b) && !isWS(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
			i++
		}
		return i
	}
}

// fields stores in vals[k] the raw value of the member of the valid JSON
// object obj whose key is exactly names[k]; absent and null members are left
// nil. Other members are skipped. Bit k of repeated says names[k] occurs
// more than once; vals[k] then holds its first value.
func fields(obj []byte, vals [][]byte, names ...string) (repeated uint64) {
	// Bit k of seen: names[k] was met. Callers pass a handful of names.
	var seen uint64
	i := skipWS(obj, 1) // past '{'
	for i < len(obj) && obj[i] == '"' {
		end := skipString(obj, i)
		key := obj[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			// Escaped keys are rare; let encoding/json unescape them.
			var s string
			if json.Unmarshal(obj[i:end], &s) == nil {
				key = []byte(s)
			}
		}
		i = skipWS(obj, end)
		i = skipWS(obj, i+1) // past ':'
		if i >= len(obj) {
			break
		}
		vend := skipValue(obj, i)
		val := obj[i:vend]
		for k, name := range names {
			if string(key) != name {
				continue
			}
			if seen&(1<<k) != 0 {
				repeated |= 1 << k
				break
			}
			seen |= 1 << k
			if string(val) != "null" {
				vals[k] = val
			}
			break
		}
		i = skipWS(obj, vend)
		if i < len(obj) && obj[i] == ',' {
			i = skipWS(obj, i+1)
		}
	}
	return repeated
}

// repeatedName is the first of names that repeated (fields) marks, for an
// error message; "" when none repeated.
func repeatedName(repeated uint64, names ...string) string {
	for k, name := range names {
		if repeated&(1<<k) != 0 {
			return name
		}
	}
	return ""
}

// elements calls fn with each element of the valid JSON array arr, in
// order, until fn returns false.
func elements(arr []byte, fn func(elem []byte) bool) {
	i := skipWS(arr, 1) // past '['
	for i < len(arr) && arr[i] != ']' {
		end := skipValue(arr, i)
		if !fn(arr[i:end]) {
			return
		}
		i = skipWS(arr, end)
		if i < len(arr) && arr[i] == ',' {
			i = skipWS(arr, i+1)
		}
	}
}

// decodeString decodes the raw JSON value as a string; ok is false if it is
// not a string. Invalid UTF-8 comes out as U+FFFD, as with encoding/json.
func decodeString(raw []byte) (s string, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	// Fast path: json.Valid has ruled out raw control characters, so
	// without escapes and with valid UTF-8 the body is the string itself.
	if bytes.IndexByte(body, '\\') < 0 && utf8.Valid(body) {
		return string(body), true
	}
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// decodeUint decodes the raw JSON value as an unsigned integer; ok is false
// for anything else: strings, negatives (even -0), fractions, exponents
// (1e3 is integral but clients have no reason to send it) and values above
// 2^64-1.
func decodeUint(raw []byte) (n uint64, ok bool) {
	if len(raw) == 0 {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(string(raw), 10, 64)
	return n, err == nil
}
