package edge

import (
	"github.com/valyala/fasthttp"

	"github.com/realtime-relay/realtime/internal/protocol"
)

// errorCode is what an HTTP client sees in {"error":{"code":...}}; the values
// are part of the API.
type errorCode string

const (
	codeBadRequest       errorCode = "bad_request"
	codeUnauthorized     errorCode = "unauthorized"
	codeForbidden        errorCode = "forbidden"
	codeNotFound         errorCode = "not_found"
	codeMethodNotAllowed errorCode = "method_not_allowed"
	codeUnsupportedMedia errorCode = "unsupported_media_type"
	codeTooLarge         errorCode = "too_large"
	codeRateLimited      errorCode = "rate_limited"
	codeUnavailable      errorCode = "unavailable"
)

// apiError is a client-visible failure of one request or one batch item.
type apiError struct {
	status int
	code   errorCode
	msg    string
	// result is the realtime_publishes_total label it counts as.
	result string
}

func appendError(dst []byte, code errorCode, msg string) []byte {
	dst = append(dst, `{"code":`...)
	dst = protocol.AppendString(dst, string(code))
	dst = append(dst, `,"message":`...)
	dst = protocol.AppendString(dst, msg)
	return append(dst, '}')
}

func writeError(ctx *fasthttp.RequestCtx, status int, code errorCode, msg string) {
	writeJSON(ctx, status, errorBody(code, msg))
}

// errorBody is an HTTP error response's body: {"error":{"code","message"}}.
func errorBody(code errorCode, msg string) []byte {
	body := append([]byte(`{"error":`), appendError(nil, code, msg)...)
	return append(body, '}')
}

func writeJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(body)
}
