package edge

import (
	"bytes"
	"errors"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/realtime-relay/realtime/actors"
	"github.com/realtime-relay/realtime/auth"
	"github.com/realtime-relay/realtime/internal/protocol"
	"github.com/realtime-relay/realtime/internal/telemetry"
)

// refuse answers a publish request with e, counting it for n messages.
func (s *Server) refuse(ctx *fasthttp.RequestCtx, e *apiError, n int) {
	for range n {
		s.metrics.Published(e.result)
	}
	writeError(ctx, e.status, e.code, e.msg)
}

// handlePublish serves POST /v1/publish and /v1/publish/batch.
func (s *Server) handlePublish(ctx *fasthttp.RequestCtx, batch bool) {
	start := time.Now()
	defer func() { s.metrics.PublishDuration.UpdateDuration(start) }()
	claims, e := s.checkPublishRequest(ctx, batch)
	if e != nil {
		s.refuse(ctx, e, 1)
		return
	}
	if !batch {
		s.publishOne(ctx, claims, start)
		return
	}
	s.publishBatch(ctx, claims, start)
}

// checkPublishRequest checks what is common to a single and a batch publish.
func (s *Server) checkPublishRequest(ctx *fasthttp.RequestCtx, batch bool) (auth.Claims, *apiError) {
	switch {
	case !ctx.IsPost():
		return auth.Claims{}, &apiError{fasthttp.StatusMethodNotAllowed, codeMethodNotAllowed, "publish must be a POST", telemetry.PublishBadRequest}
	case s.draining.Load():
		return auth.Claims{}, &apiError{fasthttp.StatusServiceUnavailable, codeUnavailable, "server is draining", telemetry.PublishUnavailable}
	}
	token, ok := bytes.CutPrefix(ctx.Request.Header.Peek("Authorization"), []byte("Bearer "))
	if !ok {
		s.metrics.AuthDenied("malformed")
		return auth.Claims{}, &apiError{fasthttp.StatusUnauthorized, codeUnauthorized, "missing bearer token", telemetry.PublishUnauthorized}
	}
	claims, err := s.verifier.Verify(string(token), auth.RolePublish, s.cfg.Now())
	if err != nil {
		s.metrics.AuthDenied(auth.DenyReason(err))
		return auth.Claims{}, &apiError{fasthttp.StatusUnauthorized, codeUnauthorized, "invalid token: " + auth.DenyReason(err), telemetry.PublishUnauthorized}
	}
	if ct := ctx.Request.Header.ContentType(); !isJSON(ct) {
		return auth.Claims{}, &apiError{fasthttp.StatusUnsupportedMediaType, codeUnsupportedMedia, "Content-Type must be application/json", telemetry.PublishBadRequest}
	}
	limit := s.cfg.maxPublishBody()
	if batch {
		limit = s.cfg.maxBatchBody()
	}
	if len(ctx.PostBody()) > limit {
		return auth.Claims{}, &apiError{fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "body exceeds " + strconv.Itoa(limit) + " bytes", telemetry.PublishTooLarge}
	}
	return claims, nil
}

func isJSON(ct []byte) bool {
	mediaType, _, _ := bytes.Cut(ct, []byte{';'})
	return bytes.EqualFold(bytes.TrimSpace(mediaType), []byte("application/json"))
}

func (s *Server) publishOne(ctx *fasthttp.RequestCtx, claims auth.Claims, start time.Time) {
	p, e := s.decodePublication(claims, ctx.PostBody(), protocol.DecodePublish)
	if e == nil {
		e = s.rateLimit(claims.Site, 1)
	}
	if e != nil {
		s.refuse(ctx, e, 1)
		return
	}
	res, err := s.hub.Publish(publication(p, start))
	if e := s.published(err, res); e != nil {
		writeError(ctx, e.status, e.code, e.msg)
		return
	}
	writeJSON(ctx, fasthttp.StatusOK, appendResult(nil, res))
}

// batchItem is one message of a batch: its result or its error.
type batchItem struct {
	res actors.PublishResult
	err *apiError
}

func (s *Server) publishBatch(ctx *fasthttp.RequestCtx, claims auth.Claims, start time.Time) {
	raw, err := protocol.DecodeBatch(ctx.PostBody(), s.cfg.MaxBatch)
	if err != nil {
		status, code, result := fasthttp.StatusBadRequest, codeBadRequest, telemetry.PublishBadRequest
		if errors.Is(err, protocol.ErrBatchTooLarge) {
			status, code, result = fasthttp.StatusRequestEntityTooLarge, codeTooLarge, telemetry.PublishTooLarge
		}
		s.metrics.Published(result)
		writeError(ctx, status, code, err.Error())
		return
	}
	// Validate every item first; only the valid ones are published, and the
	// answer keeps the request's order.
	items := make([]batchItem, len(raw))
	pubs := make([]actors.Publication, 0, len(raw))
	at := make([]int, 0, len(raw)) // at[j] is the item index of pubs[j]
	for i, r := range raw {
		p, e := s.decodePublication(claims, r, protocol.DecodeBatchItem)
		if e != nil {
			s.metrics.Published(e.result)
			items[i].err = e
			continue
		}
		pubs = append(pubs, publication(p, start))
		at = append(at, i)
	}
	if e := s.rateLimit(claims.Site, len(pubs)); e != nil {
		s.refuse(ctx, e, len(pubs))
		return
	}
	results, errs := s.hub.PublishBatch(pubs)
	for j, i := range at {
		items[i] = batchItem{res: results[j], err: s.published(errs[j], results[j])}
	}
	body := make([]byte, 0, len(`{"results":[]}`)+len(items)*resultLen)
	body = append(body, `{"results":[`...)
	for i, it := range items {
		if i > 0 {
			body = append(body, ',')
		}
		if it.err != nil {
			body = append(body, `{"error":`...)
			body = append(appendError(body, it.err.code, it.err.msg), '}')
			continue
		}
		body = appendResult(body, it.res)
	}
	writeJSON(ctx, fasthttp.StatusOK, append(body, "]}"...))
}

// decodePublication decodes, validates and authorizes one message, for a
// single publish and for each item of a batch alike.
func (s *Server) decodePublication(claims auth.Claims, body []byte, decode func([]byte) (protocol.Publish, error)) (protocol.Publish, *apiError) {
	p, err := decode(body)
	if err != nil {
		return p, &apiError{fasthttp.StatusBadRequest, codeBadRequest, err.Error(), telemetry.PublishBadRequest}
	}
	return p, s.checkPublication(claims, p)
}

// checkPublication validates and authorizes one message.
func (s *Server) checkPublication(claims auth.Claims, p protocol.Publish) *apiError {
	bad := func(msg string) *apiError {
		return &apiError{fasthttp.StatusBadRequest, codeBadRequest, msg, telemetry.PublishBadRequest}
	}
	switch {
	case p.Channel == "":
		return bad("channel is required")
	case !protocol.ValidEvent(p.Event):
		return bad("event must match [A-Za-z0-9_.:-]{1,64}")
	case p.Data == "":
		return bad("data is required")
	case len(p.IdempotencyKey) > maxIdempotencyKeyLen:
		return bad("idempotency_key exceeds " + strconv.Itoa(maxIdempotencyKeyLen) + " bytes")
	case len(p.Data) > s.cfg.MaxDataBytes:
		return &apiError{fasthttp.StatusRequestEntityTooLarge, codeTooLarge, "data exceeds " + strconv.Itoa(s.cfg.MaxDataBytes) + " bytes", telemetry.PublishTooLarge}
	}
	if err := claims.CheckPublish(p.Channel); err != nil {
		if errors.Is(err, auth.ErrForbidden) {
			return &apiError{fasthttp.StatusForbidden, codeForbidden, "channel is outside the token's site", telemetry.PublishForbidden}
		}
		return bad("invalid channel name")
	}
	return nil
}

func (s *Server) rateLimit(site string, n int) *apiError {
	if s.limiter == nil || n == 0 || s.limiter.allow(site, n, s.cfg.Now()) {
		return nil
	}
	return &apiError{fasthttp.StatusTooManyRequests, codeRateLimited, "publish rate limit for this site exceeded", telemetry.PublishRateLimited}
}

// published counts the outcome of a publish that reached its channel.
func (s *Server) published(err error, res actors.PublishResult) *apiError {
	switch {
	case err != nil:
		s.metrics.Published(telemetry.PublishUnavailable)
		return &apiError{fasthttp.StatusServiceUnavailable, codeUnavailable, "channel unavailable, retry with the same idempotency_key", telemetry.PublishUnavailable}
	case res.Duplicate:
		s.metrics.Published(telemetry.PublishDuplicate)
	default:
		s.metrics.Published(telemetry.PublishOK)
	}
	return nil
}

func publication(p protocol.Publish, at time.Time) actors.Publication {
	return actors.Publication{Channel: p.Channel, Event: p.Event, Data: p.Data, IdempotencyKey: p.IdempotencyKey, ReceivedAt: at}
}

// resultLen is about the length of one appended result, to size a batch's
// answer at once: {"epoch":"<12 hex>","offset":<up to 10 digits>}.
const resultLen = 48

func appendResult(dst []byte, r actors.PublishResult) []byte {
	dst = append(dst, `{"epoch":`...)
	dst = protocol.AppendString(dst, r.Epoch)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, r.Offset, 10)
	return append(dst, '}')
}
