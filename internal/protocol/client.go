package protocol

import (
	"encoding/json"
	"fmt"
)

// Op is the operation of a client frame.
type Op string

// Client operations.
const (
	OpSub     Op = "sub"
	OpUnsub   Op = "unsub"
	OpRefresh Op = "refresh"
)

// ID is the optional id a client attaches to a frame so it can match the
// server's ack or err. Set is false when the client sent none, and the
// reply then carries no id; N is meaningful only when Set.
type ID struct {
	N   uint64
	Set bool
}

// Since asks a sub to resume after Offset in stream Epoch. Epoch is never
// empty in a decoded frame.
type Since struct {
	Epoch  string
	Offset uint64
}

// ClientFrame is one decoded client frame. Channel is set for sub and unsub,
// Since only for sub (nil when the client sent none), Token only for
// refresh. The channel is not checked beyond being a non-empty string: its
// syntax belongs to auth.
type ClientFrame struct {
	Op      Op
	ID      ID
	Channel string
	Since   *Since
	Token   string
}

// clientFields are the keys DecodeClient reads, in the order of the raw
// values it gets back.
var clientFields = [...]string{"op", "id", "ch", "since", "token"}

// DecodeClient decodes one client text frame.
//
// Errors: ErrBadJSON if b is not valid JSON; ErrBadFrame if it is not an
// object, repeats a known key, has a known field of the wrong type or lacks
// a required one (ch for sub and unsub, token for refresh; an empty string
// counts as missing); ErrUnknownOp for an op string this version does not
// know. Unknown keys are ignored. Whenever b is an object with a valid id,
// the returned frame carries that ID even with an error, so that the
// server's err can echo it; Op is likewise set once it is known.
func DecodeClient(b []byte) (ClientFrame, error) {
	var f ClientFrame
	if !json.Valid(b) {
		return f, ErrBadJSON
	}
	obj := trimWS(b)
	if obj[0] != '{' {
		return f, fmt.Errorf("%w: frame must be a JSON object", ErrBadFrame)
	}
	var v [len(clientFields)][]byte
	repeated := fields(obj, v[:], clientFields[:]...)
	rawOp, rawID, rawCh, rawSince, rawToken := v[0], v[1], v[2], v[3], v[4]

	// The id comes first so that every later error can be echoed with it;
	// a repeated id is ambiguous and not echoed.
	if rawID != nil && repeated&(1<<1) == 0 { // clientFields[1] is "id"
		n, ok := decodeUint(rawID)
		if !ok {
			return f, fmt.Errorf("%w: id must be an unsigned integer", ErrBadFrame)
		}
		f.ID = ID{N: n, Set: true}
	}
	if repeated != 0 {
		return f, fmt.Errorf("%w: duplicate key %q", ErrBadFrame, repeatedName(repeated, clientFields[:]...))
	}

	if rawOp == nil {
		return f, fmt.Errorf("%w: op is required", ErrBadFrame)
	}
	op, ok := decodeString(rawOp)
	if !ok {
		return f, fmt.Errorf("%w: op must be a string", ErrBadFrame)
	}
	switch Op(op) {
	case OpSub, OpUnsub, OpRefresh:
		f.Op = Op(op)
	default:
		return f, fmt.Errorf("%w: %q", ErrUnknownOp, truncate(op, 32))
	}

	var err error
	switch f.Op {
	case OpSub:
		if f.Channel, err = requiredString(rawCh, "ch"); err != nil {
			return f, err
		}
		if rawSince != nil {
			if f.Since, err = decodeSince(rawSince); err != nil {
				return f, err
			}
		}
	case OpUnsub:
		if f.Channel, err = requiredString(rawCh, "ch"); err != nil {
			return f, err
		}
	case OpRefresh:
		if f.Token, err = requiredString(rawToken, "token"); err != nil {
			return f, err
		}
	}
	return f, nil
}

// requiredString decodes the raw value of field name, which must be a
// non-empty string.
func requiredString(raw []byte, name string) (string, error) {
	if raw == nil {
		return "", fmt.Errorf("%w: %s is required", ErrBadFrame, name)
	}
	s, ok := decodeString(raw)
	if !ok {
		return "", fmt.Errorf("%w: %s must be a string", ErrBadFrame, name)
	}
	if s == "" {
		return "", fmt.Errorf("%w: %s is required", ErrBadFrame, name)
	}
	return s, nil
}

func decodeSince(raw []byte) (*Since, error) {
	if raw[0] != '{' {
		return nil, fmt.Errorf("%w: since must be an object", ErrBadFrame)
	}
	var v [2][]byte
	sinceFields := [...]string{"epoch", "offset"}
	if repeated := fields(raw, v[:], sinceFields[:]...); repeated != 0 {
		return nil, fmt.Errorf("%w: duplicate key %q in since", ErrBadFrame, repeatedName(repeated, sinceFields[:]...))
	}
	epoch, err := requiredString(v[0], "since.epoch")
	if err != nil {
		return nil, err
	}
	if v[1] == nil {
		return nil, fmt.Errorf("%w: since.offset is required", ErrBadFrame)
	}
	off, ok := decodeUint(v[1])
	if !ok {
		return nil, fmt.Errorf("%w: since.offset must be an unsigned integer", ErrBadFrame)
	}
	return &Since{Epoch: epoch, Offset: off}, nil
}

// truncate shortens client-controlled text quoted back in an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
