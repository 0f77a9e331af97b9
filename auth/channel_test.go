package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidChannel(t *testing.T) {
	longest := strings.Repeat("s", 256) + "/" + strings.Repeat("d", 128) + "/" + strings.Repeat("g", 128)
	require.Len(t, longest, MaxChannelLen)
	tests := []struct {
		name    string
		channel string
		ok      bool
	}{
		{"simple", "site/dash/gadget", true},
		{"ARI site with slash", testSite + "/dash-1/gadget_2.v1", true},
		{"site with many slashes", "a/b/c/d/e", true},
		{"longest", longest, true},
		{"too long", "s" + longest, false},
		{"site too long", strings.Repeat("s", 257) + "/d/g", false},
		{"dash too long", "s/" + strings.Repeat("d", 129) + "/g", false},
		{"gadget too long", "s/d/" + strings.Repeat("g", 129), false},
		{"empty", "", false},
		{"two parts", "dash/gadget", false},
		{"one part", "gadget", false},
		{"empty site", "/d/g", false},
		{"empty dash", "s//g", false},
		{"empty gadget", "s/d/", false},
		{"trailing slash", "s/d/g/", false},
		{"site ends in slash", "s//d/g", true}, // site "s/" is printable ASCII
		{"dash bad char", "s/d:1/g", false},
		{"gadget bad char", "s/d/g*", false},
		{"gadget space", "s/d/g 1", false},
		{"site space", "s s/d/g", false},
		{"site control char", "s\x01/d/g", false},
		{"gadget newline", "s/d/g\n", false},
		{"site DEL", "s\x7f/d/g", false},
		{"non-ASCII", "sité/d/g", false},
		{"gadget NUL", "s/d/g\x00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidChannel(tt.channel)
			if tt.ok {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, ErrBadChannel)
		})
	}
}

func TestSplitChannel(t *testing.T) {
	site, dash, gadget, ok := SplitChannel(testSite + "/dash-1/g1")
	require.True(t, ok)
	assert.Equal(t, []string{testSite, "dash-1", "g1"}, []string{site, dash, gadget})
	_, _, _, ok = SplitChannel("a/b")
	assert.False(t, ok)
}

func TestNamespace(t *testing.T) {
	assert.Equal(t, "s/d", Claims{Site: "s", Dash: "d", Role: RoleSubscribe}.Namespace())
	assert.Equal(t, "s/d", Claims{Site: "s", Dash: "d", Role: RolePublish}.Namespace())
	assert.Equal(t, "s", Claims{Site: "s", Role: RolePublish}.Namespace())
}

func TestCheckSubscribe(t *testing.T) {
	c := Claims{Subject: "a", Site: testSite, Dash: "dash-1", Role: RoleSubscribe}
	tests := []struct {
		name    string
		claims  Claims // zero means c
		channel string
		err     error
	}{
		{name: "own gadget", channel: testSite + "/dash-1/g1"},
		{name: "other dashboard", channel: testSite + "/dash-2/g1", err: ErrForbidden},
		{name: "dashboard prefix", channel: testSite + "/dash-10/g1", err: ErrForbidden},
		{name: "other site", channel: "ari:cloud:jira::site/other/dash-1/g1", err: ErrForbidden},
		{name: "site prefix", channel: testSite + "x/dash-1/g1", err: ErrForbidden},
		{name: "parent of site", channel: "ari:cloud:jira::site/dash-1/g1", err: ErrForbidden},
		{name: "namespace only", channel: testSite + "/dash-1", err: ErrForbidden},
		{name: "empty", channel: "", err: ErrForbidden},
		{name: "empty gadget", channel: testSite + "/dash-1/", err: ErrBadChannel},
		{name: "deeper path", channel: testSite + "/dash-1/g1/x", err: ErrBadChannel},
		{name: "gadget bad char", channel: testSite + "/dash-1/g 1", err: ErrBadChannel},
		{name: "gadget control char", channel: testSite + "/dash-1/g\x00", err: ErrBadChannel},
		{name: "gadget too long", channel: testSite + "/dash-1/" + strings.Repeat("g", 129), err: ErrBadChannel},
		{name: "gadget longest", channel: testSite + "/dash-1/" + strings.Repeat("g", 128)},
		{name: "site with slash not confused", claims: Claims{Site: "s", Dash: "d", Role: RoleSubscribe}, channel: "s/d/x/g", err: ErrBadChannel},
		{name: "publish claims", claims: Claims{Site: testSite, Dash: "dash-1", Role: RolePublish}, channel: testSite + "/dash-1/g1", err: ErrForbidden},
		{name: "claims without dash", claims: Claims{Site: "s", Role: RoleSubscribe}, channel: "s//g", err: ErrForbidden},
		{name: "zero claims", claims: Claims{Role: RoleSubscribe}, channel: "//g", err: ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := tt.claims
			if cl.Role == "" {
				cl = c
			}
			err := cl.CheckSubscribe(tt.channel)
			if tt.err == nil {
				require.NoError(t, err)
				assert.NoError(t, ValidChannel(tt.channel), "allowed channel must be valid")
				return
			}
			requireOneSentinel(t, tt.err, err)
		})
	}
}

func TestCheckPublish(t *testing.T) {
	site := Claims{Subject: "a", Site: testSite, Role: RolePublish}
	dash := Claims{Subject: "a", Site: testSite, Dash: "dash-1", Role: RolePublish}
	tests := []struct {
		name    string
		claims  Claims
		channel string
		err     error
	}{
		{"site token, any dashboard", site, testSite + "/dash-2/g1", nil},
		{"site token, other site", site, "ari:cloud:jira::site/other/dash-1/g1", ErrForbidden},
		{"site token, site prefix", site, testSite + "0/dash-1/g1", ErrForbidden},
		{"site token, sub-site", site, testSite + "/x/dash-1/g1", ErrBadChannel},
		{"site token, no gadget", site, testSite + "/dash-1", ErrBadChannel},
		{"site token, empty dash", site, testSite + "//g1", ErrBadChannel},
		{"site token, bad dash", site, testSite + "/d*/g1", ErrBadChannel},
		{"site token, long dash", site, testSite + "/" + strings.Repeat("d", 129) + "/g1", ErrBadChannel},
		{"dash token, own dashboard", dash, testSite + "/dash-1/g1", nil},
		{"dash token, other dashboard", dash, testSite + "/dash-2/g1", ErrForbidden},
		{"dash token, bad gadget", dash, testSite + "/dash-1/g/1", ErrBadChannel},
		{"subscribe token", Claims{Site: testSite, Dash: "dash-1", Role: RoleSubscribe}, testSite + "/dash-1/g1", ErrForbidden},
		{"invalid claims", Claims{Site: "a b", Role: RolePublish}, "a b/d/g", ErrForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.claims.CheckPublish(tt.channel)
			if tt.err == nil {
				require.NoError(t, err)
				assert.NoError(t, ValidChannel(tt.channel), "allowed channel must be valid")
				return
			}
			requireOneSentinel(t, tt.err, err)
		})
	}
}

// A verified token for one site gives nothing on another.
func TestTokenForAnotherSite(t *testing.T) {
	v := testVerifier(t)
	other := "ari:cloud:jira::site/ffffffff-0000-0000-0000-000000000000"
	for _, role := range []Role{RoleSubscribe, RolePublish} {
		tok, err := Mint(testKey1, Claims{Subject: "a", Site: other, Dash: "dash-1", Role: role, IssuedAt: testNow, ExpiresAt: testNow.Add(time.Hour)})
		require.NoError(t, err)
		c, err := v.Verify(tok, role, testNow)
		require.NoError(t, err)
		ch := testSite + "/dash-1/g1"
		if role == RoleSubscribe {
			assert.ErrorIs(t, c.CheckSubscribe(ch), ErrForbidden)
		} else {
			assert.ErrorIs(t, c.CheckPublish(ch), ErrForbidden)
		}
	}
}
