package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"hash"
	"strings"
	"sync"
)

const (
	// MinSecretBytes is the shortest HMAC secret a Keyring accepts: HS512
	// keys shorter than this are guessable far below the hash's strength.
	MinSecretBytes = 32
	// maxKeyIDLen bounds a key id; it travels in every token header.
	maxKeyIDLen = 128
	// generatedSecretBytes is the HS512 block-sized secret GenerateKey makes.
	generatedSecretBytes = 64
)

// Key is one HMAC secret and the id that tokens name it by in their kid
// header.
type Key struct {
	ID     string
	Secret []byte
}

// String returns the key in the "kid:base64secret" form ParseKeys reads. It
// reveals the secret: it exists to print a freshly generated development key,
// never log it.
func (k Key) String() string {
	return k.ID + ":" + base64.StdEncoding.EncodeToString(k.Secret)
}

// problem says why k cannot be used, or "" if it can. The text never
// quotes the secret, nor an invalid id (it may be a misplaced secret).
func (k Key) problem() string {
	if p := keyIDProblem(k.ID); p != "" {
		return p
	}
	if len(k.Secret) < MinSecretBytes {
		return fmt.Sprintf("key %q: secret is %d bytes, want at least %d", k.ID, len(k.Secret), MinSecretBytes)
	}
	return ""
}

// keyIDProblem allows printable ASCII without ':' and ',' (the separators
// of the key spec) and without spaces (which ParseKeys would trim away).
func keyIDProblem(id string) string {
	if id == "" {
		return "empty key id"
	}
	if len(id) > maxKeyIDLen {
		return fmt.Sprintf("key id longer than %d bytes", maxKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x21 || c > 0x7e || c == ':' || c == ',' {
			return "key id must be printable ASCII without spaces, ':' or ','"
		}
	}
	return ""
}

// GenerateKey returns a new key with 64 random bytes from crypto/rand.
func GenerateKey(id string) (Key, error) {
	if p := keyIDProblem(id); p != "" {
		return Key{}, fmt.Errorf("%w: %s", ErrKey, p)
	}
	secret := make([]byte, generatedSecretBytes)
	// crypto/rand.Read never fails since Go 1.24 (it crashes the program
	// instead), so there is no error to return.
	_, _ = rand.Read(secret)
	return Key{ID: id, Secret: secret}, nil
}

// ParseKeys parses a comma-separated list of "kid:base64secret" items, as
// given in a flag or environment variable. Whitespace around items is
// trimmed and empty items are skipped. Secrets use standard base64 with
// padding. The keys are checked as NewKeyring would, and at least one is
// required.
func ParseKeys(spec string) ([]Key, error) {
	var keys []Key
	for i, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, err := parseKeyItem(item, fmt.Sprintf("item %d", i+1))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// ParseKeysFile parses a key file: one "kid:base64secret" per line; blank
// lines and lines starting with '#' (after leading whitespace) are skipped.
func ParseKeysFile(text string) ([]Key, error) {
	var keys []Key
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line) // also drops the '\r' of CRLF files
		if line == "" || line[0] == '#' {
			continue
		}
		k, err := parseKeyItem(line, fmt.Sprintf("line %d", i+1))
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	return keys, nil
}

// parseKeyItem parses one "kid:base64secret"; where ("line 3") locates it
// in errors. Errors never quote the item, since it may be a real secret with
// a typo.
func parseKeyItem(item, where string) (Key, error) {
	id, enc, ok := strings.Cut(item, ":")
	if !ok {
		return Key{}, fmt.Errorf("%w: %s: want kid:base64secret", ErrKey, where)
	}
	secret, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		// A CorruptInputError carries only an offset, not the input.
		return Key{}, fmt.Errorf("%w: %s: secret is not standard base64: %v", ErrKey, where, err)
	}
	k := Key{ID: id, Secret: secret}
	if p := k.problem(); p != "" {
		return Key{}, fmt.Errorf("%w: %s: %s", ErrKey, where, p)
	}
	return k, nil
}

// checkKeys checks what NewKeyring checks beyond each key on its own.
func checkKeys(keys []Key) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrKey)
	}
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		if p := k.problem(); p != "" {
			return fmt.Errorf("%w: key %d: %s", ErrKey, i+1, p)
		}
		if seen[k.ID] {
			return fmt.Errorf("%w: duplicate key id %q", ErrKey, k.ID)
		}
		seen[k.ID] = true
	}
	return nil
}

// Keyring holds the keys tokens are verified with, by id, and the default
// key new tokens are minted with (the first one).
type Keyring struct {
	// Static after construction: a Keyring is shared by every connection.
	keys []Key          // secrets are private copies
	byID map[string]int // index into keys
	// macs[i] pools keyed HMAC-SHA512 hashes of keys[i]; safe for
	// concurrent use.
	macs []sync.Pool
}

// NewKeyring returns a Keyring of keys, the first being the default. It
// needs at least one key; ids must be unique, non-empty printable ASCII
// without spaces, ':' or ','; secrets at least MinSecretBytes long.
// Otherwise the error wraps ErrKey. The secrets are copied, so the caller
// may reuse its slices.
func NewKeyring(keys ...Key) (*Keyring, error) {
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	r := &Keyring{keys: make([]Key, len(keys)), byID: make(map[string]int, len(keys)), macs: make([]sync.Pool, len(keys))}
	for i, k := range keys {
		r.keys[i] = Key{ID: k.ID, Secret: bytes.Clone(k.Secret)}
		r.byID[k.ID] = i
	}
	return r, nil
}

// Default returns the key new tokens are minted with, and the key tokens
// without a kid are verified with. The secret is a copy.
func (r *Keyring) Default() Key {
	k := r.keys[0]
	return Key{ID: k.ID, Secret: bytes.Clone(k.Secret)}
}

// String lists the key ids and never the secrets, so that a Keyring printed
// by mistake (a log attribute, %v) leaks nothing.
func (r *Keyring) String() string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.ID
	}
	return "auth.Keyring{" + strings.Join(ids, ",") + "}"
}

// lookup returns the index of the key for a kid header; the default key
// when the token has none (hasKid false).
func (r *Keyring) lookup(kid []byte, hasKid bool) (int, bool) {
	if !hasKid {
		return 0, true
	}
	i, ok := r.byID[string(kid)]
	return i, ok
}

// verifyMAC reports whether sig is the HMAC-SHA512 of signed under key i,
// comparing in constant time (hmac.Equal). The keyed hashes are pooled:
// hmac.New hashes the key into two fresh SHA-512 states, which cost as
// much as the MAC of a whole token and allocated five times per call.
func (r *Keyring) verifyMAC(i int, signed, sig []byte, s *scratch) bool {
	mac, _ := r.macs[i].Get().(hash.Hash)
	if mac == nil {
		mac = hmac.New(sha512.New, r.keys[i].Secret)
	}
	mac.Reset()
	mac.Write(signed)
	sum := mac.Sum(s.sum[:0])
	r.macs[i].Put(mac)
	return hmac.Equal(sum, sig)
}
