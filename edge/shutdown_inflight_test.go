package edge_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// postResult is the outcome of one HTTP request made off the test goroutine.
type postResult struct {
	status int
	body   string
	err    error // a transport error: no response at all
}

// post sends body to url with a publish token, without touching a
// testing.T, so that other goroutines may call it.
func post(url, token, body string) postResult {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return postResult{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: testutil.Wait}).Do(req)
	if err != nil {
		return postResult{err: err}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = io.Copy(&b, resp.Body)
	return postResult{status: resp.StatusCode, body: b.String(), err: err}
}

// TestShutdownAnswersInflightPublishes holds publishes inside their channel
// actors (single and batch) while Server.Shutdown runs: the drain goes on
// around them (clients get 1012, new publishes 503), Shutdown waits for
// them, and once released every one is answered 200 on its connection.
func TestShutdownAnswersInflightPublishes(t *testing.T) {
	const singles = 8
	held := func(i int) string { return testutil.Channel("held-" + strconv.Itoa(i)) }
	batched := []string{held(singles), held(singles + 1)}
	isHeld := make(map[string]bool)
	var all []string
	for i := range singles + len(batched) {
		isHeld[held(i)] = true
		all = append(all, held(i))
	}
	entered := make(chan string, len(isHeld))
	release := make(chan struct{})
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		// Longer than the test waits: what answers the publishes is their
		// channel, never the timeout.
		cfg.Actors.PublishTimeout = 3 * testutil.Wait
		cfg.Actors.BeforeDeliverForTest = func(channel string, offset uint64, i int) {
			if isHeld[channel] && offset == 1 && i == 0 {
				entered <- channel
				<-release
			}
		}
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // a failing test must not leave actors blocked
	pub := r.PublishToken(t)
	// The hook runs only for a channel with a subscriber.
	c := r.Dial(t, r.SubscribeToken(t))
	for i, ch := range all {
		c.Subscribe(uint64(i+1), ch)
	}

	results := make([]postResult, singles+1)
	var wg sync.WaitGroup
	for i := range singles {
		body := marshal(t, testutil.Publication{Channel: held(i), Event: "Held", Data: "x"})
		wg.Go(func() { results[i] = post(r.URL("/v1/publish"), pub, body) })
	}
	batch := marshal(t, map[string]any{"messages": []testutil.Publication{
		{Channel: batched[0], Event: "Held", Data: "x"}, {Channel: batched[1], Event: "Held", Data: "y"},
	}})
	wg.Go(func() { results[singles] = post(r.URL("/v1/publish/batch"), pub, batch) })
	for range all {
		select {
		case <-entered:
		case <-time.After(testutil.Wait):
			t.Fatal("the publishes did not reach their channels")
		}
	}

	// Every publish is now inside its handler, waiting on its channel.
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Wait)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Server.Shutdown(ctx, 0) }()
	require.Eventually(t, r.Server.Draining, testutil.Wait, time.Millisecond)
	assert.Equal(t, uint16(actors.CloseRestarting), c.WaitClosed())
	late := post(r.URL("/v1/publish"), pub, marshal(t, testutil.Publication{Channel: testutil.Channel("late"), Event: "E", Data: "x"}))
	if late.err == nil { // the listener may be closed already
		assert.Equal(t, http.StatusServiceUnavailable, late.status, late.body)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with publishes in flight", err)
	default:
	}

	releaseOnce()
	wg.Wait()
	for i, res := range results {
		require.NoError(t, res.err, "publish %d lost its connection", i)
		require.Equal(t, http.StatusOK, res.status, "publish %d: %s", i, res.body)
		if i < singles {
			assert.Equal(t, uint64(1), decodeResult(t, res.body).Offset, "publish %d", i)
			continue
		}
		assert.Equal(t, 2, strings.Count(res.body, `"offset":1}`), "batch: %s", res.body)
		assert.NotContains(t, res.body, `"error"`)
	}
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(testutil.Wait):
		t.Fatal("Shutdown did not return once the publishes were answered")
	}
}
