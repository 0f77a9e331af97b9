package auth

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKeys(t *testing.T) {
	s32 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	s64 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 64))
	s31 := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 31))
	tests := []struct {
		name    string
		spec    string
		wantIDs []string
		bad     bool
	}{
		{"one", "k1:" + s32, []string{"k1"}, false},
		{"two in order", "new:" + s64 + ",old:" + s32, []string{"new", "old"}, false},
		{"spaces and empty items", " , new:" + s64 + " ,\t, old:" + s32 + " ,", []string{"new", "old"}, false},
		{"empty", "", nil, true},
		{"only separators", " , ,", nil, true},
		{"no colon", "k1" + s32, nil, true},
		{"empty id", ":" + s32, nil, true},
		{"id with space", "k 1:" + s32, nil, true},
		{"short secret", "k1:" + s31, nil, true},
		{"empty secret", "k1:", nil, true},
		{"url base64", "k1:" + strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 33))), nil, true},
		{"unpadded", "k1:" + strings.TrimRight(base64.StdEncoding.EncodeToString(make([]byte, 32)), "="), nil, true},
		{"not base64", "k1:!!!!", nil, true},
		{"duplicate id", "k1:" + s32 + ",k1:" + s64, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParseKeys(tt.spec)
			if tt.bad {
				require.ErrorIs(t, err, ErrKey)
				assert.True(t, strings.HasPrefix(err.Error(), "auth: invalid key"), err.Error())
				assert.NotContains(t, err.Error(), s32[:16], "error quotes a secret")
				assert.NotContains(t, err.Error(), s64[:16], "error quotes a secret")
				return
			}
			require.NoError(t, err)
			var ids []string
			for _, k := range keys {
				ids = append(ids, k.ID)
			}
			assert.Equal(t, tt.wantIDs, ids)
		})
	}
}

func TestParseKeysFile(t *testing.T) {
	k1, k2 := testKey1.String(), testKey2.String()
	keys, err := ParseKeysFile("# current key first\n" + k1 + "\r\n\n   \n  # old\n" + k2)
	require.NoError(t, err)
	assert.Equal(t, []Key{testKey1, testKey2}, keys)

	_, err = ParseKeysFile("# nothing\n\n")
	require.ErrorIs(t, err, ErrKey)
	_, err = ParseKeysFile(k1 + "\nk2 no colon\n")
	require.ErrorIs(t, err, ErrKey)
	assert.Contains(t, err.Error(), "line 2")
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey("dev")
	require.NoError(t, err)
	b, err := GenerateKey("dev")
	require.NoError(t, err)
	assert.Equal(t, "dev", a.ID)
	assert.Len(t, a.Secret, 64)
	assert.NotEqual(t, a.Secret, b.Secret)

	// String is what ParseKeys reads.
	keys, err := ParseKeys(a.String())
	require.NoError(t, err)
	assert.Equal(t, []Key{a}, keys)

	_, err = GenerateKey("a:b")
	require.ErrorIs(t, err, ErrKey)
}

func TestNewKeyring(t *testing.T) {
	tests := []struct {
		name string
		keys []Key
	}{
		{"none", nil},
		{"empty id", []Key{{ID: "", Secret: testKey1.Secret}}},
		{"colon in id", []Key{{ID: "a:b", Secret: testKey1.Secret}}},
		{"comma in id", []Key{{ID: "a,b", Secret: testKey1.Secret}}},
		{"space in id", []Key{{ID: "a b", Secret: testKey1.Secret}}},
		{"control in id", []Key{{ID: "a\x00", Secret: testKey1.Secret}}},
		{"long id", []Key{{ID: strings.Repeat("k", 129), Secret: testKey1.Secret}}},
		{"short secret", []Key{{ID: "k", Secret: make([]byte, 31)}}},
		{"duplicate", []Key{testKey1, {ID: testKey1.ID, Secret: testKey2.Secret}}},
		{"second bad", []Key{testKey1, {ID: "k2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewKeyring(tt.keys...)
			require.ErrorIs(t, err, ErrKey)
			assert.Nil(t, r)
		})
	}
}

func TestKeyringIsImmutable(t *testing.T) {
	secret := bytes.Clone(testKey1.Secret)
	r, err := NewKeyring(Key{ID: "k1", Secret: secret}, testKey2)
	require.NoError(t, err)
	tok := validToken(t)

	secret[0]++ // the caller reuses its slice
	d := r.Default()
	d.Secret[0]++ // or scribbles on what Default returned
	_, err = (&Verifier{Keys: r}).Verify(tok, RoleSubscribe, testNow)
	require.NoError(t, err)
	assert.Equal(t, testKey1, r.Default())

	assert.Equal(t, "auth.Keyring{k1,k2}", r.String())
	assert.NotContains(t, r.String(), base64.StdEncoding.EncodeToString(testKey1.Secret)[:8])
}
