package protocol

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func id(n uint64) ID { return ID{N: n, Set: true} }

func TestDecodeClient(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	tests := []struct {
		name    string
		in      string
		want    ClientFrame
		wantErr error
	}{
		// Valid frames.
		{"sub", `{"op":"sub","id":1,"ch":"a:b"}`, ClientFrame{Op: OpSub, ID: id(1), Channel: "a:b"}, nil},
		{"sub without id", `{"op":"sub","ch":"a"}`, ClientFrame{Op: OpSub, Channel: "a"}, nil},
		{"sub since", `{"op":"sub","id":1,"ch":"a","since":{"epoch":"e1","offset":41}}`,
			ClientFrame{Op: OpSub, ID: id(1), Channel: "a", Since: &Since{Epoch: "e1", Offset: 41}}, nil},
		{"sub since offset zero", `{"op":"sub","ch":"a","since":{"offset":0,"epoch":"e"}}`,
			ClientFrame{Op: OpSub, Channel: "a", Since: &Since{Epoch: "e", Offset: 0}}, nil},
		{"sub since max offset", `{"op":"sub","ch":"a","since":{"epoch":"e","offset":18446744073709551615}}`,
			ClientFrame{Op: OpSub, Channel: "a", Since: &Since{Epoch: "e", Offset: 1<<64 - 1}}, nil},
		{"sub since extra keys ignored", `{"op":"sub","ch":"a","since":{"epoch":"e","offset":1,"x":[1]}}`,
			ClientFrame{Op: OpSub, Channel: "a", Since: &Since{Epoch: "e", Offset: 1}}, nil},
		{"since null is absent", `{"op":"sub","ch":"a","since":null}`, ClientFrame{Op: OpSub, Channel: "a"}, nil},
		{"unsub", `{"op":"unsub","id":2,"ch":"a"}`, ClientFrame{Op: OpUnsub, ID: id(2), Channel: "a"}, nil},
		{"unsub ignores since", `{"op":"unsub","ch":"a","since":"junk"}`, ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"refresh", `{"op":"refresh","id":3,"token":"x.y.z"}`, ClientFrame{Op: OpRefresh, ID: id(3), Token: "x.y.z"}, nil},
		{"refresh ignores ch", `{"op":"refresh","token":"t","ch":5}`, ClientFrame{Op: OpRefresh, Token: "t"}, nil},
		{"id zero", `{"op":"unsub","id":0,"ch":"a"}`, ClientFrame{Op: OpUnsub, ID: id(0), Channel: "a"}, nil},
		{"id max uint64", `{"op":"unsub","id":18446744073709551615,"ch":"a"}`,
			ClientFrame{Op: OpUnsub, ID: id(1<<64 - 1), Channel: "a"}, nil},
		{"id null is absent", `{"op":"unsub","id":null,"ch":"a"}`, ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"whitespace", " \t\r\n{ \"op\" : \"unsub\" ,\n\"ch\" : \"a\" } \n", ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"escaped key", `{"o\u0070":"unsub","\u0063h":"a"}`, ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"escaped values", `{"op":"unsub","ch":"a\"b\\c\u00e9\n\u2028"}`,
			ClientFrame{Op: OpUnsub, Channel: "a\"b\\c\u00e9\n\u2028"}, nil},
		{"invalid utf8 becomes U+FFFD", "{\"op\":\"unsub\",\"ch\":\"a\xffb\"}", ClientFrame{Op: OpUnsub, Channel: "a\uFFFDb"}, nil},
		{"unknown keys ignored", `{"v":2,"op":"unsub","extra":{"ch":"no","a":[1,"]}",{"b":null}]},"ch":"a","x":true}`,
			ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"unknown key repeated", `{"x":1,"x":2,"op":"unsub","ch":"a"}`, ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"keys are case sensitive", `{"op":"unsub","ch":"a","CH":"b","Op":"sub"}`, ClientFrame{Op: OpUnsub, Channel: "a"}, nil},
		{"deep garbage", `{"op":"unsub","ch":"a","g":` + deep(5000) + `}`, ClientFrame{Op: OpUnsub, Channel: "a"}, nil},

		// Not JSON.
		{"empty", ``, ClientFrame{}, ErrBadJSON},
		{"blank", "  \n", ClientFrame{}, ErrBadJSON},
		{"truncated", `{"op":"sub","id":1`, ClientFrame{}, ErrBadJSON},
		{"trailing comma", `{"op":"sub","ch":"a",}`, ClientFrame{}, ErrBadJSON},
		{"trailing data", `{"op":"sub","ch":"a"} x`, ClientFrame{}, ErrBadJSON},
		{"two objects", `{"op":"sub","ch":"a"}{}`, ClientFrame{}, ErrBadJSON},
		{"single quotes", `{'op':'sub'}`, ClientFrame{}, ErrBadJSON},
		{"leading zero", `{"op":"sub","id":01,"ch":"a"}`, ClientFrame{}, ErrBadJSON},
		{"raw control char", "{\"op\":\"sub\",\"ch\":\"a\x01\"}", ClientFrame{}, ErrBadJSON},
		{"too deep", `{"op":"sub","ch":"a","g":` + deep(20000) + `}`, ClientFrame{}, ErrBadJSON},

		// Not an object.
		{"array", `[{"op":"sub"}]`, ClientFrame{}, ErrBadFrame},
		{"string", `"sub"`, ClientFrame{}, ErrBadFrame},
		{"number", `1`, ClientFrame{}, ErrBadFrame},
		{"null", `null`, ClientFrame{}, ErrBadFrame},

		// Bad id: no id to echo.
		{"id negative", `{"op":"sub","id":-1,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id minus zero", `{"op":"sub","id":-0,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id float", `{"op":"sub","id":1.5,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id integral float", `{"op":"sub","id":1.0,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id exponent", `{"op":"sub","id":1e3,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id string", `{"op":"sub","id":"1","ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id bool", `{"op":"sub","id":true,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id object", `{"op":"sub","id":{},"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id overflow", `{"op":"sub","id":18446744073709551616,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id huge", `{"op":"sub","id":` + strings.Repeat("9", 400) + `,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id repeated", `{"op":"sub","id":1,"id":2,"ch":"a"}`, ClientFrame{}, ErrBadFrame},
		{"id repeated bad", `{"op":"sub","id":1,"id":-2,"ch":"a"}`, ClientFrame{}, ErrBadFrame},

		// Bad op: the id is echoed.
		{"op missing", `{"id":7,"ch":"a"}`, ClientFrame{ID: id(7)}, ErrBadFrame},
		{"op null", `{"id":7,"op":null,"ch":"a"}`, ClientFrame{ID: id(7)}, ErrBadFrame},
		{"op number", `{"id":7,"op":1,"ch":"a"}`, ClientFrame{ID: id(7)}, ErrBadFrame},
		{"op array", `{"id":7,"op":["sub"],"ch":"a"}`, ClientFrame{ID: id(7)}, ErrBadFrame},
		{"op repeated", `{"op":"sub","id":7,"op":"unsub","ch":"a"}`, ClientFrame{ID: id(7)}, ErrBadFrame},
		{"op unknown", `{"op":"pub","id":7,"ch":"a"}`, ClientFrame{ID: id(7)}, ErrUnknownOp},
		{"op wrong case", `{"op":"SUB","id":7,"ch":"a"}`, ClientFrame{ID: id(7)}, ErrUnknownOp},
		{"op empty", `{"op":"","id":7}`, ClientFrame{ID: id(7)}, ErrUnknownOp},
		{"op long", `{"op":"` + strings.Repeat("x", 1000) + `","id":7}`, ClientFrame{ID: id(7)}, ErrUnknownOp},

		// Bad fields for the op: op and id are known.
		{"sub ch missing", `{"op":"sub","id":7}`, ClientFrame{Op: OpSub, ID: id(7)}, ErrBadFrame},
		{"sub ch empty", `{"op":"sub","id":7,"ch":""}`, ClientFrame{Op: OpSub, ID: id(7)}, ErrBadFrame},
		{"sub ch null", `{"op":"sub","id":7,"ch":null}`, ClientFrame{Op: OpSub, ID: id(7)}, ErrBadFrame},
		{"sub ch number", `{"op":"sub","id":7,"ch":5}`, ClientFrame{Op: OpSub, ID: id(7)}, ErrBadFrame},
		{"sub ch object", `{"op":"sub","id":7,"ch":{"a":1}}`, ClientFrame{Op: OpSub, ID: id(7)}, ErrBadFrame},
		{"sub ch repeated", `{"op":"sub","id":7,"ch":"a","ch":"b"}`, ClientFrame{ID: id(7)}, ErrBadFrame},
		{"unsub ch missing", `{"op":"unsub","id":7}`, ClientFrame{Op: OpUnsub, ID: id(7)}, ErrBadFrame},
		{"refresh token missing", `{"op":"refresh","id":7}`, ClientFrame{Op: OpRefresh, ID: id(7)}, ErrBadFrame},
		{"refresh token empty", `{"op":"refresh","id":7,"token":""}`, ClientFrame{Op: OpRefresh, ID: id(7)}, ErrBadFrame},
		{"refresh token number", `{"op":"refresh","id":7,"token":1}`, ClientFrame{Op: OpRefresh, ID: id(7)}, ErrBadFrame},

		// Bad since.
		{"since string", `{"op":"sub","id":7,"ch":"a","since":"e:1"}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since array", `{"op":"sub","id":7,"ch":"a","since":["e",1]}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since empty", `{"op":"sub","id":7,"ch":"a","since":{}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since epoch missing", `{"op":"sub","id":7,"ch":"a","since":{"offset":1}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since epoch empty", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"","offset":1}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since epoch number", `{"op":"sub","id":7,"ch":"a","since":{"epoch":1,"offset":1}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since offset missing", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e"}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since offset null", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e","offset":null}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since offset negative", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e","offset":-1}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since offset float", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e","offset":4.1}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since offset string", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e","offset":"41"}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since offset overflow", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e","offset":18446744073709551616}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
		{"since key repeated", `{"op":"sub","id":7,"ch":"a","since":{"epoch":"e","offset":1,"offset":2}}`, ClientFrame{Op: OpSub, ID: id(7), Channel: "a"}, ErrBadFrame},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeClient([]byte(tt.in))
			if tt.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tt.wantErr)
				assert.True(t, strings.HasPrefix(err.Error(), "protocol: "), err.Error())
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

// TestDecodeClientErrorDetail checks that errors say what is wrong, since
// the server may pass them on as an err frame's msg.
func TestDecodeClientErrorDetail(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		_, err := DecodeClient([]byte(in))
		require.Error(t, err)
		assert.Equal(t, want, err.Error())
	}
	f(`{"op":"sub","id":-1}`, "protocol: bad frame: id must be an unsigned integer")
	f(`{"op":"sub","ch":1}`, "protocol: bad frame: ch must be a string")
	f(`{"op":"sub"}`, "protocol: bad frame: ch is required")
	f(`{"op":"refresh"}`, "protocol: bad frame: token is required")
	f(`{"op":"nope"}`, `protocol: unknown op: "nope"`)
	f(`{"op":"sub","op":"sub"}`, `protocol: bad frame: duplicate key "op"`)
	f(`[]`, "protocol: bad frame: frame must be a JSON object")
	f(`{`, "protocol: invalid JSON")
}

// A repeated id is ambiguous and not echoed, whichever known key repeats
// first.
func TestRepeatedIDNotEchoed(t *testing.T) {
	for _, in := range []string{
		`{"op":"sub","id":1,"id":2,"ch":"a"}`,
		`{"op":"sub","op":"unsub","id":1,"id":2,"ch":"a"}`,
	} {
		f, err := DecodeClient([]byte(in))
		require.Error(t, err, in)
		assert.False(t, f.ID.Set, in)
	}
}
