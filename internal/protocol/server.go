package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// ServerFrame is one decoded server frame, for tests and tools (bench, a
// debugging client). The relay itself never decodes its own frames.
// Pointer fields tell "absent" from zero where the protocol cares.
type ServerFrame struct {
	Op        string  `json:"op"`
	ID        *uint64 `json:"id,omitempty"`
	Ch        string  `json:"ch,omitempty"`
	Epoch     string  `json:"epoch,omitempty"`
	Offset    uint64  `json:"offset"`
	Recovered *bool   `json:"recovered,omitempty"`
	Event     string  `json:"event,omitempty"`
	Data      string  `json:"data,omitempty"`
	Code      string  `json:"code,omitempty"`
	Msg       string  `json:"msg,omitempty"`
	Exp       int64   `json:"exp,omitempty"`
}

// SplitServerFrames decodes a server text frame: one or more JSON objects
// separated by '\n'. Any error wraps ErrBadJSON. An empty payload or an
// empty line is an error: the server never writes them, so a test that
// sees one has found a writer bug.
func SplitServerFrames(payload []byte) ([]ServerFrame, error) {
	lines := bytes.Split(payload, []byte{'\n'})
	frames := make([]ServerFrame, len(lines))
	for i, line := range lines {
		line = trimWS(line)
		if len(line) == 0 || line[0] != '{' {
			return nil, fmt.Errorf("%w: frame %d is not a JSON object", ErrBadJSON, i)
		}
		if err := json.Unmarshal(line, &frames[i]); err != nil {
			return nil, fmt.Errorf("%w: frame %d: %w", ErrBadJSON, i, err)
		}
	}
	return frames, nil
}
