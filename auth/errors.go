package auth

import "errors"

// Sentinel errors. Verify wraps exactly one of them with a detail
// ("%w: missing site"); test with errors.Is. They never contain a token or a
// secret, so they are safe to log.
var (
	// ErrMalformed means the token is not a well-formed JWS: wrong number of
	// segments, bad base64url, a header or payload that is not a JSON object,
	// or a known header or claim given twice.
	ErrMalformed = errors.New("auth: malformed token")
	// ErrAlgorithm means the header's alg is missing or is not HS512.
	ErrAlgorithm = errors.New("auth: unsupported algorithm")
	// ErrUnknownKey means the header's kid names no key of the Keyring.
	ErrUnknownKey = errors.New("auth: unknown key id")
	// ErrSignature means the signature does not match the selected key.
	ErrSignature = errors.New("auth: invalid signature")
	// ErrExpired means now is at or after the token's exp.
	ErrExpired = errors.New("auth: token expired")
	// ErrNotYetValid means nbf or iat is later than now plus the leeway.
	ErrNotYetValid = errors.New("auth: token not yet valid")
	// ErrLifetime means exp is not after iat, or more than 24 h after it.
	ErrLifetime = errors.New("auth: token lifetime out of range")
	// ErrClaims means a claim (sub, site, dash, role, iat, exp, nbf) is
	// missing, of the wrong JSON type or out of its allowed range.
	ErrClaims = errors.New("auth: invalid claims")
	// ErrWrongRole means the token is valid but carries another role than
	// the one the caller asked for.
	ErrWrongRole = errors.New("auth: wrong role")
	// ErrTooLong means the token is longer than Verifier.MaxTokenBytes; it
	// is returned before any parsing.
	ErrTooLong = errors.New("auth: token too long")
	// ErrForbidden means the channel lies outside the token's namespace.
	ErrForbidden = errors.New("auth: channel forbidden")
	// ErrBadChannel means the channel is not site/dash/gadget as the rules
	// allow (a client error rather than a permission problem).
	ErrBadChannel = errors.New("auth: bad channel")
	// ErrKey means a key or a key specification is invalid.
	ErrKey = errors.New("auth: invalid key")
)

// DenyReasons is every value DenyReason can return for a non-nil error, so
// that metrics can create each label at start.
var DenyReasons = []string{
	"malformed", "algorithm", "unknown_key", "signature", "expired",
	"not_yet_valid", "lifetime", "claims", "wrong_role", "too_long",
}

var denyReasonByErr = []struct {
	err    error
	reason string
}{
	{ErrMalformed, "malformed"},
	{ErrAlgorithm, "algorithm"},
	{ErrUnknownKey, "unknown_key"},
	{ErrSignature, "signature"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrLifetime, "lifetime"},
	{ErrClaims, "claims"},
	{ErrWrongRole, "wrong_role"},
	{ErrTooLong, "too_long"},
}

// DenyReason returns the metric label for an error returned by Verify, one
// of DenyReasons, or "" for nil. Any other error (which Verify never
// returns) counts as "malformed" so that the label set stays fixed.
func DenyReason(err error) string {
	if err == nil {
		return ""
	}
	for _, d := range denyReasonByErr {
		if errors.Is(err, d.err) {
			return d.reason
		}
	}
	return "malformed"
}
