package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Role says what a token may do.
type Role string

// The roles a token may carry.
const (
	// RoleSubscribe tokens subscribe to the gadgets of one dashboard.
	RoleSubscribe Role = "subscribe"
	// RolePublish tokens publish to the channels of a site, or of one
	// dashboard of it.
	RolePublish Role = "publish"
)

const (
	defaultLeeway        = 30 * time.Second
	defaultMaxTokenBytes = 4096
	// maxLifetime bounds exp-iat, so that a leaked token is useful for a
	// day at most.
	maxLifetime = 24 * time.Hour
	// maxSubjectLen bounds sub, in bytes.
	maxSubjectLen = 256
	// maxNumericDate is 9999-12-31T23:59:59Z: later dates are surely
	// mistakes, and the bound keeps every time.Time computation in range.
	maxNumericDate = 253402300799
	// algHS512 is the only alg accepted.
	algHS512 = "HS512"
)

// Claims are the verified contents of a token.
type Claims struct {
	// Subject is the account id (sub).
	Subject string
	// Site is the cloud site ARI, such as "ari:cloud:jira::site/0b7f...".
	Site string
	// Dash is the dashboard id; always set for RoleSubscribe, optional for
	// RolePublish.
	Dash string
	// Role is what the token may do.
	Role Role
	// IssuedAt, ExpiresAt and NotBefore have whole seconds, in UTC.
	// Zero NotBefore means the token has no nbf.
	IssuedAt, ExpiresAt, NotBefore time.Time
}

// Verifier checks tokens. Set its fields before first use and do not change
// them after; it is then safe for concurrent use.
type Verifier struct {
	// Keys verifies signatures. Required.
	Keys *Keyring
	// Leeway is the clock skew allowed on nbf and iat (never on exp).
	// Zero means 30s; negative means none.
	Leeway time.Duration
	// MaxTokenBytes is the longest token accepted. Zero or negative means
	// 4096.
	MaxTokenBytes int
}

// Verify checks token at time now and returns its claims if it is a valid
// token for role want. Errors wrap exactly one of ErrTooLong, ErrMalformed,
// ErrAlgorithm, ErrUnknownKey, ErrSignature, ErrClaims, ErrLifetime,
// ErrExpired, ErrNotYetValid and ErrWrongRole; DenyReason turns them into
// metric labels. Verify panics if want is not a known role or Keys is nil:
// both are programming errors.
func (v *Verifier) Verify(token string, want Role, now time.Time) (Claims, error) {
	if want != RoleSubscribe && want != RolePublish {
		panic("BUG: auth: Verify called with unknown role " + strconv.Quote(string(want)))
	}
	if v.Keys == nil {
		panic("BUG: auth: Verifier.Keys is nil")
	}
	maxBytes := v.MaxTokenBytes
	if maxBytes <= 0 {
		maxBytes = defaultMaxTokenBytes
	}
	if len(token) > maxBytes {
		return Claims{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLong, len(token), maxBytes)
	}
	leeway := v.Leeway
	switch {
	case leeway == 0:
		leeway = defaultLeeway
	case leeway < 0:
		leeway = 0
	}

	// The header is checked here (the library would report a disallowed
	// alg as a signature error, and it must be ErrAlgorithm), then the
	// signature, then the claims: attacker-controlled JSON is decoded only
	// once it is authenticated, and only once (the library's
	// ParseWithClaims would decode header and claims a second time, which
	// measured as a fifth of a connect's CPU).
	secret, err := v.headerKey(token)
	if err != nil {
		return Claims{}, err
	}
	signed, sig64 := token[:strings.LastIndexByte(token, '.')], token[strings.LastIndexByte(token, '.')+1:]
	// Encoding first (a token that is not base64url is malformed, whatever
	// its signature), then the MAC.
	_, payload64, _ := strings.Cut(signed, ".")
	payload, err := base64.RawURLEncoding.Strict().DecodeString(payload64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sig64)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	// The library compares MACs with hmac.Equal, in constant time
	// (SigningMethodHMAC.Verify in jwt/v5 v5.3.1 hmac.go).
	if err := jwt.SigningMethodHS512.Verify(signed, sig, secret); err != nil {
		return Claims{}, ErrSignature
	}
	var raw rawClaims
	if err := raw.UnmarshalJSON(payload); err != nil {
		return Claims{}, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	c, err := raw.claims()
	if err != nil {
		return Claims{}, err
	}
	if err := checkClaims(c); err != nil {
		return Claims{}, err
	}
	if err := checkTimes(c, now, leeway); err != nil {
		return Claims{}, err
	}
	if c.Role != want {
		return Claims{}, fmt.Errorf("%w: token is for %s", ErrWrongRole, c.Role)
	}
	return c, nil
}

// headerKey checks the token's header and returns the secret its kid
// selects.
func (v *Verifier) headerKey(token string) ([]byte, error) {
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case !isBase64URL(c):
			// Go's base64 decoders skip '\r' and '\n'; refusing them (and
			// padding) here leaves each token exactly one spelling.
			return nil, fmt.Errorf("%w: byte 0x%02x outside base64url", ErrMalformed, c)
		}
	}
	if dots != 2 {
		return nil, fmt.Errorf("%w: want 3 segments", ErrMalformed)
	}
	seg, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.Strict().DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	h, err := decodeObject(b, "alg", "kid", "crit")
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if alg, ok := h.str("alg"); !ok || alg != algHS512 {
		return nil, fmt.Errorf("%w: want alg HS512", ErrAlgorithm)
	}
	// RFC 7515 4.1.11: a token whose crit names extensions we do not
	// implement (we implement none) must be rejected.
	if _, ok := h["crit"]; ok {
		return nil, fmt.Errorf("%w: crit header not supported", ErrMalformed)
	}
	_, hasKid := h["kid"]
	kid, ok := h.str("kid")
	if hasKid && !ok {
		return nil, fmt.Errorf("%w: kid is not a string", ErrMalformed)
	}
	secret, ok := v.Keys.lookup(kid, hasKid)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, truncate(kid, maxKeyIDLen))
	}
	return secret, nil
}

func isBase64URL(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// checkClaims checks what does not depend on the time: Verify runs it on
// what it parsed, Mint on what it is asked to sign.
func checkClaims(c Claims) error {
	switch {
	case c.Subject == "":
		return fmt.Errorf("%w: missing sub", ErrClaims)
	case !validSubject(c.Subject):
		return fmt.Errorf("%w: invalid sub", ErrClaims)
	case c.Site == "":
		return fmt.Errorf("%w: missing site", ErrClaims)
	case !validSite(c.Site):
		return fmt.Errorf("%w: invalid site", ErrClaims)
	case c.Role == "":
		return fmt.Errorf("%w: missing role", ErrClaims)
	case c.Role != RoleSubscribe && c.Role != RolePublish:
		return fmt.Errorf("%w: unknown role", ErrClaims)
	case c.Role == RoleSubscribe && c.Dash == "":
		return fmt.Errorf("%w: missing dash", ErrClaims)
	case c.Dash != "" && !validName(c.Dash):
		return fmt.Errorf("%w: invalid dash", ErrClaims)
	case c.IssuedAt.IsZero():
		return fmt.Errorf("%w: missing iat", ErrClaims)
	case c.ExpiresAt.IsZero():
		return fmt.Errorf("%w: missing exp", ErrClaims)
	case !validDate(c.IssuedAt):
		return fmt.Errorf("%w: iat out of range", ErrClaims)
	case !validDate(c.ExpiresAt):
		return fmt.Errorf("%w: exp out of range", ErrClaims)
	case !c.NotBefore.IsZero() && !validDate(c.NotBefore):
		return fmt.Errorf("%w: nbf out of range", ErrClaims)
	}
	life := c.ExpiresAt.Sub(c.IssuedAt)
	if life <= 0 || life > maxLifetime {
		return fmt.Errorf("%w: exp-iat is %v, want (0, 24h]", ErrLifetime, life)
	}
	return nil
}

// checkTimes checks the claims against now. exp is exact: tokens die on
// time even on a server whose clock runs late by up to the leeway, which
// errs on the side of refusing.
func checkTimes(c Claims, now time.Time, leeway time.Duration) error {
	if !now.Before(c.ExpiresAt) {
		return fmt.Errorf("%w: at %d", ErrExpired, c.ExpiresAt.Unix())
	}
	if c.IssuedAt.After(now.Add(leeway)) {
		return fmt.Errorf("%w: issued in the future", ErrNotYetValid)
	}
	if !c.NotBefore.IsZero() && c.NotBefore.After(now.Add(leeway)) {
		return fmt.Errorf("%w: nbf %d", ErrNotYetValid, c.NotBefore.Unix())
	}
	return nil
}

// validSubject allows any 1-256 bytes of UTF-8 without control characters:
// the issue fixes no format for account ids, but sub ends up in logs.
func validSubject(s string) bool {
	if len(s) == 0 || len(s) > maxSubjectLen || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// validDate reports whether t is a whole second within [1970, 9999].
func validDate(t time.Time) bool {
	s := t.Unix()
	return t.Nanosecond() == 0 && s >= 0 && s <= maxNumericDate
}

// Mint returns a token for c signed with key: HS512, with key.ID as kid.
// Times are truncated to whole seconds, the JWT unit; nbf is left out when
// c.NotBefore is zero, dash when c.Dash is empty. It refuses (ErrClaims,
// ErrLifetime, ErrKey) claims or keys Verify would reject, whatever the
// time.
func Mint(key Key, c Claims) (string, error) {
	if p := key.problem(); p != "" {
		return "", fmt.Errorf("%w: %s", ErrKey, p)
	}
	c.IssuedAt = truncateSecond(c.IssuedAt)
	c.ExpiresAt = truncateSecond(c.ExpiresAt)
	c.NotBefore = truncateSecond(c.NotBefore)
	if err := checkClaims(c); err != nil {
		return "", err
	}
	m := jwt.MapClaims{
		"sub":  c.Subject,
		"site": c.Site,
		"role": string(c.Role),
		"iat":  c.IssuedAt.Unix(),
		"exp":  c.ExpiresAt.Unix(),
	}
	if c.Dash != "" {
		m["dash"] = c.Dash
	}
	if !c.NotBefore.IsZero() {
		m["nbf"] = c.NotBefore.Unix()
	}
	t := jwt.NewWithClaims(jwt.SigningMethodHS512, m)
	t.Header["kid"] = key.ID
	return t.SignedString(key.Secret)
}

func truncateSecond(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.Truncate(time.Second)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// rawClaims receives the payload. It keeps the raw JSON of each claim so
// that wrong types are reported as ErrClaims rather than as a decoding
// failure.
type rawClaims struct {
	m object
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *rawClaims) UnmarshalJSON(b []byte) error {
	m, err := decodeObject(b, "sub", "site", "dash", "role", "iat", "exp", "nbf")
	r.m = m
	return err
}

// claims converts the JSON types; checkClaims checks the values.
func (r *rawClaims) claims() (Claims, error) {
	var c Claims
	var ok bool
	for _, f := range []struct {
		name string
		dst  *string
	}{{"sub", &c.Subject}, {"site", &c.Site}, {"dash", &c.Dash}, {"role", (*string)(&c.Role)}} {
		if _, present := r.m[f.name]; !present {
			continue
		}
		if *f.dst, ok = r.m.str(f.name); !ok {
			return Claims{}, fmt.Errorf("%w: %s is not a string", ErrClaims, f.name)
		}
		if *f.dst == "" {
			// Not "missing": an empty optional dash must not pass as absent,
			// since Mint would never write one.
			return Claims{}, fmt.Errorf("%w: empty %s", ErrClaims, f.name)
		}
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"iat", &c.IssuedAt}, {"exp", &c.ExpiresAt}, {"nbf", &c.NotBefore}} {
		raw, present := r.m[f.name]
		if !present {
			continue
		}
		sec, ok := numericDate(raw)
		if !ok {
			return Claims{}, fmt.Errorf("%w: %s is not an integer in [0, %d]", ErrClaims, f.name, maxNumericDate)
		}
		*f.dst = time.Unix(sec, 0).UTC()
	}
	return c, nil
}

// numericDate parses a JSON number of whole seconds. Fractions and
// exponents are refused: the issuers we know write integers, and Mint could
// not reproduce anything else.
func numericDate(raw json.RawMessage) (int64, bool) {
	if len(raw) == 0 || len(raw) > len("253402300799") {
		return 0, false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	return n, err == nil && n <= maxNumericDate
}

// object is a decoded JSON object whose values are left raw. A JSON null
// counts as absent.
type object map[string]json.RawMessage

// decodeObject decodes a JSON object, matching keys exactly and refusing a
// known key given twice: encoding/json would match "SUB" to "sub" and keep
// the last duplicate, and two parsers that disagree on such details are a
// classic way to smuggle claims.
func decodeObject(b []byte, known ...string) (object, error) {
	// Fast path: a plain map keeps keys exactly as written (no case
	// folding), and when it holds as many keys as the object has members
	// no key was repeated. Only an object with a repeated key takes the
	// slow path, which tells a repeated known key (refused) from a repeated
	// unknown one (ignored).
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err == nil && all != nil && len(all) == topLevelMembers(b) {
		m := make(object, len(known))
		for _, k := range known {
			if raw, ok := all[k]; ok && string(raw) != "null" {
				m[k] = raw
			}
		}
		return m, nil
	}
	return decodeObjectStrict(b, known...)
}

// topLevelMembers counts the members of a valid JSON object: the commas
// outside strings and nested values, plus one.
func topLevelMembers(b []byte) int {
	depth, commas, inString, escaped, empty := 0, 0, false, false, true
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			continue
		case c == '}' || c == ']':
			depth--
			continue
		case c == ',' && depth == 1:
			commas++
		}
		if depth == 1 && c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			empty = false
		}
	}
	if empty {
		return 0
	}
	return commas + 1
}

// decodeObjectStrict is decodeObject token by token.
func decodeObjectStrict(b []byte, known ...string) (object, error) {
	if !json.Valid(b) {
		return nil, errors.New("invalid JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := make(object, len(known))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := t.(string) // keys of a valid object are strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		isKnown := false
		for _, k := range known {
			if key == k {
				isKnown = true
				break
			}
		}
		if !isKnown {
			continue
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("%q given twice", key)
		}
		if string(raw) == "null" {
			// Remember it was seen, for the duplicate check, then forget it.
			m[key] = nil
			continue
		}
		m[key] = raw
	}
	for k, v := range m {
		if v == nil {
			delete(m, k)
		}
	}
	return m, nil
}

// str returns the string value of key; ok is false when it is absent or
// not a string.
func (o object) str(key string) (string, bool) {
	raw, ok := o[key]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	if !bytes.ContainsRune(raw, '\\') {
		// raw is valid JSON, so a string without a backslash has no
		// escapes: its bytes are the value.
		return string(raw[1 : len(raw)-1]), true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}
