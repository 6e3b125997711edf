"""Hostile and broken input over real HTTP: every answer is a documented status code, never a 500.

The receiver runs on a loopback socket (tests/live.py) with the connection options `serve` uses,
so malformed HTTP, slow clients and oversized bodies meet the real aiohttp stack. Kubernetes writes
are replaced by a recording FakeUpdater: "no write happened" is checked on it.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import gzip
import hashlib
import hmac
import json
import logging
import select
import socket
import time
import tracemalloc
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.deliveries import PushEvent
from controller.logs import CLIENT_ERRORS
from controller.providers import by_name
from controller.providers.base import WebhookRequest
from tests.factories import gitrepo, receiver
from tests.live import DOCUMENTED_CODES, FakeUpdater, LiveServer, RawResponse, build_request, raw_request, read_response
from tests.support import PROVIDERS, delivery, json_values, replace_one_node, secret_data, sha, sign

SECRET = "bad-input-secret"
NS = "cattle-fleet-system"
MAX_BODY = 65536
READ_TIMEOUT = 0.5
HEADER_TIMEOUT = 0.5
URLS = {
    "github": "https://github.com/example-org/hostile",
    "gitlab": "https://gitlab.example.com/platform/hostile",
    "bitbucket": "https://bitbucket.org/example-org/hostile",
    "bitbucket-server": "https://bitbucket.example.com/scm/plat/hostile.git",
    "gogs": "https://gogs.example.com/org/hostile",
    "gitea": "https://gitea.example.com/org/hostile",
    "azure-devops": "https://dev.azure.com/example-org/Platform/_git/hostile",
    "generic": "https://git.example.com/platform/hostile.git",
}
SIGNATURE_HEADERS = {
    "x-hub-signature-256",
    "x-hub-signature",
    "x-gitlab-token",
    "x-gogs-signature",
    "x-gitea-signature",
    "x-forgejo-signature",
    "authorization",
    "x-fleet-webhook-signature",
}
# Where each provider's payload names the repository, its list of ref changes and the new commit.
REPO_PATHS: dict[str, list[tuple[str, ...]]] = {
    "github": [("repository",)],
    "gitlab": [("project",), ("repository",)],
    "bitbucket": [("repository",)],
    "bitbucket-server": [("repository",)],
    "gogs": [("repository",)],
    "gitea": [("repository",)],
    "azure-devops": [("resource", "repository")],
    "generic": [("repository",), ("repositories",)],
}
CHANGE_LISTS = {
    "bitbucket": ("push", "changes"),
    "bitbucket-server": ("changes",),
    "azure-devops": ("resource", "refUpdates"),
}
COMMIT_PATHS: dict[str, list[tuple[str | int, ...]]] = {
    "github": [("after",)],
    "gitlab": [("after",), ("checkout_sha",)],
    "bitbucket": [("push", "changes", 0, "new", "target", "hash")],
    "bitbucket-server": [("changes", 0, "toHash")],
    "gogs": [("after",)],
    "gitea": [("after",)],
    "azure-devops": [("resource", "refUpdates", 0, "newObjectId")],
    "generic": [("commit",)],
}
EVENT_HEADERS = {
    "github": "X-GitHub-Event",
    "gitlab": "X-Gitlab-Event",
    "bitbucket": "X-Event-Key",
    "bitbucket-server": "X-Event-Key",
    "gogs": "X-Gogs-Event",
    "gitea": "X-Gitea-Event",
    "azure-devops": "X-Vss-ActivityId",
    "generic": "X-Fleet-Webhook-Event",
}
FORM_PROVIDERS = {"github", "gogs", "gitea"}


def all_secrets() -> dict[str, str]:
    data: dict[str, str] = {}
    for provider in PROVIDERS:
        data.update(secret_data(provider, SECRET))
    return data


class ErrorLog(logging.Handler):
    """Collects every ERROR record and every warning carrying a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or (record.exc_info and record.levelno >= logging.WARNING):
            self.records.append(record)

    def problems(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()} {r.exc_info!r}" for r in self.records]


@pytest.fixture(scope="module")
def errors() -> Iterator[ErrorLog]:
    """Root-logger capture, with the filter `logs.configure` installs on aiohttp's server logger."""
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.DEBUG)
    logging.getLogger("aiohttp.server").addFilter(CLIENT_ERRORS)
    try:
        yield handler
    finally:
        logging.getLogger("aiohttp.server").removeFilter(CLIENT_ERRORS)
        root.removeHandler(handler)
        root.setLevel(old)


def make_receiver(extra_config: str = "", updater: FakeUpdater | None = None) -> Any:
    config = (
        f"limits:\n  maxBodyBytes: {MAX_BODY}\n  readTimeoutSeconds: {READ_TIMEOUT}\n  dedupeSeconds: 0\n"
        + extra_config
    )
    repos = [gitrepo(f"r-{p}", url) for p, url in URLS.items()]
    r = receiver(config, secrets={f"{NS}/gitjob-webhook": all_secrets()}, gitrepos=repos)
    r.updater = updater or FakeUpdater()
    return r


@pytest.fixture(scope="module")
def server(errors: ErrorLog) -> Iterator[LiveServer]:
    with LiveServer(make_receiver(), header_timeout=HEADER_TIMEOUT) as live:
        yield live


@pytest.fixture(autouse=True)
def no_server_errors(errors: ErrorLog) -> Iterator[None]:
    """Every test in this module also asserts that nothing was logged as an error or with a traceback."""
    errors.records.clear()
    yield
    assert errors.problems() == []


def updater_of(server: LiveServer) -> FakeUpdater:
    up = server.receiver.updater
    assert isinstance(up, FakeUpdater)
    return up


def resign(provider: str, headers: dict[str, str], body: bytes, secret: str | None = SECRET) -> dict[str, str]:
    unsigned = {k: v for k, v in headers.items() if k.lower() not in SIGNATURE_HEADERS}
    return sign(provider, unsigned, body, secret)


def push(provider: str, commit: str = "") -> tuple[dict[str, str], dict[str, Any]]:
    d = delivery(provider, https_url=URLS[provider], commit=commit or sha(f"{provider}-ok"), secret=SECRET)
    return d.headers, json.loads(d.body)


def send(
    server: LiveServer, provider: str, headers: dict[str, str], body: bytes, *, signed: bool = True
) -> RawResponse:
    if signed:
        headers = resign(provider, headers, body)
    resp = raw_request(server, build_request(headers, body))
    assert resp.status in DOCUMENTED_CODES, (resp.status, resp.body[:300])
    return resp


def error_of(resp: RawResponse) -> str:
    return str(json.loads(resp.body).get("error", ""))


def set_path(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return doc


def drop_path(doc: Any, path: tuple[str | int, ...]) -> Any:
    doc = copy.deepcopy(doc)
    node = doc
    for step in path[:-1]:
        node = node[step]
    node.pop(path[-1], None)
    return doc


# ---------------------------------------------------------------- well-formed baseline


@pytest.mark.parametrize("provider", PROVIDERS)
def test_baseline_signed_push_is_accepted(server: LiveServer, provider: str) -> None:
    headers, doc = push(provider)
    resp = send(server, provider, headers, json.dumps(doc).encode())
    assert resp.status == 200, resp.body
    assert [e["name"] for e in json.loads(resp.body)["updated"]] == [f"r-{provider}"]


# ---------------------------------------------------------------- missing / extra / mistyped / null fields

Mutation = Callable[[str, dict[str, Any]], Any]


def _null_repository(provider: str, doc: dict[str, Any]) -> Any:
    for path in REPO_PATHS[provider]:
        doc = set_path(doc, path, None)
    return doc


def _missing_repository(provider: str, doc: dict[str, Any]) -> Any:
    for path in REPO_PATHS[provider]:
        doc = drop_path(doc, path)
    return doc


def _repository_is_a_string(provider: str, doc: dict[str, Any]) -> Any:
    for path in REPO_PATHS[provider]:
        doc = set_path(doc, path, 12345 if provider == "generic" else "https://github.com/x/y")
    return doc


def _repository_urls_are_numbers(provider: str, doc: Any) -> Any:
    """Every string naming the repository (web, clone, ssh URL, full name) replaced by a number."""
    if isinstance(doc, dict):
        return {k: _repository_urls_are_numbers(provider, v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_repository_urls_are_numbers(provider, v) for v in doc]
    return 42 if isinstance(doc, str) and "hostile" in doc else doc


def _commit_mistyped(provider: str, doc: dict[str, Any]) -> Any:
    for path in COMMIT_PATHS[provider]:
        doc = set_path(doc, path, 1234567890)
    return doc


def _commit_not_hex(provider: str, doc: dict[str, Any]) -> Any:
    for path in COMMIT_PATHS[provider]:
        doc = set_path(doc, path, "z" * 40)
    return doc


def _commit_short(provider: str, doc: dict[str, Any]) -> Any:
    for path in COMMIT_PATHS[provider]:
        doc = set_path(doc, path, "abc123")
    return doc


BAD_PAYLOADS: dict[str, Mutation] = {
    "null repository": _null_repository,
    "missing repository": _missing_repository,
    "repository of the wrong type": _repository_is_a_string,
    "repository URLs are numbers": _repository_urls_are_numbers,
    "commit is a number": _commit_mistyped,
    "commit is not hex": _commit_not_hex,
    "commit is too short": _commit_short,
    "body is an array": lambda _p, doc: [doc],
    "body is a string": lambda _p, _doc: "push",
    "body is null": lambda _p, _doc: None,
    "body is a number": lambda _p, _doc: 7,
}


@pytest.mark.parametrize("case", BAD_PAYLOADS)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_broken_payloads_are_400_naming_the_problem_and_write_nothing(
    server: LiveServer, provider: str, case: str
) -> None:
    headers, doc = push(provider, sha(f"{provider}-{case}"))
    bad = BAD_PAYLOADS[case](provider, doc)
    before = len(updater_of(server).written)
    resp = send(server, provider, headers, json.dumps(bad).encode())
    assert resp.status == 400, (case, resp.body)
    assert error_of(resp).startswith(f"malformed {provider} payload: ")
    assert len(updater_of(server).written) == before


@pytest.mark.parametrize("provider", sorted(CHANGE_LISTS))
@pytest.mark.parametrize("value", [[], None, {}, "x", [None], [[]], [{}]])
def test_empty_or_broken_change_lists_are_400(server: LiveServer, provider: str, value: Any) -> None:
    """Argo CD's CVE-2025-59538 (empty Azure refUpdates panicked); here it is a plain 400."""
    headers, doc = push(provider, sha(f"{provider}-changes-{value!r}"))
    resp = send(server, provider, headers, json.dumps(set_path(doc, CHANGE_LISTS[provider], value)).encode())
    assert resp.status == 400, resp.body
    assert "changes" in error_of(resp) or "refUpdates" in error_of(resp)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unknown_extra_fields_are_ignored(server: LiveServer, provider: str) -> None:
    headers, doc = push(provider, sha(f"{provider}-extra"))

    def decorate(node: Any) -> Any:
        if isinstance(node, dict):
            return {**{k: decorate(v) for k, v in node.items()}, "zz_extra": {"nested": [1, None, "x"]}}
        if isinstance(node, list):
            return [decorate(v) for v in node]
        return node

    resp = send(server, provider, headers, json.dumps(decorate(doc)).encode())
    assert resp.status == 200, resp.body


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"ref": "refs/heads/\xc3\x28"}', "not valid UTF-8"),
        (b"[" * 30_000 + b"]" * 30_000, "nested deeper"),
        (json.dumps(json.loads('{"a":' * 70 + "1" + "}" * 70)).encode(), "nested deeper"),
        (b'{"after": NaN}', "NaN is not allowed"),
        (b'{"n": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b"{,}", "not valid JSON"),
    ],
    ids=["bom-utf16", "bad-utf8", "deep-array", "deep-object", "nan", "huge-int", "empty", "bom-utf8", "garbage"],
)
def test_undecodable_bodies_are_400(server: LiveServer, provider: str, body: bytes, fragment: str) -> None:
    headers, _ = push(provider)
    resp = send(server, provider, headers, body)
    assert resp.status == 400, resp.body
    assert fragment in error_of(resp)


# ---------------------------------------------------------------- content types


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x", "%%%", "application/jsonx"]
)
def test_wrong_content_types_are_415(server: LiveServer, provider: str, content_type: str) -> None:
    headers, doc = push(provider)
    resp = send(server, provider, {**headers, "Content-Type": content_type}, json.dumps(doc).encode())
    assert resp.status == 415, resp.body
    assert "application/json" in error_of(resp)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_form_encoding_only_where_the_host_sends_it(server: LiveServer, provider: str) -> None:
    headers, doc = push(provider, sha(f"{provider}-form"))
    body = urllib.parse.urlencode({"payload": json.dumps(doc)}).encode()
    resp = send(server, provider, {**headers, "Content-Type": "application/x-www-form-urlencoded"}, body)
    assert resp.status == (200 if provider in FORM_PROVIDERS else 415), resp.body


@pytest.mark.parametrize("provider", sorted(FORM_PROVIDERS))
@pytest.mark.parametrize("body", [b"payload=%ZZ", b"payload", b"a=b", b"payload=\xff", b"&" * 5000 + b"payload=1"])
def test_broken_form_bodies_are_400_or_401(server: LiveServer, provider: str, body: bytes) -> None:
    headers, _ = push(provider)
    headers = {k: v for k, v in headers.items() if k.lower() not in SIGNATURE_HEADERS}
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()  # over the raw form body
    headers.update({"X-Hub-Signature-256": f"sha256={digest}", "X-Gogs-Signature": digest, "X-Gitea-Signature": digest})
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    resp = send(server, provider, headers, body, signed=False)
    # GitHub signs the raw body, so this is authentic and the form is the problem (400). Gogs and Gitea
    # sign the JSON inside the form: without readable JSON the delivery cannot be verified (401).
    assert resp.status == (400 if provider == "github" else 401), resp.body


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("content_type", ["", "application/json; charset=UTF-8", "APPLICATION/JSON", "text/json"])
def test_json_content_type_variants_are_accepted(server: LiveServer, provider: str, content_type: str) -> None:
    headers, doc = push(provider, sha(f"{provider}-ct-{content_type}"))
    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    if content_type:
        headers["Content-Type"] = content_type
    resp = send(server, provider, headers, json.dumps(doc).encode())
    assert resp.status == 200, resp.body


# ---------------------------------------------------------------- invalid UTF-8 and odd bytes in the head


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("value", [b"\xff", b"push\xc3\x28", b"\xed\xa0\x80"])
def test_undecodable_header_values_are_answered_not_500(server: LiveServer, provider: str, value: bytes) -> None:
    """Regression: a non-UTF-8 event header was echoed into the JSON answer and crashed its encoding (500)."""
    headers, doc = push(provider, sha(f"{provider}-hdr-{value!r}"))
    body = json.dumps(doc).encode()
    signed = resign(provider, headers, body)
    name = EVENT_HEADERS[provider]
    marker = "\x00MARK\x00"
    request = build_request({**signed, name: marker}, body).replace(marker.encode(), value)
    resp = raw_request(server, request)
    assert resp.status in DOCUMENTED_CODES - {503}, (resp.status, resp.body)
    json.loads(resp.body)  # still valid JSON


@pytest.mark.parametrize(
    "head",
    [
        b"POST /\xff\xfe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST /%ff%fe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: a\r\n" % i for i in range(200)) + b"\r\n",
        b"POST /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\x00\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\n X-Folded: yes\r\n\r\n",
        b"POST / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"GARBAGE\r\n\r\n",
    ],
    ids=[
        "raw-bytes-path",
        "escaped-bytes-path",
        "negative-length",
        "huge-length",
        "two-lengths",
        "chunked-and-length",
        "bad-chunk-size",
        "long-header",
        "too-many-headers",
        "long-request-line",
        "nul-in-header",
        "folded-header",
        "http-9",
        "tls-hello",
        "garbage",
    ],
)
def test_malformed_http_is_answered_with_a_documented_code(server: LiveServer, head: bytes) -> None:
    resp = raw_request(server, head, timeout=5)
    assert resp.status in DOCUMENTED_CODES, (resp.status, resp.body[:200])


# ---------------------------------------------------------------- size limits


def test_declared_oversize_body_is_413_before_the_body_is_sent(server: LiveServer) -> None:
    headers, _ = push("github")
    head = build_request(headers, b"", content_length=False)[:-2] + b"Content-Length: 10737418240\r\n\r\n"
    started = time.monotonic()
    with server.connect(5) as sock:
        sock.sendall(head)  # 10 GiB announced, nothing sent
        sock.settimeout(5)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert b"Connection: close" in answer
    assert time.monotonic() - started < 2


def test_expect_100_continue_with_an_oversized_length_gets_413_and_no_continue(server: LiveServer) -> None:
    headers, _ = push("github")
    head = build_request(headers, b"", content_length=False)[:-2]
    head += b"Content-Length: 10737418240\r\nExpect: 100-continue\r\n\r\n"
    with server.connect(5) as sock:
        sock.sendall(head)
        resp = read_response(sock, time.monotonic())
    assert resp.status == 413, resp.body
    assert b"100 Continue" not in resp.body
    assert "larger than" in json.loads(resp.body)["error"]


def test_expect_100_continue_is_sent_only_after_admission(server: LiveServer) -> None:
    """An unsigned delivery is refused instead of being invited to send its body; a signed one is invited."""
    headers, doc = push("github")
    body = json.dumps(doc).encode()
    unsigned = {k: v for k, v in headers.items() if not k.lower().startswith("x-hub-signature")}
    with server.connect(5) as sock:
        sock.sendall(build_request(unsigned, b"")[:-2] + b"Expect: 100-continue\r\n\r\n")
        resp = read_response(sock, time.monotonic())
    assert resp.status == 401
    assert b"100 Continue" not in resp.body
    with server.connect(5) as sock:
        full = build_request({**headers, "Expect": "100-continue"}, body)
        sock.sendall(full[: len(full) - len(body)])  # the head only, then wait for the invitation
        sock.settimeout(5)
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue"), interim[:80]
        sock.sendall(body)
        final = read_response(sock, time.monotonic())
    assert final.status == 200, final.body


def test_unknown_expectation_is_a_json_417(server: LiveServer) -> None:
    headers, doc = push("github")
    resp = raw_request(server, build_request({**headers, "Expect": "something-else"}, json.dumps(doc).encode()))
    assert resp.status == 417
    assert resp.headers["content-type"].startswith("application/json")
    assert "100-continue" in json.loads(resp.body)["error"]


@pytest.mark.parametrize(
    "request_line", [b"CONNECT 127.0.0.1:443 HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET /\x7f HTTP/1.1"]
)
def test_odd_request_targets_get_json_errors(server: LiveServer, request_line: bytes) -> None:
    resp = raw_request(server, request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert 400 <= resp.status < 500, resp
    assert resp.headers["content-type"].startswith("application/json"), resp
    assert json.loads(resp.body)["error"]


def test_chunked_oversize_body_is_cut_off_without_reading_it_all(server: LiveServer) -> None:
    """A streamed body is refused once it passes the cap; the client never gets to send most of it."""
    headers, _ = push("github")
    head = build_request(headers, b"", content_length=False)[:-2] + b"Transfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    total = 256 * 1024 * 1024
    sent = 0
    with server.connect(10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        deadline = time.monotonic() + 20
        answered = False
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                answered = True
                break
            if writable:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, InterruptedError):
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    answered = True
                    break
        sock.setblocking(True)
        sock.settimeout(5)
        answer = sock.recv(4096) if answered else b""
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 32 * 1024 * 1024, f"server let the client push {sent} bytes past a {MAX_BODY}-byte cap"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compression_bomb_is_413_with_bounded_memory(server: LiveServer, encoding: str) -> None:
    headers, _ = push("github")
    plain = b"0" * (64 * 1024 * 1024)  # 1000x the cap once inflated
    bomb = gzip.compress(plain, 6) if encoding == "gzip" else zlib.compress(plain, 6)
    del plain
    tracemalloc.start()
    try:
        resp = raw_request(server, build_request({**headers, "Content-Encoding": encoding}, bomb))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 413, resp.body
    assert peak < 32 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while refusing a {len(bomb)}-byte bomb"


def test_an_unauthenticated_compressed_body_may_not_inflate_past_32_times_its_length() -> None:
    """2 KB of gzip inflating to 2 MiB, with a well-formed wrong signature: refused at 1 MiB, not hashed to 401."""
    headers, _ = push("github")
    bomb = gzip.compress(b" " * (2 * 1024 * 1024), 9)
    forged = {**headers, "X-Hub-Signature-256": "sha256=" + "ab" * 32, "Content-Encoding": "gzip"}
    repos = [gitrepo("r-github", URLS["github"])]
    r = receiver("limits:\n  maxBodyBytes: 8388608\n", secrets={f"{NS}/gitjob-webhook": all_secrets()}, gitrepos=repos)
    with LiveServer(r) as live:
        resp = raw_request(live, build_request(forged, bomb))
        plain = raw_request(live, build_request({k: v for k, v in forged.items() if k != "Content-Encoding"}, b"{}"))
    assert resp.status == 413, resp.body
    assert "32 times its Content-Length" in json.loads(resp.body)["error"]
    assert plain.status == 401  # the same forgery uncompressed: read, hashed, refused


def test_a_signed_compressed_push_is_delivered(server: LiveServer) -> None:
    headers, doc = push("github", sha("compressed-push"))
    body = json.dumps(doc).encode()
    resp = raw_request(
        server, build_request({**resign("github", headers, body), "Content-Encoding": "gzip"}, gzip.compress(body))
    )
    assert resp.status == 200, resp.body
    assert json.loads(resp.body)["updated"], resp.body


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "identity, gzip", "bogus"])
def test_undecodable_content_encoding_is_400(server: LiveServer, encoding: str) -> None:
    """Regression: a body whose Content-Encoding did not decode raised RequestPayloadError -> 500."""
    headers, _ = push("github")
    resp = raw_request(server, build_request({**headers, "Content-Encoding": encoding}, b"\x00not-compressed" * 10))
    assert resp.status in {400, 401}, (resp.status, resp.body)
    assert "error" in json.loads(resp.body)


@pytest.mark.parametrize("encoding", ["br", "zstd"])
def test_content_encoding_without_a_decoder_is_a_json_415(server: LiveServer, encoding: str) -> None:
    """aiohttp answered these in plain text ("Please install Brotli"); RFC 9110 says 415."""
    headers, _ = push("github")
    resp = raw_request(server, build_request({**headers, "Content-Encoding": encoding}, b"\x00not-compressed" * 10))
    assert resp.status == 415, (resp.status, resp.body)
    assert "Content-Encoding" in json.loads(resp.body)["error"]


# ---------------------------------------------------------------- slow clients


def _trickle(sock: socket.socket, data: bytes, pause: float, limit: float) -> bool:
    """Send one byte at a time; True if the server closed the connection before `limit` seconds."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        readable, _, _ = select.select([sock], [], [], pause)
        if readable:
            try:
                if sock.recv(4096) == b"":
                    return True
            except ConnectionResetError:
                return True
        if time.monotonic() - started > limit:
            return False
    return False


def test_slow_loris_headers_are_cut_off(server: LiveServer) -> None:
    head = b"POST / HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-Pad: " + b"a" * 1000
    started = time.monotonic()
    with server.connect(5) as sock:
        closed = _trickle(sock, head, pause=0.05, limit=HEADER_TIMEOUT + 3)
    assert closed, "a client trickling its headers was never disconnected"
    assert time.monotonic() - started < HEADER_TIMEOUT + 1.5


def test_idle_connections_are_closed_and_others_still_served(server: LiveServer) -> None:
    idle = [server.connect(5) for _ in range(100)]
    try:
        headers, doc = push("github", sha("while-idle"))
        resp = send(server, "github", headers, json.dumps(doc).encode())
        assert resp.status == 200
        assert resp.seconds < 1
        deadline = time.monotonic() + HEADER_TIMEOUT + 3
        for sock in idle:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            assert sock.recv(1) == b"", "an idle connection was kept open"
    finally:
        for sock in idle:
            sock.close()


def test_slow_body_is_408_and_the_connection_is_released(server: LiveServer) -> None:
    headers, doc = push("github")
    body = json.dumps(doc).encode()
    request = build_request(resign("github", headers, body), body)
    started = time.monotonic()
    with server.connect(10) as sock:
        sock.sendall(request[:-20])  # headers and most of the body, then stall
        sock.settimeout(10)
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        answered = time.monotonic() - started
        while sock.recv(4096):  # the server then closes (after at most LINGERING_SECONDS)
            pass
        closed = time.monotonic() - started
    assert READ_TIMEOUT <= answered < READ_TIMEOUT + 1
    assert closed < READ_TIMEOUT + 2 + 1


def test_truncated_chunked_body_is_408(server: LiveServer) -> None:
    headers, _ = push("github")
    head = build_request(headers, b"", content_length=False)[:-2] + b"Transfer-Encoding: chunked\r\n\r\n"
    with server.connect(10) as sock:
        sock.sendall(head + b'10\r\n{"ref":')
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"HTTP/1.1 408")


# ---------------------------------------------------------------- many concurrent connections


def test_many_concurrent_deliveries_get_200_or_503_never_anything_else(errors: ErrorLog) -> None:
    slow = FakeUpdater(delay=0.2)
    with LiveServer(make_receiver("  maxConcurrentRequests: 16\n", updater=slow), header_timeout=5) as live:

        async def flood() -> list[tuple[int, str | None]]:
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(i: int) -> tuple[int, str | None]:
                    headers, doc = push("github", sha(f"flood-{i}"))
                    doc["before"] = sha(f"flood-{i - 1}")
                    body = json.dumps(doc).encode()
                    async with session.post(
                        f"http://127.0.0.1:{live.port}/", data=body, headers=resign("github", headers, body)
                    ) as resp:
                        await resp.read()
                        return resp.status, resp.headers.get("Retry-After")

                return await asyncio.gather(*(one(i) for i in range(200)))

        answers = asyncio.run(flood())
        codes = [status for status, _ in answers]
        assert set(codes) <= {200, 503}, sorted(set(codes))
        assert codes.count(200) >= 16
        assert codes.count(503) > 0
        assert all(retry == "1" for status, retry in answers if status == 503)
        assert len(slow.written) == codes.count(200)
        deadline = time.monotonic() + 5
        while live.open_connections() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.open_connections() == 0
        assert raw_request(live, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2).status == 200


# ---------------------------------------------------------------- property-based, over HTTP

HEADER_NAMES = sorted({*EVENT_HEADERS.values(), *SIGNATURE_HEADERS, "Content-Type", "X-Hook-UUID", "X-Request-UUID"})
HEADER_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)
JSON = json_values(max_text=40, max_leaves=20)


@st.composite
def arbitrary_request(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes, bool]:
    provider = draw(st.sampled_from(PROVIDERS))
    headers, doc = push(provider, sha(str(draw(st.integers(0, 5)))))
    for name in draw(st.lists(st.sampled_from(sorted(headers)), max_size=3)):
        headers.pop(name, None)
    headers.update(draw(st.dictionaries(st.sampled_from(HEADER_NAMES), HEADER_TEXT, max_size=3)))
    headers.update(
        draw(st.dictionaries(st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True), HEADER_TEXT, max_size=2))
    )
    kind = draw(st.sampled_from(["json", "bytes", "fixture"]))
    if kind == "json":
        body = json.dumps(draw(JSON)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = json.dumps(doc).encode()
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = draw(st.sampled_from(["/", "/gitjob", "/gitjob/x", "/nope", "/%2e%2e/", "//", "/gitjob/%ff"]))
    return provider, method + " " + path, headers, body, draw(st.booleans())


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=arbitrary_request())
def test_arbitrary_requests_get_only_documented_codes(server: LiveServer, case: Any) -> None:
    provider, line, headers, body, signed = case
    method, path = line.split(" ", 1)
    if signed:
        headers = resign(provider, headers, body)
    resp = raw_request(server, build_request(headers, body, method=method, path=path))
    assert resp.status in DOCUMENTED_CODES, (resp.status, resp.body[:300])


@st.composite
def mutated_push(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    """A signed push whose JSON has one node replaced by arbitrary JSON (or a URL/ref/commit by text)."""
    provider = draw(st.sampled_from(PROVIDERS))
    headers, doc = push(provider, sha(str(draw(st.integers(0, 5)))))
    replace_one_node(draw, doc, lambda old: JSON | st.text(max_size=80) if isinstance(old, str) else JSON)
    return provider, headers, json.dumps(doc).encode()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated_push())
def test_signed_mutated_pushes_are_200_or_400(server: LiveServer, case: tuple[str, dict[str, str], bytes]) -> None:
    provider, headers, body = case
    resp = send(server, provider, headers, body)
    assert resp.status in {200, 400}, resp.body
    answer = json.loads(resp.body)
    if resp.status == 200:
        for entry in answer.get("updated", []):
            assert len(entry["commit"]) in (40, 64)
    else:
        assert answer["error"].startswith(f"malformed {provider} payload: ")


def test_parsed_urls_and_refs_never_reach_a_write_unchecked(server: LiveServer) -> None:
    """Whatever was written came from a GitRepo the index holds, with a full SHA (sanity after fuzzing)."""
    names = {f"r-{p}" for p in PROVIDERS}
    for namespace, name, commit in updater_of(server).written:
        assert namespace == "fleet-default"
        assert name in names
        assert len(commit) in (40, 64)
        assert set(commit) <= set("0123456789abcdef")


def test_mutation_tables_name_real_fields() -> None:
    """The commit paths above point at the field each provider really reads (else the 400s prove nothing)."""
    for provider in PROVIDERS:
        headers, doc = push(provider, sha("table"))
        for path in COMMIT_PATHS[provider]:
            doc = set_path(doc, path, sha("elsewhere"))
        request = WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, json.dumps(doc).encode())
        parsed = by_name(provider).parse(request)[0]
        assert isinstance(parsed, PushEvent)
        assert parsed.commit == sha("elsewhere"), provider


# ---------------------------------------------------------------- saved crashers (tests/fixtures/crashers/http)

HTTP_CRASHERS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "crashers" / "http").glob("*.http"))


@pytest.mark.parametrize("path", HTTP_CRASHERS, ids=[p.stem for p in HTTP_CRASHERS])
def test_saved_http_crashers_get_documented_codes(server: LiveServer, errors: ErrorLog, path: Path) -> None:
    seen: list[str] = []
    capture = logging.Handler()
    # Deliberate monkeypatch of one instance's method (mypy forbids assigning to a method).
    capture.emit = lambda record: seen.append(f"{record.getMessage()} {record.__dict__}")  # type: ignore[method-assign]
    logging.getLogger().addHandler(capture)
    try:
        resp = raw_request(server, path.read_bytes())
    finally:
        logging.getLogger().removeHandler(capture)
    assert resp.status in DOCUMENTED_CODES - {503}, (resp.status, resp.body[:200])
    if resp.headers.get("content-type", "").startswith("application/json"):
        json.loads(resp.body)
    basic = base64.b64encode(f"fleet-hook:{SECRET}".encode()).decode()
    assert not [line for line in seen if SECRET in line or basic in line]


def test_http_crashers_are_all_kept() -> None:
    assert len(HTTP_CRASHERS) >= 5


def test_gitea_get_delivery_gets_the_answers_its_docs_state(server: LiveServer) -> None:
    """docs/providers/gitea.md: a real GET hook (payload in an ~8.6 KB query) is 400, a short GET 405."""
    headers = {"X-Gitea-Event": "push", "X-Gitea-Delivery": "d"}
    long_query = "/?payload=" + "x" * 8700
    real = raw_request(server, build_request(headers, b"", method="GET", path=long_query))
    assert real.status == 400
    assert "8190 bytes" in json.loads(real.body)["error"]
    short = raw_request(server, build_request(headers, b"", method="GET", path="/?payload=%7B%7D"))
    assert short.status == 405
    assert json.loads(short.body)["error"] == "webhooks must be POSTed"
