package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeps keeps the dependency direction one way: cmd -> edge -> actors ->
// internal, with auth importing none of them, and protoactor only in actors.
func TestDeps(t *testing.T) {
	const mod = "github.com/realtime-relay/realtime/"
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, mod+"...").Output()
	require.NoError(t, err)
	forbidden := map[string][]string{
		"auth":     {mod + "actors", mod + "edge", mod + "bench", mod + "internal", mod + "cmd"},
		"internal": {mod + "actors", mod + "edge", mod + "bench", mod + "cmd"},
		"actors":   {mod + "edge", mod + "bench", mod + "cmd", "github.com/lxzan/gws", "github.com/valyala/fasthttp"},
		"edge":     {mod + "bench", mod + "cmd", "github.com/asynkron/protoactor-go"},
		"bench":    {mod + "actors", mod + "edge", "github.com/asynkron/protoactor-go"},
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := strings.TrimPrefix(fields[0], mod), fields[1:]
		if strings.HasPrefix(pkg, "internal/testutil") {
			continue // test helpers start whole relays
		}
		top, _, _ := strings.Cut(pkg, "/")
		for _, imp := range imports {
			for _, bad := range forbidden[top] {
				assert.False(t, strings.HasPrefix(imp, bad), "%s imports %s", pkg, imp)
			}
		}
	}
}
