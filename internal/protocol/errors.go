package protocol

import "errors"

// Sentinel errors. Decoders wrap them with a detail ("%w: id must be an
// unsigned integer"); test with errors.Is. They are Go errors, not what a
// client sees: the server maps them to a Code.
var (
	// ErrBadJSON means the input is not valid JSON, or (for publish bodies)
	// not the expected object shape or field types.
	ErrBadJSON = errors.New("protocol: invalid JSON")
	// ErrBadFrame means a client frame is valid JSON but not a valid frame:
	// not an object, a field of the wrong type, a required field missing or
	// a known key repeated.
	ErrBadFrame = errors.New("protocol: bad frame")
	// ErrUnknownOp means a client frame's op is a string this version does
	// not know.
	ErrUnknownOp = errors.New("protocol: unknown op")
	// ErrBatchTooLarge means a publish batch holds more messages than allowed.
	ErrBatchTooLarge = errors.New("protocol: batch too large")
)
