package protocol

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The seeds live in testdata/fuzz/<FuzzName>/ and run with every go test;
// `make fuzz` explores from them.

// refObject decodes b the way encoding/json would, as the oracle for the
// hand-written member walk: exact keys, raw values.
func refObject(t *testing.T, b []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

func refString(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(raw, &s))
	return s
}

func FuzzDecodeClient(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := DecodeClient(b)
		if err != nil {
			require.True(t, errors.Is(err, ErrBadJSON) || errors.Is(err, ErrBadFrame) || errors.Is(err, ErrUnknownOp), "unexpected error %v", err)
			if !json.Valid(b) {
				require.Equal(t, ErrBadJSON, err)
			}
			if fr.ID.Set {
				// An echoed id is the one the client sent.
				assert.Equal(t, json.RawMessage(appendUint(fr.ID.N)), refObject(t, b)["id"])
			}
			return
		}

		m := refObject(t, b)
		assert.Equal(t, string(fr.Op), refString(t, m["op"]))
		if fr.ID.Set {
			assert.Equal(t, json.RawMessage(appendUint(fr.ID.N)), m["id"])
		}
		switch fr.Op {
		case OpSub, OpUnsub:
			require.NotEmpty(t, fr.Channel)
			assert.Equal(t, fr.Channel, refString(t, m["ch"]))
			assert.Empty(t, fr.Token)
		case OpRefresh:
			require.NotEmpty(t, fr.Token)
			assert.Equal(t, fr.Token, refString(t, m["token"]))
			assert.Empty(t, fr.Channel)
		default:
			t.Fatalf("no error for op %q", fr.Op)
		}
		if fr.Since != nil {
			require.Equal(t, OpSub, fr.Op)
			require.NotEmpty(t, fr.Since.Epoch)
			sm := refObject(t, m["since"])
			assert.Equal(t, fr.Since.Epoch, refString(t, sm["epoch"]))
		}

		// What decoded re-encodes to a frame that decodes the same.
		again, err := DecodeClient(appendClientFrame(nil, fr))
		require.NoError(t, err)
		assert.Equal(t, fr, again)
	})
}

func appendUint(n uint64) []byte { return strconv.AppendUint(nil, n, 10) }

// appendClientFrame encodes fr as a client would.
func appendClientFrame(dst []byte, fr ClientFrame) []byte {
	dst = append(dst, `{"op":`...)
	dst = AppendString(dst, string(fr.Op))
	if fr.ID.Set {
		dst = append(dst, `,"id":`...)
		dst = append(dst, appendUint(fr.ID.N)...)
	}
	if fr.Channel != "" {
		dst = append(dst, `,"ch":`...)
		dst = AppendString(dst, fr.Channel)
	}
	if fr.Since != nil {
		dst = append(dst, `,"since":{"epoch":`...)
		dst = AppendString(dst, fr.Since.Epoch)
		dst = append(dst, `,"offset":`...)
		dst = append(dst, appendUint(fr.Since.Offset)...)
		dst = append(dst, '}')
	}
	if fr.Token != "" {
		dst = append(dst, `,"token":`...)
		dst = AppendString(dst, fr.Token)
	}
	return append(dst, '}')
}

func FuzzAppendString(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		out := AppendString([]byte("x"), s)
		require.Equal(t, byte('x'), out[0], "dst prefix kept")
		out = out[1:]
		require.True(t, json.Valid(out), "%q", out)
		require.True(t, utf8.Valid(out), "%q", out)
		assert.Equal(t, string(stdEncode(t, s)), string(out))
		assert.NotContains(t, string(out), "\u2028")
		assert.NotContains(t, string(out), "\u2029")
		if utf8.ValidString(s) {
			var got string
			require.NoError(t, json.Unmarshal(out, &got))
			assert.Equal(t, s, got)
		}
	})
}

// FuzzDecodePublish covers DecodeBatch too: both read the same bodies.
func FuzzDecodePublish(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePublish(b)
		if err != nil {
			require.ErrorIs(t, err, ErrBadJSON)
			assert.Equal(t, Publish{}, p)
		} else {
			m := refObject(t, b)
			ref := func(key string) string {
				if raw, ok := m[key]; ok && string(raw) != "null" {
					return refString(t, raw)
				}
				return ""
			}
			assert.Equal(t, Publish{Channel: ref("channel"), Event: ref("event"), Data: ref("data"), IdempotencyKey: ref("idempotency_key")}, p)
		}

		const maxMessages = 4
		msgs, err := DecodeBatch(b, maxMessages)
		if err != nil {
			require.True(t, errors.Is(err, ErrBadJSON) || errors.Is(err, ErrBatchTooLarge), "unexpected error %v", err)
			return
		}
		var ref []json.RawMessage
		require.NoError(t, json.Unmarshal(refObject(t, b)["messages"], &ref))
		require.NotEmpty(t, msgs)
		require.LessOrEqual(t, len(msgs), maxMessages)
		assert.Equal(t, ref, msgs)
		for _, m := range msgs {
			p, err := DecodePublish(m)
			if err != nil {
				require.ErrorIs(t, err, ErrBadJSON)
			}
			// A batch's elements are valid JSON already: decoding them
			// without the second pass gives the same answer.
			q, qerr := DecodeBatchItem(m)
			assert.Equal(t, p, q)
			assert.Equal(t, err == nil, qerr == nil)
		}
	})
}
