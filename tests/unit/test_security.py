"""Security properties that need no Kubernetes: constant-time comparisons, no outbound connections,
secrets absent from answers, logs and metrics.

The same properties are checked against the real API in tests/integration/test_security.py.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import hmac
import ipaddress
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from controller import providers
from controller.logs import CLIENT_ERRORS, JsonFormatter, TextFormatter
from controller.providers.base import Credential, Verdict, WebhookRequest
from tests.factories import gitrepo, receiver
from tests.live import DOCUMENTED_CODES, FakeUpdater, LiveServer, build_request, raw_request
from tests.support import AZURE_USER, PROVIDERS, delivery, secret_data, sha, sign

CONTROLLER = Path(__file__).resolve().parents[2] / "controller"
SECRET = "unit-sec-9b3f0e"
OLD_SECRET = "unit-old-41d2aa"
WRONG = "attacker-guess-77e1"
NS = "cattle-fleet-system"

# ------------------------------------------------------------------ constant time, by reading the code

SECRETISH = ("secret", "signature", "digest", "token", "password", "mac", "credential", "expected", "given")


def _names_in(node: ast.AST) -> set[str]:
    """Identifiers, attribute names and string constants an expression mentions (lower-case)."""
    names: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            names.add(sub.id.lower())
        elif isinstance(sub, ast.Attribute):
            names.add(sub.attr.lower())
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            names.add(sub.value.lower())
    return names


def variable_time_comparisons(path: Path) -> list[str]:
    """`==`, `!=`, `in`, `not in` where an operand mentions a secret-like value."""
    findings = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        hits = {n for operand in operands for n in _names_in(operand) if any(s in n for s in SECRETISH)}
        if hits:
            findings.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}  (mentions {sorted(hits)})")
    return findings


SCANNED = [*sorted((CONTROLLER / "providers").glob("*.py")), CONTROLLER / "secrets.py"]


@pytest.mark.parametrize("path", SCANNED, ids=[p.name for p in SCANNED])
def test_no_variable_time_comparison_of_secret_values(path: Path) -> None:
    assert variable_time_comparisons(path) == []


def test_the_scanner_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(signature, secret, creds):\n"
        "    a = signature == expected_digest\n"
        "    b = creds['github'] != given\n"
        "    c = token in allowed\n"
        "    d = x.password == y\n"
        "    return a, b, c, d\n"
    )
    assert len(variable_time_comparisons(bad)) == 4


# ------------------------------------------------------------------ constant time, by behaviour


class NoEquality(bytes):
    """A secret value that fails the test if anything compares it with == / != / hashing."""

    def __eq__(self, other: object) -> bool:
        raise AssertionError("a secret was compared with ==")

    def __ne__(self, other: object) -> bool:
        raise AssertionError("a secret was compared with !=")

    def __hash__(self) -> int:
        raise AssertionError("a secret was hashed (dict key / set member)")


def creds_for(provider: str, *secrets: str, wrap: type[bytes] = bytes) -> list[Credential]:
    out: list[Credential] = []
    for value in secrets:
        out.append({k: wrap(v.encode()) for k, v in secret_data(provider, value).items()})
    return out


def request_for(provider: str, secret: str | None) -> WebhookRequest:
    d = delivery(provider, https_url="https://github.com/o/r", commit=sha("ct"), secret=secret)
    return WebhookRequest("POST", {k.lower(): v for k, v in d.headers.items()}, d.body)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("signed_with", [SECRET, OLD_SECRET, WRONG, None])
def test_secrets_are_never_compared_with_equality(provider: str, signed_with: str | None) -> None:
    verdict = providers.by_name(provider).verify(
        request_for(provider, signed_with), creds_for(provider, SECRET, OLD_SECRET, wrap=NoEquality)
    )
    expected = {SECRET: Verdict.OK, OLD_SECRET: Verdict.OK, WRONG: Verdict.MISMATCH, None: Verdict.MISSING}
    assert verdict is expected[signed_with]


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    calls: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    return calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_credential_is_compared_even_after_a_match(provider: str, compare_calls: list[tuple[int, int]]) -> None:
    """No early exit: the first secret matching costs as much as none matching."""
    checker = providers.by_name(provider)
    creds = creds_for(provider, SECRET, OLD_SECRET, "third-secret")
    assert checker.verify(request_for(provider, SECRET), creds) is Verdict.OK
    first = len(compare_calls)
    compare_calls.clear()
    assert checker.verify(request_for(provider, WRONG), creds) is Verdict.MISMATCH
    assert first == len(compare_calls) >= 3


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p not in ("azure-devops", "gitlab")])
@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 500])
def test_signatures_of_any_length_reach_the_constant_time_compare(
    provider: str, length: int, compare_calls: list[tuple[int, int]]
) -> None:
    req = request_for(provider, SECRET)
    headers = dict(req.headers)
    for name, value in req.headers.items():
        if "signature" in name:
            prefix = "sha256=" if value.startswith("sha256=") else ""
            headers[name] = prefix + "a" * length if length or prefix else "a"
    forged = WebhookRequest("POST", headers, req.body)
    assert providers.by_name(provider).verify(forged, creds_for(provider, SECRET)) is Verdict.MISMATCH
    if length == 64:  # a well-formed digest is always compared in constant time
        assert compare_calls, "a well-formed signature was refused before the constant-time compare"
    else:  # other lengths are refused from the header alone (the digest length is public); no body hashed
        auth = providers.by_name(provider).authenticate(forged, creds_for(provider, SECRET))
        assert auth.verdict is Verdict.MISMATCH


@pytest.mark.parametrize("value", ["", "x", "y" * 40, "z" * 4096])
def test_token_comparisons_hide_the_length(value: str, compare_calls: list[tuple[int, int]]) -> None:
    """GitLab tokens and Azure credentials are compared as SHA-256 digests: equal lengths whatever is sent."""
    gitlab = WebhookRequest("POST", {"x-gitlab-event": "Push Hook", "x-gitlab-token": value or " "}, b"{}")
    providers.by_name("gitlab").verify(gitlab, creds_for("gitlab", SECRET))
    basic = base64.b64encode(f"{AZURE_USER}:{value}".encode()).decode()
    azure = WebhookRequest("POST", {"x-vss-activityid": "a", "authorization": f"Basic {basic}"}, b"{}")
    providers.by_name("azure-devops").verify(azure, creds_for("azure-devops", SECRET))
    assert compare_calls
    assert {lengths for lengths in compare_calls} == {(32, 32)}


# ------------------------------------------------------------------ the payload's hosts are never contacted

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@pytest.fixture
def network_guard(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every outbound connection or name lookup to anything but loopback is recorded and refused."""
    attempts: list[str] = []

    def refuse(what: str, host: Any) -> None:
        attempts.append(f"{what} {host!r}")
        raise OSError(f"test guard: {what} to {host!r} refused")

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo
    real_loop_connection = asyncio.base_events.BaseEventLoop.create_connection
    real_loop_getaddrinfo = asyncio.base_events.BaseEventLoop.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refuse("connect", address[0])
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            refuse("connect_ex", address[0])
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            refuse("getaddrinfo", host)
        return real_getaddrinfo(host, *args, **kwargs)

    async def loop_connection(self: Any, protocol_factory: Any, host: Any = None, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            refuse("loop.create_connection", host)
        return await real_loop_connection(self, protocol_factory, host, *args, **kwargs)

    async def loop_getaddrinfo(self: Any, host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            refuse("loop.getaddrinfo", host)
        return await real_loop_getaddrinfo(self, host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "create_connection", loop_connection)
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", loop_getaddrinfo)
    return attempts


def test_the_network_guard_works(network_guard: list[str]) -> None:
    with pytest.raises(OSError, match="test guard"):
        socket.create_connection(("192.0.2.1", 443), timeout=0.1)
    with pytest.raises(OSError, match="test guard"):
        socket.getaddrinfo("evil.example.com", 443)
    assert len(network_guard) == 2
    network_guard.clear()


HOSTILE_URLS = [  # (web URL, SSH URL) a forged payload names
    ("http://169.254.169.254/latest/meta-data", "git@169.254.169.254:latest/meta-data.git"),
    ("https://evil.example.com/example-org/fleet-apps", "git@attacker.invalid:example-org/fleet-apps.git"),
    ("http://[fd00::1]:8080/x/y", "ssh://git@[fd00::1]:22/x/y"),
    ("http://10.0.0.1:6443/api/v1/namespaces/kube-system/secrets", "ssh://10.0.0.1/api/v1"),
]
HOSTILE_HEADERS = {
    "X-GitHub-Enterprise-Host": "evil.example.com",
    "X-Gitlab-Instance": "https://evil.example.com",
    "X-Forwarded-Host": "evil.example.com",
    "Referer": "http://169.254.169.254/",
    "Forwarded": "for=1.2.3.4;host=evil.example.com",
}


def test_hosts_named_by_a_delivery_are_never_contacted(network_guard: list[str]) -> None:
    all_secrets: dict[str, str] = {}
    for provider in PROVIDERS:
        all_secrets.update(secret_data(provider, SECRET))
    # GitRepos for the hostile URLs too, so matching and writing run for them.
    repos = [gitrepo(f"g{i}", url) for i, (url, _) in enumerate(HOSTILE_URLS)]
    r = receiver(secrets={f"{NS}/gitjob-webhook": all_secrets}, gitrepos=repos)
    r.updater = FakeUpdater()
    statuses = []
    with LiveServer(r) as live:
        for provider in PROVIDERS:
            for url, ssh in HOSTILE_URLS:
                for secret in (SECRET, WRONG):
                    d = delivery(provider, https_url=url, ssh_url=ssh, commit=sha(url), secret=secret)
                    headers = {**d.headers, **HOSTILE_HEADERS}
                    resp = raw_request(live, build_request(headers, d.body))
                    statuses.append(resp.status)
    assert set(statuses) <= DOCUMENTED_CODES
    assert 200 in statuses
    assert 401 in statuses
    assert network_guard == []


# ------------------------------------------------------------------ secrets stay out of answers, logs, metrics


class Capture(logging.Handler):
    """Every record, rendered by both product formatters, plus its raw attributes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.json, self.text = JsonFormatter(), TextFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.json.format(record))
        self.lines.append(self.text.format(record))
        self.lines.append(repr(record.__dict__))


def secret_forms(*secrets: str) -> list[str]:
    """Each secret as sent in any header: raw, and inside an Azure Basic Authorization value."""
    forms = []
    for value in secrets:
        forms += [value, base64.b64encode(f"{AZURE_USER}:{value}".encode()).decode()]
    return forms


def test_no_secret_in_any_answer_log_line_or_metric() -> None:
    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    level = root.level
    root.setLevel(logging.DEBUG)
    logging.getLogger("aiohttp.server").addFilter(CLIENT_ERRORS)
    all_secrets: dict[str, str] = {}
    for provider in PROVIDERS:
        all_secrets.update(secret_data(provider, SECRET))
        all_secrets.update({f"{k}.previous": v for k, v in secret_data(provider, OLD_SECRET).items()})
    r = receiver(
        "secrets:\n  gitRepoSecrets: true\n",
        secrets={f"{NS}/gitjob-webhook": all_secrets},
        gitrepos=[gitrepo("a", "https://github.com/o/r"), gitrepo("b", "https://github.com/o/r", webhookSecret="nope")],
    )
    r.updater = FakeUpdater()
    bodies: list[bytes] = []
    try:
        with LiveServer(r) as live:
            for provider in PROVIDERS:
                for secret in (SECRET, OLD_SECRET, WRONG, None):
                    d = delivery(
                        provider, https_url="https://github.com/o/r", commit=sha(f"{provider}{secret}"), secret=secret
                    )
                    bodies.append(raw_request(live, build_request(d.headers, d.body)).body)
                    broken = b'{"repository": null}'
                    bodies.append(
                        raw_request(live, build_request(sign(provider, d.headers, broken, secret), broken)).body
                    )
                # An oversized credential header is refused by aiohttp before the app sees it; the JSON
                # answer names the kind of problem, never the refused line (which holds the credential).
                auth = {"Authorization": "Basic " + secret_form(WRONG) + "A" * 9000, "X-Gitlab-Token": WRONG * 600}
                refused = raw_request(live, build_request({**d.headers, **auth}, d.body))
                assert refused.status == 400
                assert refused.headers["content-type"].startswith("application/json")
                bodies.append(refused.body)
            bodies.append(raw_request(live, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body)
            bodies.append(raw_request(live, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").body)
    finally:
        logging.getLogger("aiohttp.server").removeFilter(CLIENT_ERRORS)
        root.removeHandler(capture)
        root.setLevel(level)
    everything = [b.decode("utf-8", "replace") for b in bodies] + capture.lines
    assert len(capture.lines) > 100
    assert any("fleet_webhook_requests_total" in text for text in everything)
    for form in secret_forms(SECRET, OLD_SECRET, WRONG):
        leaks = [text[:200] for text in everything if form in text]
        assert leaks == [], f"{form!r} leaked"


def secret_form(value: str) -> str:
    return base64.b64encode(f"{AZURE_USER}:{value}".encode()).decode()


def test_log_fields_named_like_credentials_are_masked() -> None:
    record = logging.makeLogRecord({"msg": "m", "token": "t0k3n", "x_signature": "s", "authorization": "a"})
    line = json.loads(JsonFormatter().format(record))
    assert line["token"] == line["x_signature"] == line["authorization"] == "***"
    assert "t0k3n" not in TextFormatter().format(record)


# ------------------------------------------------------------------ an emptied config never widens scoping


async def test_a_config_file_emptied_while_serving_is_refused(tmp_path: Path) -> None:
    """Regression: a config truncated to 0 bytes mid-write was hot-reloaded as the built-in defaults,
    silently dropping every route's namespace and provider limits."""
    from controller.config import load_file
    from controller.reload import ConfigHolder, ConfigReloader, file_digest

    path = tmp_path / "config.yaml"
    path.write_text("routes:\n  - path: /team-a\n    namespaces: [team-a]\n")
    holder = ConfigHolder(load_file(path), file_digest(path))
    reloader = ConfigReloader(path, holder)
    path.write_bytes(b"")
    assert await reloader.check_now() is False
    assert holder.current.route_for("/team-a") is not None
    assert holder.current.route_for("/") is None
    assert "file is empty" in (holder.status.last_error or "")
    path.write_text("{}\n")  # the defaults, on purpose
    assert await reloader.check_now() is True
    assert holder.current.route_for("/") is not None
