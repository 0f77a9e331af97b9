package auth

import (
	"bytes"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"sync"
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
	// once it is authenticated, and only once. Everything is decoded into
	// pooled scratch memory, so that a valid token costs only the strings
	// of its claims (garbage per connect is GC work and memory headroom).
	if err := checkShape(token); err != nil {
		return Claims{}, err
	}
	s := getScratch(len(token))
	defer putScratch(s)
	tok := append(s.buf[:0], token...)
	s.buf = tok
	dot1 := bytes.IndexByte(tok, '.')
	dot2 := bytes.LastIndexByte(tok, '.')
	key, err := v.headerKey(s, tok[:dot1])
	if err != nil {
		return Claims{}, err
	}
	// Encoding first (a token that is not base64url is malformed, whatever
	// its signature), then the MAC.
	payload, err := s.decode(tok[dot1+1 : dot2])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	sig, err := s.decode(tok[dot2+1:])
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	if !v.Keys.verifyMAC(key, tok[:dot2], sig, s) {
		return Claims{}, ErrSignature
	}
	o, err := decodeObject(payload, claimKeys)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	c, err := claimsOf(&o)
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

// checkShape checks that token is three base64url segments.
func checkShape(token string) error {
	dots := 0
	for i := 0; i < len(token); i++ {
		switch c := token[i]; {
		case c == '.':
			dots++
		case !isBase64URL(c):
			// Go's base64 decoders skip '\r' and '\n'; refusing them (and
			// padding) here leaves each token exactly one spelling.
			return fmt.Errorf("%w: byte 0x%02x outside base64url", ErrMalformed, c)
		}
	}
	if dots != 2 {
		return fmt.Errorf("%w: want 3 segments", ErrMalformed)
	}
	return nil
}

// headerKey checks the token's header (its first segment, base64url) and
// returns the index of the key its kid selects.
func (v *Verifier) headerKey(s *scratch, seg []byte) (int, error) {
	b, err := s.decode(seg)
	if err != nil {
		return 0, fmt.Errorf("%w: header is not base64url", ErrMalformed)
	}
	h, err := decodeObject(b, headerKeys)
	if err != nil {
		return 0, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	if alg, ok := h.str("alg"); !ok || string(alg) != algHS512 {
		return 0, fmt.Errorf("%w: want alg HS512", ErrAlgorithm)
	}
	// RFC 7515 4.1.11: a token whose crit names extensions we do not
	// implement (we implement none) must be rejected.
	if h.get("crit") != nil {
		return 0, fmt.Errorf("%w: crit header not supported", ErrMalformed)
	}
	hasKid := h.get("kid") != nil
	kid, ok := h.str("kid")
	if hasKid && !ok {
		return 0, fmt.Errorf("%w: kid is not a string", ErrMalformed)
	}
	i, ok := v.Keys.lookup(kid, hasKid)
	if !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownKey, truncate(string(kid), maxKeyIDLen))
	}
	return i, nil
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

// claimsOf converts the JSON types of the decoded claims; checkClaims
// checks the values. The strings are copied out of o, whose memory is
// reused by the next Verify.
func claimsOf(o *object) (Claims, error) {
	var c Claims
	var role string
	var errs [7]error
	c.Subject, errs[0] = claimString(o, "sub")
	c.Site, errs[1] = claimString(o, "site")
	c.Dash, errs[2] = claimString(o, "dash")
	role, errs[3] = claimString(o, "role")
	c.Role = Role(role)
	c.IssuedAt, errs[4] = claimDate(o, "iat")
	c.ExpiresAt, errs[5] = claimDate(o, "exp")
	c.NotBefore, errs[6] = claimDate(o, "nbf")
	for _, err := range errs {
		if err != nil {
			return Claims{}, err
		}
	}
	return c, nil
}

// claimString returns a string claim, "" when it is absent.
func claimString(o *object, name string) (string, error) {
	if o.get(name) == nil {
		return "", nil
	}
	v, ok := o.str(name)
	if !ok {
		return "", fmt.Errorf("%w: %s is not a string", ErrClaims, name)
	}
	if len(v) == 0 {
		// Not "missing": an empty optional dash must not pass as absent,
		// since Mint would never write one.
		return "", fmt.Errorf("%w: empty %s", ErrClaims, name)
	}
	return internString(v), nil
}

// claimDate returns a NumericDate claim, the zero time when it is absent.
func claimDate(o *object, name string) (time.Time, error) {
	raw := o.get(name)
	if raw == nil {
		return time.Time{}, nil
	}
	sec, ok := numericDate(raw)
	if !ok {
		return time.Time{}, fmt.Errorf("%w: %s is not an integer in [0, %d]", ErrClaims, name, maxNumericDate)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// internString returns b as a string, without allocating for the role
// names every token carries.
func internString(b []byte) string {
	switch string(b) {
	case string(RoleSubscribe):
		return string(RoleSubscribe)
	case string(RolePublish):
		return string(RolePublish)
	}
	return string(b)
}

// maxPooledScratch bounds the scratch memory kept for reuse, so that a
// Verifier configured for huge tokens does not pin it.
const maxPooledScratch = 16 << 10

// scratch is the working memory of one Verify: the token's bytes (base64
// decoders and MACs take []byte), the decoded segments after them, and the
// computed MAC.
type scratch struct {
	buf []byte
	sum [sha512.Size]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

// getScratch returns a scratch whose buf can hold a token of n bytes and
// its decoded segments (3/4 of that) without growing.
func getScratch(n int) *scratch {
	s := scratchPool.Get().(*scratch)
	s.buf = slices.Grow(s.buf[:0], 2*n)
	return s
}

func putScratch(s *scratch) {
	if cap(s.buf) <= maxPooledScratch {
		scratchPool.Put(s)
	}
}

// base64URL is the strict base64url decoding: each token has one spelling.
var base64URL = base64.RawURLEncoding.Strict()

// decode appends the base64url decoding of seg to s.buf and returns it.
func (s *scratch) decode(seg []byte) ([]byte, error) {
	n := len(s.buf)
	b, err := base64URL.AppendDecode(s.buf, seg)
	s.buf = b
	return b[n:], err
}
