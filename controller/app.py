"""The aiohttp application: HTTP only. Every decision about a delivery is in pipeline.py.

A webhook request goes: `expect_continue` (when the sender asks for `100 Continue`) or `deliver`
runs `Pipeline.admit` on the headers, so a refused delivery is answered before its body is read;
then the body is read in chunks into a `Body` under the size cap and the read timeout, and
`Pipeline.complete` answers. Anything aiohttp itself refuses (malformed request line, oversized
header, bad chunking, unsupported Content-Encoding, an unknown `Expect`) gets the same JSON error
body as every other answer (`JsonErrorRequestHandler`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import ContentEncodingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from controller.body import Body, BodyEvicted, BudgetExhausted
from controller.pipeline import Admission, Answer, Pipeline, Receiver, Refusal, busy, encode_json
from controller.providers.base import WebhookRequest

log = logging.getLogger("fleet_webhook.receiver")
READ_CHUNK = 64 * 1024

RECEIVER = web.AppKey("receiver", Receiver)
# As a header rather than `content_type=`, which aiohttp would parse and rebuild on every answer.
JSON_HEADERS: dict[str, str] = {hdrs.CONTENT_TYPE: "application/json"}
ADMISSION_KEY = web.RequestKey("admission", Admission)


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None, encoded: bytes | None = None
) -> web.Response:
    """A JSON response with a trailing newline (friendlier for curl); `encoded`: `body` already encoded."""
    return web.Response(
        status=status,
        body=(encode_json(body) if encoded is None else encoded) + b"\n",
        headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
    )


def _head(request: web.Request) -> WebhookRequest:
    """The request's head for the pipeline; aiohttp's header map is already case-insensitive and read-only."""
    return WebhookRequest(method=request.method, headers=request.headers, body=b"", query=request.query)


# The last step of a delivery once its body has arrived: `Pipeline.complete`, or at a relay edge
# `relay_publish.Publisher.complete` (store it for the cluster instead of writing GitRepos here).
Completion = Callable[[Admission, Body], Awaitable[Answer]]


class WebhookHandler:
    """HTTP in front of the pipeline: admission before the body, a capped read, the answer."""

    def __init__(self, receiver: Receiver, complete: Completion | None = None) -> None:
        self.r = receiver
        self.pipeline = Pipeline(receiver)
        self.complete: Completion = complete or self.pipeline.complete

    async def expect_continue(self, request: web.Request) -> web.StreamResponse | None:
        """`Expect: 100-continue`: admit on the headers first, so a refusal (413, 401, ...) comes instead."""
        expect = request.headers.get(hdrs.EXPECT, "")
        if expect.lower() != "100-continue":
            return json_response(417, {"error": "only 'Expect: 100-continue' is supported"}, {"Connection": "close"})
        try:
            request[ADMISSION_KEY] = await self.pipeline.admit(request.path, _head(request), request.content_length)
        except Refusal as refusal:  # the body was not sent yet: the connection cannot be reused
            return self._respond(refusal.answer(), request, time.monotonic(), {"Connection": "close"})
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        self.r.in_flight += 1
        try:
            try:
                answer = await self._deliver(request)
            except Refusal as refusal:
                answer = refusal.answer()
            # A body left unread (refused at admission) would have to be drained to reuse the connection.
            unread = {} if request.content.at_eof() else {"Connection": "close"}
            return self._respond(answer, request, started, unread)
        finally:
            self.r.in_flight -= 1

    async def _deliver(self, request: web.Request) -> Answer:
        admission = request.get(ADMISSION_KEY)
        if admission is None:
            admission = await self.pipeline.admit(request.path, _head(request), request.content_length)
        content = request.content
        whole = content.read_nowait() if content.is_eof() else None  # the body came with the head
        if whole is not None:
            await self.pipeline.verify_arrived(admission, whole)  # a forged one is refused here, unbuffered
        evicted = BodyEvicted("another delivery needed the room this unverified body held; retry")
        body = self.pipeline.open_body(admission, request.remote or "", lambda: content.set_exception(evicted))
        try:
            await self._read_body(request, admission, body, whole)
            return await self.complete(admission, body)
        finally:
            body.close()

    async def _read_body(self, request: web.Request, admission: Admission, body: Body, whole: bytes | None) -> None:
        """Read the body into `body` under the cap and the read timeout, never past the cap.

        `whole`: the body, when it came with the head (no waiting, so no timer)."""
        content = request.content
        try:
            if whole is not None:
                await self._take(whole, admission, body)
            else:
                async with asyncio.timeout(admission.config.limits.read_timeout_seconds):
                    while chunk := await content.read(READ_CHUNK):
                        await self._take(chunk, admission, body)
            body.arrived()
        except TimeoutError:
            late = Refusal(408, "body not received in time", "read_timeout", {"Connection": "close"})
            raise admission.fail(late) from None
        except BudgetExhausted as exc:
            refusal = busy(str(exc), "body_evicted" if isinstance(exc, BodyEvicted) else "body_budget", 2)
            refusal.headers["Connection"] = "close"
            raise admission.fail(refusal) from None
        except (ConnectionError, web.HTTPException, web.RequestPayloadError) as exc:  # bad chunking/encoding
            raise admission.fail(Refusal(400, f"body could not be read: {type(exc).__name__}", "bad_body")) from None

    async def _take(self, chunk: bytes, admission: Admission, body: Body) -> None:
        """One more piece of the body, refused (the connection closed) once it would pass the cap."""
        if body.size + len(chunk) > admission.max_bytes:
            refusal = await self.pipeline.over_limit(admission)
            refusal.headers["Connection"] = "close"
            raise refusal
        body.write(chunk)

    def _respond(
        self, answer: Answer, request: web.Request, started: float, extra: Mapping[str, str] | None = None
    ) -> web.Response:
        route = self.r.holder.current.route_for(request.path)
        self.pipeline.record(answer, route.path if route else "none", started)
        return json_response(answer.status, answer.body, {**answer.headers, **(extra or {})}, answer.encoded)


# ------------------------------------------------------------------------------------------------
# Probes


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return json_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: config loaded, the GitRepo index synced, every background task alive, not shutting down."""
    r = request.app[RECEIVER]
    status = r.holder.status
    body: dict[str, Any] = {
        "indexSynced": r.index.synced,
        "gitrepos": len(r.index),
        "config": r.holder.current.source,
        "configLoadedAt": status.loaded_at,
    }
    if status.last_error:
        body["configError"] = status.last_error
    if r.index.watch_error:
        body["watchError"] = r.index.watch_error  # the index may be stale; still ready, as Fleet would poll
    if r.background.failures:
        body["backgroundFailures"] = r.background.failures
    ready = r.index.synced and r.accepting and not r.background.failures
    body["status"] = "ready" if ready else "not ready"
    return json_response(200 if ready else 503, body)


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus text format.

    The index is read here, on the loop thread that owns it; the text is rendered in a thread: with a
    series per GitRepo that got a webhook, 10,000 GitRepos take about 0.1 s to render.
    """
    r = request.app[RECEIVER]
    r.metrics.index_size.set(len(r.index))
    r.metrics.index_synced.set(1 if r.index.synced else 0)
    r.metrics.last_webhook.replace((i.namespace, i.name, i.last_webhook_time) for i in r.index if i.last_webhook_time)
    body = await asyncio.to_thread(r.metrics.render)
    return web.Response(body=body, headers={"Content-Type": r.metrics.content_type})


# ------------------------------------------------------------------------------------------------
# App factory


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Last line of defence: an unexpected error is a logged 500 with no internals in the body."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        # The router's own answers (404 for `OPTIONS *` or `CONNECT host:port`, 405): same JSON shape.
        if exc.status >= 400 and exc.content_type != "application/json":
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            return json_response(exc.status, {"error": exc.reason}, allow)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error handling a request", extra={"path": request.path})
        return json_response(500, {"error": "internal error"})


def make_app(receiver: Receiver, *, probes: bool = True, complete: Completion | None = None) -> web.Application:
    """The webhook app; tests build it with their own Receiver. Size limits are enforced by the handler.

    With `probes=False` (a separate probe port is configured) /healthz, /readyz and /metrics are not
    served here, so an Ingress in front of the webhook port cannot expose them to the internet.
    `complete` replaces the pipeline's last step (a relay edge publishes instead of writing).
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=1024**3)
    app[RECEIVER] = receiver
    handler = WebhookHandler(receiver, complete)
    if probes:
        _add_probe_routes(app)
    app.router.add_route("*", "/{tail:.*}", handler.__call__, expect_handler=handler.expect_continue)
    return app


def make_probe_app(receiver: Receiver) -> web.Application:
    """Only /healthz, /readyz and /metrics, for a probe port kept off the Ingress."""
    app = web.Application(middlewares=[error_middleware])
    app[RECEIVER] = receiver
    _add_probe_routes(app)
    return app


def _add_probe_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)


# ------------------------------------------------------------------------------------------------
# Errors raised by aiohttp before any handler runs


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its own refusals with this service's JSON error body.

    aiohttp answers a malformed request itself, in plain text, and its message can quote the
    offending line (which may hold a client's token). Here the answer names only the kind of problem.
    """

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        if isinstance(exc, ContentEncodingError):
            status, reason = 415, "Content-Encoding not supported: send the body uncompressed (or gzip/deflate)"
        elif isinstance(exc, LineTooLong):
            reason = "request line or a header is longer than 8190 bytes"
        elif status >= 500:
            reason = "internal error"
        else:
            reason = f"malformed HTTP request ({type(exc).__name__ if exc else HTTPStatus(status).phrase})"
        del response  # built (and the error logged) by aiohttp; replaced by the JSON answer
        return json_response(status, {"error": reason}, {"Connection": "close"})


class JsonErrorServer(web.Server):
    """`web.Server` whose connections use `JsonErrorRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class WebhookRunner(web.AppRunner):
    """`web.AppRunner` serving the app through `JsonErrorServer`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = JsonErrorServer  # same state, only the connection handler class differs
        return server
