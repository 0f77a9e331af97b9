package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/proc"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// buildRelay builds this command into a temporary directory, with the race
// detector when the tests run under it (go build then reuses the packages
// the test build compiled).
func buildRelay(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "realtime")
	args := append([]string{"build", "-o", bin}, raceFlags...)
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	return bin
}

// freeAddrs returns n distinct loopback addresses whose ports were free a
// moment ago: held open together, so that the kernel cannot hand out one
// port twice, as it may for ports asked one after the other.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// child is a `realtime serve` process.
type child struct {
	addr, admin string
	cmd         *exec.Cmd
	stdout      *testutil.SyncBuffer
	stderr      *testutil.SyncBuffer
	exited      chan struct{}
	waitErr     error // set before exited is closed
}

// startServe starts `realtime serve` with key on free loopback ports and
// waits until it is ready. It is killed when the test ends, if still alive.
func startServe(t *testing.T, bin string, key auth.Key, args ...string) *child {
	t.Helper()
	return startOnFreePorts(t, bin, func(addr, admin string) []string {
		return append([]string{"serve", "--listen", addr, "--admin-listen", admin, "--keys", key.String(),
			"--log-format", "json", "--log-level", "warn"}, args...)
	})
}

// startOnFreePorts starts bin with the arguments args gives for two free
// loopback ports, the public and the admin one, and waits until it is
// ready. A port free a moment ago may be taken by another test's server
// before the child listens: only the child's own /readyz counts
// (proc.ListensOn), and a child that could not listen is started again on
// other ports.
func startOnFreePorts(t *testing.T, bin string, args func(addr, admin string) []string) *child {
	t.Helper()
	for attempt := 1; ; attempt++ {
		c := spawnChild(t, bin, args)
		if ready := c.waitReady(t); ready || attempt == 3 {
			require.True(t, ready, "the relay was not ready: %s", c.stderr)
			return c
		}
	}
}

func spawnChild(t *testing.T, bin string, args func(addr, admin string) []string) *child {
	t.Helper()
	addrs := freeAddrs(t, 2)
	c := &child{addr: addrs[0], admin: addrs[1], stdout: &testutil.SyncBuffer{}, stderr: &testutil.SyncBuffer{},
		exited: make(chan struct{})}
	c.cmd = exec.Command(bin, args(c.addr, c.admin)...)
	c.cmd.Stdout, c.cmd.Stderr = c.stdout, c.stderr
	require.NoError(t, c.cmd.Start())
	go func() { c.waitErr = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

// waitReady waits until the child answers its /readyz, and reports false
// when it exited first (a port taken) or did not answer in time.
func (c *child) waitReady(t *testing.T) bool {
	t.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(2 * testutil.Wait)
	for time.Now().Before(deadline) {
		if resp, err := client.Get("http://" + c.admin + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && proc.ListensOn(c.cmd.Process.Pid, c.admin) {
				return true
			}
		}
		select {
		case <-c.exited:
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// TestShutdownUnderLoad sends SIGTERM to the real binary while ~1,000
// clients are subscribed and publishers publish concurrently: every client
// gets 1012, every publish that got a response got 200 or 503, none hangs,
// and the process exits 0 within --shutdown-timeout. A new process with
// the same key answers a client that asks to recover from before the
// restart with recovered:false, and replays nothing.
func TestShutdownUnderLoad(t *testing.T) {
	const (
		clients, channels, publishers = 1000, 4, 4
		shutdownTimeout               = 10 * time.Second
	)
	bin := buildRelay(t)
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	relay := startServe(t, bin, key, "--shutdown-timeout", shutdownTimeout.String())
	tokens := &testutil.Relay{Key: key} // only for minting tokens
	sub := tokens.SubscribeToken(t)
	pub := tokens.PublishToken(t)
	chans := make([]string, channels)
	for i := range chans {
		chans[i] = testutil.Channel("load-" + strconv.Itoa(i))
	}

	subs := testutil.DialSubscribers(t, relay.addr, sub, clients, func(i int) string { return chans[i%channels] })
	require.Eventually(t, func() bool {
		for i, s := range subs {
			if !s.State(chans[i%channels]).Acked {
				return false
			}
		}
		return true
	}, 2*testutil.Wait, 20*time.Millisecond, "sub acks")

	// Publishers publish back to back until the relay is gone. A request
	// may fail without a response only once SIGTERM was sent (a refused
	// connection, or a keep-alive connection the draining relay closed
	// just as the request went out); every response is 200 or 503.
	transport := &http.Transport{MaxIdleConnsPerHost: publishers}
	defer transport.CloseIdleConnections()
	httpClient := &http.Client{Transport: transport, Timeout: shutdownTimeout + testutil.Wait}
	var sigterm atomic.Pointer[time.Time]
	var ok, unavailable, noResponse atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 10 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Go(func() {
			for n := 0; ; n++ {
				body := `{"channel":"` + chans[(p+n)%channels] + `","event":"Load","data":"` + strings.Repeat("d", 256) + `"}`
				req, _ := http.NewRequest(http.MethodPost, "http://"+relay.addr+"/v1/publish", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+pub)
				start := time.Now()
				resp, err := httpClient.Do(req)
				if err != nil {
					sent := sigterm.Load()
					var ne net.Error
					switch {
					case sent == nil:
						fail("publish failed before SIGTERM: %v", err)
					case errors.As(err, &ne) && ne.Timeout():
						fail("publish hung for %v: %v", time.Since(start), err)
					}
					noResponse.Add(1)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					ok.Add(1)
				case http.StatusServiceUnavailable:
					unavailable.Add(1)
				default:
					fail("publish answered %d", resp.StatusCode)
				}
				if sent := sigterm.Load(); sent != nil && time.Since(*sent) > shutdownTimeout {
					fail("publish answered %v after SIGTERM, past the shutdown timeout", time.Since(*sent))
				}
			}
		})
	}
	// Under load: the publishers have had some messages delivered.
	require.Eventually(t, func() bool { return ok.Load() >= 50 }, 2*testutil.Wait, 10*time.Millisecond, "publishes: %v", failures)

	now := time.Now()
	sigterm.Store(&now)
	require.NoError(t, relay.cmd.Process.Signal(syscall.SIGTERM))
	for i, s := range subs {
		select {
		case <-s.Closed():
		case <-time.After(time.Until(now.Add(shutdownTimeout))):
			t.Fatalf("client %d not closed within the shutdown timeout", i)
		}
		require.Equal(t, uint16(1012), s.CloseCode(), "client %d", i)
		require.Empty(t, s.Failures(), "client %d", i)
	}
	select {
	case <-relay.exited:
		assert.NoError(t, relay.waitErr, "exit status; stderr: %s", relay.stderr)
		assert.Less(t, time.Since(now), shutdownTimeout, "exited after its shutdown timeout")
	case <-time.After(time.Until(now.Add(shutdownTimeout + testutil.Wait))):
		t.Fatalf("the relay did not exit within %v of SIGTERM: %s", shutdownTimeout, relay.stderr)
	}
	pubs.Wait()
	mu.Lock()
	require.Empty(t, failures)
	mu.Unlock()
	t.Logf("%d clients closed, exit %v after SIGTERM; publishes: %d ok, %d unavailable, %d without response (after SIGTERM)",
		clients, time.Since(now).Round(time.Millisecond), ok.Load(), unavailable.Load(), noResponse.Load())

	// A new process with the same key cannot recover the old stream: an old
	// since is answered recovered:false, and only live messages follow.
	var old *testutil.Subscriber
	for _, s := range subs {
		if s.State(chans[0]).Last > 0 {
			old = s
			break
		}
	}
	require.NotNil(t, old, "no client of %s got a message", chans[0])
	before := old.State(chans[0])
	next := startServe(t, bin, key, "--shutdown-timeout", shutdownTimeout.String())
	again, err := testutil.DialSubscriber(next.addr, sub)
	require.NoError(t, err)
	defer again.Close()
	require.NoError(t, again.SubscribeSince(chans[0], before.Epoch, before.Last))
	require.Eventually(t, func() bool { return again.State(chans[0]).Acked }, testutil.Wait, 10*time.Millisecond)
	ack := again.State(chans[0])
	assert.False(t, ack.Recovered, "recovered across a restart")
	assert.NotEqual(t, before.Epoch, ack.Epoch)
	assert.Equal(t, uint64(0), ack.Last)
	req, _ := http.NewRequest(http.MethodPost, "http://"+next.addr+"/v1/publish",
		strings.NewReader(`{"channel":"`+chans[0]+`","event":"Live","data":"after"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+pub)
	resp, err := httpClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Eventually(t, func() bool { return again.State(chans[0]).Msgs == 1 }, testutil.Wait, 10*time.Millisecond)
	assert.Equal(t, uint64(1), again.State(chans[0]).Last)
	assert.Empty(t, again.Failures(), "a replay of the old stream, or a gap")

	require.NoError(t, next.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-next.exited:
		assert.NoError(t, next.waitErr, "stderr: %s", next.stderr)
	case <-time.After(shutdownTimeout + testutil.Wait):
		t.Fatalf("the restarted relay did not exit: %s", next.stderr)
	}
}

// TestShutdownWithAdminRequestInFlight: a request still running on the
// admin listener (a CPU profile takes its seconds) when SIGTERM comes is
// cut at --shutdown-timeout, and the stop is still clean: exit 0.
func TestShutdownWithAdminRequestInFlight(t *testing.T) {
	const shutdownTimeout = time.Second
	bin := buildRelay(t)
	key, err := auth.GenerateKey("k1")
	require.NoError(t, err)
	relay := startServe(t, bin, key, "--shutdown-timeout", shutdownTimeout.String(), "--drain-delay", "0s")
	profile, err := net.Dial("tcp", relay.admin)
	require.NoError(t, err)
	defer profile.Close()
	_, err = io.WriteString(profile, "GET /debug/pprof/profile?seconds=30 HTTP/1.1\r\nHost: admin\r\n\r\n")
	require.NoError(t, err)
	// The admin server accepts connections in order and tracks each before
	// serving it: once a later one is answered, the profile's connection
	// counts for Shutdown, which waits for it.
	resp, err := (&http.Client{Timeout: testutil.Wait}).Get("http://" + relay.admin + "/healthz")
	require.NoError(t, err)
	_ = resp.Body.Close()

	start := time.Now()
	require.NoError(t, relay.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case <-relay.exited:
	case <-time.After(testutil.Wait):
		t.Fatalf("no exit after SIGTERM: %s", relay.stderr)
	}
	assert.NoError(t, relay.waitErr, "exit status; stderr: %s", relay.stderr)
	assert.Less(t, time.Since(start), shutdownTimeout+testutil.Wait/2)
}
