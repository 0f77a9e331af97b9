package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/realtime-relay/realtime/auth"
)

// token mints a token with the first key of --keys or --keys-file.
func token(args []string, out io.Writer) error {
	f := newEnvFlags("token")
	keys := f.String("keys", "", "comma-separated kid:secret pairs (secret in standard base64, >= 32 bytes); the first signs")
	keysFile := f.String("keys-file", "", "file with one kid:secret per line; the first signs")
	role := f.String("role", "subscribe", "token role: subscribe or publish")
	sub := f.String("sub", "dev-account", "account id (sub claim)")
	site := f.String("site", "", "site ARI (site claim), required")
	dash := f.String("dash", "", "dashboard id (dash claim); required for subscribe")
	ttl := f.Duration("ttl", time.Hour, "lifetime, at most 24h")
	if err := f.parse(args); err != nil {
		return err
	}
	ring, err := loadKeys(*keys, *keysFile)
	if err != nil {
		return err
	}
	if *site == "" {
		return errors.New("--site is required")
	}
	now := time.Now()
	tok, err := auth.Mint(ring.Default(), auth.Claims{
		Subject: *sub, Site: *site, Dash: *dash, Role: auth.Role(*role),
		IssuedAt: now, ExpiresAt: now.Add(*ttl),
	})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, tok)
	return err
}

// loadKeys builds the keyring from --keys or --keys-file (exactly one).
func loadKeys(spec, file string) (*auth.Keyring, error) {
	var keys []auth.Key
	var err error
	switch {
	case spec != "" && file != "":
		return nil, errors.New("give --keys or --keys-file, not both")
	case spec != "":
		keys, err = auth.ParseKeys(spec)
	case file != "":
		var b []byte
		if b, err = os.ReadFile(file); err == nil {
			keys, err = auth.ParseKeysFile(string(b))
		}
	default:
		return nil, errors.New("no keys: give --keys or --keys-file (or --dev to serve with a generated key)")
	}
	if err != nil {
		return nil, err
	}
	return auth.NewKeyring(keys...)
}
