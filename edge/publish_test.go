package edge_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// apiResult is one publish answer, or one item of a batch answer.
type apiResult struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeResult(t *testing.T, body string) apiResult {
	t.Helper()
	var res apiResult
	require.NoError(t, json.Unmarshal([]byte(body), &res), body)
	return res
}

func marshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

func TestIdempotentPublish(t *testing.T) {
	r := testutil.StartRelay(t)
	pub := r.PublishToken(t)
	ch, other := testutil.Channel("g"), testutil.Channel("other")
	c := r.Dial(t, r.SubscribeToken(t))
	c.Subscribe(1, ch)

	p := testutil.Publication{Channel: ch, Event: "AddAbsence", Data: "once", IdempotencyKey: "req-42"}
	first := r.PublishOne(t, pub, p)
	again := r.PublishOne(t, pub, p)
	assert.Equal(t, first, again)
	// The key belongs to its channel.
	elsewhere := r.PublishOne(t, pub, testutil.Publication{Channel: other, Event: "AddAbsence", Data: "x", IdempotencyKey: "req-42"})
	assert.Equal(t, uint64(1), elsewhere.Offset)

	f := c.NextOp("msg")
	assert.Equal(t, first.Offset, f.Offset)
	assert.Equal(t, "once", f.Data)
	// The retry delivered nothing: the next frame is the next message.
	next := requireLive(t, r, pub, ch, c)
	assert.Equal(t, first.Offset+1, next)
	assert.InDelta(t, 1, r.Metric(t, `realtime_publishes_total{result="duplicate"}`), 0)
	assert.InDelta(t, 3, r.Metric(t, `realtime_publishes_total{result="ok"}`), 0)
}

func TestBatchPublish(t *testing.T) {
	r := testutil.StartRelay(t)
	pub := r.PublishToken(t)
	ch := testutil.Channel("g")
	c := r.Dial(t, r.SubscribeToken(t))
	c.Subscribe(1, ch)

	msgs := []any{
		testutil.Publication{Channel: ch, Event: "First", Data: "1"},
		testutil.Publication{Channel: ch, Event: "bad event!", Data: "x"},
		testutil.Publication{Channel: "ari:cloud:jira::site/other/" + testutil.Dash + "/g", Event: "Other", Data: "x"},
		testutil.Publication{Channel: ch, Event: "Second", Data: "2"},
		testutil.Publication{Channel: ch, Event: "Empty", Data: ""},
		"not an object",
		testutil.Publication{Channel: testutil.Channel("g2"), Event: "Third", Data: "3"},
		testutil.Publication{Channel: ch, Event: "Fourth", Data: "4"},
	}
	status, body := r.Post(t, "/v1/publish/batch", pub, marshal(t, map[string]any{"messages": msgs}))
	require.Equal(t, http.StatusOK, status, body)
	var res struct{ Results []apiResult }
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	require.Len(t, res.Results, len(msgs))

	wantErr := map[int]string{1: "bad_request", 2: "forbidden", 4: "bad_request", 5: "bad_request"}
	wantOffset := map[int]uint64{0: 1, 3: 2, 6: 1, 7: 3}
	for i, item := range res.Results {
		if code, ok := wantErr[i]; ok {
			if assert.NotNil(t, item.Error, "item %d", i) {
				assert.Equal(t, code, item.Error.Code, "item %d", i)
				assert.NotEmpty(t, item.Error.Message)
			}
			continue
		}
		assert.Nil(t, item.Error, "item %d", i)
		assert.Equal(t, wantOffset[i], item.Offset, "item %d", i)
		assert.NotEmpty(t, item.Epoch)
	}
	for _, want := range []struct {
		offset      uint64
		event, data string
	}{{1, "First", "1"}, {2, "Second", "2"}, {3, "Fourth", "4"}} {
		f := c.NextOp("msg")
		assert.Equal(t, want.offset, f.Offset)
		assert.Equal(t, want.event, f.Event)
		assert.Equal(t, want.data, f.Data)
	}
	requireLive(t, r, pub, ch, c)
}

func TestBatchRequestErrors(t *testing.T) {
	r := testutil.StartRelay(t)
	pub := r.PublishToken(t)
	batch := func(n int) string {
		msgs := make([]testutil.Publication, n)
		for i := range msgs {
			msgs[i] = testutil.Publication{Channel: testutil.Channel("g"), Event: "E", Data: "x"}
		}
		return marshal(t, map[string]any{"messages": msgs})
	}
	cases := []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"101 messages", batch(101), http.StatusRequestEntityTooLarge, "too_large"},
		{"a single publish", marshal(t, testutil.Publication{Channel: testutil.Channel("g"), Event: "E", Data: "x"}), http.StatusBadRequest, "bad_request"},
		{"an array", `[` + marshal(t, testutil.Publication{Channel: testutil.Channel("g"), Event: "E", Data: "x"}) + `]`, http.StatusBadRequest, "bad_request"},
		{"messages not an array", `{"messages":{}}`, http.StatusBadRequest, "bad_request"},
		{"no messages", `{"messages":[]}`, http.StatusBadRequest, "bad_request"},
		{"bad JSON", `{"messages":[`, http.StatusBadRequest, "bad_request"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := r.Post(t, "/v1/publish/batch", pub, tc.body)
			assert.Equal(t, tc.status, status, body)
			res := decodeResult(t, body)
			if assert.NotNil(t, res.Error) {
				assert.Equal(t, tc.code, res.Error.Code)
			}
		})
	}
	status, body := r.Post(t, "/v1/publish/batch", pub, batch(100))
	assert.Equal(t, http.StatusOK, status, body)
}

func TestPublishErrors(t *testing.T) {
	const maxData = 64 << 10 // the default
	r := testutil.StartRelay(t)
	pub := r.PublishToken(t)
	ch := testutil.Channel("g")
	dashPub := r.Token(t, auth.Claims{Subject: "backend", Site: testutil.Site, Dash: "dash-2", Role: auth.RolePublish})
	expired := r.Token(t, auth.Claims{Subject: "backend", Site: testutil.Site, Role: auth.RolePublish,
		IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})
	body := func(channel, event, data string) string {
		return marshal(t, testutil.Publication{Channel: channel, Event: event, Data: data})
	}
	cases := []struct {
		name        string
		contentType string // empty means application/json
		token, body string
		status      int
		code        string
	}{
		{"no token", "", "", body(ch, "E", "x"), http.StatusUnauthorized, "unauthorized"},
		{"invalid token", "", "not.a.token", body(ch, "E", "x"), http.StatusUnauthorized, "unauthorized"},
		{"expired token", "", expired, body(ch, "E", "x"), http.StatusUnauthorized, "unauthorized"},
		{"subscribe token", "", r.SubscribeToken(t), body(ch, "E", "x"), http.StatusUnauthorized, "unauthorized"},
		{"other site", "", pub, body("ari:cloud:jira::site/other/"+testutil.Dash+"/g", "E", "x"), http.StatusForbidden, "forbidden"},
		{"other dash of a dash token", "", dashPub, body(ch, "E", "x"), http.StatusForbidden, "forbidden"},
		{"bad JSON", "", pub, `{"channel":`, http.StatusBadRequest, "bad_request"},
		{"not an object", "", pub, `["x"]`, http.StatusBadRequest, "bad_request"},
		{"data not a string", "", pub, `{"channel":"` + ch + `","event":"E","data":{}}`, http.StatusBadRequest, "bad_request"},
		{"bad event", "", pub, body(ch, "Add Absence", "x"), http.StatusBadRequest, "bad_request"},
		{"event too long", "", pub, body(ch, strings.Repeat("e", 65), "x"), http.StatusBadRequest, "bad_request"},
		{"no event", "", pub, body(ch, "", "x"), http.StatusBadRequest, "bad_request"},
		{"empty data", "", pub, body(ch, "E", ""), http.StatusBadRequest, "bad_request"},
		{"no channel", "", pub, body("", "E", "x"), http.StatusBadRequest, "bad_request"},
		{"bad channel", "", pub, body(testutil.Site+"/"+testutil.Dash+"/bad gadget", "E", "x"), http.StatusBadRequest, "bad_request"},
		{"data over the limit", "", pub, body(ch, "E", strings.Repeat("d", maxData+1)), http.StatusRequestEntityTooLarge, "too_large"},
		{"wrong content type", "text/plain", pub, body(ch, "E", "x"), http.StatusUnsupportedMediaType, "unsupported_media_type"},
		{"form content type", "application/x-www-form-urlencoded", pub, body(ch, "E", "x"), http.StatusUnsupportedMediaType, "unsupported_media_type"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			status, resp := r.PostType(t, "/v1/publish", ct, tc.token, tc.body)
			assert.Equal(t, tc.status, status, resp)
			res := decodeResult(t, resp)
			if assert.NotNil(t, res.Error, resp) {
				assert.Equal(t, tc.code, res.Error.Code)
				assert.NotEmpty(t, res.Error.Message)
			}
		})
	}

	// Nothing above reached the channel; data of exactly the limit does,
	// and arrives unaltered.
	c := r.Dial(t, r.SubscribeToken(t))
	c.Subscribe(1, ch)
	data := strings.Repeat("\u00e9", maxData/2) // 2 bytes each in UTF-8
	require.Len(t, data, maxData)
	res := r.PublishOne(t, pub, testutil.Publication{Channel: ch, Event: "Big", Data: data})
	assert.Equal(t, uint64(1), res.Offset)
	f := c.NextOp("msg")
	assert.Equal(t, data, f.Data)
	status, _ := r.PostType(t, "/v1/publish", "application/json; charset=utf-8", pub, body(ch, "E", "x"))
	assert.Equal(t, http.StatusOK, status)
	assert.InDelta(t, 4, r.Metric(t, `realtime_publishes_total{result="unauthorized"}`), 0)
	assert.InDelta(t, 2, r.Metric(t, `realtime_publishes_total{result="forbidden"}`), 0)
	assert.InDelta(t, 1, r.Metric(t, `realtime_publishes_total{result="too_large"}`), 0)
}
