// Package auth owns the relay's access tokens and namespace checks: parsing
// and holding HMAC keys, minting and verifying HS512 JWTs, and deciding
// whether verified claims may subscribe or publish to a channel.
//
// Everything here is a pure function of its arguments: no I/O, no goroutines,
// no clock (Verify takes now as an argument so that tests and callers decide
// the time). A Keyring and a Verifier are immutable after construction and
// safe for concurrent use from any goroutine; Claims and Key are plain
// values. It imports nothing of the project.
//
// Token format. A token is a compact JWS signed with HS512 and nothing else:
// the header must carry "alg":"HS512" and may carry "kid", naming one of the
// keys of the Keyring; a token without "kid" is checked against the first
// key, which is also the key new tokens are minted with. Keys can thus be
// rotated with no downtime: list the new key first and keep the old one
// until its tokens have expired. The payload holds
//
//	sub   account id, required
//	site  cloud site ARI, required, 1-256 printable ASCII bytes, no spaces
//	dash  dashboard id, 1-128 of [A-Za-z0-9_.-]; required for role subscribe
//	role  "subscribe" or "publish"
//	iat   issued at, required, integer seconds since the epoch
//	exp   expiry, required, integer seconds; expired from exp on, no leeway
//	nbf   not before, optional, integer seconds
//
// A token may live at most 24 h (exp-iat). The clock-skew leeway applies to
// nbf and iat only. A JSON null counts as an absent claim, a known claim
// given twice makes the token malformed, and keys match exactly (encoding/json
// would also accept "SUB" for "sub").
//
// Channels are site + "/" + dash + "/" + gadget; the site may itself contain
// '/', so a channel is split from the right.
package auth
