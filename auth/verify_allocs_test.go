//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation
// counts only hold without it.

package auth

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestVerifyAllocs keeps a connect's token check down to the three claim
// strings it returns (sub, site, dash): garbage per connect is GC work and
// memory headroom on every server.
func TestVerifyAllocs(t *testing.T) {
	v := testVerifier(t)
	tok := validToken(t)
	_, err := v.Verify(tok, RoleSubscribe, testNow)
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = v.Verify(tok, RoleSubscribe, testNow)
	})
	assert.LessOrEqual(t, allocs, 3.0)
}
