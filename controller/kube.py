"""The only module that talks to the Kubernetes API.

The calls a delivery makes (read a GitRepo, patch its status or the object, create an Event, read a
Secret) go straight to the API server over aiohttp (`ApiHttp`), on the event loop: no thread hop,
no model objects, bodies encoded and decoded once with orjson. The official client still provides
the configuration (kubeconfig, in-cluster token and its refresh, certificates) and the GitRepo list
and watch, which run in their own thread and hand events to the loop with `call_soon_threadsafe`
(each watch event decoded once, with orjson: 5 µs for a GitRepo instead of the client's 51 µs).
Nothing in this module blocks the loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes.client as k8s
import kubernetes.config as k8s_config
import orjson
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

GROUP = "fleet.cattle.io"
VERSION = "v1alpha1"
PLURAL = "gitrepos"
KIND = "GitRepo"
COMPONENT = "fleet-webhook"
# Every write names this field manager, so `managedFields` and server-side-apply conflicts name this
# product (the client's default would be "OpenAPI-Generator"). tests/integration/test_field_manager.py.
FIELD_MANAGER = "fleet-webhook"
LIST_PAGE_SIZE = 500

log = logging.getLogger("fleet_webhook.kube")


class ApiUnavailable(Exception):
    """The API server could not be reached or kept failing: the caller answers 503."""


class Conflict(Exception):
    """The object changed since it was read (HTTP 409): re-read and decide again."""


class NotFound(Exception):
    """The object does not exist (any more)."""


class Forbidden(Exception):
    """RBAC refused the call: a configuration problem, reported clearly, not retried."""


class Invalid(Exception):
    """The API server refused the object (HTTP 422: the CRD's schema, a CEL rule or an admission policy).

    The message is the API server's own, naming the field; it is shown to the user, never retried.
    """


def _status_error(status: int, reason: str, body: bytes | str | None) -> Exception:
    """An HTTP error status of the API server as one of the few outcomes callers distinguish."""
    if status == 404:
        return NotFound(reason)
    if status == 409:
        return Conflict(reason)
    if status in (401, 403):
        return Forbidden(f"{status} {reason}")
    if status == 422:
        return Invalid(_status_message(body) or f"{status} {reason}")
    return ApiUnavailable(f"API error {status} {reason}")


def _status_message(body: bytes | str | None) -> str:
    """The `message` of a Kubernetes Status body, or ""."""
    try:
        document = orjson.loads(body or b"")
    except (TypeError, orjson.JSONDecodeError):
        return ""
    message = document.get("message") if isinstance(document, dict) else None
    return message[:512] if isinstance(message, str) else ""


def now_rfc3339() -> str:
    """UTC time as Kubernetes writes it (second precision, Z suffix)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# HTTP connections kept to the API server, by the aiohttp connector of the delivery path and by the
# official client (list and watch threads): a pool smaller than the concurrent calls would drop
# connections and pay a new TLS handshake for each, which showed as tail latency.
CONNECTION_POOL_SIZE = 32


def _configuration() -> k8s.Configuration:
    configuration = k8s.Configuration()
    configuration.connection_pool_maxsize = CONNECTION_POOL_SIZE
    return configuration


def load_api_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """An ApiClient from an explicit kubeconfig, else in-cluster, else the default kubeconfig."""
    if kubeconfig is not None:
        client: k8s.ApiClient = k8s_config.new_client_from_config(
            config_file=str(kubeconfig), client_configuration=_configuration()
        )
        return client
    try:
        configuration = _configuration()
        k8s_config.load_incluster_config(client_configuration=configuration)
        return k8s.ApiClient(configuration)
    except k8s_config.ConfigException:
        fallback: k8s.ApiClient = k8s_config.new_client_from_config(client_configuration=_configuration())
        return fallback


class ApiHttp:
    """Request/response calls to the API server over aiohttp, authenticated as the official client is.

    Configured from the client's `Configuration` (host, CA, client certificate, bearer token with its
    refresh hook for in-cluster tokens, TLS server name, proxy); the environment's proxy variables
    are not read (`trust_env=False`). The session is made on first use in the running event loop.
    """

    def __init__(self, configuration: k8s.Configuration, timeout: float) -> None:
        self.configuration = configuration
        self.base = configuration.host.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = _ssl_context(configuration) if self.base.startswith("https:") else None
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.connections_opened = 0  # TCP (and TLS) connections made: tests check they are reused

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            trace = aiohttp.TraceConfig()
            trace.on_connection_create_end.append(self._connection_opened)
            connector = aiohttp.TCPConnector(limit=CONNECTION_POOL_SIZE, ssl=self._ssl if self._ssl else True)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, trace_configs=[trace])
            self._loop = loop
        return self._session

    async def _connection_opened(self, *_args: Any) -> None:
        self.connections_opened += 1

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": COMPONENT}
        bearer = self.configuration.auth_settings().get("BearerToken")  # refreshes an in-cluster token first
        if bearer is not None and bearer["value"]:
            headers["Authorization"] = bearer["value"]
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One call; the decoded JSON answer. Raises NotFound/Conflict/Forbidden/Invalid/ApiUnavailable."""
        session = self._session_now()
        headers = self._headers()
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = content_type
        configuration = self.configuration
        try:
            async with session.request(
                method,
                self.base + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
                proxy=configuration.proxy or None,
                server_hostname=configuration.tls_server_name or None,
            ) as response:
                raw = await response.read()
                status, reason = response.status, response.reason or ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiUnavailable(f"API unreachable: {type(exc).__name__}") from None
        if status >= 400:
            raise _status_error(status, reason, raw)
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise ApiUnavailable(f"API answered {status} with a body that is not JSON") from None

    def close(self) -> None:
        """Close the kept connections (idempotent; called on the loop thread)."""
        session, self._session = self._session, None
        if session is not None and not session.closed and session.connector is not None:
            session.connector._close()  # synchronous: the transports are closed now


def _ssl_context(configuration: k8s.Configuration) -> ssl.SSLContext:
    """TLS as the configuration says: its CA (file or data), client certificate, verification."""
    if not configuration.verify_ssl:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(
            cafile=configuration.ssl_ca_cert or None, cadata=getattr(configuration, "ca_cert_data", None) or None
        )
        if configuration.assert_hostname is False:
            context.check_hostname = False
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def _path(*segments: str) -> str:
    return "/" + "/".join(urllib.parse.quote(s, safe="") for s in segments)


def _gitrepo_path(namespace: str, name: str, *sub: str) -> str:
    return _path("apis", GROUP, VERSION, "namespaces", namespace, PLURAL, name, *sub)


MERGE_PATCH = "application/merge-patch+json"
WRITE_PARAMS = {"fieldManager": FIELD_MANAGER}


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change seen by the GitRepo watch: ADDED / MODIFIED / DELETED with the object."""

    type: str
    obj: dict[str, Any]


class Kube:
    """The API calls the receiver makes: direct aiohttp requests (`http`) and the official client (list, watch)."""

    def __init__(self, api_client: k8s.ApiClient, *, request_timeout: float = 10.0) -> None:
        self.api_client = api_client
        self.custom = k8s.CustomObjectsApi(api_client)
        self.core = k8s.CoreV1Api(api_client)
        self.request_timeout = request_timeout
        self.http = ApiHttp(api_client.configuration, request_timeout)

    def close(self) -> None:
        """Close both connection pools."""
        self.http.close()
        with contextlib.suppress(Exception):
            self.api_client.close()

    # --- GitRepos ---------------------------------------------------------------------------

    async def get_gitrepo(self, namespace: str, name: str) -> dict[str, Any]:
        """The current GitRepo object."""
        obj: dict[str, Any] = await self.http.request("GET", _gitrepo_path(namespace, name))
        return obj

    async def patch_gitrepo_status(
        self, namespace: str, name: str, status: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """JSON-merge-patch the status subresource; with a resourceVersion the write is conditional."""
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        obj: dict[str, Any] = await self.http.request(
            "PATCH", _gitrepo_path(namespace, name, "status"), body, content_type=MERGE_PATCH, params=WRITE_PARAMS
        )
        return obj

    async def patch_gitrepo(
        self, namespace: str, name: str, patch: Mapping[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """JSON-merge-patch the GitRepo itself (spec, annotations); conditional with a resourceVersion."""
        body = dict(patch)
        if resource_version:
            meta = dict(body.get("metadata", {}))
            meta["resourceVersion"] = resource_version
            body["metadata"] = meta
        obj: dict[str, Any] = await self.http.request(
            "PATCH", _gitrepo_path(namespace, name), body, content_type=MERGE_PATCH, params=WRITE_PARAMS
        )
        return obj

    async def create_event(self, gitrepo: Mapping[str, str], reason: str, message: str, kind: str = "Normal") -> None:
        """Record a core/v1 Event on a GitRepo (best effort: failures are logged, never raised)."""
        stamp = now_rfc3339()
        involved = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": gitrepo["name"],
            "namespace": gitrepo["namespace"],
            "uid": gitrepo.get("uid") or None,
            "resourceVersion": gitrepo.get("resourceVersion") or None,
        }
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{gitrepo['name']}.", "namespace": gitrepo["namespace"]},
            "involvedObject": {k: v for k, v in involved.items() if v is not None},
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
        }
        try:
            path = _path("api", "v1", "namespaces", gitrepo["namespace"], "events")
            await self.http.request("POST", path, event, params=WRITE_PARAMS)
        except Exception as exc:  # an Event is a courtesy; never fail a delivery over it
            log.warning(
                "event not recorded", extra={"gitrepo": f"{gitrepo['namespace']}/{gitrepo['name']}", "error": str(exc)}
            )

    # --- Secrets ----------------------------------------------------------------------------

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded; None when it does not exist."""
        try:
            secret = await self.http.request("GET", _path("api", "v1", "namespaces", namespace, "secrets", name))
        except NotFound:
            return None
        found = secret.get("data") if isinstance(secret, dict) else None
        data: dict[str, bytes] = {}
        for key, value in (found if isinstance(found, dict) else {}).items():
            with contextlib.suppress(ValueError, TypeError):
                data[key] = base64.b64decode(value)
        return data

    # --- Watch ------------------------------------------------------------------------------

    def list_gitrepos(
        self,
        namespace: str | None,
        convert: Callable[[dict[str, Any]], Any] | None = None,
        page_size: int = LIST_PAGE_SIZE,
    ) -> tuple[list[Any], str]:
        """Blocking full list (in the watch thread), in pages: objects (or `convert(obj)`) and the list's
        resourceVersion.

        Paging with `limit`/`continue` keeps only one page of raw objects in memory at a time; with
        `convert` the rest of the list is held in its compact form. A single 100,000-object response
        would otherwise be decoded whole.
        """
        items: list[Any] = []
        token: str | None = None
        resource_version = ""
        while True:
            # The page is decoded once, with orjson (the client would decode it into a model and back).
            kwargs: dict[str, Any] = {"limit": page_size, "_request_timeout": 60, "_preload_content": False}
            if token:
                kwargs["_continue"] = token
            response: Any  # urllib3's response (the client declares `object`)
            if namespace:
                response = self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, **kwargs)
            else:
                response = self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)
            try:
                result = orjson.loads(response.data)
            finally:
                response.release_conn()
            if not isinstance(result, dict):
                break
            meta = result.get("metadata") or {}
            for item in result.get("items") or []:
                item.setdefault("kind", KIND)
                items.append(convert(item) if convert else item)
            token = meta.get("continue") or None
            resource_version = meta.get("resourceVersion", resource_version)
            if not token:
                break
        return items, resource_version


class GitRepoWatcher:
    """List then watch GitRepos in one namespace (or all) in a thread; events go to the loop.

    Protocol towards `on_list`/`on_event` (both called on the loop thread):
    - `on_list(namespace, objects)` after every full list (objects passed through `convert` when given) (start, after 410 Gone, after an outage);
    - `on_event(WatchEvent)` for each change in between.
    The watch resumes from the last resourceVersion seen and re-lists when it expired.
    """

    def __init__(
        self,
        kube: Kube,
        namespace: str | None,
        loop: asyncio.AbstractEventLoop,
        on_list: Callable[[str | None, list[Any]], None],
        on_event: Callable[[WatchEvent], None],
        on_error: Callable[[str], None] | None = None,
        watch_timeout: int = 300,
        convert: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.loop = loop
        self.on_list = on_list
        self.on_event = on_event
        self.on_error = on_error or (lambda _msg: None)
        self.watch_timeout = watch_timeout
        self.convert = convert
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{namespace or 'all'}", daemon=True)

    def start(self) -> None:
        """Start the watch thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop: it ends after the current event (or when the watch request ends)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if not self._stop.is_set() and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(fn, *args)

    def _run(self) -> None:
        backoff = 0.2
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    items, resource_version = self.kube.list_gitrepos(self.namespace, convert=self.convert)
                    self._post(self.on_list, self.namespace, items)
                    backoff = 0.2
                resource_version = self._watch_from(resource_version)
            except ApiException as exc:
                if exc.status == 410:
                    log.info("watch expired; re-listing", extra={"namespace": self.namespace or "*"})
                    resource_version = ""
                    continue
                self._failed(f"API error {exc.status} {exc.reason}")
                resource_version = ""
            except Exception as exc:  # network errors, timeouts, decoding: re-list after a pause
                if self._stop.is_set():
                    break
                self._failed(f"{type(exc).__name__}: {exc}")
                resource_version = ""
            if resource_version == "":
                self._stop.wait(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 5.0)

    def _failed(self, message: str) -> None:
        log.warning("gitrepo watch failed; will re-list", extra={"namespace": self.namespace or "*", "error": message})
        self._post(self.on_error, message)

    def _watch_from(self, resource_version: str) -> str:
        """Stream events until the server ends the watch; returns the resourceVersion to resume from.

        Each event line is decoded once, with orjson. The official client's `Watch.stream` decodes it
        three times (the line, then the object re-encoded and decoded into a model): at 50 writes a
        second that was GIL time taken from the delivery loop for every write's own echo.
        """
        if self.namespace:
            fn: Callable[..., Any] = self.kube.custom.list_namespaced_custom_object
            args: tuple[Any, ...] = (GROUP, VERSION, self.namespace, PLURAL)
        else:
            fn = self.kube.custom.list_cluster_custom_object
            args = (GROUP, VERSION, PLURAL)
        started = time.monotonic()
        response = fn(
            *args,
            watch=True,
            _preload_content=False,
            resource_version=resource_version,
            timeout_seconds=self.watch_timeout,
            allow_watch_bookmarks=True,
            _request_timeout=self.watch_timeout + 30,
        )
        try:
            status = getattr(response, "status", 200)
            if isinstance(status, int) and not 200 <= status <= 299:
                raise ApiException(status=status, reason=getattr(response, "reason", "") or "watch refused")
            for line in iter_resp_lines(response):
                if self._stop.is_set():
                    break
                resource_version = self._event(orjson.loads(line), resource_version)
        finally:
            response.close()
            response.release_conn()
        if time.monotonic() - started < 1 and not self._stop.is_set():
            self._stop.wait(0.5)  # a watch that ends at once must not spin
        return resource_version

    def _event(self, raw: Any, resource_version: str) -> str:
        """Hand one decoded watch event to the loop; the resourceVersion to resume from after it."""
        if not isinstance(raw, dict):
            return resource_version
        kind = raw.get("type")
        obj = raw.get("object")
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                raise ApiException(status=410, reason="Gone")
            raise ApiException(status=code or 500, reason=str(obj))
        if not isinstance(obj, dict):
            return resource_version
        metadata = obj.get("metadata")
        rv = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if isinstance(rv, str) and rv:
            resource_version = rv
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._post(self.on_event, WatchEvent(kind, obj))
        return resource_version  # BOOKMARK: only the resourceVersion
