"""The delivery pipeline, without HTTP: admit -> (body arrives) -> authenticate -> parse -> plan -> write.

The web layer (app.py) hands over what it received and sends back the `Answer`; tests call the
same two steps directly. Status codes are decided in one readable order:

    admit (headers only, before any body byte is read or `100 Continue` is sent):
      404 no route serves the path -> 405 not POST -> 413 Content-Length over limits.maxBodyBytes
      -> 400 no known provider -> 404 provider disabled / not served on this route -> 503 index not
      synced -> 503 secret unreadable -> 401 when the headers already settle it (no secret
      configured, no signature, a malformed one, a wrong token) and no GitRepo's own
      spec.webhookSecret could still vouch for the body
    while the body arrives (app.py): 413 over the limit -> 408 too slow -> 503 no memory or spool
      space left -> 400 broken framing
    complete:
      503 too many deliveries being processed -> 401 signature does not match (`unauthorized`, the
      one place a 401 is built) -> 415/400 payload -> 200 with reasons per GitRepo, or 503 when some
      GitRepo could not be written (providers that retry will retry)

Authentication comes first. A body the route's secret does not authenticate is never parsed,
except to find the GitRepos whose own `spec.webhookSecret` might sign it: only when the index holds
such a GitRepo in the route's namespaces, only up to limits.unverifiedParseBytes, off the event loop
(parsing.py). Signatures are computed while the body streams in (body.py), so a forged body is never
held whole in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from controller import providers as registry
from controller.body import Body, BodyBudget
from controller.config import Config, PollingPolicy, ProviderConfig, Route, SecretSource, default_config
from controller.decisions import WITHHELD, Action, CommitHistory, Decision, candidates, plan_delivery
from controller.dedupe import CachedAnswer, DeliveryCache
from controller.deliveries import Ignored, Parsed, Ping, PushEvent
from controller.index import GitRepoIndex, GitRepoInfo
from controller.logs import info_line
from controller.metrics import Metrics
from controller.normalize import redact_url
from controller.parsing import Parsers, ParserUnavailable
from controller.providers.base import (
    Authentication,
    Credential,
    MacStream,
    PayloadError,
    Provider,
    UnsupportedMediaType,
    Verdict,
    WebhookRequest,
)
from controller.reload import ConfigHolder
from controller.secrets import SecretStore, SecretUnavailable
from controller.supervisor import Supervisor
from controller.updater import Outcome, WriteResult

log = logging.getLogger("fleet_webhook.receiver")

SECURITY_LOG_LINES_PER_SECOND = 20
# The most distinct GitRepo secrets one unverified request may make the receiver read and try.
MAX_UNVERIFIED_SECRETS = 16


class LogBudget:
    """At most `per_second` lines a second: a flood of forged requests must not become a flood of logs.

    `allow()` returns None while over budget, else how many lines were suppressed since the last one
    (logged with that line). Every refusal is still counted in the metrics.
    """

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._window = 0
        self._used = 0
        self._suppressed = 0

    def allow(self) -> int | None:
        window = int(time.monotonic())
        if window != self._window:
            self._window, self._used = window, 0
        if self._used >= self.per_second:
            self._suppressed += 1
            return None
        self._used += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


class CommitWriter(Protocol):
    """What the pipeline needs of the writer: controller.updater.GitRepoUpdater, or a test's recording fake."""

    async def record(
        self, info: GitRepoInfo, event: PushEvent, policy: PollingPolicy, deadline: float, history: CommitHistory, /
    ) -> WriteResult: ...


def _default_budget() -> BodyBudget:
    return BodyBudget.from_limits(default_config().limits)


def _default_dedupe() -> DeliveryCache:
    limits = default_config().limits
    return DeliveryCache(limits.dedupe_seconds, limits.dedupe_entries)


@dataclass
class Receiver:
    """Everything a delivery needs. Only `holder.current` and `index` change, each swapped atomically."""

    holder: ConfigHolder
    index: GitRepoIndex
    secrets: SecretStore
    metrics: Metrics
    updater: CommitWriter | None
    # Defaults from the schema's defaults (serve builds both from the live config: runtime.build).
    budget: BodyBudget = field(default_factory=_default_budget)
    parsers: Parsers = field(default_factory=Parsers)
    histories: dict[str, CommitHistory] = field(default_factory=dict)
    dedupe: DeliveryCache = field(default_factory=_default_dedupe)
    in_flight: int = 0  # deliveries from admission to answer, bodies still arriving included (shutdown waits)
    processing: int = 0  # deliveries past their body: what limits.maxConcurrentRequests bounds
    vouching: int = 0  # unverified bodies being tried against GitRepo secrets (a quarter of those slots)
    accepting: bool = True
    # --shared-order: each GitRepo's ledger annotation is the commit order (updater.py), not `histories`.
    shared_order: bool = False
    # The background tasks `serve` runs; one that died makes /readyz fail (controller/supervisor.py).
    background: Supervisor = field(default_factory=Supervisor)
    # --relay-publish: this process is a relay edge with no GitRepo index and maybe no secrets; what it
    # cannot check is checked by the cluster's consumer (Pipeline.edge_verdict, relay_publish.py).
    relay_edge: bool = False

    def history_for(self, route: Route) -> CommitHistory:
        """Commit order learnt from this route's deliveries only, so one tenant cannot poison another's.

        With shared order an empty one: the plan then only tells "already at this commit" from "write",
        and the updater judges both again with the GitRepo's ledger, which every replica shares.
        """
        if self.shared_order:
            return CommitHistory(max_entries=0)
        history = self.histories.get(route.path)
        if history is None:
            history = self.histories[route.path] = CommitHistory()
        return history


def encode_json(body: Mapping[str, Any]) -> bytes:
    """An answer as compact UTF-8 JSON: orjson (a few microseconds), else the standard library.

    Header values aiohttp could not decode as UTF-8 arrive as lone surrogates and may be echoed
    (event names, reasons); orjson refuses those, and backslashreplace then turns them into valid
    JSON \\uXXXX escapes rather than a 500.
    """
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the delivery gets back, plus the labels its metrics and log line carry."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    outcome: str = "accepted"
    provider: str = "unknown"
    delivery: str | None = None
    encoded: bytes | None = None  # `body` as encode_json made it, when already done (shared with the cache)


class Deadline:
    """limits.requestTimeoutSeconds for one delivery, armed only before a step that can wait.

    A delivery whose body is in memory and whose GitRepos already hold the commit never waits on
    anything, so it never pays for a timer; one that reads a Secret, asks the parse worker or writes
    a GitRepo arms it first, with the same end as if it had been set when processing began.
    """

    __slots__ = ("_armed", "_timeout", "when")

    def __init__(self, timeout: asyncio.Timeout, when: float) -> None:
        self._timeout, self.when, self._armed = timeout, when, False

    def arm(self) -> None:
        """From now on, the delivery is cancelled (503) at `when`."""
        if not self._armed:
            self._timeout.reschedule(self.when)
            self._armed = True


class Refusal(Exception):
    """An early answer: a status code, a reason for the JSON body, a metrics outcome."""

    def __init__(self, status: int, reason: str, outcome: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.outcome = outcome
        self.headers = dict(headers or {})
        self.provider = "unknown"
        self.delivery: str | None = None
        self.encoded: bytes | None = None  # the answer's body, when encoded ahead (`Pipeline.unauthorized`)

    def answer(self) -> Answer:
        """The refusal as an answer."""
        body = {"error": self.reason}
        return Answer(self.status, body, self.headers, self.outcome, self.provider, self.delivery, self.encoded)


# A compressed body its headers do not authenticate may inflate to at most this many times its
# Content-Length (and to INFLATION_FLOOR_BYTES whatever its length, chunked ones included): a few KB
# of gzip must not buy megabytes of inflating, hashing and budget. Git hosts send bodies uncompressed.
MAX_UNVERIFIED_INFLATION = 32
INFLATION_FLOOR_BYTES = 1 << 20


def inflation_cap(head: WebhookRequest, content_length: int | None) -> int | None:
    """How far a body sent with `Content-Encoding` may inflate before it is authenticated; None if plain."""
    encoding = head.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    return max(INFLATION_FLOOR_BYTES, MAX_UNVERIFIED_INFLATION * (content_length or 0))


def busy(reason: str, outcome: str = "busy", retry_after: int = 1) -> Refusal:
    """A 503 that asks the sender to retry."""
    return Refusal(503, reason, outcome, {"Retry-After": str(retry_after)})


@dataclass
class Admission:
    """A delivery whose headers passed: what the body will be checked against, and how far it may grow."""

    config: Config
    route: Route
    provider: Provider
    provider_cfg: ProviderConfig
    head: WebhookRequest  # headers and query; body empty
    delivery: str | None
    auth: Authentication | None  # None: no secret is configured for this provider on this route
    may_use_gitrepo_secrets: bool
    credentials: Sequence[Credential] = ()  # the route's, read once at admission
    started: float = field(default_factory=time.monotonic)
    inflation_cap: int | None = None  # a compressed body the headers did not authenticate: see `inflation_cap`
    path: str = ""  # the request path the route was chosen by (a relay edge passes it on)
    # A relay edge without the route's secret: the cluster's consumer authenticates it, so nothing
    # fails before the body for want of a secret here (relay_publish.py).
    judged_elsewhere: bool = False
    # The route's MAC verdict on a body that came whole with its head (Pipeline.verify_arrived).
    arrived_verdict: Verdict | None = None

    @property
    def route_ok_before_body(self) -> bool:
        """The headers already authenticate the delivery (or unauthenticated deliveries are allowed)."""
        if self.auth is None:
            return self.provider_cfg.allow_unauthenticated
        return self.auth.verdict is Verdict.OK

    @property
    def failed_before_body(self) -> bool:
        """The headers already show the route's secret cannot authenticate the delivery."""
        if self.auth is None:
            return not (self.provider_cfg.allow_unauthenticated or self.judged_elsewhere)
        return self.auth.verdict in (Verdict.MISSING, Verdict.MISMATCH)

    @property
    def max_bytes(self) -> int:
        """How much body may be read: everything, or only what an unauthenticated parse may take."""
        if self.failed_before_body:
            return min(self.config.limits.unverified_parse_bytes, self.config.limits.spool_after_bytes)
        if self.inflation_cap is not None:
            return min(self.inflation_cap, self.config.limits.max_body_bytes)
        return self.config.limits.max_body_bytes

    def fail(self, refusal: Refusal) -> Refusal:
        """`refusal`, labelled with this delivery's provider and id."""
        refusal.provider, refusal.delivery = self.provider.name, self.delivery
        return refusal


@dataclass(frozen=True, slots=True)
class Vouched:
    """What an unverified body proved: the GitRepo secrets that sign it, and the events it holds."""

    parsed: tuple[Parsed, ...]
    secrets: frozenset[tuple[str, str]]  # (namespace, Secret name)

    def covers(self, info: GitRepoInfo) -> bool:
        """Whether this GitRepo's own secret is one that signs the body."""
        return (info.namespace, info.webhook_secret) in self.secrets


@dataclass(frozen=True, slots=True)
class GitRepoAuth:
    """One GitRepo's verdict on the delivery: authentic for it or not, and why not."""

    ok: bool
    problem: str = ""
    retry: bool = False  # its Secret could not be read now: the GitRepo fails (503) instead of being skipped


# The verdict of every GitRepo without its own spec.webhookSecret: the route's.
ROUTE_AUTHENTICATED = GitRepoAuth(True, "not authenticated with the route's secret")
ROUTE_NOT_AUTHENTICATED = GitRepoAuth(False, "not authenticated with the route's secret")


def fingerprint(pushes: Sequence[PushEvent]) -> str:
    """A digest of what the signed body says (repository, ref, commits), for the delivery cache."""
    digest = hashlib.blake2b(digest_size=16)
    for push in pushes:
        fields = (*push.repo_urls, push.repo_path, push.ref_kind, push.ref_name, push.commit, push.before or "")
        digest.update(
            "\0".join(fields).encode() + (b"\1" if push.deleted else b"\2") + (b"\1" if push.forced else b"\2")
        )
    return digest.hexdigest()


def _route_secret(admission: Admission) -> tuple[SecretSource, str]:
    """Where the route's secret lives (its own, else the config's), and the rotation suffix."""
    config = admission.config
    return admission.route.secret or config.secrets.source, config.secrets.previous_suffix


def _rekey(creds: Sequence[Credential], keys: Sequence[str]) -> list[Credential]:
    """Credential sets read under fallback keys, renamed to the keys the provider verifies with."""
    return [dict(zip(keys, c.values(), strict=False)) for c in creds]


def _gitrepo_entry(info: GitRepoInfo, **extra: Any) -> dict[str, Any]:
    return {"namespace": info.namespace, "name": info.name, **{k: v for k, v in extra.items() if v is not None}}


def _verdict(decision: Decision) -> str | None:
    """The paths rule's verdict for a GitRepo it let through (a skip says it as its reason), if consulted."""
    return decision.paths_verdict or None


class Pipeline:
    """The steps of one delivery; `Receiver` holds the state they share."""

    def __init__(self, receiver: Receiver) -> None:
        self.r = receiver
        self._security_log = LogBudget(SECURITY_LOG_LINES_PER_SECOND)
        self._children: dict[tuple[Any, ...], Any] = {}
        # (route, provider, verdict, tried GitRepo secrets) -> (config, reason, label, encoded body)
        self._refusals: dict[tuple[str, str, Verdict | None, bool], tuple[Config, str, str, bytes]] = {}

    # --- admit: headers only ---------------------------------------------------------------------

    async def admit(self, path: str, head: WebhookRequest, content_length: int | None) -> Admission:
        """Everything that can be decided before the body is read; raises Refusal."""
        config = self.r.holder.current
        route = config.route_for(path)
        if route is None:
            raise Refusal(404, f"no webhook route serves {path!r}", "unknown_route")
        if head.method != "POST":
            raise Refusal(405, "webhooks must be POSTed", "method_not_allowed", {"Allow": "POST"})
        if content_length is not None and content_length > config.limits.max_body_bytes:
            raise self.too_large(config)
        detected = registry.detect(head)
        if detected is None:
            raise Refusal(400, registry.UNRECOGNIZED, "unknown_provider")
        provider_cfg = config.provider(detected.name)
        provider = provider_cfg.implementation
        admission = Admission(
            config=config,
            route=route,
            provider=provider,
            provider_cfg=provider_cfg,
            head=head,
            delivery=provider.delivery_id(head),
            auth=None,
            may_use_gitrepo_secrets=False,
            path=path,
        )
        if not provider_cfg.enabled:
            raise admission.fail(Refusal(404, f"provider {provider.name!r} is disabled", "provider_disabled"))
        if not route.allows_provider(provider.name):
            reason = f"provider {provider.name!r} is not served on route {route.path!r}"
            raise admission.fail(Refusal(404, reason, "provider_not_routed"))
        if not self.r.index.synced:
            raise admission.fail(busy("GitRepo index is not synced yet", "not_ready", 2))
        creds = self._held_credentials(admission) or await self._route_credentials(admission)
        admission.credentials = creds
        admission.auth = provider.authenticate(head, creds) if creds else None
        if self.r.relay_edge:
            # No index at the edge: any GitRepo may name its own secret, unless the config says none does.
            admission.may_use_gitrepo_secrets = config.secrets.gitrepo_secrets
            admission.judged_elsewhere = admission.auth is None
        else:
            admission.may_use_gitrepo_secrets = config.secrets.gitrepo_secrets and self.r.index.has_webhook_secrets(
                route.namespaces
            )
        if admission.auth is None or admission.auth.verdict is not Verdict.OK:
            admission.inflation_cap = inflation_cap(head, content_length)
        if admission.failed_before_body:
            too_big = content_length is not None and content_length > admission.max_bytes
            if not admission.may_use_gitrepo_secrets or too_big:
                raise await self.unauthorized(admission)
        return admission

    def too_large(self, config: Config) -> Refusal:
        """413 for a body over limits.maxBodyBytes."""
        limit = config.limits.max_body_bytes
        return Refusal(413, f"body larger than {limit} bytes", "too_large", {"Connection": "close"})

    async def over_limit(self, admission: Admission) -> Refusal:
        """What a body that grew past `admission.max_bytes` gets."""
        if admission.failed_before_body:
            return await self.unauthorized(admission)
        cap = admission.inflation_cap
        if cap is not None and cap < admission.config.limits.max_body_bytes:
            reason = (
                f"compressed body inflates past {cap} bytes ({MAX_UNVERIFIED_INFLATION} times its Content-Length, "
                f"at least {INFLATION_FLOOR_BYTES}) before it is authenticated: send it uncompressed"
            )
            return admission.fail(Refusal(413, reason, "too_large", {"Connection": "close"}))
        return admission.fail(self.too_large(admission.config))

    async def verify_arrived(self, admission: Admission, whole: bytes) -> None:
        """The route's verdict on a body that arrived with its head, in one HMAC call, kept on the
        admission (`arrived_verdict`) so the body is never hashed again; a signed body counts as
        verified from its first byte. A forged one gets its 401 here, before any Body, budget entry
        or parse, unless a GitRepo's own secret may still vouch for it.

        Nothing is decided for a form body signed inside, a route without a secret, a verdict the
        headers already made, or a body over the cap (the usual path answers 413).
        """
        auth = admission.auth
        if auth is None or auth.verdict is not None or auth.needs_whole_body or len(whole) > admission.max_bytes:
            return
        macs = MacStream(auth.macs)
        macs.update(whole)
        admission.arrived_verdict = macs.verdict()
        if admission.arrived_verdict is Verdict.MISMATCH and not admission.may_use_gitrepo_secrets:
            raise await self.unauthorized(admission)

    def open_body(self, admission: Admission, sender: str = "", on_evict: Callable[[], None] | None = None) -> Body:
        """The buffer the body is written into; it computes the route's signature as it streams.

        A body the headers did not authenticate counts against the unverified share of the budget
        and may be evicted while it arrives (`sender` and `on_evict`: see `Body`).
        """
        auth, arrived = admission.auth, admission.arrived_verdict
        streamed = auth is not None and auth.verdict is None and not auth.needs_whole_body and arrived is None
        macs = MacStream(auth.macs) if streamed and auth is not None else None
        verified = (auth is not None and auth.verdict is Verdict.OK) or arrived is Verdict.OK
        return Body(self.r.budget, macs, verified=verified, sender=sender, on_evict=on_evict)

    def _held_credentials(self, admission: Admission) -> list[Credential] | None:
        """The route's credentials when they are cached and the provider's own keys hold them (the
        common case: no coroutine, no fallback keys to try); else None, and `_route_credentials` asks."""
        source, suffix = _route_secret(admission)
        return self.r.secrets.cached_credentials(source, admission.provider.secret_keys, suffix)

    async def _route_credentials(self, admission: Admission) -> list[Credential]:
        provider = admission.provider
        source, suffix = _route_secret(admission)
        try:
            creds = await self.r.secrets.credentials(source, provider.secret_keys, suffix)
            for keys in provider.fallback_secret_keys:
                creds = creds or _rekey(await self.r.secrets.credentials(source, keys, suffix), provider.secret_keys)
            return creds
        except SecretUnavailable as exc:
            raise admission.fail(busy(f"webhook secret unavailable ({exc})", "secret_unavailable", 5)) from None

    # --- complete: the body has arrived --------------------------------------------------------

    async def complete(self, admission: Admission, body: Body) -> Answer:
        """Authenticate, parse, decide, write and answer; raises Refusal for early answers."""
        limits = admission.config.limits
        request_ok = await self._route_verdict(admission, body)
        vouched: Vouched | None = None
        if not request_ok:
            if not admission.may_use_gitrepo_secrets:
                raise await self.unauthorized(admission)  # the common forged request: no slot, no timer
            vouched = await self._vouch(admission, body)  # 401 unless some GitRepo's own secret signs it
        body.verified()  # accepted: out of the unverified share, where strangers' bodies compete
        if self.r.processing >= limits.max_concurrent_requests:
            raise admission.fail(busy("too many deliveries in progress"))
        self.r.processing += 1
        try:
            async with asyncio.timeout(None) as timer:
                deadline = Deadline(timer, asyncio.get_running_loop().time() + limits.request_timeout_seconds)
                return await self._complete(admission, body, request_ok, vouched, deadline)
        except TimeoutError:
            raise admission.fail(busy("delivery took too long; retry later", "timeout", 5)) from None
        except ParserUnavailable as exc:
            raise admission.fail(busy(str(exc), "parser_unavailable", 5)) from None
        finally:
            self.r.processing -= 1

    async def _route_verdict(self, admission: Admission, body: Body) -> bool:
        """Whether the route's secret (or allowUnauthenticated) accepts the delivery."""
        if admission.arrived_verdict is not None:  # judged as it arrived (verify_arrived)
            return admission.arrived_verdict is Verdict.OK
        auth = admission.auth
        if auth is None or auth.verdict is not None:
            return admission.route_ok_before_body
        if auth.needs_whole_body:
            if body.spooled:
                return False  # only the small form bodies Gogs/Gitea send are unwrapped to be verified
            request = admission.head.with_body(body.in_memory_bytes())
            return admission.provider.verify_whole_body(request, admission.credentials) is Verdict.OK
        macs = body.macs
        return macs is not None and macs.verdict() is Verdict.OK

    async def edge_verdict(self, admission: Admission, body: Body) -> bool:
        """At a relay edge, with the whole body: True when the route's secret verified it, False when
        it cannot be judged here (the edge holds no secret for it, or a GitRepo's own secret may sign
        it); raises the 401 when the secret the edge holds refuses it and nothing else could vouch.
        The consumer verifies every delivery again either way."""
        if admission.auth is None:
            return False
        if await self._route_verdict(admission, body):
            return True
        if admission.may_use_gitrepo_secrets:
            return False
        raise await self.unauthorized(admission)

    # --- a body the route's secret does not vouch for --------------------------------------------

    async def _vouch(self, admission: Admission, body: Body) -> Vouched:
        """The bounded look an unverified body gets: which GitRepo secrets, if any, sign it.

        It holds no processing slot (a share of its own, so strangers cannot take the slots signed
        deliveries need) and buys no planning: from the body only the repository is taken, to find
        the GitRepos in the route's namespaces that name their own spec.webhookSecret; at most
        MAX_UNVERIFIED_SECRETS of those secrets are read (reads and refusals are cached) and tried.
        """
        limits = admission.config.limits
        if self.r.vouching >= max(1, limits.max_concurrent_requests // 4):
            raise admission.fail(busy("too many unauthenticated deliveries being checked"))
        self.r.vouching += 1
        try:
            async with asyncio.timeout(limits.request_timeout_seconds):
                return await self._vouch_within(admission, body)
        except TimeoutError:
            raise admission.fail(busy("delivery took too long; retry later", "timeout", 5)) from None
        finally:
            self.r.vouching -= 1

    async def _vouch_within(self, admission: Admission, body: Body) -> Vouched:
        config, provider = admission.config, admission.provider
        try:
            parsed = await self.r.parsers.unverified(
                provider,
                admission.head,
                body,
                min(config.limits.unverified_parse_bytes, config.limits.spool_after_bytes),
            )
        except (UnsupportedMediaType, PayloadError):
            raise await self.unauthorized(admission) from None
        parsed = registry.complete_urls(parsed, config.bitbucket_server_base_url(admission.route))
        secrets = self._candidate_secrets(parsed, admission)
        signed: set[tuple[str, str]] = set()
        unavailable: SecretUnavailable | None = None
        for namespace, name in secrets:
            try:
                creds = await self._gitrepo_creds(namespace, name, admission)
            except SecretUnavailable as exc:
                unavailable = unavailable or (None if exc.refused else exc)
                continue
            if creds and await self._verify_whole(admission, body, creds) is Verdict.OK:
                signed.add((namespace, name))
        if signed:
            return Vouched(tuple(parsed), frozenset(signed))
        if unavailable is not None:  # the secret that signs it may be the one the API cannot serve now
            raise admission.fail(busy(f"webhook secret unavailable ({unavailable})", "secret_unavailable", 5))
        raise await self.unauthorized(admission, tried_gitrepo_secrets=bool(secrets))

    def _candidate_secrets(self, parsed: Sequence[Parsed], admission: Admission) -> list[tuple[str, str]]:
        """(namespace, Secret name) of the GitRepos of the named repositories that may vouch, bounded."""
        config, route, index = admission.config, admission.route, self.r.index
        found: dict[tuple[str, str], None] = {}
        seen: set[tuple[str, ...]] = set()
        for item in parsed:
            if item.repo_urls in seen:  # a batch of thousands of refs names one repository
                continue
            seen.add(item.repo_urls)
            if isinstance(item, PushEvent):
                infos: Iterable[GitRepoInfo] = (c.gitrepo for c in candidates(item, index, config))
            else:
                keys = dict.fromkeys(k for k in map(index.key, item.repo_urls) if k is not None)
                infos = (info for key in keys for info in index.lookup(key))
            for info in infos:
                if info.webhook_secret and route.allows_namespace(info.namespace):
                    found.setdefault((info.namespace, info.webhook_secret))
                    if len(found) >= MAX_UNVERIFIED_SECRETS:
                        return list(found)
        return list(found)

    async def _gitrepo_creds(self, namespace: str, name: str, admission: Admission) -> list[Credential] | None:
        """A GitRepo secret's credential sets for the provider (fallback keys renamed); None: no such Secret."""
        provider, suffix = admission.provider, admission.config.secrets.previous_suffix
        creds = await self.r.secrets.gitrepo_credentials(namespace, name, provider.secret_keys, suffix)
        for keys in provider.fallback_secret_keys:
            if creds == []:
                fallback = await self.r.secrets.gitrepo_credentials(namespace, name, keys, suffix)
                creds = _rekey(fallback or [], provider.secret_keys)
        return creds

    # --- an authenticated body ---------------------------------------------------------------------

    async def _complete(
        self, admission: Admission, body: Body, request_ok: bool, vouched: Vouched | None, deadline: Deadline
    ) -> Answer:
        provider, config, route = admission.provider, admission.config, admission.route
        if vouched is not None:
            parsed_all: Sequence[Parsed] = vouched.parsed
        else:
            if body.spooled:
                deadline.arm()  # the parse worker may be busy with another large body
            try:
                parsed_all = await self.r.parsers.authenticated(provider, admission.head, body)
            except UnsupportedMediaType as exc:
                raise admission.fail(Refusal(415, str(exc), "unsupported_media_type")) from None
            except PayloadError as exc:
                reason = f"malformed {provider.name} payload: {exc}"
                raise admission.fail(Refusal(400, reason, "bad_payload")) from None
            # A Bitbucket Server push without repository links names its repository by the configured base URL.
            parsed_all = registry.complete_urls(parsed_all, config.bitbucket_server_base_url(route))

        pushes = [p for p in parsed_all if isinstance(p, PushEvent)]
        unauthenticated_ok = admission.auth is None and admission.provider_cfg.allow_unauthenticated
        if not pushes:
            if unauthenticated_ok:
                self._warn_unauthenticated(admission)
            return self._non_push_answer(parsed_all, admission)

        dedupe_key = f"{route.path} {provider.name}"
        # A delivery id is an unsigned header: the cache holds it together with what was signed.
        seen_as = f"{admission.delivery} {fingerprint(pushes)}" if admission.delivery else None
        cached = self.r.dedupe.get(dedupe_key, seen_as)
        if cached is not None:
            self.r.metrics.dedupe_hits.labels(provider.name).inc()
            answer = orjson.loads(cached.body)
            answer["duplicate"] = True
            return Answer(cached.status, answer, {}, "duplicate", provider.name, admission.delivery)

        history = self.r.history_for(route)
        only = None if vouched is None else vouched.covers
        decisions = plan_delivery(pushes, self.r.index, config, route, history, only)
        auth_cache: dict[tuple[str, str], GitRepoAuth] = {}
        gitrepo_secrets = config.secrets.gitrepo_secrets
        route_auth = ROUTE_AUTHENTICATED if request_ok else ROUTE_NOT_AUTHENTICATED
        checked: list[tuple[PushEvent, Decision, GitRepoAuth]] = []
        for index, (push, decision) in enumerate(decisions):
            if index % 500 == 499:
                await asyncio.sleep(0)  # a batch of thousands of refs must not hold the loop
            info = decision.gitrepo
            if gitrepo_secrets and info.webhook_secret:
                auth = await self._gitrepo_auth(info, admission, body, request_ok, vouched, auth_cache, deadline)
            else:  # the route's verdict decides: no coroutine, no object per GitRepo
                auth = route_auth
            checked.append((push, decision, auth))
            if auth.ok and decision.paths is not None:
                self.r.metrics.paths_rule.labels(decision.paths.outcome.value).inc()
        if unauthenticated_ok:
            self._warn_unauthenticated(admission)

        for push in pushes:
            history.learn(push)
        status, answer = await self._apply(checked, admission, history, request_ok, deadline)
        encoded = encode_json(answer)  # once, for the cache and the response
        if status < 500:
            self.r.dedupe.put(dedupe_key, seen_as, CachedAnswer(status, encoded))
        self._log_delivery(admission, pushes, answer, status)
        outcome = "accepted" if status < 500 else "write_failed"
        retry = {"Retry-After": "5"} if status == 503 else {}  # some GitRepo write failed: ask for a retry
        return Answer(status, answer, retry, outcome, provider.name, admission.delivery, encoded)

    async def _gitrepo_auth(
        self,
        info: GitRepoInfo,
        admission: Admission,
        body: Body,
        request_ok: bool,
        vouched: Vouched | None,
        cache: dict[tuple[str, str], GitRepoAuth],
        deadline: Deadline,
    ) -> GitRepoAuth:
        """Whether the delivery is authentic for this GitRepo's own webhookSecret (asked only for a
        GitRepo naming one, with secrets.gitRepoSecrets on; for any other the route's verdict decides).

        A GitRepo outside the route's namespaces is never written, so its secret is never read. A
        Secret that cannot be read fails that GitRepo alone: skipped when RBAC refuses it, failed
        (503, the host retries) when the API cannot answer now.
        """
        route = admission.route
        if vouched is not None:
            return GitRepoAuth(True) if vouched.covers(info) else GitRepoAuth(False, WITHHELD)
        if not route.allows_namespace(info.namespace):
            return GitRepoAuth(False, f"namespace {info.namespace!r} is not served by this route")
        key = (info.namespace, info.webhook_secret)
        if key in cache:
            return cache[key]
        deadline.arm()  # the Secret may have to come from the API
        try:
            creds = await self._gitrepo_creds(info.namespace, info.webhook_secret, admission)
        except SecretUnavailable as exc:
            result = GitRepoAuth(False, f"webhook secret unavailable ({exc})", retry=not exc.refused)
        else:
            if creds is None:
                why = f"spec.webhookSecret {info.webhook_secret!r} not found in namespace {info.namespace!r}"
                result = GitRepoAuth(False, why)
            elif not creds:
                names = ", ".join(admission.provider.secret_keys)
                result = GitRepoAuth(False, f"spec.webhookSecret {info.webhook_secret!r} has no key {names}")
            elif await self._verify_whole(admission, body, creds) is Verdict.OK:
                result = GitRepoAuth(True)
            else:
                result = GitRepoAuth(False, f"signature does not match spec.webhookSecret {info.webhook_secret!r}")
        cache[key] = result
        return result

    async def _verify_whole(self, admission: Admission, body: Body, creds: Sequence[Credential]) -> Verdict:
        """A GitRepo secret's verdict on the whole body (in a worker thread when the body is large)."""
        raw = await body.read()
        request = admission.head.with_body(raw)
        if len(raw) > 1 << 20:
            return await asyncio.to_thread(admission.provider.verify, request, creds)
        return admission.provider.verify(request, creds)

    async def _apply(
        self,
        checked: Sequence[tuple[PushEvent, Decision, GitRepoAuth]],
        admission: Admission,
        history: CommitHistory,
        request_ok: bool,
        deadline: Deadline,
    ) -> tuple[int, dict[str, Any]]:
        """Write what was decided and build the answer.

        The answer never lists GitRepos the caller has no business knowing about: those in
        namespaces the route may not update, and, for a caller authenticated only by one GitRepo's
        own webhookSecret, the GitRepos that secret does not cover. They are only counted.
        """
        config, route = admission.config, admission.route
        updated: list[dict[str, Any]] = []
        unchanged: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        to_write: list[tuple[PushEvent, Decision]] = []
        hidden = 0
        for push, decision, auth in checked:
            info = decision.gitrepo
            if not route.allows_namespace(info.namespace) or (not auth.ok and not request_ok):
                hidden += 1
            elif not auth.ok and auth.retry:
                failed.append(_gitrepo_entry(info, reason=auth.problem, via=decision.via))
            elif not auth.ok:
                skipped.append(_gitrepo_entry(info, reason=auth.problem, via=decision.via))
            elif decision.action is Action.SKIP:
                skipped.append(_gitrepo_entry(info, reason=decision.reason, via=decision.via))
            elif decision.action is Action.UNCHANGED and not self.r.shared_order:
                unchanged.append(
                    _gitrepo_entry(
                        info, commit=push.commit, reason=decision.reason, via=decision.via, pathsRule=_verdict(decision)
                    )
                )
            elif len(to_write) >= config.limits.max_gitrepos_per_delivery:
                reason = f"over limits.maxGitReposPerDelivery ({config.limits.max_gitrepos_per_delivery})"
                skipped.append(_gitrepo_entry(info, reason=reason, via=decision.via))
            else:
                to_write.append((push, decision))
        if to_write:
            if self.r.updater is None:
                raise admission.fail(busy("no Kubernetes API configured", "no_api", 5))
            deadline.arm()
            write_deadline = time.monotonic() + (deadline.when - asyncio.get_running_loop().time())
            writes = [self.r.updater.record(d.gitrepo, p, config.polling, write_deadline, history) for p, d in to_write]
            # One GitRepo (the common push) is written in this task: no Task to make and schedule.
            results: list[WriteResult] = [await writes[0]] if len(writes) == 1 else await asyncio.gather(*writes)
            for (push, decision), result in zip(to_write, results, strict=True):
                entry = _gitrepo_entry(
                    result.gitrepo, commit=push.commit, via=decision.via, pathsRule=_verdict(decision)
                )
                if result.outcome is Outcome.UPDATED:
                    if result.polling_interval_set:
                        entry["pollingIntervalSet"] = result.polling_interval_set
                    if result.polling_error:  # commit recorded, interval refused (422): never silent
                        entry["pollingIntervalError"] = result.polling_error
                    updated.append(entry)
                elif result.outcome is Outcome.UNCHANGED:
                    unchanged.append({**entry, "reason": result.reason})
                elif result.outcome is Outcome.SKIPPED:
                    skipped.append({**entry, "reason": result.reason})
                else:
                    failed.append({**entry, "reason": result.reason})
        answer: dict[str, Any] = {
            "provider": admission.provider.name,
            "delivery": admission.delivery,
            "updated": updated,
            "unchanged": unchanged,
            "skipped": skipped,
        }
        if hidden:
            answer["notListed"] = hidden
        if failed:
            answer["failed"] = failed
            return 503, answer
        if not (updated or unchanged or skipped or hidden):
            answer["reason"] = "no GitRepo matches this repository"
        return 200, answer

    def _non_push_answer(self, parsed_all: Sequence[Parsed], admission: Admission) -> Answer:
        name, delivery = admission.provider.name, admission.delivery
        first = parsed_all[0] if parsed_all else None
        if isinstance(first, Ping):
            return Answer(200, {"provider": name, "delivery": delivery, "ping": True}, {}, "ping", name, delivery)
        if isinstance(first, Ignored):
            answer = {"provider": name, "delivery": delivery, "ignored": first.event, "reason": first.reason}
            return Answer(200, answer, {}, "ignored", name, delivery)
        answer = {"provider": name, "delivery": delivery, "ignored": "push", "reason": "no ref change in this delivery"}
        return Answer(200, answer, {}, "ignored", name, delivery)

    # --- the one place a 401 is decided --------------------------------------------------------

    async def unauthorized(self, admission: Admission, *, tried_gitrepo_secrets: bool = False) -> Refusal:
        """The 401 for this delivery, its reason, metric and security log line."""
        provider, config, route = admission.provider, admission.config, admission.route
        verdict = None if admission.auth is None else admission.auth.verdict
        # What a forged request gets is the same every time for a route and provider: reason and
        # encoded body are made once per config (the no-secret answer reads the Secret, so it is not).
        memo_key = (route.path, provider.name, verdict, tried_gitrepo_secrets)
        held = self._refusals.get(memo_key) if admission.auth is not None else None
        if held is not None and held[0] is config:
            _, reason, label, encoded = held
        else:
            reason, label = await self._unauthorized_reason(admission, verdict, tried_gitrepo_secrets)
            encoded = encode_json({"error": reason})
            if admission.auth is not None:
                if len(self._refusals) >= 1024:
                    self._refusals.clear()
                self._refusals[memo_key] = (config, reason, label, encoded)
        self._counter(self.r.metrics.verification_failures, provider.name, label).inc()
        suppressed = self._security_log.allow()
        if suppressed is not None:
            log.warning(
                "webhook verification failed",
                extra={
                    "security": True,
                    "provider": provider.name,
                    "reason": label,
                    "route": route.path,
                    "delivery": admission.delivery,
                    "suppressed": suppressed,
                },
            )
        refusal = admission.fail(Refusal(401, reason, "unauthorized"))
        refusal.encoded = encoded
        return refusal

    async def _unauthorized_reason(
        self, admission: Admission, verdict: Verdict | None, tried_gitrepo_secrets: bool
    ) -> tuple[str, str]:
        """The 401's reason for the body, and its metric label."""
        provider, config, route = admission.provider, admission.config, admission.route
        source = route.secret or config.secrets.source
        where = source.describe()
        if tried_gitrepo_secrets:
            reason = (
                f"{provider.name} signature/token matches neither {where} nor the spec.webhookSecret "
                "of the GitRepos of this repository"
            )
            label = "mismatch"
        elif admission.auth is None:
            keys = " and ".join(repr(k) for k in provider.secret_keys)
            blank = await self._blank_keys(admission)
            if blank:
                names = " and ".join(repr(k) for k in blank)
                reason = f"the value of key {names} in {where} is blank (only spaces or newlines): set the secret"
            else:
                reason = (
                    f"no secret configured for {provider.name}: add key {keys} to {where} "
                    f"(or set providers.{provider.name}.allowUnauthenticated: true)"
                )
            label = "no_secret"
        elif verdict is Verdict.MISSING:
            reason = f"{provider.name} delivery carries no signature/token header"
            label = "missing"
        else:
            reason = f"{provider.name} signature/token does not match the configured secret"
            label = "mismatch"
        return reason, label

    async def _blank_keys(self, admission: Admission) -> list[str]:
        source = admission.route.secret or admission.config.secrets.source
        try:
            keys = [*admission.provider.secret_keys]
            for fallback in admission.provider.fallback_secret_keys:
                keys.extend(fallback)
            return await self.r.secrets.blank_keys(source, keys)
        except SecretUnavailable:
            return []

    def _warn_unauthenticated(self, admission: Admission) -> None:
        self.r.metrics.unauthenticated.labels(admission.provider.name).inc()
        log.warning(
            "unauthenticated webhook accepted (allowUnauthenticated is on)",
            extra={"provider": admission.provider.name, "delivery": admission.delivery, "security": True},
        )

    # --- bookkeeping -----------------------------------------------------------------------------

    def _counter(self, metric: Any, *labels: str) -> Any:
        """A labelled child of `metric`, memoized (prometheus_client's labels() costs ~10 us a call)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < 10_000:
                self._children[key] = child
        return child

    def record(self, answer: Answer, route_name: str, started: float) -> None:
        """Metrics for every answer; a log line for refusals (401s have their own security line) and
        for deliveries that were authenticated but carry nothing to act on, so that "the git host sent
        it and nothing happened" is always visible in the log."""
        metrics = self.r.metrics
        self._counter(metrics.requests, answer.provider, route_name, answer.outcome, str(answer.status)).inc()
        self._counter(metrics.request_seconds, answer.provider).observe(time.monotonic() - started)
        if answer.status >= 400 and answer.status != 401 and "error" in answer.body:
            log.info(
                "delivery refused",
                extra={
                    "provider": answer.provider,
                    "route": route_name,
                    "status": answer.status,
                    "reason": answer.body["error"],
                    "delivery": answer.delivery,
                },
            )
        elif answer.outcome in ("ignored", "ping"):
            log.info(
                "delivery ignored",
                extra={
                    "provider": answer.provider,
                    "route": route_name,
                    "event": answer.body.get("ignored", "ping"),
                    "reason": answer.body.get("reason", "a ping: the hook was created or tested"),
                    "delivery": answer.delivery,
                },
            )

    def _log_delivery(
        self, admission: Admission, pushes: Sequence[PushEvent], answer: dict[str, Any], status: int
    ) -> None:
        first = pushes[0]
        info_line(
            log,
            "delivery handled",
            {
                "provider": admission.provider.name,
                "delivery": admission.delivery,
                "repo": redact_url(first.repo_urls[0]) if first.repo_urls else "",
                "ref": f"{first.ref_kind}:{first.ref_name}",
                "commit": first.commit,
                "changes": len(pushes),
                "status": status,
                "outcome": "accepted" if status < 500 else "write_failed",
                "updated": [f"{u['namespace']}/{u['name']}" for u in answer["updated"]],
                "skipped": len(answer["skipped"]),
                "failed": len(answer.get("failed", [])),
            },
        )

    # --- for callers without HTTP (tests, benchmarks) ------------------------------------------

    async def deliver(self, path: str, request: WebhookRequest) -> Answer:
        """The whole pipeline for a request held in memory, recorded in metrics like an HTTP one."""
        started = time.monotonic()
        route = self.r.holder.current.route_for(path)
        try:
            admission = await self.admit(path, request, len(request.body))
            body = self.open_body(admission)
            try:
                if len(request.body) > admission.max_bytes:
                    raise await self.over_limit(admission)
                body.write(request.body)
                body.arrived()
                answer = await self.complete(admission, body)
            finally:
                body.close()
        except Refusal as refusal:
            answer = refusal.answer()
        self.record(answer, route.path if route else "none", started)
        return answer
