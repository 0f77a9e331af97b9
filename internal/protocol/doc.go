// Package protocol owns the v1 wire format of the relay: decoding the JSON
// frames WebSocket clients send, encoding the frames the server sends back,
// and decoding HTTP publish bodies.
//
// Everything here is a pure function over byte slices: no I/O, no state, no
// goroutines, so any package may call it from any goroutine. It imports
// nothing of the project.
//
// Decoding (client frames, publish bodies) is strict about the fields it
// knows and ignores the ones it does not, so that newer clients keep working
// against an older server. Keys match exactly (encoding/json would also
// accept "OP" for "op"), a known key given twice is an error rather than
// "last one wins" (two parsers that disagree on which one wins are a
// classic smuggling bug), and a JSON null counts as an absent field.
//
// Encoding of server frames is hand-written and append-style: a msg frame is
// encoded once per publish and the same bytes go to every subscriber, so it
// must not use reflection nor allocate beyond growing dst. Append* functions
// write exactly one JSON object with no trailing newline; the connection
// writer joins coalesced frames with '\n'.
package protocol
