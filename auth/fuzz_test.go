package auth

import (
	"errors"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzVerify feeds Verify a raw token, and a token built from header and
// payload JSON and signed with testKey1 (so that mutations reach the claims
// checks, which a random signature never would). Verify must not panic, must
// return exactly one sentinel, and an accepted token's claims must survive
// Mint and Verify unchanged.
func FuzzVerify(f *testing.F) {
	f.Add(validToken(f), mustJSON(f, baseHeader), mustJSON(f, basePayload))
	v := testVerifier(f)
	f.Fuzz(func(t *testing.T, raw, header, payload string) {
		checkVerify(t, v, raw)
		checkVerify(t, v, craftRaw(header, payload, testKey1.Secret))
	})
}

func checkVerify(t *testing.T, v *Verifier, token string) {
	for _, role := range []Role{RoleSubscribe, RolePublish} {
		c, err := v.Verify(token, role, testNow)
		if err != nil {
			n := 0
			for _, s := range allSentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			require.Equal(t, 1, n, "error %q", err)
			require.Contains(t, DenyReasons, DenyReason(err))
			require.Equal(t, Claims{}, c)
			continue
		}
		require.Equal(t, role, c.Role)
		again, err := v.Verify(token, role, testNow)
		require.NoError(t, err)
		require.Equal(t, c, again)
		minted, err := Mint(v.Keys.Default(), c)
		require.NoError(t, err)
		remint, err := v.Verify(minted, role, testNow)
		require.NoError(t, err)
		require.Equal(t, c, remint)
	}
}

// FuzzCheckSubscribe checks CheckSubscribe against ValidChannel and
// SplitChannel: a subscribe token may use exactly the valid channels whose
// site and dashboard are its own.
func FuzzCheckSubscribe(f *testing.F) {
	f.Add(testSite, "dash-1", testSite+"/dash-1/g1")
	f.Fuzz(func(t *testing.T, site, dash, channel string) {
		c := Claims{Subject: "a", Site: site, Dash: dash, Role: RoleSubscribe}
		err := c.CheckSubscribe(channel)
		if err != nil && !errors.Is(err, ErrForbidden) && !errors.Is(err, ErrBadChannel) {
			t.Fatalf("unexpected error %v", err)
		}
		s, d, _, ok := SplitChannel(channel)
		claimsOK := validSite(site) && validName(dash)
		mine := ok && claimsOK && s == site && d == dash
		assert.Equal(t, mine, err == nil, "channel %q site %q dash %q: %v", channel, site, dash, err)
		if err == nil {
			require.NoError(t, ValidChannel(channel))
			require.NoError(t, Claims{Site: site, Role: RolePublish}.CheckPublish(channel))
			require.NoError(t, Claims{Site: site, Dash: dash, Role: RolePublish}.CheckPublish(channel))
		}
		if claimsOK {
			require.NoError(t, c.CheckSubscribe(c.Namespace()+"/g"))
		}
		if ok {
			require.LessOrEqual(t, len(channel), MaxChannelLen)
			require.False(t, slices.Contains([]byte(d), '/'))
		}
	})
}

// FuzzDecodeObject checks that scanFlat, the fast path of decodeObject,
// decodes every input it takes exactly as the strict decoder does, so that
// it can change no verdict.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range []string{
		mustJSON(f, basePayload), mustJSON(f, baseHeader), `{}`, ` { } `, `{"sub":null}`,
		`{"sub":"a","sub":"b"}`, `{"x":1,"x":2,"exp":0}`, `{"iat":01}`, `{"exp":1.5}`,
		`{"sub":"\u0061"}`, `{"s\u0075b":"a"}`, `{"sub":"é"}`, `{"a":{"sub":"x"}}`, `{"sub":true,"dash":false}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		for _, known := range [][]string{claimKeys, headerKeys} {
			fast := object{known: known}
			if !scanFlat([]byte(in), &fast) {
				continue
			}
			strict, err := decodeObjectStrict([]byte(in), known)
			require.NoError(t, err, "scanFlat took %q", in)
			for i := range known {
				assert.Equal(t, string(strict.vals[i]), string(fast.vals[i]), "%s of %q", known[i], in)
				assert.Equal(t, strict.vals[i] == nil, fast.vals[i] == nil, "%s of %q", known[i], in)
			}
		}
	})
}
