package auth

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeps keeps auth a leaf: it imports nothing of the project, and does
// no I/O (no os, net, or clock-reading packages beyond time).
func TestDeps(t *testing.T) {
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	forbidden := []string{"os", "net", "io/fs", "log", "log/slog", "syscall"}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		require.NoError(t, err)
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			assert.False(t, strings.HasPrefix(path, "github.com/realtime-relay/realtime"), "%s imports %s", name, path)
			assert.NotContains(t, forbidden, path, "%s imports %s", name, path)
		}
	}
}
