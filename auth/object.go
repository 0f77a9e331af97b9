package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// maxKnownKeys is the most keys a caller of decodeObject asks for (the
// claims).
const maxKnownKeys = 7

// The keys Verify reads from a token's header and payload.
var (
	headerKeys = []string{"alg", "kid", "crit"}
	claimKeys  = []string{"sub", "site", "dash", "role", "iat", "exp", "nbf"}
)

// object holds the raw JSON values of the known keys of one decoded JSON
// object. A key that is absent or null has a nil value. It is returned by
// value so that decoding a token allocates no map.
type object struct {
	known []string
	vals  [maxKnownKeys]json.RawMessage
}

// index returns the position of key among o.known, or -1.
func (o *object) index(key []byte) int {
	for i, k := range o.known {
		if k == string(key) {
			return i
		}
	}
	return -1
}

// get returns the raw value of key, nil when it is absent or null. key
// must be one of o.known: the decoder kept no other.
func (o *object) get(key string) json.RawMessage {
	i := o.index([]byte(key))
	if i < 0 {
		panic("BUG: auth: get of a key the object does not know: " + key)
	}
	return o.vals[i]
}

// str returns the value of key when it is a JSON string; ok is false when
// it is absent or not a string. Without escapes the bytes alias the decoded
// input, so reading a string costs no allocation.
func (o *object) str(key string) (s []byte, ok bool) {
	raw := o.get(key)
	if len(raw) == 0 || raw[0] != '"' {
		return nil, false
	}
	if !bytes.ContainsRune(raw, '\\') {
		// raw is valid JSON, so a string without a backslash has no
		// escapes: its bytes are the value.
		return raw[1 : len(raw)-1], true
	}
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, false
	}
	return []byte(v), true
}

// decodeObject decodes a JSON object, matching keys exactly and refusing a
// known key given twice: encoding/json would match "SUB" to "sub" and keep
// the last duplicate, and two parsers that disagree on such details are a
// classic way to smuggle claims. Values may alias b.
func decodeObject(b []byte, known []string) (object, error) {
	if len(known) > maxKnownKeys {
		panic("BUG: auth: decodeObject asked for too many keys")
	}
	o := object{known: known}
	if scanFlat(b, &o) {
		return o, nil
	}
	return decodeObjectStrict(b, known)
}

// scanFlat decodes b into o when b is a JSON object of the flat shape token
// issuers write: keys of printable ASCII without escapes; values that are
// strings without escapes, integers without sign, fraction or exponent,
// true, false or null; no known key twice. It reports false for anything
// else, nothing decoded, and decodeObject hands such input to the strict
// decoder. Both give the same object for every input scanFlat takes
// (FuzzDecodeObject checks it), so the fast path changes no verdict; it
// only saves encoding/json's reflection and allocations on every connect.
func scanFlat(b []byte, o *object) bool {
	var seen [maxKnownKeys]bool
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i == len(b) || b[i] != '"' {
			return false
		}
		j := i + 1
		for ; j < len(b) && b[j] != '"'; j++ {
			if c := b[j]; c < 0x20 || c > 0x7e || c == '\\' {
				return false
			}
		}
		if j == len(b) {
			return false
		}
		key := b[i+1 : j]
		i = skipSpace(b, j+1)
		if i == len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		end := scanFlatValue(b, i)
		if end < 0 {
			return false
		}
		if k := o.index(key); k >= 0 {
			if seen[k] {
				return false // the strict decoder refuses it
			}
			seen[k] = true
			if v := b[i:end]; string(v) != "null" {
				o.vals[k] = v
			}
		}
		i = skipSpace(b, end)
		if i == len(b) {
			return false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return skipSpace(b, i+1) == len(b)
		default:
			return false
		}
	}
}

// scanFlatValue returns the end of the flat value starting at b[i], or -1.
// A number is only checked up to its last digit: what follows must be
// space, ',' or '}', which scanFlat checks, so "01", "1.5" and "1e3" fall
// to the strict decoder.
func scanFlatValue(b []byte, i int) int {
	if i == len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		for j := i + 1; j < len(b); j++ {
			switch c := b[j]; {
			case c == '"':
				return j + 1
			case c == '\\' || c < 0x20:
				return -1
			}
		}
		return -1
	case c == '0':
		return i + 1
	case '1' <= c && c <= '9':
		j := i + 1
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		return j
	}
	for _, lit := range [...]string{"null", "true", "false"} {
		if end := i + len(lit); end <= len(b) && string(b[i:end]) == lit {
			return end
		}
	}
	return -1
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// decodeObjectStrict is decodeObject token by token, for every input
// scanFlat does not take.
func decodeObjectStrict(b []byte, known []string) (object, error) {
	o := object{known: known}
	if !json.Valid(b) {
		return o, errors.New("invalid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return o, errors.New("not a JSON object")
	}
	var seen [maxKnownKeys]bool
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return o, err
		}
		key, _ := t.(string) // keys of a valid object are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return o, err
		}
		k := o.index([]byte(key))
		if k < 0 {
			continue
		}
		if seen[k] {
			return o, fmt.Errorf("%q given twice", key)
		}
		seen[k] = true
		if string(raw) != "null" {
			o.vals[k] = raw
		}
	}
	return o, nil
}
