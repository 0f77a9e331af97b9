package protocol

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodePublish(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Publish
		wantErr bool
	}{
		{"all fields", `{"channel":"site:1","event":"AddAbsence","data":"{\"a\":1}","idempotency_key":"k1"}`,
			Publish{Channel: "site:1", Event: "AddAbsence", Data: `{"a":1}`, IdempotencyKey: "k1"}, false},
		{"no key", `{"channel":"c","event":"E","data":"d"}`, Publish{Channel: "c", Event: "E", Data: "d"}, false},
		{"missing fields are not errors", `{}`, Publish{}, false},
		{"nulls are absent", `{"channel":null,"event":null,"data":null,"idempotency_key":null}`, Publish{}, false},
		{"unknown keys ignored", `{"channel":"c","ttl":5,"meta":{"data":1},"Data":2}`, Publish{Channel: "c"}, false},
		{"data exact", `{"data":"  spaces \\ \" \n \u2028 é 🎉 \u0000 "}`,
			Publish{Data: "  spaces \\ \" \n \u2028 é 🎉 \x00 "}, false},
		{"data invalid utf8", "{\"data\":\"a\xffb\"}", Publish{Data: "a\ufffdb"}, false},
		{"data lone surrogate escape", `{"data":"\ud800"}`, Publish{Data: "\ufffd"}, false},
		{"data surrogate pair", `{"data":"\ud83c\udf89"}`, Publish{Data: "🎉"}, false},
		{"whitespace", "\n { \"channel\" : \"c\" } \n", Publish{Channel: "c"}, false},

		{"empty", ``, Publish{}, true},
		{"invalid", `{"channel":`, Publish{}, true},
		{"trailing data", `{"channel":"c"}x`, Publish{}, true},
		{"array", `[]`, Publish{}, true},
		{"string", `"c"`, Publish{}, true},
		{"null", `null`, Publish{}, true},
		{"channel number", `{"channel":1}`, Publish{}, true},
		{"event bool", `{"channel":"c","event":true}`, Publish{}, true},
		{"data object", `{"channel":"c","data":{"a":1}}`, Publish{}, true},
		{"key array", `{"channel":"c","idempotency_key":["k"]}`, Publish{}, true},
		{"duplicate channel", `{"channel":"a","channel":"b"}`, Publish{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodePublish([]byte(tt.in))
			if tt.wantErr {
				require.ErrorIs(t, err, ErrBadJSON)
			} else {
				require.NoError(t, err)
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestDecodePublishRoundTrip checks that data survives an encoding/json
// client exactly.
func TestDecodePublishRoundTrip(t *testing.T) {
	for _, s := range trickyStrings {
		body, err := json.Marshal(map[string]string{"channel": "c", "event": "E", "data": s})
		require.NoError(t, err)
		got, err := DecodePublish(body)
		require.NoError(t, err)
		assert.Equal(t, Publish{Channel: "c", Event: "E", Data: s}, got)
	}
}

func TestDecodeBatch(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    []string
		wantErr error
	}{
		{"one", `{"messages":[{"channel":"c"}]}`, 3, []string{`{"channel":"c"}`}, nil},
		{"max", `{"messages":[{"a":1}, {"b":[1,2]} ,{"c":"]"}]}`, 3, []string{`{"a":1}`, `{"b":[1,2]}`, `{"c":"]"}`}, nil},
		{"bad elements left to the caller", `{"messages":[1,"x",null,[]]}`, 4, []string{`1`, `"x"`, `null`, `[]`}, nil},
		{"other keys ignored", `{"v":1,"messages":[{}],"x":[]}`, 1, []string{`{}`}, nil},
		{"whitespace", " {\n\"messages\" : [ {} ,\t{} ] } ", 2, []string{`{}`, `{}`}, nil},

		{"too many", `{"messages":[{},{},{},{}]}`, 3, nil, ErrBatchTooLarge},
		{"max zero", `{"messages":[{}]}`, 0, nil, ErrBatchTooLarge},
		{"empty array", `{"messages":[]}`, 3, nil, ErrBadJSON},
		{"missing", `{"msgs":[{}]}`, 3, nil, ErrBadJSON},
		{"null", `{"messages":null}`, 3, nil, ErrBadJSON},
		{"not array", `{"messages":{"channel":"c"}}`, 3, nil, ErrBadJSON},
		{"duplicate", `{"messages":[{}],"messages":[{}]}`, 3, nil, ErrBadJSON},
		{"bare array", `[{}]`, 3, nil, ErrBadJSON},
		{"single publish", `{"channel":"c","event":"E","data":"d"}`, 3, nil, ErrBadJSON},
		{"invalid", `{"messages":[{},]}`, 3, nil, ErrBadJSON},
		{"empty body", ``, 3, nil, ErrBadJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeBatch([]byte(tt.in), tt.max)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, got)
				return
			}
			require.NoError(t, err)
			gotS := make([]string, len(got))
			for i, m := range got {
				gotS[i] = string(m)
			}
			assert.Equal(t, tt.want, gotS)
		})
	}
}

// TestDecodeBatchPerItem shows the intended use: one bad message does not
// spoil the batch.
func TestDecodeBatchPerItem(t *testing.T) {
	msgs, err := DecodeBatch([]byte(`{"messages":[{"channel":"a","data":"1"},{"channel":2},{"channel":"b"}]}`), 10)
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	p, err := DecodeBatchItem(msgs[0])
	require.NoError(t, err)
	assert.Equal(t, Publish{Channel: "a", Data: "1"}, p)
	_, err = DecodeBatchItem(msgs[1])
	require.ErrorIs(t, err, ErrBadJSON)
	p, err = DecodeBatchItem(msgs[2])
	require.NoError(t, err)
	assert.Equal(t, Publish{Channel: "b"}, p)
}

func TestValidEvent(t *testing.T) {
	for ev, want := range map[string]bool{
		"AddAbsence":                    true,
		"a":                             true,
		"a.b:c-d_e":                     true,
		"0123456789":                    true,
		strings.Repeat("x", 64):         true,
		"":                              false,
		strings.Repeat("x", 65):         false,
		"has space":                     false,
		"slash/":                        false,
		"quote\"":                       false,
		"é":                             false,
		"new\nline":                     false,
		"nul\x00":                       false,
		"Add*":                          false,
		strings.Repeat("é", 32):         false,
		"trailing\xff":                  false,
		"<script>":                      false,
		"emoji🎉":                        false,
		"tab\t":                         false,
		"ok-" + strings.Repeat("9", 61): true,
	} {
		assert.Equal(t, want, ValidEvent(ev), "%q", ev)
	}
}
