package proc

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestListensOn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	addr := ln.Addr().String()
	assert.True(t, ListensOn(os.Getpid(), addr), "this process listens on %s", addr)

	other := exec.Command("sleep", "30")
	require.NoError(t, other.Start())
	assert.False(t, ListensOn(other.Process.Pid, addr), "another process does not")
	_ = other.Process.Kill()
	_ = other.Wait()
	assert.False(t, ListensOn(other.Process.Pid, addr), "nor one that has exited")

	ln.Close()
	assert.False(t, ListensOn(os.Getpid(), addr), "nor this one once it closed the listener")
}
