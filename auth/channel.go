package auth

import (
	"fmt"
	"strings"
)

const (
	// maxSiteLen, maxNameLen bound a site and a dashboard or gadget id, in
	// bytes.
	maxSiteLen = 256
	maxNameLen = 128
	// MaxChannelLen is the longest valid channel, in bytes: site "/" dash
	// "/" gadget at their longest.
	MaxChannelLen = maxSiteLen + 1 + maxNameLen + 1 + maxNameLen
)

// validSite reports whether s is 1-256 printable ASCII bytes without
// spaces (0x21..0x7e). A site may contain '/'.
func validSite(s string) bool {
	if len(s) == 0 || len(s) > maxSiteLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validName reports whether s is a valid dashboard or gadget id: 1-128
// bytes of [A-Za-z0-9_.-]. Never '/', which is what lets a channel be split
// from the right.
func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// SplitChannel splits channel into its site, dashboard and gadget: the last
// two '/'-separated parts are the dashboard and the gadget, everything before
// them the site. ok is false when the channel is not valid.
func SplitChannel(channel string) (site, dash, gadget string, ok bool) {
	if len(channel) > MaxChannelLen {
		return "", "", "", false
	}
	rest, gadget, ok1 := cutLast(channel)
	site, dash, ok2 := cutLast(rest)
	if !ok1 || !ok2 || !validSite(site) || !validName(dash) || !validName(gadget) {
		return "", "", "", false
	}
	return site, dash, gadget, true
}

func cutLast(s string) (before, after string, ok bool) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// ValidChannel returns nil if channel is site/dash/gadget with each part
// valid and the whole at most MaxChannelLen bytes, and an error wrapping
// ErrBadChannel otherwise.
func ValidChannel(channel string) error {
	if _, _, _, ok := SplitChannel(channel); !ok {
		return fmt.Errorf("%w: want site/dashboard/gadget", ErrBadChannel)
	}
	return nil
}

// Namespace returns the prefix (without the trailing '/') of the channels
// the claims give access to: site/dash for a subscribe token, and for a
// publish token its site, or site/dash when it names a dashboard.
func (c Claims) Namespace() string {
	if c.Role == RoleSubscribe || c.Dash != "" {
		return c.Site + "/" + c.Dash
	}
	return c.Site
}

// CheckSubscribe returns nil if a subscribe token with these claims may
// subscribe to channel, which must be exactly Namespace()/gadget. It returns
// an error wrapping ErrForbidden if the channel lies outside the namespace
// (or the claims are not a valid subscribe token's), and one wrapping
// ErrBadChannel if it is inside but the gadget is not valid.
func (c Claims) CheckSubscribe(channel string) error {
	if c.Role != RoleSubscribe {
		return fmt.Errorf("%w: not a subscribe token", ErrForbidden)
	}
	if !validSite(c.Site) || !validName(c.Dash) {
		// Only hand-built claims get here; Verify never returns such.
		return fmt.Errorf("%w: invalid site or dashboard in claims", ErrForbidden)
	}
	gadget, ok := cutNamespace(channel, c.Site, c.Dash)
	if !ok {
		return fmt.Errorf("%w: outside the token's dashboard", ErrForbidden)
	}
	if !validName(gadget) {
		return fmt.Errorf("%w: invalid gadget id", ErrBadChannel)
	}
	return nil
}

// CheckPublish returns nil if a publish token with these claims may publish
// to channel: any site/dash/gadget channel of its site, and of its
// dashboard when it names one. It returns an error wrapping ErrForbidden if
// the channel lies outside the namespace (or the claims are not a valid
// publish token's: a subscribe token never publishes), and one wrapping
// ErrBadChannel if it is inside but the rest is not a valid dash/gadget (or
// gadget).
func (c Claims) CheckPublish(channel string) error {
	if c.Role != RolePublish {
		return fmt.Errorf("%w: not a publish token", ErrForbidden)
	}
	if !validSite(c.Site) || c.Dash != "" && !validName(c.Dash) {
		return fmt.Errorf("%w: invalid site or dashboard in claims", ErrForbidden)
	}
	if c.Dash != "" {
		gadget, ok := cutNamespace(channel, c.Site, c.Dash)
		if !ok {
			return fmt.Errorf("%w: outside the token's dashboard", ErrForbidden)
		}
		if !validName(gadget) {
			return fmt.Errorf("%w: invalid gadget id", ErrBadChannel)
		}
		return nil
	}
	rest, ok := strings.CutPrefix(channel, c.Site)
	if !ok || len(rest) == 0 || rest[0] != '/' {
		return fmt.Errorf("%w: outside the token's site", ErrForbidden)
	}
	rest = rest[1:]
	// Exactly two parts: a longer rest such as "x/dash/gadget" is a channel
	// of another site ("site/x"), which a prefix match alone would allow.
	dash, gadget, ok := strings.Cut(rest, "/")
	if !ok || !validName(dash) || !validName(gadget) {
		return fmt.Errorf("%w: want dashboard/gadget after the site", ErrBadChannel)
	}
	return nil
}

// cutNamespace returns what follows site/dash/ in channel, without building
// the namespace string (CheckSubscribe runs for every subscribe frame).
func cutNamespace(channel, site, dash string) (string, bool) {
	rest, ok := strings.CutPrefix(channel, site)
	if !ok || len(rest) == 0 || rest[0] != '/' {
		return "", false
	}
	rest, ok = strings.CutPrefix(rest[1:], dash)
	if !ok || len(rest) == 0 || rest[0] != '/' {
		return "", false
	}
	return rest[1:], true
}
