package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// allSentinels are the errors Verify may wrap; each result must match
// exactly one.
var allSentinels = []error{
	ErrMalformed, ErrAlgorithm, ErrUnknownKey, ErrSignature, ErrExpired,
	ErrNotYetValid, ErrLifetime, ErrClaims, ErrWrongRole, ErrTooLong,
	ErrForbidden, ErrBadChannel, ErrKey,
}

func requireOneSentinel(t *testing.T, want, err error) {
	t.Helper()
	require.ErrorIs(t, err, want)
	n := 0
	for _, s := range allSentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	assert.Equal(t, 1, n, "error %q matches %d sentinels", err, n)
	assert.True(t, strings.HasPrefix(err.Error(), "auth: "), "error %q lacks the auth: prefix", err)
}

// replaceSegment replaces segment i of a token.
func replaceSegment(tok string, i int, seg string) string {
	parts := strings.Split(tok, ".")
	parts[i] = seg
	return strings.Join(parts, ".")
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerify(t *testing.T) {
	v := testVerifier(t)
	k1, k2 := testKey1.Secret, testKey2.Secret
	exp := time.Unix(basePayload["exp"].(int64), 0)
	good := validToken(t)
	goodParts := strings.Split(good, ".")
	// A different payload with the signature of the good one.
	forged := replaceSegment(good, 1, b64(mustJSON(t, with(basePayload, "dash", "dash-2"))))
	// The signature with one character in the middle changed.
	sig := []byte(goodParts[2])
	sig[10] ^= 'A' ^ 'B'
	if sig[10] == goodParts[2][10] {
		sig[10] = 'C'
	}
	tampered := replaceSegment(good, 2, string(sig))
	// Change the unused low bits of the signature's last character: same
	// bytes under lax decoding, refused under strict decoding.
	last := goodParts[2][len(goodParts[2])-1]
	lastAlt := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last) ^ 1
	nonCanonical := good[:len(good)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[lastAlt])
	pub := with(basePayload, "role", "publish")
	iat := basePayload["iat"].(int64)

	tests := []struct {
		name  string
		token string
		want  Role      // zero means RoleSubscribe
		now   time.Time // zero means testNow
		v     *Verifier // nil means v
		err   error     // nil means accepted
	}{
		{name: "valid", token: good},

		// Structure.
		{name: "empty", token: "", err: ErrMalformed},
		{name: "one segment", token: goodParts[0], err: ErrMalformed},
		{name: "two segments", token: goodParts[0] + "." + goodParts[1], err: ErrMalformed},
		{name: "four segments", token: good + "." + goodParts[2], err: ErrMalformed},
		{name: "truncated in payload", token: good[:len(goodParts[0])+5], err: ErrMalformed},
		{name: "truncated by one", token: good[:len(good)-1], err: ErrMalformed},
		{name: "truncated signature", token: replaceSegment(good, 2, goodParts[2][:64]), err: ErrSignature},
		{name: "empty signature", token: goodParts[0] + "." + goodParts[1] + ".", err: ErrSignature},
		{name: "bad base64 header", token: "e!" + good[2:], err: ErrMalformed},
		{name: "bad base64 payload", token: replaceSegment(good, 1, "e!"+goodParts[1][2:]), err: ErrMalformed},
		{name: "bad base64 signature", token: replaceSegment(good, 2, goodParts[2][:8]+"*"+goodParts[2][9:]), err: ErrMalformed},
		{name: "std base64 alphabet", token: replaceSegment(good, 2, goodParts[2][:8]+"+"+goodParts[2][9:]), err: ErrMalformed},
		{name: "padded", token: good + "==", err: ErrMalformed},
		{name: "newline inside", token: good[:20] + "\n" + good[20:], err: ErrMalformed},
		{name: "leading space", token: " " + good, err: ErrMalformed},
		{name: "non-canonical base64", token: nonCanonical, err: ErrMalformed},
		{name: "header not JSON", token: craftRaw("{alg:HS512}", mustJSON(t, basePayload), k1), err: ErrMalformed},
		{name: "header array", token: craftRaw(`["HS512"]`, mustJSON(t, basePayload), k1), err: ErrMalformed},
		{name: "header null", token: craftRaw(`null`, mustJSON(t, basePayload), k1), err: ErrMalformed},
		{name: "payload not JSON", token: craftRaw(mustJSON(t, baseHeader), "{sub", k1), err: ErrMalformed},
		{name: "payload array", token: craftRaw(mustJSON(t, baseHeader), "[1]", k1), err: ErrMalformed},
		{name: "payload trailing data", token: craftRaw(mustJSON(t, baseHeader), mustJSON(t, basePayload)+"{}", k1), err: ErrMalformed},
		{name: "crit header", token: craft(t, with(baseHeader, "crit", []string{"x"}), basePayload, k1), err: ErrMalformed},
		{name: "duplicate alg", token: craftRaw(`{"alg":"HS512","alg":"none","kid":"k1"}`, mustJSON(t, basePayload), k1), err: ErrMalformed},
		{name: "duplicate claim", token: craftRaw(mustJSON(t, baseHeader), `{"sub":"a","sub":"b"}`, k1), err: ErrMalformed},
		{name: "duplicate claim via null", token: craftRaw(mustJSON(t, baseHeader), `{"site":null,"site":"x"}`, k1), err: ErrMalformed},

		// Signature.
		{name: "tampered signature", token: tampered, err: ErrSignature},
		{name: "tampered payload", token: forged, err: ErrSignature},
		{name: "wrong secret", token: craft(t, baseHeader, basePayload, []byte("0123456789abcdef0123456789abcdef")), err: ErrSignature},

		// Algorithm.
		{name: "alg none", token: strings.TrimSuffix(craft(t, with(baseHeader, "alg", "none"), basePayload, k1), goodParts[2]) + "", err: ErrAlgorithm},
		{name: "alg none unsigned", token: b64(`{"alg":"none"}`) + "." + goodParts[1] + ".", err: ErrAlgorithm},
		{name: "alg HS256", token: craft(t, with(baseHeader, "alg", "HS256"), basePayload, k1), err: ErrAlgorithm},
		{name: "alg HS384", token: craft(t, with(baseHeader, "alg", "HS384"), basePayload, k1), err: ErrAlgorithm},
		{name: "alg RS512", token: craft(t, with(baseHeader, "alg", "RS512"), basePayload, k1), err: ErrAlgorithm},
		{name: "alg lower case", token: craft(t, with(baseHeader, "alg", "hs512"), basePayload, k1), err: ErrAlgorithm},
		{name: "alg unknown", token: craft(t, with(baseHeader, "alg", "XX999"), basePayload, k1), err: ErrAlgorithm},
		{name: "alg number", token: craft(t, with(baseHeader, "alg", 512), basePayload, k1), err: ErrAlgorithm},
		{name: "alg null", token: craft(t, with(baseHeader, "alg", nil), basePayload, k1), err: ErrAlgorithm},
		{name: "alg missing", token: craft(t, with(baseHeader, "alg", absent), basePayload, k1), err: ErrAlgorithm},
		{name: "ALG upper-case key", token: craft(t, with(baseHeader, "alg", absent, "ALG", "HS512"), basePayload, k1), err: ErrAlgorithm},

		// Keys and rotation.
		{name: "unknown kid", token: craft(t, with(baseHeader, "kid", "k3"), basePayload, k1), err: ErrUnknownKey},
		{name: "empty kid", token: craft(t, with(baseHeader, "kid", ""), basePayload, k1), err: ErrUnknownKey},
		{name: "kid number", token: craft(t, with(baseHeader, "kid", 1), basePayload, k1), err: ErrMalformed},
		{name: "no kid uses first key", token: craft(t, with(baseHeader, "kid", absent), basePayload, k1)},
		{name: "null kid uses first key", token: craft(t, with(baseHeader, "kid", nil), basePayload, k1)},
		{name: "no kid signed by second key", token: craft(t, with(baseHeader, "kid", absent), basePayload, k2), err: ErrSignature},
		{name: "kid of second key", token: craft(t, with(baseHeader, "kid", "k2"), basePayload, k2)},
		{name: "kid of first key signed by second", token: craft(t, baseHeader, basePayload, k2), err: ErrSignature},
		{name: "kid of second key signed by first", token: craft(t, with(baseHeader, "kid", "k2"), basePayload, k1), err: ErrSignature},
		{name: "typ absent", token: craft(t, with(baseHeader, "typ", absent), basePayload, k1)},

		// Time.
		{name: "expired at exp", token: good, now: exp, err: ErrExpired},
		{name: "valid 1ns before exp", token: good, now: exp.Add(-time.Nanosecond)},
		{name: "expired long ago", token: good, now: exp.Add(time.Hour), err: ErrExpired},
		{name: "nbf in future beyond leeway", token: craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()+31), k1), err: ErrNotYetValid},
		{name: "nbf at leeway", token: craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()+30), k1)},
		{name: "nbf within leeway", token: craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()+10), k1)},
		{name: "nbf past", token: craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()-10), k1)},
		{name: "nbf null", token: craft(t, baseHeader, with(basePayload, "nbf", nil), k1)},
		{name: "nbf beyond custom leeway", token: craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()+10), k1), v: &Verifier{Keys: v.Keys, Leeway: 5 * time.Second}, err: ErrNotYetValid},
		{name: "nbf with no leeway", token: craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()+1), k1), v: &Verifier{Keys: v.Keys, Leeway: -1}, err: ErrNotYetValid},
		{name: "iat in future beyond leeway", token: craft(t, baseHeader, with(basePayload, "iat", testNow.Unix()+31), k1), err: ErrNotYetValid},
		{name: "iat in future within leeway", token: craft(t, baseHeader, with(basePayload, "iat", testNow.Unix()+30), k1)},
		{name: "lifetime 24h", token: craft(t, baseHeader, with(basePayload, "iat", iat, "exp", iat+86400), k1)},
		{name: "lifetime over 24h", token: craft(t, baseHeader, with(basePayload, "iat", iat, "exp", iat+86401), k1), err: ErrLifetime},
		{name: "lifetime zero", token: craft(t, baseHeader, with(basePayload, "iat", testNow.Unix()+10, "exp", testNow.Unix()+10), k1), err: ErrLifetime},
		{name: "exp before iat", token: craft(t, baseHeader, with(basePayload, "exp", iat-1), k1), err: ErrLifetime},

		// Claims.
		{name: "missing sub", token: craft(t, baseHeader, with(basePayload, "sub", absent), k1), err: ErrClaims},
		{name: "empty sub", token: craft(t, baseHeader, with(basePayload, "sub", ""), k1), err: ErrClaims},
		{name: "null sub", token: craft(t, baseHeader, with(basePayload, "sub", nil), k1), err: ErrClaims},
		{name: "sub number", token: craft(t, baseHeader, with(basePayload, "sub", 42), k1), err: ErrClaims},
		{name: "sub control char", token: craft(t, baseHeader, with(basePayload, "sub", "a\nb"), k1), err: ErrClaims},
		{name: "sub too long", token: craft(t, baseHeader, with(basePayload, "sub", strings.Repeat("a", 257)), k1), err: ErrClaims},
		{name: "SUB upper-case key", token: craft(t, baseHeader, with(basePayload, "sub", absent, "SUB", "x"), k1), err: ErrClaims},
		{name: "missing site", token: craft(t, baseHeader, with(basePayload, "site", absent), k1), err: ErrClaims},
		{name: "site with space", token: craft(t, baseHeader, with(basePayload, "site", "a b"), k1), err: ErrClaims},
		{name: "site too long", token: craft(t, baseHeader, with(basePayload, "site", strings.Repeat("s", 257)), k1), err: ErrClaims},
		{name: "site longest", token: craft(t, baseHeader, with(basePayload, "site", strings.Repeat("s", 256)), k1)},
		{name: "site non-ASCII", token: craft(t, baseHeader, with(basePayload, "site", "sité"), k1), err: ErrClaims},
		{name: "site array", token: craft(t, baseHeader, with(basePayload, "site", []string{testSite}), k1), err: ErrClaims},
		{name: "missing dash on subscribe", token: craft(t, baseHeader, with(basePayload, "dash", absent), k1), err: ErrClaims},
		{name: "null dash on subscribe", token: craft(t, baseHeader, with(basePayload, "dash", nil), k1), err: ErrClaims},
		{name: "empty dash", token: craft(t, baseHeader, with(pub, "dash", ""), k1), want: RolePublish, err: ErrClaims},
		{name: "dash with slash", token: craft(t, baseHeader, with(basePayload, "dash", "a/b"), k1), err: ErrClaims},
		{name: "dash too long", token: craft(t, baseHeader, with(basePayload, "dash", strings.Repeat("d", 129)), k1), err: ErrClaims},
		{name: "dash longest", token: craft(t, baseHeader, with(basePayload, "dash", strings.Repeat("d", 128)), k1)},
		{name: "missing role", token: craft(t, baseHeader, with(basePayload, "role", absent), k1), err: ErrClaims},
		{name: "unknown role", token: craft(t, baseHeader, with(basePayload, "role", "admin"), k1), err: ErrClaims},
		{name: "role upper case", token: craft(t, baseHeader, with(basePayload, "role", "Subscribe"), k1), err: ErrClaims},
		{name: "role number", token: craft(t, baseHeader, with(basePayload, "role", 1), k1), err: ErrClaims},
		{name: "missing iat", token: craft(t, baseHeader, with(basePayload, "iat", absent), k1), err: ErrClaims},
		{name: "missing exp", token: craft(t, baseHeader, with(basePayload, "exp", absent), k1), err: ErrClaims},
		{name: "exp string", token: craft(t, baseHeader, with(basePayload, "exp", "1700003600"), k1), err: ErrClaims},
		{name: "exp fraction", token: craft(t, baseHeader, with(basePayload, "exp", 1700003600.5), k1), err: ErrClaims},
		{name: "exp exponent", token: craftRaw(mustJSON(t, baseHeader), strings.Replace(mustJSON(t, basePayload), "1700003600", "1.7000036e9", 1), k1), err: ErrClaims},
		{name: "exp bool", token: craft(t, baseHeader, with(basePayload, "exp", true), k1), err: ErrClaims},
		{name: "exp huge", token: craft(t, baseHeader, with(basePayload, "exp", uint64(1)<<63), k1), err: ErrClaims},
		{name: "iat negative", token: craft(t, baseHeader, with(basePayload, "iat", -1), k1), err: ErrClaims},
		{name: "nbf string", token: craft(t, baseHeader, with(basePayload, "nbf", "0"), k1), err: ErrClaims},
		{name: "unknown claims ignored", token: craft(t, baseHeader, with(basePayload, "aud", []string{"x"}, "jti", 7), k1)},
		{name: "spaces in payload JSON", token: craftRaw(mustJSON(t, baseHeader), " \t"+strings.ReplaceAll(strings.ReplaceAll(mustJSON(t, basePayload), `":`, `" : `), `,"`, " ,\r\n \"")+" ", k1)},

		// Role.
		{name: "subscribe token to publish", token: good, want: RolePublish, err: ErrWrongRole},
		{name: "publish token to subscribe", token: craft(t, baseHeader, pub, k1), err: ErrWrongRole},
		{name: "publish token", token: craft(t, baseHeader, pub, k1), want: RolePublish},
		{name: "publish token without dash", token: craft(t, baseHeader, with(pub, "dash", absent), k1), want: RolePublish},

		// Length.
		{name: "huge token", token: strings.Repeat("a", 1<<20), err: ErrTooLong},
		{name: "one byte over", token: strings.Repeat("a", 4097), err: ErrTooLong},
		{name: "at the limit", token: strings.Repeat("a", 4096), err: ErrMalformed},
		{name: "over custom limit", token: good, v: &Verifier{Keys: v.Keys, MaxTokenBytes: len(good) - 1}, err: ErrTooLong},
		{name: "at custom limit", token: good, v: &Verifier{Keys: v.Keys, MaxTokenBytes: len(good)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, now, vv := tt.want, tt.now, tt.v
			if want == "" {
				want = RoleSubscribe
			}
			if now.IsZero() {
				now = testNow
			}
			if vv == nil {
				vv = v
			}
			c, err := vv.Verify(tt.token, want, now)
			if tt.err == nil {
				require.NoError(t, err)
				assert.Equal(t, want, c.Role)
				assert.NotEmpty(t, c.Subject)
				assert.Empty(t, DenyReason(err))
				return
			}
			requireOneSentinel(t, tt.err, err)
			assert.Equal(t, Claims{}, c)
			if tt.token != "" {
				assert.NotContains(t, err.Error(), tt.token[:min(len(tt.token), 40)], "error quotes the token")
			}
		})
	}
}

func TestVerifyClaims(t *testing.T) {
	v := testVerifier(t)
	tok := craft(t, baseHeader, with(basePayload, "nbf", testNow.Unix()-5), testKey1.Secret)
	c, err := v.Verify(tok, RoleSubscribe, testNow)
	require.NoError(t, err)
	assert.Equal(t, Claims{
		Subject:   "557058:acc-1",
		Site:      testSite,
		Dash:      "dash-1",
		Role:      RoleSubscribe,
		IssuedAt:  testNow.Add(-time.Minute),
		ExpiresAt: testNow.Add(time.Hour),
		NotBefore: testNow.Add(-5 * time.Second),
	}, c)
	assert.Equal(t, time.UTC, c.IssuedAt.Location())

	// A publish token without dash, nbf or kid.
	tok = craft(t, with(baseHeader, "kid", absent), with(basePayload, "role", "publish", "dash", absent), testKey1.Secret)
	c, err = v.Verify(tok, RolePublish, testNow)
	require.NoError(t, err)
	assert.Empty(t, c.Dash)
	assert.True(t, c.NotBefore.IsZero())
	assert.Equal(t, testSite, c.Namespace())
}

func TestVerifyPanicsOnBug(t *testing.T) {
	v := testVerifier(t)
	assert.PanicsWithValue(t, `BUG: auth: Verify called with unknown role "admin"`, func() {
		_, _ = v.Verify(validToken(t), "admin", testNow)
	})
	assert.Panics(t, func() {
		_, _ = (&Verifier{}).Verify(validToken(t), RoleSubscribe, testNow)
	})
}

func TestMint(t *testing.T) {
	v := testVerifier(t)
	c := Claims{
		Subject:   "acc",
		Site:      testSite,
		Dash:      "d",
		Role:      RoleSubscribe,
		IssuedAt:  testNow.Add(-time.Minute + 300*time.Millisecond), // truncated
		ExpiresAt: testNow.Add(time.Hour),
		NotBefore: testNow.Add(-time.Minute),
	}
	for _, key := range []Key{testKey1, testKey2} {
		tok, err := Mint(key, c)
		require.NoError(t, err)
		got, err := v.Verify(tok, RoleSubscribe, testNow)
		require.NoError(t, err)
		want := c
		want.IssuedAt = testNow.Add(-time.Minute)
		assert.Equal(t, want.IssuedAt.Unix(), got.IssuedAt.Unix())
		assert.True(t, want.ExpiresAt.Equal(got.ExpiresAt))
		assert.True(t, want.NotBefore.Equal(got.NotBefore))

		var h map[string]any
		hb, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(hb, &h))
		assert.Equal(t, key.ID, h["kid"])
		assert.Equal(t, "HS512", h["alg"])
	}

	// Empty dash and zero nbf are left out, not written empty.
	pc := Claims{Subject: "acc", Site: testSite, Role: RolePublish, IssuedAt: testNow, ExpiresAt: testNow.Add(time.Hour)}
	tok, err := Mint(testKey1, pc)
	require.NoError(t, err)
	pb, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	require.NoError(t, err)
	var p map[string]any
	require.NoError(t, json.Unmarshal(pb, &p))
	assert.NotContains(t, p, "dash")
	assert.NotContains(t, p, "nbf")
	assert.Equal(t, float64(testNow.Unix()), p["iat"])
}

func TestMintRejects(t *testing.T) {
	good := Claims{Subject: "acc", Site: testSite, Dash: "d", Role: RoleSubscribe, IssuedAt: testNow, ExpiresAt: testNow.Add(time.Hour)}
	tests := []struct {
		name   string
		key    Key
		change func(*Claims)
		err    error
	}{
		{"short secret", Key{ID: "k", Secret: make([]byte, 31)}, nil, ErrKey},
		{"empty key id", Key{Secret: testKey1.Secret}, nil, ErrKey},
		{"missing sub", testKey1, func(c *Claims) { c.Subject = "" }, ErrClaims},
		{"bad site", testKey1, func(c *Claims) { c.Site = "a b" }, ErrClaims},
		{"subscribe without dash", testKey1, func(c *Claims) { c.Dash = "" }, ErrClaims},
		{"bad dash", testKey1, func(c *Claims) { c.Dash = "a/b" }, ErrClaims},
		{"unknown role", testKey1, func(c *Claims) { c.Role = "admin" }, ErrClaims},
		{"zero iat", testKey1, func(c *Claims) { c.IssuedAt = time.Time{} }, ErrClaims},
		{"zero exp", testKey1, func(c *Claims) { c.ExpiresAt = time.Time{} }, ErrClaims},
		{"before 1970", testKey1, func(c *Claims) { c.IssuedAt = time.Unix(-10, 0); c.ExpiresAt = time.Unix(10, 0) }, ErrClaims},
		{"too long", testKey1, func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(25 * time.Hour) }, ErrLifetime},
		{"exp before iat", testKey1, func(c *Claims) { c.ExpiresAt = c.IssuedAt }, ErrLifetime},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			if tt.change != nil {
				tt.change(&c)
			}
			tok, err := Mint(tt.key, c)
			requireOneSentinel(t, tt.err, err)
			assert.Empty(t, tok)
		})
	}
}

func TestDenyReason(t *testing.T) {
	want := map[error]string{
		ErrMalformed: "malformed", ErrAlgorithm: "algorithm", ErrUnknownKey: "unknown_key",
		ErrSignature: "signature", ErrExpired: "expired", ErrNotYetValid: "not_yet_valid",
		ErrLifetime: "lifetime", ErrClaims: "claims", ErrWrongRole: "wrong_role", ErrTooLong: "too_long",
	}
	seen := map[string]bool{}
	for err, reason := range want {
		assert.Equal(t, reason, DenyReason(err))
		assert.Equal(t, reason, DenyReason(errors.Join(errors.New("x"), err)), "wrapped %v", err)
		assert.Contains(t, DenyReasons, reason)
		seen[reason] = true
	}
	assert.Len(t, DenyReasons, len(seen), "DenyReasons has extra or repeated labels")
	assert.Empty(t, DenyReason(nil))
	assert.Equal(t, "malformed", DenyReason(errors.New("other")))
}

// Asking a decoded object for a key it was not told to keep is a bug in
// this package, said as such rather than as an index out of range.
func TestObjectGetUnknownKeyIsABug(t *testing.T) {
	o, err := decodeObject([]byte(`{"alg":"HS512","other":1}`), []string{"alg"})
	require.NoError(t, err)
	assert.Equal(t, `"HS512"`, string(o.get("alg")))
	assert.PanicsWithValue(t, "BUG: auth: get of a key the object does not know: other", func() { o.get("other") })
}
