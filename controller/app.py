"""The aiohttp application: routes, the webhook handler, health and metrics.

Status codes are decided in one readable order (see `WebhookHandler.handle`):
404 unknown route -> 405 not POST -> 503 too busy (before any body is read) -> 413 too large
(Content-Length, then a capped read) -> 408 body too slow -> 400 no known provider -> 404 provider
disabled or not served on this route -> 503 index not synced -> 503 secret unreadable -> 401
credentials -> 415/400 payload -> 200 (with reasons per GitRepo) or 503 when some GitRepo could not
be written (providers that retry will retry).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from controller import providers as provider_registry
from controller.config import Config, ProviderConfig, Route
from controller.dedupe import CachedAnswer, DeliveryCache
from controller.events import Ignored, Parsed, Ping, PushEvent
from controller.index import GitRepoIndex, GitRepoInfo
from controller.metrics import Metrics
from controller.providers.base import (
    Credential,
    PayloadError,
    Provider,
    UnsupportedMediaType,
    Verdict,
    WebhookRequest,
)
from controller.records import Action, CommitHistory, Decision, plan
from controller.reload import ConfigHolder
from controller.secrets import SecretStore, SecretUnavailable
from controller.updater import GitRepoUpdater, Outcome, WriteResult

log = logging.getLogger("fleet_webhook.receiver")
# GitHub variant used when providers.github.acceptSha1 is set (old GitHub Enterprise servers).
GITHUB_WITH_SHA1 = provider_registry.GitHubProvider(accept_sha1=True)
READ_CHUNK = 64 * 1024
PROBE_PATHS = ("/healthz", "/readyz", "/metrics")


@dataclass
class Receiver:
    """Everything a request needs. Only `holder.current` and `index` change, each swapped atomically."""

    holder: ConfigHolder
    index: GitRepoIndex
    secrets: SecretStore
    metrics: Metrics
    updater: GitRepoUpdater | None
    histories: dict[str, CommitHistory] = field(default_factory=dict)
    dedupe: DeliveryCache = field(default_factory=lambda: DeliveryCache(3600, 10_000))
    in_flight: int = 0
    accepting: bool = True
    api_healthy: bool = True

    def history_for(self, route: Route) -> CommitHistory:
        """Commit order learnt from this route's deliveries only, so one tenant cannot poison another's."""
        history = self.histories.get(route.path)
        if history is None:
            history = self.histories[route.path] = CommitHistory()
        return history


RECEIVER = web.AppKey("receiver", Receiver)

# Secret keys tried, in order, when a provider's own key holds nothing. Fleet's receiver handled
# Gitea through its Gogs parser, so existing `gitjob-webhook` Secrets keep Gitea's secret under `gogs`.
FALLBACK_SECRET_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {"gitea": (("gogs",),)}


class HttpError(Exception):
    """An early answer with a status code and a reason for the JSON body."""

    def __init__(self, status: int, reason: str, outcome: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.outcome = outcome
        self.headers = headers or {}
        self.provider = "unknown"
        self.delivery: str | None = None


def _rekey(creds: Sequence[Credential], keys: Sequence[str]) -> list[Credential]:
    """Credential sets read under fallback keys, renamed to the keys the provider verifies with."""
    return [dict(zip(keys, c.values(), strict=False)) for c in creds]


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response with a trailing newline (friendlier for curl)."""
    return web.Response(
        status=status,
        # Header values aiohttp could not decode as UTF-8 arrive as lone surrogates and may be echoed
        # (event names, reasons); backslashreplace turns them into valid JSON \uXXXX escapes, not a 500.
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace") + b"\n",
        content_type="application/json",
        headers=headers,
    )


def _gitrepo_entry(info: GitRepoInfo, **extra: Any) -> dict[str, Any]:
    return {"namespace": info.namespace, "name": info.name, **{k: v for k, v in extra.items() if v is not None}}


class WebhookHandler:
    """One delivery, from raw HTTP request to response."""

    def __init__(self, receiver: Receiver) -> None:
        self.r = receiver

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        config = self.r.holder.current
        route = config.route_for(request.path)
        provider_name, route_name = "unknown", route.path if route else "none"
        delivery_id: str | None = None
        try:
            provider, status, body, headers, outcome = await self.handle(request, config, route)
            provider_name = provider.name if provider else "unknown"
        except HttpError as err:
            status, body, headers, outcome = err.status, {"error": err.reason}, err.headers, err.outcome
            provider_name, delivery_id = err.provider, err.delivery
        self.r.metrics.requests.labels(provider_name, route_name, outcome, str(status)).inc()
        self.r.metrics.request_seconds.labels(provider_name).observe(time.monotonic() - started)
        if status >= 400 and "error" in body:
            log.info(
                "delivery refused",
                extra={
                    "provider": provider_name,
                    "route": route_name,
                    "status": status,
                    "reason": body["error"],
                    "delivery": delivery_id,
                },
            )
        return json_response(status, body, headers)

    async def handle(
        self, request: web.Request, config: Config, route: Route | None
    ) -> tuple[Provider | None, int, dict[str, Any], dict[str, str], str]:
        """The request path; returns (provider, status, body, headers, outcome) or raises HttpError."""
        if route is None:
            raise HttpError(404, f"no webhook route serves {request.path!r}", "unknown_route")
        if request.method != "POST":
            raise HttpError(405, "webhooks must be POSTed", "method_not_allowed", {"Allow": "POST"})
        if self.r.in_flight >= config.limits.max_concurrent_requests:
            # Checked before the body is read, so a flood of slow or large bodies cannot pile up in memory.
            raise HttpError(503, "too many deliveries in progress", "busy", {"Retry-After": "1"})
        self.r.in_flight += 1
        try:
            return await self._handle_counted(request, config, route)
        finally:
            self.r.in_flight -= 1

    async def _handle_counted(
        self, request: web.Request, config: Config, route: Route
    ) -> tuple[Provider | None, int, dict[str, Any], dict[str, str], str]:
        body = await self._read_body(request, config)
        wreq = WebhookRequest(
            method=request.method,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            query=dict(request.query),
        )
        provider = self._provider_for(wreq, config)
        provider_cfg = config.provider(provider.name)
        try:
            if not provider_cfg.enabled:
                raise HttpError(404, f"provider {provider.name!r} is disabled", "provider_disabled")
            if not route.allows_provider(provider.name):
                raise HttpError(
                    404, f"provider {provider.name!r} is not served on route {route.path!r}", "provider_not_routed"
                )
            if not self.r.index.synced:
                raise HttpError(503, "GitRepo index is not synced yet", "not_ready", {"Retry-After": "2"})
            try:
                async with asyncio.timeout(config.limits.request_timeout_seconds):
                    status, payload, outcome = await self._process(wreq, provider, provider_cfg, config, route)
            except TimeoutError:
                raise HttpError(503, "delivery took too long; retry later", "timeout", {"Retry-After": "5"}) from None
        except HttpError as err:
            err.provider = provider.name
            err.delivery = provider.delivery_id(wreq)
            raise
        retry = {"Retry-After": "5"} if status == 503 else {}  # some GitRepo write failed: ask for a retry
        return provider, status, payload, retry, outcome

    async def _read_body(self, request: web.Request, config: Config) -> bytes:
        """Read the body under the size cap and the read timeout, never buffering past the cap."""
        limit = config.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise HttpError(413, f"body larger than {limit} bytes", "too_large", {"Connection": "close"})
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(config.limits.read_timeout_seconds):
                while True:
                    chunk = await request.content.read(READ_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > limit:
                        raise HttpError(413, f"body larger than {limit} bytes", "too_large", {"Connection": "close"})
                    chunks.append(chunk)
        except TimeoutError:
            raise HttpError(408, "body not received in time", "read_timeout", {"Connection": "close"}) from None
        except (ConnectionError, web.HTTPException, web.RequestPayloadError) as exc:  # bad chunking/encoding
            raise HttpError(400, f"body could not be read: {type(exc).__name__}", "bad_body") from None
        return b"".join(chunks)

    def _provider_for(self, wreq: WebhookRequest, config: Config) -> Provider:
        provider = provider_registry.detect(wreq)
        if provider is None:
            raise HttpError(
                400,
                "not a recognized webhook: none of the headers X-GitHub-Event, X-Gitlab-Event, X-Event-Key, "
                "X-Hook-UUID, X-Gogs-Event, X-Gitea-Event, X-Forgejo-Event, X-Vss-ActivityId, "
                "X-Vss-SubscriptionId, X-Fleet-Webhook-Event or X-Fleet-Webhook-Signature",
                "unknown_provider",
            )
        if provider.name == "github" and config.provider("github").accept_sha1:
            return GITHUB_WITH_SHA1
        return provider

    async def _route_credentials(self, provider: Provider, config: Config, route: Route) -> list[Credential]:
        source = route.secret or config.secrets.source
        suffix = config.secrets.previous_suffix
        try:
            creds = await self.r.secrets.credentials(source, provider.secret_keys, suffix)
            for keys in FALLBACK_SECRET_KEYS.get(provider.name, ()):
                creds = creds or _rekey(await self.r.secrets.credentials(source, keys, suffix), provider.secret_keys)
            return creds
        except SecretUnavailable as exc:
            raise HttpError(
                503, f"webhook secret unavailable ({exc})", "secret_unavailable", {"Retry-After": "5"}
            ) from None

    async def _process(
        self, wreq: WebhookRequest, provider: Provider, provider_cfg: ProviderConfig, config: Config, route: Route
    ) -> tuple[int, dict[str, Any], str]:
        creds = await self._route_credentials(provider, config, route)
        if creds:
            verdict: Verdict | None = provider.verify(wreq, creds)
        else:
            verdict = None
        unauthenticated_ok = not creds and provider_cfg.allow_unauthenticated
        request_ok = verdict is Verdict.OK or unauthenticated_ok
        delivery = provider.delivery_id(wreq)

        if not request_ok and not config.secrets.gitrepo_secrets:
            raise self._unauthorized(provider, verdict, config, route)
        try:
            parsed_all = provider.parse_all(wreq)
        except UnsupportedMediaType as exc:
            if not request_ok:
                raise self._unauthorized(provider, verdict, config, route) from None
            raise HttpError(415, str(exc), "unsupported_media_type") from None
        except PayloadError as exc:
            if not request_ok:
                raise self._unauthorized(provider, verdict, config, route) from None
            raise HttpError(400, f"malformed {provider.name} payload: {exc}", "bad_payload") from None

        pushes = [p for p in parsed_all if isinstance(p, PushEvent)]
        if not pushes:
            if not request_ok and not await self._ping_authorized(parsed_all, wreq, provider, config):
                raise self._unauthorized(provider, verdict, config, route)
            if unauthenticated_ok:
                self._warn_unauthenticated(provider, delivery)
            return self._non_push_answer(parsed_all, provider, delivery)

        dedupe_key = f"{route.path} {provider.name}"
        cached = self.r.dedupe.get(dedupe_key, delivery) if request_ok else None
        if cached is not None:
            self.r.metrics.dedupe_hits.labels(provider.name).inc()
            body = json.loads(cached.body)
            body["duplicate"] = True
            return cached.status, body, "duplicate"

        history = self.r.history_for(route)
        decisions: list[tuple[PushEvent, Decision]] = []
        for push in pushes:
            for decision in plan(push, self.r.index, config, route, history):
                decisions.append((push, decision))

        auth_cache: dict[tuple[str, str], tuple[bool, str]] = {}
        authorized_any = request_ok
        checked: list[tuple[PushEvent, Decision, str | None]] = []
        for push, decision in decisions:
            ok, why = await self._authorized_for(decision.gitrepo, wreq, provider, config, request_ok, auth_cache)
            authorized_any |= ok
            checked.append((push, decision, None if ok else why))
        if not authorized_any:
            tried_own = any(d.gitrepo.webhook_secret for _, d in decisions) and config.secrets.gitrepo_secrets
            raise self._unauthorized(provider, verdict, config, route, tried_gitrepo_secrets=tried_own)
        if unauthenticated_ok:
            self._warn_unauthenticated(provider, delivery)

        for push in pushes:
            history.learn(push)
        status, body = await self._apply(checked, config, route, provider, delivery, history, request_ok)
        if status < 500:
            self.r.dedupe.put(dedupe_key, delivery, CachedAnswer(status, json.dumps(body).encode()))
        self._log_delivery(provider, delivery, pushes, body, status)
        return status, body, "accepted" if status < 500 else "write_failed"

    async def _ping_authorized(
        self, parsed_all: Sequence[Parsed], wreq: WebhookRequest, provider: Provider, config: Config
    ) -> bool:
        """A ping signed with the webhookSecret of a GitRepo of its repository is authentic too.

        Without this, a host whose only secret is a GitRepo's own would see its "test delivery" fail.
        """
        if not config.secrets.gitrepo_secrets:
            return False
        urls = [u for p in parsed_all if isinstance(p, Ping | Ignored) for u in p.repo_urls]
        cache: dict[tuple[str, str], tuple[bool, str]] = {}
        for key in dict.fromkeys(k for k in map(self.r.index.key, urls) if k is not None):
            for info in self.r.index.lookup(key):
                if info.webhook_secret and (await self._authorized_for(info, wreq, provider, config, False, cache))[0]:
                    return True
        return False

    async def _authorized_for(
        self,
        info: GitRepoInfo,
        wreq: WebhookRequest,
        provider: Provider,
        config: Config,
        request_ok: bool,
        cache: dict[tuple[str, str], tuple[bool, str]],
    ) -> tuple[bool, str]:
        """Whether the delivery is authentic for this GitRepo (its own webhookSecret wins)."""
        if not (config.secrets.gitrepo_secrets and info.webhook_secret):
            return request_ok, "not authenticated with the route's secret"
        key = (info.namespace, info.webhook_secret)
        if key in cache:
            return cache[key]
        try:
            creds = await self.r.secrets.gitrepo_credentials(
                info.namespace, info.webhook_secret, provider.secret_keys, config.secrets.previous_suffix
            )
            for keys in FALLBACK_SECRET_KEYS.get(provider.name, ()):
                if creds == []:
                    fallback = await self.r.secrets.gitrepo_credentials(
                        info.namespace, info.webhook_secret, keys, config.secrets.previous_suffix
                    )
                    creds = _rekey(fallback or [], provider.secret_keys)
        except SecretUnavailable as exc:
            raise HttpError(
                503, f"webhook secret unavailable ({exc})", "secret_unavailable", {"Retry-After": "5"}
            ) from None
        if creds is None:
            result = (False, f"spec.webhookSecret {info.webhook_secret!r} not found in namespace {info.namespace!r}")
        elif not creds:
            names = ", ".join(provider.secret_keys)
            result = (False, f"spec.webhookSecret {info.webhook_secret!r} has no key {names}")
        elif provider.verify(wreq, creds) is Verdict.OK:
            result = (True, "")
        else:
            result = (False, f"signature does not match spec.webhookSecret {info.webhook_secret!r}")
        cache[key] = result
        return result

    async def _apply(
        self,
        checked: Sequence[tuple[PushEvent, Decision, str | None]],
        config: Config,
        route: Route,
        provider: Provider,
        delivery: str | None,
        history: CommitHistory,
        request_ok: bool,
    ) -> tuple[int, dict[str, Any]]:
        """Write what was decided and build the answer.

        The answer never lists GitRepos the caller has no business knowing about: those in
        namespaces the route may not update, and, for a caller authenticated only by one GitRepo's
        own webhookSecret, the GitRepos that secret does not cover. They are only counted.
        """
        updated: list[dict[str, Any]] = []
        unchanged: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        to_write: list[tuple[PushEvent, Decision]] = []
        hidden = 0
        for push, decision, auth_problem in checked:
            info = decision.gitrepo
            if not route.allows_namespace(info.namespace) or (auth_problem and not request_ok):
                hidden += 1
            elif auth_problem:
                skipped.append(_gitrepo_entry(info, reason=auth_problem, via=decision.via))
            elif decision.action is Action.SKIP:
                skipped.append(_gitrepo_entry(info, reason=decision.reason, via=decision.via))
            elif decision.action is Action.UNCHANGED:
                unchanged.append(_gitrepo_entry(info, commit=push.commit, reason=decision.reason, via=decision.via))
            elif len(to_write) >= config.limits.max_gitrepos_per_delivery:
                reason = f"over limits.maxGitReposPerDelivery ({config.limits.max_gitrepos_per_delivery})"
                skipped.append(_gitrepo_entry(info, reason=reason, via=decision.via))
            else:
                to_write.append((push, decision))
        if to_write:
            if self.r.updater is None:
                raise HttpError(503, "no Kubernetes API configured", "no_api", {"Retry-After": "5"})
            deadline = time.monotonic() + config.limits.request_timeout_seconds
            results: list[WriteResult] = await asyncio.gather(
                *(self.r.updater.record(d.gitrepo, p, config.polling, deadline, history) for p, d in to_write)
            )
            for (push, decision), result in zip(to_write, results, strict=True):
                entry = _gitrepo_entry(result.gitrepo, commit=push.commit, via=decision.via)
                if result.outcome is Outcome.UPDATED:
                    if result.polling_interval_set:
                        entry["pollingIntervalSet"] = result.polling_interval_set
                    updated.append(entry)
                elif result.outcome is Outcome.UNCHANGED:
                    unchanged.append({**entry, "reason": result.reason})
                elif result.outcome is Outcome.SKIPPED:
                    skipped.append({**entry, "reason": result.reason})
                else:
                    failed.append({**entry, "reason": result.reason})
        body: dict[str, Any] = {
            "provider": provider.name,
            "delivery": delivery,
            "updated": updated,
            "unchanged": unchanged,
            "skipped": skipped,
        }
        if hidden:
            body["notListed"] = hidden
        if failed:
            body["failed"] = failed
            return 503, body
        if not (updated or unchanged or skipped or hidden):
            body["reason"] = "no GitRepo matches this repository"
        return 200, body

    def _non_push_answer(
        self, parsed_all: Sequence[Parsed], provider: Provider, delivery: str | None
    ) -> tuple[int, dict[str, Any], str]:
        first = parsed_all[0] if parsed_all else None
        if isinstance(first, Ping):
            return 200, {"provider": provider.name, "delivery": delivery, "ping": True}, "ping"
        if isinstance(first, Ignored):
            return (
                200,
                {"provider": provider.name, "delivery": delivery, "ignored": first.event, "reason": first.reason},
                "ignored",
            )
        return (
            200,
            {
                "provider": provider.name,
                "delivery": delivery,
                "ignored": "push",
                "reason": "no ref change in this delivery",
            },
            "ignored",
        )

    def _unauthorized(
        self,
        provider: Provider,
        verdict: Verdict | None,
        config: Config,
        route: Route,
        *,
        tried_gitrepo_secrets: bool = False,
    ) -> HttpError:
        source = (route.secret or config.secrets.source).describe()
        if tried_gitrepo_secrets:
            reason = (
                f"{provider.name} signature/token matches neither {source} nor the spec.webhookSecret "
                "of the GitRepos of this repository"
            )
            label = "mismatch"
        elif verdict is None:
            keys = " and ".join(repr(k) for k in provider.secret_keys)
            reason = (
                f"no secret configured for {provider.name}: add key {keys} to {source} "
                f"(or set providers.{provider.name}.allowUnauthenticated: true)"
            )
            label = "no_secret"
        elif verdict is Verdict.MISSING:
            reason = f"{provider.name} delivery carries no signature/token header"
            label = "missing"
        else:
            reason = f"{provider.name} signature/token does not match the configured secret"
            label = "mismatch"
        self.r.metrics.verification_failures.labels(provider.name, label).inc()
        log.warning(
            "webhook verification failed",
            extra={"security": True, "provider": provider.name, "reason": label, "route": route.path},
        )
        err = HttpError(401, reason, "unauthorized")
        err.provider = provider.name
        return err

    def _warn_unauthenticated(self, provider: Provider, delivery: str | None) -> None:
        self.r.metrics.unauthenticated.labels(provider.name).inc()
        log.warning(
            "unauthenticated webhook accepted (allowUnauthenticated is on)",
            extra={"provider": provider.name, "delivery": delivery, "security": True},
        )

    def _log_delivery(
        self, provider: Provider, delivery: str | None, pushes: Sequence[PushEvent], body: dict[str, Any], status: int
    ) -> None:
        first = pushes[0]
        log.info(
            "delivery handled",
            extra={
                "provider": provider.name,
                "delivery": delivery,
                "repo": first.repo_urls[0] if first.repo_urls else "",
                "ref": f"{first.ref_kind}:{first.ref_name}",
                "commit": first.commit,
                "status": status,
                "outcome": "accepted" if status < 500 else "write_failed",
                "updated": [f"{u['namespace']}/{u['name']}" for u in body["updated"]],
                "skipped": len(body["skipped"]),
                "failed": len(body.get("failed", [])),
            },
        )


# ------------------------------------------------------------------------------------------------
# Probes


async def healthz(_request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return json_response(200, {"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: config loaded and the GitRepo index synced (and not shutting down)."""
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
    ready = r.index.synced and r.accepting
    body["status"] = "ready" if ready else "not ready"
    return json_response(200 if ready else 503, body)


async def metrics_view(request: web.Request) -> web.Response:
    """Prometheus text format."""
    r = request.app[RECEIVER]
    r.metrics.index_size.set(len(r.index))
    r.metrics.index_synced.set(1 if r.index.synced else 0)
    return web.Response(body=r.metrics.render(), headers={"Content-Type": r.metrics.content_type})


# ------------------------------------------------------------------------------------------------
# App factory


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Last line of defence: an unexpected error is a logged 500 with no internals in the body."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error handling a request", extra={"path": request.path})
        return json_response(500, {"error": "internal error"})


def make_app(receiver: Receiver, *, probes: bool = True) -> web.Application:
    """The webhook app; tests build it with their own Receiver. Size limits are enforced by the handler.

    With `probes=False` (a separate probe port is configured) /healthz, /readyz and /metrics are not
    served here, so an Ingress in front of the webhook port cannot expose them to the internet.
    """
    app = web.Application(middlewares=[error_middleware], client_max_size=1024**3)
    app[RECEIVER] = receiver
    handler = WebhookHandler(receiver)
    if probes:
        _add_probe_routes(app)
    app.router.add_route("*", "/{tail:.*}", handler.__call__)
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
