"""Shared machinery of the fuzz targets: fuzzer bytes -> a delivery -> every provider entry point, checked.

Input layout, so a coverage-guided fuzzer reaches every branch from bytes alone:

    byte 0   body mode: index into MODES (JSON as is, with a charset, form-wrapped, raw form, ...)
    byte 1   event: index into the provider's EVENTS (push, ping, an ignored event, empty, ...)
    rest     the body

A target passes when the provider only ever raises PayloadError / UnsupportedMediaType, every parsed
event is well-formed (full SHAs, non-empty repository URLs the normalizer accepts without raising), and
no message carries the secret. `python -m tests.fuzz <provider>` (or `normalize`) runs one target
under atheris when it is installed:

    python -m tests.fuzz github -atheris_runs=100000 tests/fixtures/crashers/github

and otherwise replays the files given on the command line. tests/fuzz/test_fuzz_targets.py runs every
target over the corpus, the saved crashers and deterministic random mutations inside `make test`.
"""

from __future__ import annotations

import json
import random
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from controller.deliveries import Ignored, Ping, PushEvent, RefKind
from controller.normalize import repo_key
from controller.providers import PROVIDERS, Provider, by_name
from controller.providers.base import (
    PayloadError,
    UnsupportedMediaType,
    Verdict,
    WebhookRequest,
    is_sha,
)

Target = Callable[[bytes], None]
ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ROOT / "fixtures" / "payloads"
CRASHERS = ROOT / "fixtures" / "crashers"
SECRET = b"fuzz-secret-7c1e"
MODES = (
    "application/json",
    "application/json; charset=utf-8",
    "form-wrapped",  # application/x-www-form-urlencoded with the body as `payload=`
    "application/x-www-form-urlencoded",
    "",
    "text/plain",
    "application/vnd.custom+json",
)


def _events(provider: Provider) -> tuple[str, ...]:
    """The provider's sample events, an empty one and a wrongly cased push (hosts' names are exact)."""
    if provider.event_header is None:
        return ("",)  # the event is in the body (Azure DevOps' eventType)
    push = provider.sample_events[0]
    return (*provider.sample_events, "", push.upper())


def _base_headers(provider: Provider) -> dict[str, str]:
    """A push's headers with a delivery id and a well-formed signature made with the wrong secret."""
    headers = dict(provider.push_headers)
    headers.update({h.lower(): "d-1" for h in provider.delivery_headers[:1]})
    wrong = {key: f"not-the-secret-{i}".encode() for i, key in enumerate(provider.secret_keys)}
    return {k.lower(): v for k, v in provider.sign(headers, b"", wrong).items()}


EVENTS: dict[str, tuple[str, ...]] = {p.name: _events(p) for p in PROVIDERS}
EVENT_HEADER: dict[str, str] = {p.name: p.event_header for p in PROVIDERS if p.event_header}
BASE_HEADERS: dict[str, dict[str, str]] = {p.name: _base_headers(p) for p in PROVIDERS}


def request_from(provider: str, data: bytes) -> WebhookRequest:
    """The delivery the fuzzer's bytes describe (see the module docstring for the layout)."""
    mode = MODES[data[0] % len(MODES)] if data else MODES[0]
    events = EVENTS[provider]
    event = events[data[1] % len(events)] if len(data) > 1 else events[0]
    body = data[2:]
    headers = dict(BASE_HEADERS[provider])
    if provider in EVENT_HEADER:
        headers[EVENT_HEADER[provider]] = event
    if mode == "form-wrapped":
        body = b"payload=" + urllib.parse.quote_from_bytes(body).encode("ascii")
        mode = "application/x-www-form-urlencoded"
    if mode:
        headers["content-type"] = mode
    return WebhookRequest("POST", headers, body)


def _check_text(value: object, what: str) -> None:
    assert isinstance(value, str), f"{what} is {type(value).__name__}"
    assert SECRET.decode() not in value, f"{what} carries the secret"


def check_provider(provider_name: str, data: bytes) -> None:
    """Run one input through detect/delivery_id/verify/parse and check every invariant."""
    provider = by_name(provider_name)
    request = request_from(provider_name, data)
    assert isinstance(provider.detect(request), bool)
    delivery = provider.delivery_id(request)
    assert delivery is None or isinstance(delivery, str)
    credentials = [dict.fromkeys(provider.secret_keys, SECRET), dict.fromkeys(provider.secret_keys, b"")]
    assert provider.verify(request, credentials) in set(Verdict)
    assert provider.verify(request, []) in set(Verdict)
    try:
        parsed = provider.parse(request)
    except (PayloadError, UnsupportedMediaType) as exc:
        _check_text(str(exc), "error message")
        return
    assert isinstance(parsed, tuple)
    assert parsed, "parse returned nothing"
    assert provider.parse(request) == parsed, "parse is not deterministic"
    for item in parsed:
        assert item.provider == provider_name
        for url in item.repo_urls:
            _check_text(url, "repository URL")
            repo_key(url)
            repo_key(url, case_sensitive_path=True)
        if isinstance(item, PushEvent):
            assert item.repo_urls or item.repo_path, "a push without repository URLs or path"
            assert is_sha(item.commit), f"commit {item.commit!r}"
            assert item.before is None or is_sha(item.before), f"before {item.before!r}"
            assert isinstance(item.ref_kind, RefKind)
            _check_text(item.ref_name, "ref name")
            assert isinstance(item.deleted, bool)
        elif isinstance(item, Ignored):
            _check_text(item.event, "event")
            _check_text(item.reason, "reason")
        else:
            assert isinstance(item, Ping)


def provider_target(provider_name: str) -> Target:
    """The fuzz target of one provider's parser."""

    def target(data: bytes) -> None:
        check_provider(provider_name, data)

    target.__name__ = f"fuzz_{provider_name.replace('-', '_')}"
    return target


# ---------------------------------------------------------------------------------- corpus


def fixture_bodies(provider: str) -> list[bytes]:
    """Every recorded payload of a provider (and one of every other provider, as confusing input)."""
    own = sorted((PAYLOADS / provider).glob("*.json"))
    others = sorted(PAYLOADS.glob("*/*.json"))
    return [p.read_bytes() for p in own + others if not p.name.endswith(".headers.json")]


def seed_corpus(provider: str) -> Iterator[bytes]:
    """Each fixture body under every mode and event selector."""
    for body in fixture_bodies(provider):
        for mode in range(len(MODES)):
            for event in range(len(EVENTS[provider])):
                yield bytes([mode, event]) + body


def crashers(target: str) -> list[tuple[str, bytes]]:
    """Saved inputs that once crashed `target` (tests/fixtures/crashers/<target>/*)."""
    folder = CRASHERS / target
    return sorted((p.name, p.read_bytes()) for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []


JSON_TOKENS = (b"null", b"[]", b"{}", b"0", b"-1", b'""', b"true", b"1e999", b'"\\ud800"', b'"\\u0000"', b"[[[[")


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    """One random edit of `data`: byte flips, cuts, inserts, JSON-token swaps or a splice."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            del out[pos : pos + rng.randint(1, 64)]
        elif op == 2:
            out[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 3:
            out[pos:pos] = rng.choice(JSON_TOKENS)
        elif op == 4 and corpus:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            out = out[:pos] + other[cut:]
        elif op == 5:
            out = _swap_json_value(rng, bytes(out))
        else:
            out[:2] = bytes([rng.randrange(256), rng.randrange(256)])
    return bytes(out)


def _swap_json_value(rng: random.Random, data: bytes) -> bytearray:
    """Replace one value of a JSON body (after the 2 selector bytes) by an odd one, keeping it valid JSON."""
    try:
        doc = json.loads(data[2:])
    except ValueError:
        return bytearray(data)
    node = doc
    for _ in range(8):
        if isinstance(node, dict) and node:
            key = rng.choice(list(node))
            if isinstance(node[key], dict | list) and rng.random() < 0.7:
                node = node[key]
                continue
            node[key] = rng.choice([None, [], {}, 0, "", "x" * 300, [None], {"": None}, True, "\u202e", -0.0])
        elif isinstance(node, list) and node:
            index = rng.randrange(len(node))
            if isinstance(node[index], dict | list) and rng.random() < 0.7:
                node = node[index]
                continue
            node[index] = None
        break
    return bytearray(data[:2] + json.dumps(doc).encode())


def random_inputs(provider: str, seed: int, count: int) -> Iterator[bytes]:
    """Deterministic random inputs: pure noise and mutations of the seed corpus."""
    rng = random.Random(f"{provider}-{seed}")
    corpus = list(seed_corpus(provider))
    for i in range(count):
        if i % 10 == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        else:
            yield mutate(rng, rng.choice(corpus), corpus)


# ---------------------------------------------------------------------------------- entry point


def main(target: Target) -> None:
    """Fuzz `target` with the command line's arguments: atheris when installed, else replay the given files."""
    try:
        import atheris
    except ImportError:
        paths = [Path(a) for a in sys.argv[1:] if not a.startswith("-")]
        files = [f for p in paths for f in (sorted(p.iterdir()) if p.is_dir() else [p])]
        for file in files:
            target(file.read_bytes())
        print(f"atheris is not installed: replayed {len(files)} input(s) through {target.__name__}")
        return
    atheris.instrument_all()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
