package protocol

import (
	"encoding/json"
	"fmt"
)

// Publish is one decoded publish request. Missing fields come out empty;
// whether they may be is the caller's business (an empty channel is
// invalid, an empty idempotency key means none).
type Publish struct {
	Channel        string
	Event          string
	Data           string
	IdempotencyKey string
}

var publishFields = [...]string{"channel", "event", "data", "idempotency_key"}

// DecodePublish decodes the body of POST /v1/publish, or one element of a
// batch. Data comes out exactly as sent, except that invalid UTF-8 becomes
// U+FFFD as with encoding/json. Any error wraps ErrBadJSON: invalid JSON,
// not an object, a repeated known key or a known field that is not a
// string. Unknown keys are ignored.
func DecodePublish(b []byte) (Publish, error) {
	if !json.Valid(b) {
		return Publish{}, ErrBadJSON
	}
	return DecodeBatchItem(b)
}

// DecodeBatchItem is DecodePublish for an element DecodeBatch returned,
// which is valid JSON already: it skips the second pass over its bytes.
func DecodeBatchItem(b []byte) (Publish, error) {
	var p Publish
	obj := trimWS(b)
	if obj[0] != '{' {
		return p, fmt.Errorf("%w: message must be a JSON object", ErrBadJSON)
	}
	var v [len(publishFields)][]byte
	if repeated := fields(obj, v[:], publishFields[:]...); repeated != 0 {
		return p, fmt.Errorf("%w: duplicate key %q", ErrBadJSON, repeatedName(repeated, publishFields[:]...))
	}
	dsts := [...]*string{&p.Channel, &p.Event, &p.Data, &p.IdempotencyKey}
	for k, raw := range v {
		if raw == nil {
			continue
		}
		s, ok := decodeString(raw)
		if !ok {
			return Publish{}, fmt.Errorf("%w: %s must be a string", ErrBadJSON, publishFields[k])
		}
		*dsts[k] = s
	}
	return p, nil
}

// DecodeBatch decodes the body of POST /v1/publish/batch,
// {"messages":[...]}, into its elements, which the caller decodes one by one
// with DecodeBatchItem so that one bad message yields a per-item error. The
// elements alias b. Errors: ErrBatchTooLarge if there are more than
// maxMessages messages; ErrBadJSON if b is not such an object, repeats
// "messages", or the array is empty. Other keys are ignored.
func DecodeBatch(b []byte, maxMessages int) ([]json.RawMessage, error) {
	if !json.Valid(b) {
		return nil, ErrBadJSON
	}
	obj := trimWS(b)
	if obj[0] != '{' {
		return nil, fmt.Errorf("%w: batch must be a JSON object", ErrBadJSON)
	}
	var v [1][]byte
	if fields(obj, v[:], "messages") != 0 {
		return nil, fmt.Errorf("%w: duplicate key %q", ErrBadJSON, "messages")
	}
	arr := v[0]
	if arr == nil {
		return nil, fmt.Errorf("%w: messages is required", ErrBadJSON)
	}
	if arr[0] != '[' {
		return nil, fmt.Errorf("%w: messages must be an array", ErrBadJSON)
	}
	var msgs []json.RawMessage
	elements(arr, func(elem []byte) bool {
		msgs = append(msgs, elem)
		return len(msgs) <= maxMessages // one past max is enough to know
	})
	switch {
	case len(msgs) > maxMessages:
		return nil, fmt.Errorf("%w: at most %d messages", ErrBatchTooLarge, maxMessages)
	case len(msgs) == 0:
		return nil, fmt.Errorf("%w: messages must not be empty", ErrBadJSON)
	}
	return msgs, nil
}

// maxEventLen is the longest valid event name, in bytes.
const maxEventLen = 64

// ValidEvent reports whether event is a valid event name: 1 to 64 bytes
// from [A-Za-z0-9_.:-]. Events are names chosen by the publishing backend,
// not data, so a small alphabet keeps them safe to log and to match on.
func ValidEvent(event string) bool {
	if len(event) == 0 || len(event) > maxEventLen {
		return false
	}
	for i := 0; i < len(event); i++ {
		c := event[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '_', c == '.', c == ':', c == '-':
		default:
			return false
		}
	}
	return true
}
