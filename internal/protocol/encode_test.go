package protocol

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trickyStrings are inputs to every string-carrying encoder.
var trickyStrings = []string{
	"",
	"plain",
	`say "hi"`,
	`back\slash\`,
	"\x00\x01\x08\x0b\x1f\x7f",
	"\b\f\n\r\t",
	"line\u2028para\u2029end",
	"héllo 世界 🎉",
	"<script>&amp;</script>",
	`{"op":"msg"}` + "\n" + `{"op":"ack"}`,
	"\ufffd literal replacement char",
	"\U0010ffff max rune",
	strings.Repeat("a\"b\\c\n", 1000),
}

// invalidUTF8 are strings that are not valid UTF-8; each bad byte encodes
// as U+FFFD.
var invalidUTF8 = []struct{ in, want string }{
	{"\xff", "\ufffd"},
	{"a\xc3", "a\ufffd"},
	{"\xc3\x28", "\ufffd("},
	{"\xed\xa0\x80", "\ufffd\ufffd\ufffd"}, // encoded surrogate
	{"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"},
	{"ok\xe2\x80", "ok\ufffd\ufffd"}, // truncated U+2028
}

// stdEncode is the reference: encoding/json with HTML escaping off.
func stdEncode(t testing.TB, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(s))
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'})
}

func TestAppendString(t *testing.T) {
	f := func(in, want string) {
		t.Helper()
		assert.Equal(t, want, string(AppendString(nil, in)))
	}
	f("", `""`)
	f(`a"b\c`, `"a\"b\\c"`)
	f("\n\r\t\b\f", `"\n\r\t\b\f"`)
	f("\x00\x1f\x7f", `"\u0000\u001f`+"\x7f"+`"`)
	f("\u2028\u2029", `"\u2028\u2029"`)
	f("<&>", `"<&>"`)
	f("é世🎉", `"é世🎉"`)
	f("a\xffb", `"a\ufffdb"`)

	for _, s := range trickyStrings {
		out := AppendString(nil, s)
		assert.Equal(t, stdEncode(t, s), out, "same bytes as encoding/json for %q", s)
		var got string
		require.NoError(t, json.Unmarshal(out, &got))
		assert.Equal(t, s, got)
		assert.NotContains(t, string(out), "\u2028")
		assert.NotContains(t, string(out), "\n")
	}
	for _, tt := range invalidUTF8 {
		out := AppendString(nil, tt.in)
		assert.True(t, utf8.Valid(out), "output of %q is valid UTF-8", tt.in)
		assert.Equal(t, stdEncode(t, tt.in), out, "same bytes as encoding/json for %q", tt.in)
		var got string
		require.NoError(t, json.Unmarshal(out, &got))
		assert.Equal(t, tt.want, got)
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := `{"op":"ack"}` + "\n"
	dst := AppendMsg([]byte(prefix), "c", "E", "d", 1)
	assert.Equal(t, prefix+`{"op":"msg","ch":"c","event":"E","data":"d","offset":1}`, string(dst))
}

// TestAppendGolden pins the exact bytes, which clients parse.
func TestAppendGolden(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"msg", AppendMsg(nil, "site:1/class:2", "AddAbsence", `{"x":1}`, 58),
			`{"op":"msg","ch":"site:1/class:2","event":"AddAbsence","data":"{\"x\":1}","offset":58}`},
		{"sub ack", AppendSubAck(nil, id(1), "c", "e", 57, true),
			`{"op":"ack","id":1,"ch":"c","epoch":"e","offset":57,"recovered":true}`},
		{"sub ack no id", AppendSubAck(nil, ID{}, "c", "e", 0, false),
			`{"op":"ack","ch":"c","epoch":"e","offset":0,"recovered":false}`},
		{"ack", AppendAck(nil, id(2)), `{"op":"ack","id":2}`},
		{"ack id zero", AppendAck(nil, id(0)), `{"op":"ack","id":0}`},
		{"ack no id", AppendAck(nil, ID{N: 5}), `{"op":"ack"}`},
		{"refresh ack", AppendRefreshAck(nil, id(3), 1700000000), `{"op":"ack","id":3,"exp":1700000000}`},
		{"err", AppendErr(nil, id(1), CodeForbidden, "no"), `{"op":"err","id":1,"code":"forbidden","msg":"no"}`},
		{"err no id", AppendErr(nil, ID{}, CodeBadRequest, `bad "x"`), `{"op":"err","code":"bad_request","msg":"bad \"x\""}`},
		{"expiring", AppendExpiring(nil, 1700000060), `{"op":"expiring","exp":1700000060}`},
		{"expiring negative", AppendExpiring(nil, -1), `{"op":"expiring","exp":-1}`},
		{"reset", AppendReset(nil, "c", "e2", 0), `{"op":"reset","ch":"c","epoch":"e2","offset":0}`},
		{"max uint64", AppendAck(nil, id(1<<64-1)), `{"op":"ack","id":18446744073709551615}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, string(tt.got))
			assert.True(t, json.Valid(tt.got))
		})
	}
}

// TestAppendRoundTrip checks that every encoder's output decodes through
// encoding/json to what went in, for every tricky string.
func TestAppendRoundTrip(t *testing.T) {
	decode := func(t *testing.T, b []byte) ServerFrame {
		t.Helper()
		require.False(t, bytes.HasSuffix(b, []byte{'\n'}), "no trailing newline")
		var fr ServerFrame
		require.NoError(t, json.Unmarshal(b, &fr), "%s", b)
		return fr
	}
	u64 := func(n uint64) *uint64 { return &n }
	yes, no := true, false
	const big = 1<<64 - 1

	for _, s := range trickyStrings {
		t.Run("", func(t *testing.T) {
			assert.Equal(t, ServerFrame{Op: "msg", Ch: s, Event: "E.v", Data: s, Offset: big},
				decode(t, AppendMsg(nil, s, "E.v", s, big)))
			assert.Equal(t, ServerFrame{Op: "ack", ID: u64(big), Ch: s, Epoch: s, Offset: 9, Recovered: &yes},
				decode(t, AppendSubAck(nil, id(big), s, s, 9, true)))
			assert.Equal(t, ServerFrame{Op: "ack", Ch: s, Epoch: s, Recovered: &no},
				decode(t, AppendSubAck(nil, ID{}, s, s, 0, false)))
			assert.Equal(t, ServerFrame{Op: "err", ID: u64(0), Code: "limit", Msg: s},
				decode(t, AppendErr(nil, id(0), CodeLimit, s)))
			assert.Equal(t, ServerFrame{Op: "reset", Ch: s, Epoch: s, Offset: 3},
				decode(t, AppendReset(nil, s, s, 3)))
		})
	}
	assert.Equal(t, ServerFrame{Op: "ack", ID: u64(4)}, decode(t, AppendAck(nil, id(4))))
	assert.Equal(t, ServerFrame{Op: "ack", ID: u64(4), Exp: -5}, decode(t, AppendRefreshAck(nil, id(4), -5)))
	assert.Equal(t, ServerFrame{Op: "expiring", Exp: 1 << 62}, decode(t, AppendExpiring(nil, 1<<62)))

	// Invalid UTF-8 comes out as U+FFFD, and the frame stays valid JSON.
	for _, tt := range invalidUTF8 {
		assert.Equal(t, ServerFrame{Op: "msg", Ch: tt.want, Event: "E", Data: tt.want, Offset: 1},
			decode(t, AppendMsg(nil, tt.in, "E", tt.in, 1)))
	}
}

// TestAppendNoAlloc checks the hot-path promise: with room in dst, encoders
// do not allocate, whatever the strings hold.
func TestAppendNoAlloc(t *testing.T) {
	data := strings.Repeat("x\"é\u2028\n", 1000)
	buf := make([]byte, 0, 64<<10)
	tests := map[string]func(){
		"msg":         func() { buf = AppendMsg(buf[:0], "site:1/c", "AddAbsence", data, 58) },
		"sub ack":     func() { buf = AppendSubAck(buf[:0], id(1), "c", "e", 1, true) },
		"ack":         func() { buf = AppendAck(buf[:0], id(1)) },
		"refresh ack": func() { buf = AppendRefreshAck(buf[:0], id(1), 1) },
		"err":         func() { buf = AppendErr(buf[:0], id(1), CodeLimit, data) },
		"expiring":    func() { buf = AppendExpiring(buf[:0], 1) },
		"reset":       func() { buf = AppendReset(buf[:0], "c", "e", 1) },
	}
	for name, fn := range tests {
		assert.Zero(t, testing.AllocsPerRun(100, fn), name)
	}
}

// TestAppendMsgGrowsOnce checks that from an empty dst a msg frame without
// escapes costs a single allocation, not one per doubling.
func TestAppendMsgGrowsOnce(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	data := strings.Repeat("x", 16<<10)
	allocs := testing.AllocsPerRun(100, func() { _ = AppendMsg(nil, "c", "E", data, 1) })
	assert.Equal(t, 1.0, allocs)
}

func TestSplitServerFrames(t *testing.T) {
	var b []byte
	b = AppendSubAck(b, id(1), "c", "e", 57, false)
	b = append(b, '\n')
	b = AppendMsg(b, "c", "E", "d", 58)
	b = append(b, '\n')
	b = AppendExpiring(b, 10)
	got, err := SplitServerFrames(b)
	require.NoError(t, err)
	one, no := uint64(1), false
	assert.Equal(t, []ServerFrame{
		{Op: "ack", ID: &one, Ch: "c", Epoch: "e", Offset: 57, Recovered: &no},
		{Op: "msg", Ch: "c", Event: "E", Data: "d", Offset: 58},
		{Op: "expiring", Exp: 10},
	}, got)

	for name, in := range map[string]string{
		"empty":            "",
		"trailing newline": `{"op":"ack"}` + "\n",
		"blank line":       `{"op":"ack"}` + "\n\n" + `{"op":"ack"}`,
		"not object":       `[]`,
		"null":             `null`,
		"bad json":         `{"op":`,
		"wrong type":       `{"op":"ack","id":-1}`,
	} {
		_, err := SplitServerFrames([]byte(in))
		assert.ErrorIs(t, err, ErrBadJSON, name)
	}
}
