package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/proc"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports (reading it properly
// needs sysconf, i.e. cgo).
const clockTicks = 100

// stopTimeout bounds the child's graceful shutdown before it is killed.
const stopTimeout = 20 * time.Second

// target is the relay under test: a child process the run started, or a
// relay given by URL.
type target struct {
	// Static after start.
	name     string // "relay" or "baseline", for messages
	base     *url.URL
	key      auth.Key
	adminURL string // empty for a URL target
	cmd      *exec.Cmd
	stderr   *tailBuffer
	exited   chan struct{} // closed when the child has exited
	waitErr  error         // set before exited is closed
}

// startTarget returns the relay the run drives.
func startTarget(ctx context.Context, cfg *Config) (*target, error) {
	if cfg.URL != "" {
		u, err := url.Parse(strings.TrimSuffix(cfg.URL, "/"))
		if err != nil {
			return nil, err
		}
		return &target{name: "relay", base: u, key: cfg.Key}, nil
	}
	return startChild(ctx, cfg)
}

// startChild starts `realtime serve` on free loopback ports and waits
// until it is ready.
func startChild(ctx context.Context, cfg *Config) (*target, error) {
	key, err := auth.GenerateKey("bench")
	if err != nil {
		return nil, err
	}
	// Readiness is asked on the admin port, which serve listens on after
	// the public one: its own answer there means both ports are its.
	return spawnOnFreePorts(ctx, cfg, 2, func(ports []string) (*target, []string) {
		addr, admin := ports[0], ports[1]
		// The key travels on the command line of a loopback child that
		// lives as long as this run; it is generated for the run and never
		// reused.
		args := []string{"serve", "--listen", addr, "--admin-listen", admin, "--keys", key.String(),
			"--log-format", "json", "--log-level", "warn"}
		args = append(args, cfg.ServerArgs...)
		return &target{name: "relay", base: &url.URL{Scheme: "http", Host: addr}, key: key, adminURL: "http://" + admin}, args
	})
}

// startBaseline starts the physical baseline (ServeBaseline) as a child:
// `realtime bench --baseline-serve addr`.
func startBaseline(ctx context.Context, cfg *Config) (*target, error) {
	key, err := auth.GenerateKey("baseline") // the baseline checks no token
	if err != nil {
		return nil, err
	}
	return spawnOnFreePorts(ctx, cfg, 1, func(ports []string) (*target, []string) {
		addr := ports[0]
		return &target{name: "baseline", base: &url.URL{Scheme: "http", Host: addr}, key: key, adminURL: "http://" + addr},
			[]string{"bench", "--baseline-serve", addr}
	})
}

// spawnAttempts is how many sets of free ports a child is started on
// before its start counts as failed.
const spawnAttempts = 3

// spawnOnFreePorts starts the child that child describes on n free ports.
// A port free a moment ago may be taken by another process before the
// child listens on it (tests running beside each other do); the child then
// exits, and it is started again on new ports.
func spawnOnFreePorts(ctx context.Context, cfg *Config, n int, child func(ports []string) (*target, []string)) (*target, error) {
	var err error
	for range spawnAttempts {
		var ports []string
		if ports, err = freePortsFn(n); err != nil {
			return nil, err
		}
		t, args := child(ports)
		if err = t.spawn(ctx, cfg, args); err == nil {
			return t, nil
		}
		if !errors.Is(err, errExitedEarly) || ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

// errExitedEarly is the error of a child that exited before it was ready.
var errExitedEarly = errors.New("exited before it was ready")

// spawn starts the child binary with args and waits for its /readyz.
func (t *target) spawn(ctx context.Context, cfg *Config, args []string) error {
	bin := cfg.ServerBinary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: finding the realtime binary: %w", err)
		}
	}
	t.stderr = &tailBuffer{max: 4 << 10}
	t.exited = make(chan struct{})
	// Not CommandContext: the child is stopped with SIGTERM in stop, and
	// must outlive a cancelled ctx long enough to be measured and drained.
	t.cmd = exec.Command(bin, args...)
	t.cmd.Stdout = io.Discard
	t.cmd.Stderr = t.stderr
	if cfg.ServerStderr != nil {
		t.cmd.Stderr = io.MultiWriter(t.stderr, cfg.ServerStderr)
	}
	if err := t.cmd.Start(); err != nil {
		return fmt.Errorf("bench: starting %s: %w", bin, err)
	}
	go func() {
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()
	if err := t.waitReady(ctx); err != nil {
		_ = t.stop()
		return err
	}
	return nil
}

// waitReady polls the child's /readyz until the child answers it. An
// answer from another process listening on the child's port (one that took
// it before the child could) does not count: the child then fails to
// listen and exits.
func (t *target) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, defaultReadyTimeout)
	defer cancel()
	admin := strings.TrimPrefix(t.adminURL, "http://")
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.adminURL+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK && proc.ListensOn(t.cmd.Process.Pid, admin) {
				return nil
			}
		}
		select {
		case <-t.exited:
			return fmt.Errorf("bench: the %s %w (%v): %s", t.name, errExitedEarly, t.waitErr, t.stderr.String())
		case <-ctx.Done():
			return fmt.Errorf("bench: the %s was not ready within %s: %s", t.name, defaultReadyTimeout, t.stderr.String())
		case <-tick.C:
		}
	}
}

// stop sends the child SIGTERM and waits for it; a child that does not
// exit within stopTimeout is killed. It does nothing for a URL target.
func (t *target) stop() error {
	if t.cmd == nil {
		return nil
	}
	select {
	case <-t.exited:
		return fmt.Errorf("bench: the %s exited during the run (%v): %s", t.name, t.waitErr, t.stderr.String())
	default:
	}
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-t.exited:
		if t.waitErr != nil {
			return fmt.Errorf("bench: the %s's shutdown failed (%v): %s", t.name, t.waitErr, t.stderr.String())
		}
		return nil
	case <-time.After(stopTimeout):
		_ = t.cmd.Process.Kill()
		<-t.exited
		return fmt.Errorf("bench: the %s did not stop within %s and was killed", t.name, stopTimeout)
	}
}

// freePortsFn is freePorts, replaced by a test that hands out a taken port.
var freePortsFn = freePorts

// freePorts returns n distinct loopback addresses whose ports were free a
// moment ago: all n are held open together, so that the kernel cannot hand
// out one port twice (which it did for two ports asked one after the
// other, about once in 9,000 pairs). Another process may still take one
// before the child listens (see spawnOnFreePorts).
func freePorts(n int) ([]string, error) {
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		addrs[i] = ln.Addr().String()
	}
	return addrs, nil
}

// procStats is what /proc tells about the child.
type procStats struct {
	cpu      time.Duration // user + system
	rssBytes int64
	fds      int // open file descriptors
	fdLimit  int // soft RLIMIT_NOFILE
}

// stats reads the child's /proc entries; ok is false for a URL target.
func (t *target) stats() (procStats, bool) {
	if t.cmd == nil || t.cmd.Process == nil {
		return procStats{}, false
	}
	s, err := readProcStats(t.cmd.Process.Pid)
	return s, err == nil
}

func readProcStats(pid int) (procStats, error) {
	var s procStats
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted after its closing parenthesis. utime and stime are
	// fields 14 and 15, i.e. 12 and 13 after the state (field 3).
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, errors.New("bench: short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, err
	}
	s.cpu = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			s.rssBytes = kb << 10
		}
	}
	if ents, err := os.ReadDir(dir + "/fd"); err == nil {
		s.fds = len(ents)
	}
	if limits, err := os.ReadFile(dir + "/limits"); err == nil {
		for line := range strings.Lines(string(limits)) {
			if v, ok := strings.CutPrefix(line, "Max open files"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					s.fdLimit, _ = strconv.Atoi(f[0])
				}
			}
		}
	}
	return s, nil
}

// selfCPU returns this process's user + system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// raiseFDLimit raises the soft open-file limit to the hard limit and
// returns the limit in force.
func raiseFDLimit() int {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	return int(lim.Cur)
}

// tailBuffer keeps the last max bytes written to it. Safe for concurrent
// use: exec copies the child's stderr from its own goroutine.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte // guarded by mu
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
