package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/sockettest"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// TestServeTLS runs the real binary with --tls-cert/--tls-key: a WSS client
// subscribes and receives what an HTTPS publish sent, and plain HTTP is
// not served on the TLS listener.
func TestServeTLS(t *testing.T) {
	bin := buildRelay(t)
	certFile, keyFile, pool := testutil.SelfSignedCert(t, t.TempDir())
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	relay := startServe(t, bin, key, "--tls-cert", certFile, "--tls-key", keyFile)
	tokens := &testutil.Relay{Key: key}
	tlsConf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	c, _, err := testutil.DialURL(t, "wss://"+relay.addr+"/v1/ws?token="+tokens.SubscribeToken(t), nil, tlsConf)
	require.NoError(t, err)
	ch := testutil.Channel("tls")
	c.Subscribe(1, ch)

	client := &http.Client{Timeout: testutil.Wait, Transport: &http.Transport{TLSClientConfig: tlsConf}}
	req, err := http.NewRequest(http.MethodPost, "https://"+relay.addr+"/v1/publish",
		strings.NewReader(`{"channel":"`+ch+`","event":"Changed","data":"sealed"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+tokens.PublishToken(t))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "sealed", c.NextOp("msg").Data)

	plain := &http.Client{Timeout: testutil.Wait}
	if resp, err := plain.Get("http://" + relay.addr + "/healthz"); err == nil {
		_ = resp.Body.Close()
		assert.NotEqual(t, http.StatusOK, resp.StatusCode, "plain HTTP answered on the TLS listener")
	}

	// The load generator drives it over WSS and HTTPS, trusting the
	// certificate given with --ca-file; a batch of 5 updates 5 channels of
	// each connection (--gadgets 5).
	out, err := exec.Command(bin, "bench", "--url", "https://"+relay.addr, "--key", key.String(), "--ca-file", certFile,
		"--channels", "10", "--subs", "2", "--gadgets", "5", "--batch", "5", "--rate", "200", "--duration", "1s", "--json").Output()
	require.NoError(t, err, "%s", out)
	var res struct {
		Published, Expected, Delivered, Lost int64
		Failures                             []string
	}
	require.NoError(t, json.Unmarshal(out, &res), "%s", out)
	assert.Empty(t, res.Failures)
	assert.Positive(t, res.Published)
	assert.Equal(t, 2*res.Published, res.Expected)
	assert.Equal(t, res.Expected, res.Delivered)
	assert.Zero(t, res.Lost)
}

// TestTokenCommand mints with `realtime token` and checks the token with
// the verifier; each flag's REALTIME_* twin applies, and the flag wins.
func TestTokenCommand(t *testing.T) {
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	ring, err := auth.NewKeyring(key)
	require.NoError(t, err)
	v := &auth.Verifier{Keys: ring}

	var out bytes.Buffer
	require.NoError(t, token([]string{"--keys", key.String(), "--site", "s1", "--dash", "d1", "--role", "subscribe", "--ttl", "10m"}, &out))
	c, err := v.Verify(strings.TrimSpace(out.String()), auth.RoleSubscribe, time.Now())
	require.NoError(t, err)
	assert.Equal(t, "s1", c.Site)
	assert.Equal(t, "d1", c.Dash)
	assert.WithinDuration(t, time.Now().Add(10*time.Minute), c.ExpiresAt, 2*time.Second)

	keysFile := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(keysFile, []byte("# rotation: k1 signs\n"+key.String()+"\n"), 0o600))
	out.Reset()
	require.NoError(t, token([]string{"--keys-file", keysFile, "--site", "s2", "--role", "publish"}, &out))
	c, err = v.Verify(strings.TrimSpace(out.String()), auth.RolePublish, time.Now())
	require.NoError(t, err, "a token minted with --keys-file")
	assert.Equal(t, "s2", c.Site)

	t.Setenv("REALTIME_KEYS", key.String())
	t.Setenv("REALTIME_SITE", "from-env")
	t.Setenv("REALTIME_ROLE", "publish")
	out.Reset()
	require.NoError(t, token(nil, &out))
	c, err = v.Verify(strings.TrimSpace(out.String()), auth.RolePublish, time.Now())
	require.NoError(t, err)
	assert.Equal(t, "from-env", c.Site)
	out.Reset()
	require.NoError(t, token([]string{"--site", "from-flag"}, &out))
	c, err = v.Verify(strings.TrimSpace(out.String()), auth.RolePublish, time.Now())
	require.NoError(t, err)
	assert.Equal(t, "from-flag", c.Site, "a flag wins over its environment twin")
}

func TestTokenCommandErrors(t *testing.T) {
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	for name, args := range map[string][]string{
		"no keys":        {"--site", "s"},
		"no site":        {"--keys", key.String()},
		"bad role":       {"--keys", key.String(), "--site", "s", "--dash", "d", "--role", "admin"},
		"too long":       {"--keys", key.String(), "--site", "s", "--dash", "d", "--ttl", "25h"},
		"short secret":   {"--keys", "k:c2hvcnQ=", "--site", "s"},
		"keys and file":  {"--keys", key.String(), "--keys-file", "x", "--site", "s"},
		"subscribe dash": {"--keys", key.String(), "--site", "s"},
	} {
		t.Run(name, func(t *testing.T) {
			assert.Error(t, token(args, &bytes.Buffer{}))
		})
	}
}

// TestServeDev runs `realtime serve --dev` as a newcomer would: with no key
// given, it prints a subscribe and a publish token that work at once.
func TestServeDev(t *testing.T) {
	bin := buildRelay(t)
	relay := startOnFreePorts(t, bin, func(addr, admin string) []string {
		return []string{"serve", "--dev", "--listen", addr, "--admin-listen", admin}
	})
	addr, stdout := relay.addr, relay.stdout
	require.Eventually(t, func() bool { return strings.Contains(stdout.String(), "curl ") }, testutil.Wait, 20*time.Millisecond)

	lines := strings.Split(stdout.String(), "\n")
	tokenAfter := func(heading string) string {
		for i, l := range lines {
			if strings.HasPrefix(l, heading) && i+1 < len(lines) {
				return strings.TrimSpace(lines[i+1])
			}
		}
		t.Fatalf("no %q in the dev output", heading)
		return ""
	}
	sub, pub := tokenAfter("Subscribe token"), tokenAfter("Publish token")
	ch := "ari:cloud:jira::site/dev/dash-1/gadget-1"
	assert.Contains(t, stdout.String(), ch, "the printed commands use the dev channel")

	c, _, err := testutil.DialURL(t, "ws://"+addr+"/v1/ws?token="+sub, nil, nil)
	require.NoError(t, err)
	c.Subscribe(1, ch)

	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/v1/publish",
		strings.NewReader(`{"channel":"`+ch+`","event":"AddAbsence","data":"hello"}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+pub)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: testutil.Wait}).Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "hello", c.NextOp("msg").Data)
}

// The relay's listener hands out connections without TCP keepalive: the
// WebSockets have their own pings.
func TestListenerWithoutKeepalive(t *testing.T) {
	ln, err := listenTCP("127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	server, _ := sockettest.Accept(t, ln)
	keepalive := sockettest.IntOption(t, server, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	assert.Zero(t, keepalive)
}

// Asking a command for its help prints it and exits 0; a bad flag exits 1.
func TestHelpExitsZero(t *testing.T) {
	bin := buildRelay(t)
	for cmd, flag := range map[string]string{"serve": "-listen", "token": "-role", "bench": "-scenario"} {
		out, err := exec.Command(bin, cmd, "--help").CombinedOutput()
		require.NoError(t, err, "%s --help: %s", cmd, out)
		assert.Contains(t, string(out), flag, "%s --help prints its flags", cmd)
	}
	err := exec.Command(bin, "serve", "--no-such-flag").Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 1, exit.ExitCode())
}

// TestAllowedOriginsTrimmed: "a, b" allows both origins, as --keys trims
// its items, and still refuses any other.
func TestAllowedOriginsTrimmed(t *testing.T) {
	bin := buildRelay(t)
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	relay := startServe(t, bin, key, "--allowed-origins", "https://a.example, https://b.example ,")
	url := "ws://" + relay.addr + "/v1/ws?token=" + (&testutil.Relay{Key: key}).SubscribeToken(t)
	for _, origin := range []string{"https://a.example", "https://b.example"} {
		c, _, err := testutil.DialURL(t, url, http.Header{"Origin": {origin}}, nil)
		if assert.NoError(t, err, origin) {
			c.Close()
		}
	}
	_, resp, err := testutil.DialURL(t, url, http.Header{"Origin": {"https://c.example"}}, nil)
	require.Error(t, err)
	require.NotNil(t, resp)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	// A list that names no origin is refused at start: it must not fail
	// open to every origin.
	for _, none := range []string{",", " ", " , "} {
		err := serve([]string{"--keys", key.String(), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--allowed-origins", none})
		assert.ErrorContains(t, err, "names no origin", "%q", none)
	}
}
