package edge_test

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/edge"
	"github.com/realtime-relay/realtime/internal/testutil"
)

// This file holds the hardening tests of the HTTP surface: bad tokens on
// both endpoints, malformed upgrades, slow and oversized requests, the
// per-site publish limit, and what the logs must never contain.

// b64url is the JWS segment encoding.
func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// forgeToken builds a JWS by hand, so that a test controls every byte the
// library would refuse to produce: header and claims are marshalled as
// given, and sign computes the signature of "header.payload".
func forgeToken(t *testing.T, header, claims map[string]any, sign func(input string) []byte) string {
	t.Helper()
	h, err := json.Marshal(header)
	require.NoError(t, err)
	p, err := json.Marshal(claims)
	require.NoError(t, err)
	input := b64url(h) + "." + b64url(p)
	return input + "." + b64url(sign(input))
}

func hs512(secret []byte) func(string) []byte {
	return func(input string) []byte {
		m := hmac.New(sha512.New, secret)
		m.Write([]byte(input))
		return m.Sum(nil)
	}
}

func hs256(secret []byte) func(string) []byte {
	return func(input string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(input))
		return m.Sum(nil)
	}
}

// forgeClaims returns valid claims for role in the default namespace: now,
// valid for an hour. A publish token carries no dash.
func forgeClaims(role auth.Role) map[string]any {
	now := time.Now().Unix()
	c := map[string]any{"sub": "acct-1", "site": testutil.Site, "role": string(role), "iat": now, "exp": now + 3600}
	if role == auth.RoleSubscribe {
		c["dash"] = testutil.Dash
	}
	return c
}

// apiError decodes a JSON error body, requiring its shape.
func apiError(t *testing.T, body string) (code, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	require.NoError(t, json.Unmarshal([]byte(body), &e), "not a JSON error: %q", body)
	require.NotEmpty(t, e.Error.Code, "no error code in %q", body)
	require.NotEmpty(t, e.Error.Message, "no error message in %q", body)
	return e.Error.Code, e.Error.Message
}

// wsHeaders are the headers of a valid WebSocket upgrade.
func wsHeaders() http.Header {
	h := http.Header{}
	h.Set("Connection", "Upgrade")
	h.Set("Upgrade", "websocket")
	h.Set("Sec-WebSocket-Version", "13")
	h.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return h
}

// rawHTTP sends a hand-written request on a fresh TCP connection and
// returns the response with its body read. The relay answers a refused
// upgrade without switching protocols, so this never sees a WebSocket.
func rawHTTP(t *testing.T, r *testutil.Relay, method, target string, header http.Header) (*http.Response, string) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", r.Addr, testutil.Wait)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(testutil.Wait)))
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: " + r.Addr + "\r\n")
	for k, vs := range header {
		for _, v := range vs {
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	_, err = io.WriteString(nc, b.String())
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()
	return resp, string(body)
}

// upgradeWith tries a WebSocket upgrade with token and returns the refused
// response; it fails the test if the relay switched protocols.
func upgradeWith(t *testing.T, r *testutil.Relay, token string) (int, string) {
	t.Helper()
	resp, body := rawHTTP(t, r, http.MethodGet, "/v1/ws?token="+token, wsHeaders())
	require.NotEqual(t, http.StatusSwitchingProtocols, resp.StatusCode, "upgraded with a bad token")
	assert.Empty(t, resp.Header.Get("Upgrade"))
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	return resp.StatusCode, body
}

// TestBadTokensRejected sends every kind of bad token to the upgrade and to
// the publish endpoint: each is refused with 401 and a JSON error, counted
// under its reason, and a subscriber connected all along keeps receiving.
func TestBadTokensRejected(t *testing.T) {
	r := testutil.StartRelay(t)
	secret := r.Key.Secret
	ch := testutil.Channel("bystander")
	bystander := r.Dial(t, r.SubscribeToken(t))
	bystander.Subscribe(1, ch)

	hdr := func() map[string]any { return map[string]any{"alg": "HS512", "typ": "JWT", "kid": r.Key.ID} }
	valid := func(role auth.Role) string { return forgeToken(t, hdr(), forgeClaims(role), hs512(secret)) }
	without := func(claim string) func(auth.Role) string {
		return func(role auth.Role) string {
			c := forgeClaims(role)
			delete(c, claim)
			return forgeToken(t, hdr(), c, hs512(secret))
		}
	}
	with := func(claim string, v any) func(auth.Role) string {
		return func(role auth.Role) string {
			c := forgeClaims(role)
			c[claim] = v
			return forgeToken(t, hdr(), c, hs512(secret))
		}
	}
	header := func(h map[string]any, sign func(string) []byte) func(auth.Role) string {
		return func(role auth.Role) string { return forgeToken(t, h, forgeClaims(role), sign) }
	}
	otherKey, err := auth.GenerateKey(r.Key.ID)
	require.NoError(t, err)
	now := time.Now().Unix()
	cases := []struct {
		name string
		// token builds the bad token for an endpoint that wants role.
		token  func(role auth.Role) string
		reason string
	}{
		{"tampered signature", func(role auth.Role) string {
			tok := []byte(valid(role))
			i := len(tok) - 20 // inside the signature, away from its padding bits
			tok[i] = map[bool]byte{true: 'B', false: 'A'}[tok[i] == 'A']
			return string(tok)
		}, "signature"},
		{"tampered claims", func(role auth.Role) string {
			// Another dashboard's claims under this token's signature.
			tok := valid(role)
			h, _, _ := strings.Cut(tok, ".")
			c := forgeClaims(role)
			c["dash"] = "dash-2"
			p, err := json.Marshal(c)
			require.NoError(t, err)
			return h + "." + b64url(p) + tok[strings.LastIndexByte(tok, '.'):]
		}, "signature"},
		{"signed with another secret", header(hdr(), hs512(otherKey.Secret)), "signature"},
		{"truncated signature", func(role auth.Role) string {
			tok := valid(role)
			return tok[:strings.LastIndexByte(tok, '.')+1+64] // 48 of the 64 MAC bytes
		}, "signature"},
		{"truncated to two segments", func(role auth.Role) string {
			tok := valid(role)
			return tok[:strings.LastIndexByte(tok, '.')]
		}, "malformed"},
		{"two segments", func(role auth.Role) string {
			h, rest, _ := strings.Cut(valid(role), ".")
			p, _, _ := strings.Cut(rest, ".")
			return h + "." + p
		}, "malformed"},
		{"four segments", func(role auth.Role) string { return valid(role) + ".AAAA" }, "malformed"},
		{"one segment", func(auth.Role) string { return "eyJhbGciOiJIUzUxMiJ9" }, "malformed"},
		{"empty", func(auth.Role) string { return "" }, "malformed"},
		{"standard base64 in header", func(role auth.Role) string {
			tok := valid(role)
			return "+/" + tok
		}, "malformed"},
		{"bad base64 in payload", func(role auth.Role) string {
			h, _, _ := strings.Cut(valid(role), ".")
			return h + ".e.AAAA" // one base64 character cannot be decoded
		}, "malformed"},
		{"header not JSON", func(role auth.Role) string {
			tok := valid(role)
			_, rest, _ := strings.Cut(tok, ".")
			return b64url([]byte("{alg:HS512")) + "." + rest
		}, "malformed"},
		{"alg none", func(role auth.Role) string {
			tok := forgeToken(t, map[string]any{"alg": "none", "typ": "JWT"}, forgeClaims(role), func(string) []byte { return nil })
			return tok // "header.payload." with an empty signature
		}, "algorithm"},
		{"alg None mixed case", header(map[string]any{"alg": "nOnE"}, func(string) []byte { return nil }), "algorithm"},
		{"alg HS256", header(map[string]any{"alg": "HS256", "kid": "test"}, hs256(secret)), "algorithm"},
		{"alg RS512", header(map[string]any{"alg": "RS512", "kid": "test"}, hs512(secret)), "algorithm"},
		{"alg hs512 lower case", header(map[string]any{"alg": "hs512", "kid": "test"}, hs512(secret)), "algorithm"},
		{"alg missing", header(map[string]any{"typ": "JWT", "kid": "test"}, hs512(secret)), "algorithm"},
		{"alg not a string", header(map[string]any{"alg": 512, "kid": "test"}, hs512(secret)), "algorithm"},
		{"unknown kid", header(map[string]any{"alg": "HS512", "kid": "retired"}, hs512(secret)), "unknown_key"},
		{"kid not a string", header(map[string]any{"alg": "HS512", "kid": 1}, hs512(secret)), "malformed"},
		{"expired", func(role auth.Role) string {
			c := forgeClaims(role)
			c["iat"], c["exp"] = now-3600, now-1
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "expired"},
		{"expires now", func(role auth.Role) string {
			c := forgeClaims(role)
			c["iat"], c["exp"] = now-3600, now
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "expired"},
		{"not yet valid", func(role auth.Role) string {
			c := forgeClaims(role)
			c["nbf"], c["exp"] = now+600, now+3600
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "not_yet_valid"},
		{"issued in the future", func(role auth.Role) string {
			c := forgeClaims(role)
			c["iat"], c["exp"] = now+600, now+3600
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "not_yet_valid"},
		{"lifetime over 24h", func(role auth.Role) string {
			c := forgeClaims(role)
			c["iat"], c["exp"] = now, now+24*3600+1
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "lifetime"},
		{"exp before iat", func(role auth.Role) string {
			c := forgeClaims(role)
			c["iat"], c["exp"] = now, now-1
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "lifetime"},
		{"missing sub", without("sub"), "claims"},
		{"missing site", without("site"), "claims"},
		{"missing role", without("role"), "claims"},
		{"missing iat", without("iat"), "claims"},
		{"missing exp", without("exp"), "claims"},
		{"empty sub", with("sub", ""), "claims"},
		{"sub not a string", with("sub", 42), "claims"},
		{"site with a space", with("site", "ari:cloud:jira::site/a b"), "claims"},
		{"dash with a slash", with("dash", "dash-1/x"), "claims"},
		{"unknown role", with("role", "admin"), "claims"},
		{"exp not an integer", with("exp", float64(now)+0.5), "claims"},
		{"sub with a control character", with("sub", "acct\n-1"), "claims"},
		{"huge token", func(role auth.Role) string {
			c := forgeClaims(role)
			c["pad"] = strings.Repeat("x", 4096)
			return forgeToken(t, hdr(), c, hs512(secret))
		}, "too_long"},
	}
	denied := func(reason string) float64 {
		return r.Metric(t, `realtime_auth_denied_total{reason="`+reason+`"}`)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Run("upgrade", func(t *testing.T) {
				before := denied(tc.reason)
				status, body := upgradeWith(t, r, tc.token(auth.RoleSubscribe))
				assert.Equal(t, http.StatusUnauthorized, status, body)
				code, msg := apiError(t, body)
				assert.Equal(t, "unauthorized", code)
				assert.Contains(t, msg, tc.reason)
				assert.InDelta(t, before+1, denied(tc.reason), 0)
			})
			t.Run("publish", func(t *testing.T) {
				before := denied(tc.reason)
				token := tc.token(auth.RolePublish)
				status, body := r.Post(t, "/v1/publish", token, `{"channel":"`+ch+`","event":"Tick","data":"forged"}`)
				assert.Equal(t, http.StatusUnauthorized, status, body)
				code, msg := apiError(t, body)
				assert.Equal(t, "unauthorized", code)
				if token != "" { // else no Authorization header at all
					assert.Contains(t, msg, tc.reason)
				}
				assert.InDelta(t, before+1, denied(tc.reason), 0)
			})
		})
	}

	t.Run("missing dash on a subscribe token", func(t *testing.T) {
		before := denied("claims")
		status, body := upgradeWith(t, r, without("dash")(auth.RoleSubscribe))
		assert.Equal(t, http.StatusUnauthorized, status)
		code, _ := apiError(t, body)
		assert.Equal(t, "unauthorized", code)
		assert.InDelta(t, before+1, denied("claims"), 0)
	})
	t.Run("wrong role for the endpoint", func(t *testing.T) {
		before := denied("wrong_role")
		status, body := upgradeWith(t, r, valid(auth.RolePublish))
		assert.Equal(t, http.StatusUnauthorized, status)
		code, _ := apiError(t, body)
		assert.Equal(t, "unauthorized", code)
		status, body = r.Post(t, "/v1/publish", valid(auth.RoleSubscribe), `{"channel":"`+ch+`","event":"Tick","data":"x"}`)
		assert.Equal(t, http.StatusUnauthorized, status)
		code, _ = apiError(t, body)
		assert.Equal(t, "unauthorized", code)
		assert.InDelta(t, before+2, denied("wrong_role"), 0)
	})
	t.Run("no bearer scheme", func(t *testing.T) {
		for _, authz := range []string{"", valid(auth.RolePublish), "Basic " + valid(auth.RolePublish)} {
			req, err := http.NewRequest(http.MethodPost, r.URL("/v1/publish"), strings.NewReader(`{}`))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			code, _ := apiError(t, string(b))
			assert.Equal(t, "unauthorized", code)
		}
	})
	t.Run("token beyond the header limit", func(t *testing.T) {
		huge := strings.Repeat("A", 10<<10) + "." + strings.Repeat("A", 10) + "." + strings.Repeat("A", 10)
		resp, body := rawHTTP(t, r, http.MethodGet, "/v1/ws?token="+huge, wsHeaders())
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
		code, _ := apiError(t, body)
		assert.Equal(t, "too_large", code)
		resp, body = rawHTTP(t, r, http.MethodPost, "/v1/publish", http.Header{"Authorization": {"Bearer " + huge}})
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
		code, _ = apiError(t, body)
		assert.Equal(t, "too_large", code)
	})

	// Nothing above was accepted, and the relay kept serving all along.
	assert.InDelta(t, 1, r.Metric(t, "realtime_connections_accepted_total"), 0)
	assert.InDelta(t, 0, r.Metric(t, `realtime_publishes_total{result="ok"}`), 0)
	requireLive(t, r, r.PublishToken(t), ch, bystander)
	late := r.Dial(t, valid(auth.RoleSubscribe))
	late.Subscribe(1, ch)
	requireLive(t, r, r.PublishToken(t), ch, bystander, late)
}

// TestTokenForAnotherSite uses valid tokens of another site against this
// site's channels: the publish is refused with 403, the subscribe answered
// err forbidden with an audit line, and neither sees or changes the channel.
func TestTokenForAnotherSite(t *testing.T) {
	const otherSite = "ari:cloud:jira::site/other-tenant"
	r := testutil.StartRelay(t)
	ch := testutil.Channel("private")
	owner := r.Dial(t, r.SubscribeToken(t))
	owner.Subscribe(1, ch)

	pub := r.Token(t, auth.Claims{Subject: "intruder", Site: otherSite, Role: auth.RolePublish})
	for _, target := range []string{ch, testutil.Site + "/" + testutil.Dash + "/x", otherSite + "/../" + ch} {
		status, body := r.Post(t, "/v1/publish", pub, `{"channel":`+quoteJSON(target)+`,"event":"Tick","data":"x"}`)
		assert.Contains(t, []int{http.StatusForbidden, http.StatusBadRequest}, status, "publish to %q: %s", target, body)
		code, _ := apiError(t, body)
		assert.Contains(t, []string{"forbidden", "bad_request"}, code)
	}
	status, body := r.Post(t, "/v1/publish", pub, `{"channel":`+quoteJSON(ch)+`,"event":"Tick","data":"x"}`)
	assert.Equal(t, http.StatusForbidden, status)
	code, _ := apiError(t, body)
	assert.Equal(t, "forbidden", code)
	// A batch is authorized item by item.
	status, body = r.Post(t, "/v1/publish/batch", pub, `{"messages":[{"channel":`+quoteJSON(ch)+`,"event":"Tick","data":"x"}]}`)
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"code":"forbidden"`)

	intruder := r.Dial(t, r.Token(t, auth.Claims{Subject: "intruder", Site: otherSite, Dash: testutil.Dash, Role: auth.RoleSubscribe}))
	intruder.Send(`{"op":"sub","id":7,"ch":` + quoteJSON(ch) + `}`)
	f := intruder.NextOp("err")
	assert.Equal(t, "forbidden", f.Code)
	r.WaitMetric(t, "realtime_namespace_denied_total", 1)
	assert.Contains(t, r.Logs(), `"account_id":"intruder"`)

	// The channel saw nothing; its owner gets the next message and only it.
	off := requireLive(t, r, r.PublishToken(t), ch, owner)
	assert.Equal(t, uint64(1), off)
	intruder.NoFrame(50 * time.Millisecond)
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestUpgradeHandshakeChecked sends upgrades that are not valid WebSocket
// handshakes, with a valid token: each is answered with a JSON error and
// never switches protocols.
func TestUpgradeHandshakeChecked(t *testing.T) {
	r := testutil.StartRelay(t)
	token := r.SubscribeToken(t)
	edit := func(f func(h http.Header)) http.Header {
		h := wsHeaders()
		f(h)
		return h
	}
	cases := []struct {
		name   string
		method string
		header http.Header
		status int
		code   string
	}{
		{"missing key", http.MethodGet, edit(func(h http.Header) { h.Del("Sec-WebSocket-Key") }), 400, "bad_request"},
		{"key not base64", http.MethodGet, edit(func(h http.Header) { h.Set("Sec-WebSocket-Key", "not a key!") }), 400, "bad_request"},
		{"key of 15 bytes", http.MethodGet, edit(func(h http.Header) { h.Set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA") }), 400, "bad_request"},
		{"key of 24 characters not base64", http.MethodGet, edit(func(h http.Header) { h.Set("Sec-WebSocket-Key", "!!!!!!!!!!!!!!!!!!!!!!==") }), 400, "bad_request"},
		{"key of 300 bytes", http.MethodGet, edit(func(h http.Header) {
			h.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(make([]byte, 300)))
		}), 400, "bad_request"},
		{"key of 17 bytes", http.MethodGet, edit(func(h http.Header) { h.Set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA=") }), 400, "bad_request"},
		{"missing version", http.MethodGet, edit(func(h http.Header) { h.Del("Sec-WebSocket-Version") }), 400, "bad_request"},
		{"version 8", http.MethodGet, edit(func(h http.Header) { h.Set("Sec-WebSocket-Version", "8") }), 400, "bad_request"},
		{"missing Upgrade", http.MethodGet, edit(func(h http.Header) { h.Del("Upgrade") }), 400, "bad_request"},
		{"Upgrade: h2c", http.MethodGet, edit(func(h http.Header) { h.Set("Upgrade", "h2c") }), 400, "bad_request"},
		{"Connection: keep-alive", http.MethodGet, edit(func(h http.Header) { h.Set("Connection", "keep-alive") }), 400, "bad_request"},
		{"POST", http.MethodPost, wsHeaders(), 405, "method_not_allowed"},
		{"PUT", http.MethodPut, wsHeaders(), 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := rawHTTP(t, r, tc.method, "/v1/ws?token="+token, tc.header)
			assert.Equal(t, tc.status, resp.StatusCode, body)
			assert.Empty(t, resp.Header.Get("Upgrade"))
			assert.Empty(t, resp.Header.Get("Sec-WebSocket-Accept"))
			code, _ := apiError(t, body)
			assert.Equal(t, tc.code, code)
		})
	}
	assert.InDelta(t, len(cases), r.Metric(t, `realtime_connections_rejected_total{reason="bad_request"}`), 0)
	assert.InDelta(t, 0, r.Metric(t, "realtime_connections_accepted_total"), 0)
	assert.InDelta(t, 0, r.Metric(t, "realtime_connections"), 0)
	// The same request with a proper handshake upgrades.
	r.Dial(t, token).Subscribe(1, testutil.Channel("g"))
}

// TestSlowLoris opens connections that send part of a request head and then
// trickle the rest too slowly: the relay closes each within its
// ReadTimeout, however it trickles, and serves a normal client meanwhile.
func TestSlowLoris(t *testing.T) {
	const readTimeout = 300 * time.Millisecond
	// bound is far below the 10s default: passing proves ReadTimeout, and
	// not some other limit, closed the connection.
	const bound = readTimeout + 2*time.Second
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.ReadTimeout = readTimeout })
	token := r.SubscribeToken(t)
	heads := map[string]string{
		"upgrade head":      "GET /v1/ws?token=" + token + " HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n",
		"publish head":      "POST /v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
		"request line only": "GET /healthz HTTP/1.1\r\n",
		"nothing":           "",
	}
	type result struct {
		name    string
		elapsed time.Duration
		err     error
		reply   string
	}
	results := make(chan result, 2*len(heads))
	for name, head := range heads {
		for _, trickle := range []bool{false, true} {
			name := name + map[bool]string{false: ", stalled", true: ", trickled"}[trickle]
			nc, err := net.DialTimeout("tcp", r.Addr, testutil.Wait)
			require.NoError(t, err)
			t.Cleanup(func() { _ = nc.Close() })
			go func() {
				start := time.Now()
				_, _ = io.WriteString(nc, head)
				stop := make(chan struct{})
				if trickle {
					// One header byte every 50ms: each read makes progress, so
					// only a deadline on the whole head can stop it.
					go func() {
						tick := time.NewTicker(50 * time.Millisecond)
						defer tick.Stop()
						for {
							select {
							case <-stop:
								return
							case <-tick.C:
								if _, err := nc.Write([]byte("X")); err != nil {
									return
								}
							}
						}
					}()
				}
				_ = nc.SetReadDeadline(time.Now().Add(testutil.Wait))
				reply, err := io.ReadAll(nc)
				close(stop)
				results <- result{name, time.Since(start), err, string(reply)}
			}()
		}
	}
	// Meanwhile a real client connects, subscribes and receives.
	c := r.Dial(t, token)
	ch := testutil.Channel("g")
	c.Subscribe(1, ch)
	requireLive(t, r, r.PublishToken(t), ch, c)

	for range 2 * len(heads) {
		res := <-results
		t.Run(res.name, func(t *testing.T) {
			var ne net.Error
			if errors.As(res.err, &ne) {
				require.False(t, ne.Timeout(), "the relay never closed the connection")
			}
			assert.Less(t, res.elapsed, bound, "closed after %v", res.elapsed)
			if res.reply != "" {
				// What fasthttp answers a timed-out head: our JSON 408.
				resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(res.reply)), nil)
				require.NoError(t, err, "reply %q", res.reply)
				assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
				b, _ := io.ReadAll(resp.Body)
				apiError(t, string(b))
			}
		})
	}
	assert.InDelta(t, 1, r.Metric(t, "realtime_connections"), 0)
}

// TestOversizedHeaders sends request heads past MaxHeaderBytes to every
// endpoint: 431 with a JSON error, and the relay goes on serving.
func TestOversizedHeaders(t *testing.T) {
	r := testutil.StartRelay(t)
	big := http.Header{"X-Padding": {strings.Repeat("p", 9<<10)}}
	many := http.Header{}
	for i := range 400 {
		many.Set("X-Header-"+u(uint64(i)), "0123456789abcdef")
	}
	for _, target := range []struct{ name, method, path string }{
		{"upgrade", http.MethodGet, "/v1/ws?token=" + r.SubscribeToken(t)},
		{"publish", http.MethodPost, "/v1/publish"},
		{"healthz", http.MethodGet, "/healthz"},
	} {
		for name, h := range map[string]http.Header{"one big header": big, "many headers": many} {
			t.Run(target.name+"/"+name, func(t *testing.T) {
				resp, body := rawHTTP(t, r, target.method, target.path, h)
				assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode, body)
				code, _ := apiError(t, body)
				assert.Equal(t, "too_large", code)
			})
		}
	}
	status, _ := r.Get(t, r.URL("/healthz"))
	assert.Equal(t, http.StatusOK, status)
	assert.InDelta(t, 0, r.Metric(t, "realtime_connections_accepted_total"), 0)
}

// TestPublishContentType refuses a publish whose body is not declared as
// JSON with 415, whatever the body holds.
func TestPublishContentType(t *testing.T) {
	r := testutil.StartRelay(t)
	pub := r.PublishToken(t)
	body := `{"channel":"` + testutil.Channel("g") + `","event":"Tick","data":"x"}`
	for _, ct := range []string{"", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
		"application/jsonp", "application/json-seq", "text/json"} {
		for _, path := range []string{"/v1/publish", "/v1/publish/batch"} {
			status, resp := r.PostType(t, path, ct, pub, body)
			assert.Equal(t, http.StatusUnsupportedMediaType, status, "%s with %q", path, ct)
			code, _ := apiError(t, resp)
			assert.Equal(t, "unsupported_media_type", code)
		}
	}
	for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON"} {
		status, resp := r.PostType(t, "/v1/publish", ct, pub, body)
		assert.Equal(t, http.StatusOK, status, "%q: %s", ct, resp)
	}
	assert.InDelta(t, 3, r.Metric(t, `realtime_publishes_total{result="ok"}`), 0)
}

// TestPublishRateLimitPerSite floods one site past its publish rate: it gets
// 429 while another site publishes undisturbed, and recovers as its bucket
// refills (on the relay's clock, so no test waits for it).
func TestPublishRateLimitPerSite(t *testing.T) {
	const rate = 5 // per second; the burst is twice that
	const otherSite = "ari:cloud:jira::site/quiet-tenant"
	clock := testutil.NewClock()
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Now = clock.Now
		cfg.PublishRatePerSite = rate
	})
	noisy := r.PublishToken(t)
	quiet := r.Token(t, auth.Claims{Subject: "backend-2", Site: otherSite, Role: auth.RolePublish})
	noisyCh, quietCh := testutil.Channel("flood"), otherSite+"/"+testutil.Dash+"/g"
	sub := r.Dial(t, r.Token(t, auth.Claims{Subject: "acct-2", Site: otherSite, Dash: testutil.Dash, Role: auth.RoleSubscribe}))
	sub.Subscribe(1, quietCh)

	publish := func(token, ch string) (int, string) {
		return r.Post(t, "/v1/publish", token, `{"channel":"`+ch+`","event":"Tick","data":"x"}`)
	}
	for i := range 2 * rate {
		status, body := publish(noisy, noisyCh)
		require.Equal(t, http.StatusOK, status, "publish %d within the burst: %s", i, body)
	}
	for range 20 {
		status, body := publish(noisy, noisyCh)
		assert.Equal(t, http.StatusTooManyRequests, status)
		code, _ := apiError(t, body)
		assert.Equal(t, "rate_limited", code)
	}
	// A batch counts each of its messages, and is refused as a whole.
	status, body := r.Post(t, "/v1/publish/batch", noisy, `{"messages":[{"channel":"`+noisyCh+`","event":"Tick","data":"x"}]}`)
	assert.Equal(t, http.StatusTooManyRequests, status, body)
	assert.InDelta(t, 21, r.Metric(t, `realtime_publishes_total{result="rate_limited"}`), 0)

	// The other site has its own bucket and its subscriber gets every message.
	for i := range 2 * rate {
		status, body := publish(quiet, quietCh)
		require.Equal(t, http.StatusOK, status, body)
		f := sub.NextOp("msg")
		assert.Equal(t, uint64(i+1), f.Offset)
	}

	// One second later the noisy site has rate more, and no more.
	clock.Advance(time.Second)
	for range rate {
		status, body := publish(noisy, noisyCh)
		require.Equal(t, http.StatusOK, status, body)
	}
	status, _ = publish(noisy, noisyCh)
	assert.Equal(t, http.StatusTooManyRequests, status)
}

// TestLogsHoldNoSecrets runs a full session, with mistakes, and checks that
// no log line carries a token, a query string or published data, while the
// namespace violation is logged for audit.
func TestLogsHoldNoSecrets(t *testing.T) {
	const secretData = "AES256-ciphertext-7f3a9c-do-not-log"
	r := testutil.StartRelay(t, func(cfg *edge.Config) { cfg.Actors.ExpiringLead = time.Minute })
	sub := r.Token(t, auth.Claims{Subject: "acct-1", Site: testutil.Site, Dash: testutil.Dash, Role: auth.RoleSubscribe,
		IssuedAt: time.Now(), ExpiresAt: time.Now().Add(30 * time.Second)})
	pub := r.PublishToken(t)
	refresh := r.SubscribeToken(t)
	ch := testutil.Channel("g")

	c := r.Dial(t, sub)
	c.NextOp("expiring")
	c.Subscribe(1, ch)
	off := r.Publish(t, pub, ch, "AddAbsence", secretData)
	assert.Equal(t, secretData, c.NextOp("msg").Data)
	_ = r.PublishOne(t, pub, testutil.Publication{Channel: ch, Event: "AddAbsence", Data: secretData + "-2", IdempotencyKey: "key-" + secretData})
	c.NextOp("msg")
	c.Send(`{"op":"sub","id":2,"ch":"ari:cloud:jira::site/other/dash-1/g"}`)
	assert.Equal(t, "forbidden", c.NextOp("err").Code)
	c.Send(`{"op":"refresh","id":3,"token":"` + refresh + `"}`)
	c.NextOp("ack")
	c.Send(`{"op":"refresh","id":4,"token":"` + refresh + `x"}`)
	assert.Equal(t, "forbidden", c.NextOp("err").Code)
	// Refused requests carrying tokens and data.
	status, _ := r.Post(t, "/v1/publish", pub+"x", `{"channel":"`+ch+`","event":"E","data":"`+secretData+`"}`)
	assert.Equal(t, http.StatusUnauthorized, status)
	status, _ = r.Post(t, "/v1/publish", pub, `{"channel":"`+ch+`","event":"E","data":"`+secretData+`"`)
	assert.Equal(t, http.StatusBadRequest, status)
	upgradeWith(t, r, sub+"x")
	rawHTTP(t, r, http.MethodGet, "/v1/ws?token="+sub, http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}})
	// A client that breaks the protocol, then a graceful close.
	bad := r.Dial(t, sub)
	bad.Send(`{"op":"sub","ch":"` + secretData)
	bad.WaitClosed()
	c.Close()
	r.WaitMetric(t, "realtime_connections", 0)

	logs := r.Logs()
	require.Contains(t, logs, "namespace violation", "the audit line is missing")
	for _, secret := range []string{sub, pub, refresh, secretData, "token=", r.Key.String(), b64url(r.Key.Secret)} {
		assert.NotContains(t, logs, secret)
	}
	// Token segments are long enough to be recognisable alone.
	for _, tok := range []string{sub, pub, refresh} {
		for seg := range strings.SplitSeq(tok, ".") {
			assert.NotContains(t, logs, seg)
		}
	}
	assert.Equal(t, uint64(1), off)
}

// TestKeyRotation follows the rotation procedure of README and SECURITY.md:
// while both keys are configured, tokens of either kid work (and a token
// without kid is checked against the first key); once the old key is
// dropped, its tokens are refused as unknown_key.
func TestKeyRotation(t *testing.T) {
	oldKey, err := auth.GenerateKey("old")
	require.NoError(t, err)
	newKey, err := auth.GenerateKey("new")
	require.NoError(t, err)
	withKeys := func(keys ...auth.Key) func(*edge.Config) {
		return func(cfg *edge.Config) {
			ring, err := auth.NewKeyring(keys...)
			require.NoError(t, err)
			cfg.Keys = ring
		}
	}
	mint := func(k auth.Key, role auth.Role) string {
		c := auth.Claims{Subject: "acct-1", Site: testutil.Site, Role: role, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
		if role == auth.RoleSubscribe {
			c.Dash = testutil.Dash
		}
		tok, err := auth.Mint(k, c)
		require.NoError(t, err)
		return tok
	}
	noKid := func(k auth.Key) string {
		return forgeToken(t, map[string]any{"alg": "HS512"}, forgeClaims(auth.RoleSubscribe), hs512(k.Secret))
	}
	ch := testutil.Channel("g")

	// Step 1: the new key is added second; the backend switches to it.
	r := testutil.StartRelay(t, withKeys(oldKey, newKey))
	oldSub := r.Dial(t, mint(oldKey, auth.RoleSubscribe))
	oldSub.Subscribe(1, ch)
	newSub := r.Dial(t, mint(newKey, auth.RoleSubscribe))
	newSub.Subscribe(1, ch)
	r.Dial(t, noKid(oldKey)).Subscribe(1, ch)
	status, body := upgradeWith(t, r, noKid(newKey))
	assert.Equal(t, http.StatusUnauthorized, status, body)
	assert.Equal(t, uint64(1), r.Publish(t, mint(newKey, auth.RolePublish), ch, "Tick", "x"))
	assert.Equal(t, uint64(2), r.Publish(t, mint(oldKey, auth.RolePublish), ch, "Tick", "x"))
	requireMsgs(t, oldSub, ch, 1, 2)
	requireMsgs(t, newSub, ch, 1, 2)

	// Step 2: the old key is dropped; its tokens stop working.
	r = testutil.StartRelay(t, withKeys(newKey))
	status, body = upgradeWith(t, r, mint(oldKey, auth.RoleSubscribe))
	assert.Equal(t, http.StatusUnauthorized, status)
	_, msg := apiError(t, body)
	assert.Contains(t, msg, "unknown_key")
	status, _ = r.Post(t, "/v1/publish", mint(oldKey, auth.RolePublish), `{"channel":"`+ch+`","event":"Tick","data":"x"}`)
	assert.Equal(t, http.StatusUnauthorized, status)
	r.Dial(t, noKid(newKey)).Subscribe(1, ch)
	r.Dial(t, mint(newKey, auth.RoleSubscribe)).Subscribe(1, ch)
	assert.InDelta(t, 2, r.Metric(t, `realtime_auth_denied_total{reason="unknown_key"}`), 0)
}

// TestPublishRateLimitSmallBurst: a rate below one publish per two seconds
// still lets a site publish (the burst is at least one), and a batch larger
// than the burst goes through when the site's bucket is full, leaving the
// site in debt until it has paid the batch back at the rate.
func TestPublishRateLimitSmallBurst(t *testing.T) {
	clock := testutil.NewClock()
	r := testutil.StartRelay(t, func(cfg *edge.Config) {
		cfg.Now = clock.Now
		cfg.PublishRatePerSite = 0.4 // one publish per 2.5 s
	})
	pub, ch := r.PublishToken(t), testutil.Channel("slow")
	publish := func() int {
		status, _ := r.Post(t, "/v1/publish", pub, `{"channel":"`+ch+`","event":"Tick","data":"x"}`)
		return status
	}
	require.Equal(t, http.StatusOK, publish(), "an idle site's first publish")
	assert.Equal(t, http.StatusTooManyRequests, publish())
	clock.Advance(2500 * time.Millisecond)
	require.Equal(t, http.StatusOK, publish(), "one more after 1/rate")

	item := `{"channel":"` + ch + `","event":"Tick","data":"x"}`
	batch := `{"messages":[` + strings.TrimSuffix(strings.Repeat(item+",", 3), ",") + `]}`
	status, body := r.Post(t, "/v1/publish/batch", pub, batch)
	assert.Equal(t, http.StatusTooManyRequests, status, "the bucket is not full: %s", body)
	clock.Advance(time.Minute) // full again
	status, body = r.Post(t, "/v1/publish/batch", pub, batch)
	require.Equal(t, http.StatusOK, status, "a batch of 3 against a burst of 1, bucket full: %s", body)
	clock.Advance(7 * time.Second) // the debt of 2 and one token take 7.5 s
	assert.Equal(t, http.StatusTooManyRequests, publish(), "still paying the batch back")
	clock.Advance(time.Second)
	assert.Equal(t, http.StatusOK, publish())
}
