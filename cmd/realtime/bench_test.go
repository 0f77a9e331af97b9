package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	loadgen "github.com/realtime-relay/realtime/bench"
)

func TestBenchConfig(t *testing.T) {
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	t.Setenv("REALTIME_SUBS", "7")      // env twin
	t.Setenv("REALTIME_CHANNELS", "99") // the flag wins
	cfg, out, err := benchConfig([]string{
		"--scenario", "ramp", "--channels", "3", "--rate", "250", "--duration", "2s", "--batch", "20",
		"--url", "http://127.0.0.1:8080", "--key", key.String(), "--max-p99", "10ms", "--min-rate", "100",
		"--server-arg=--send-queue-bytes=65536", "--server-arg", "--retention=1m", "--json",
	}, io.Discard)
	require.NoError(t, err)
	assert.True(t, out.json)
	assert.Equal(t, loadgen.ScenarioRamp, cfg.Scenario)
	assert.Equal(t, 3, cfg.Channels)
	assert.Equal(t, 7, cfg.Subs)
	assert.InDelta(t, 250.0, cfg.Rate, 0)
	assert.Equal(t, 2*time.Second, cfg.Duration)
	assert.Equal(t, 20, cfg.Batch)
	assert.Equal(t, key, cfg.Key)
	assert.Equal(t, 10*time.Millisecond, cfg.MaxP99)
	assert.Equal(t, 2, cfg.RampAttempts, "the flag's default")
	assert.Equal(t, 2, cfg.RampRefine, "the flag's default")
	assert.Equal(t, []string{"--send-queue-bytes=65536", "--retention=1m"}, cfg.ServerArgs)
}

func TestBenchConfigRampRefine(t *testing.T) {
	cfg, _, err := benchConfig([]string{"--scenario", "ramp", "--ramp-refine", "-1"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, -1, cfg.RampRefine, "negative: no refinement")
	cfg, _, err = benchConfig([]string{"--scenario", "ramp", "--ramp-refine", "4"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, 4, cfg.RampRefine)
}

func TestBenchConfigChurnSlow(t *testing.T) {
	t.Setenv("REALTIME_RECONNECT_RATE", "250") // env twin
	cfg, _, err := benchConfig([]string{"--scenario", "churn"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, loadgen.ScenarioChurn, cfg.Scenario)
	assert.InDelta(t, 250.0, cfg.ReconnectRate, 0)
	assert.InDelta(t, 0.1, cfg.SlowFraction, 0, "the flag's default")
	assert.InDelta(t, 2.0, cfg.MaxP99Ratio, 0, "the flag's default")

	cfg, _, err = benchConfig([]string{"--scenario", "slow", "--slow-fraction", "0.25", "--max-p99-ratio", "3", "--max-p99", "20ms"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, loadgen.ScenarioSlow, cfg.Scenario)
	assert.InDelta(t, 0.25, cfg.SlowFraction, 0)
	assert.InDelta(t, 3.0, cfg.MaxP99Ratio, 0)
	assert.Equal(t, 20*time.Millisecond, cfg.MaxP99)
}

func TestBenchConfigErrors(t *testing.T) {
	f := func(name string, args ...string) {
		t.Run(name, func(t *testing.T) {
			_, _, err := benchConfig(args, io.Discard)
			assert.Error(t, err)
		})
	}
	f("url without key", "--url", "http://127.0.0.1:1")
	f("key without url", "--key", "k:"+"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f("bad key", "--url", "http://127.0.0.1:1", "--key", "nope")
	f("unknown flag", "--nope")
	f("stray argument", "fanout")
	f("missing CA file", "--ca-file", filepath.Join(t.TempDir(), "none.pem"))
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate"), 0o600))
	f("CA file without a certificate", "--ca-file", notPEM)
}
