package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testNow is the clock of every test: tokens are built around it.
var testNow = time.Unix(1_700_000_000, 0).UTC()

var (
	testKey1 = Key{ID: "k1", Secret: bytes.Repeat([]byte{0x11}, 64)}
	testKey2 = Key{ID: "k2", Secret: bytes.Repeat([]byte{0x22}, 32)}
)

const testSite = "ari:cloud:jira::site/0b7f5c2e-1d2a-4c3b-9e8f-123456789abc"

func testVerifier(t testing.TB) *Verifier {
	t.Helper()
	ring, err := NewKeyring(testKey1, testKey2)
	require.NoError(t, err)
	return &Verifier{Keys: ring}
}

// absent deletes a key in with.
type absentT struct{}

var absent absentT

// with returns a copy of base with kv (key, value, ...) set; a value of
// absent deletes the key.
func with(base map[string]any, kv ...any) map[string]any {
	m := maps.Clone(base)
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == absent {
			delete(m, k)
			continue
		}
		m[k] = kv[i+1]
	}
	return m
}

// Defaults of hand-crafted tokens: a subscribe token valid at testNow.
var (
	baseHeader  = map[string]any{"alg": "HS512", "typ": "JWT", "kid": "k1"}
	basePayload = map[string]any{
		"sub":  "557058:acc-1",
		"site": testSite,
		"dash": "dash-1",
		"role": "subscribe",
		"iat":  testNow.Unix() - 60,
		"exp":  testNow.Unix() + 3600,
	}
)

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// craftRaw builds a token from raw header and payload JSON, signed with
// HMAC-SHA512 under secret, independently of the library under test.
func craftRaw(header, payload string, secret []byte) string {
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	mac := hmac.New(sha512.New, secret)
	mac.Write([]byte(signing))
	return signing + "." + enc.EncodeToString(mac.Sum(nil))
}

// craft builds a token from header and payload maps.
func craft(t testing.TB, header, payload map[string]any, secret []byte) string {
	t.Helper()
	return craftRaw(mustJSON(t, header), mustJSON(t, payload), secret)
}

// validToken is a subscribe token of testKey1 valid at testNow.
func validToken(t testing.TB) string {
	t.Helper()
	return craft(t, baseHeader, basePayload, testKey1.Secret)
}
