"""The one interface every git provider implements, plus the sans-I/O helpers they share.

Nothing here knows about HTTP servers or Kubernetes: a provider gets a `WebhookRequest` (method,
lower-cased headers, raw body) and answers three questions: is this mine (`detect`), is it
authentic (`verify`), and what does it say (`parse`). That keeps every provider testable with
recorded deliveries and nothing else.
"""

from __future__ import annotations

import abc
import enum
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from controller.deliveries import Parsed

JSON_MEDIA_TYPES = frozenset({"application/json", "text/json"})
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
MAX_JSON_DEPTH = 64


class PayloadError(ValueError):
    """The body cannot be understood: malformed JSON, missing or mistyped fields (HTTP 400)."""


class UnsupportedMediaType(ValueError):
    """The Content-Type is not one this provider sends (HTTP 415)."""


class Verdict(enum.StrEnum):
    """Outcome of checking a request's credentials against the configured secrets."""

    OK = "ok"
    MISSING = "missing"  # the request carries no signature/token/credentials header
    MISMATCH = "mismatch"  # it carries one, but no configured secret produces it


@dataclass(frozen=True, slots=True)
class BodyMac:
    """The request is authentic when HMAC-`algorithm`(secret, `prefix` + raw body) is one of `expected`."""

    algorithm: str
    secrets: tuple[bytes, ...]
    expected: tuple[bytes, ...]  # raw digests the request claims (hex or base64 already decoded)
    prefix: bytes = b""


@dataclass(frozen=True, slots=True)
class Authentication:
    """What a request's headers alone say about its authenticity.

    `verdict` is final when set. Otherwise the body decides: OK when any of `macs` matches, or, when
    `needs_whole_body` is set (Gogs/Gitea form bodies sign the decoded `payload` field), through
    `Provider.verify_whole_body`.
    """

    verdict: Verdict | None
    macs: tuple[BodyMac, ...] = ()
    needs_whole_body: bool = False


ONE_SHOT_MAX_BYTES = 64 * 1024


class MacStream:
    """The MACs of an `Authentication`, fed chunk by chunk as the body arrives (nothing is kept).

    Most bodies arrive in one small chunk: it is held (the Body holds it in memory anyway) and, if no
    second one follows, each MAC is one `hmac.digest` call in C. A second chunk, or a first one over
    ONE_SHOT_MAX_BYTES, starts the incremental HMAC objects at once, so no more than one small chunk
    is ever held here.
    """

    def __init__(self, macs: Sequence[BodyMac]) -> None:
        self._macs = [(mac.algorithm, secret, mac.prefix, mac.expected) for mac in macs for secret in mac.secrets]
        self._first: bytes | None = None
        self._states: list[tuple[Any, tuple[bytes, ...]]] | None = None

    def update(self, chunk: bytes) -> None:
        """Feed the next part of the body (hashlib releases the GIL for large chunks)."""
        if self._states is None:
            first = self._first
            if first is None and len(chunk) <= ONE_SHOT_MAX_BYTES:
                self._first = chunk
                return
            self._states = [
                (hmac.new(secret, prefix + (first or b""), algorithm), expected)
                for algorithm, secret, prefix, expected in self._macs
            ]
            self._first = None
        for state, _ in self._states:
            state.update(chunk)

    def verdict(self) -> Verdict:
        """OK when any MAC matches; every comparison runs, so timing does not tell which."""
        matched = False
        for digest, expected in self._digests():
            for claimed in expected:
                matched |= hmac.compare_digest(digest, claimed)
        return Verdict.OK if matched else Verdict.MISMATCH

    def _digests(self) -> list[tuple[bytes, tuple[bytes, ...]]]:
        if self._states is not None:
            return [(state.digest(), expected) for state, expected in self._states]
        body = self._first or b""
        return [
            (hmac.digest(secret, prefix + body if prefix else body, algorithm), expected)
            for algorithm, secret, prefix, expected in self._macs
        ]


# One credential set, keyed by secret key name (e.g. {"github": b"..."} or
# {"azure-username": b"u", "azure-password": b"p"}). Several may be valid at once (rotation).
Credential = Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """A received delivery, reduced to what providers need.

    `headers` is looked up by lower-case name: either a case-insensitive map (aiohttp's, as received,
    not copied) or a plain mapping whose keys are lower-case (`lower_keys`).
    """

    method: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def with_body(self, body: bytes) -> WebhookRequest:
        """The same request carrying `body` (the pipeline admits a request before its body is read)."""
        return WebhookRequest(method=self.method, headers=self.headers, body=body, query=self.query)

    def header(self, name: str) -> str:
        """The header's value, or "" when absent (names are matched case-insensitively)."""
        return self.headers.get(name.lower(), "")

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters such as `; charset=utf-8`, lower-cased."""
        return self.header("content-type").split(";", 1)[0].strip().lower()


class Provider(abc.ABC):
    """A git host's webhook dialect, and everything else the product says about that host.

    The class attributes are the provider's identity. Nothing outside its module restates them: the
    config schema's provider blocks (tools/gen_config_schema.py), the chart's secret-key pattern,
    the 400 answer for an unrecognised delivery, `explain`'s headers, secret-key fallbacks and the
    test and benchmark signers are all derived from them through the registry
    (`controller.providers`).
    """

    name: ClassVar[str]
    """The provider's key in the config, in metrics and in logs."""
    title: ClassVar[str]
    """One line for users: the host and how it authenticates (the schema's description of its block)."""
    secret_keys: ClassVar[tuple[str, ...]]
    """The keys read from a secret source (Fleet's names: `github`, `gitlab`, `bitbucket`,
    `bitbucket-server`, `gogs`, `azure-username` + `azure-password`; plus `gitea` and `generic`)."""
    fallback_secret_keys: ClassVar[tuple[tuple[str, ...], ...]] = ()
    """Key sets tried in order when `secret_keys` hold nothing (renamed keys of existing Secrets)."""
    detect_headers: ClassVar[tuple[str, ...]]
    """Headers whose presence marks this provider's deliveries, as users read them (`X-GitHub-Event`)."""
    delivery_headers: ClassVar[tuple[str, ...]] = ()
    """Headers carrying the host's id of a delivery (kept on redelivery), in the order they are read."""
    push_headers: ClassVar[Mapping[str, str]]
    """The headers (lower-case) with which the host sends a push, besides authentication and delivery
    id: what turns a saved payload file into a delivery (`explain`, tests, fuzzing)."""
    event_header: ClassVar[str | None] = None
    """The header naming the event, when the host sends one (Azure DevOps names it in the body)."""
    sample_events: ClassVar[tuple[str, ...]] = ()
    """Values of `event_header` the tests and fuzzers send: the push first, then a ping, then others."""
    options_schema: ClassVar[Mapping[str, Any]] = {}
    """JSON Schema properties of this provider's config block beyond `enabled` and `allowUnauthenticated`."""

    def configured(self, options: Mapping[str, Any]) -> Provider:
        """This provider as its config block shapes it (`options`: the block as written, `acceptSha1`...)."""
        return self

    def delivery_id(self, request: WebhookRequest) -> str | None:
        """The provider's unique id of this delivery (kept on redelivery), if it sends one."""
        return first_header(request, *self.delivery_headers)

    @abc.abstractmethod
    def sign(self, headers: Mapping[str, str], body: bytes, credential: Credential) -> dict[str, str]:
        """`headers` plus what the host adds to authenticate `body` with `credential`: the host's side
        of `authenticate`, kept beside it so tests and benchmarks sign exactly as this module verifies."""

    def detect(self, request: WebhookRequest) -> bool:
        """Whether the request's headers say it comes from this provider: by default, one of
        `detect_headers` is present and not blank (a provider that needs more overrides this)."""
        return first_header(request, *self.detect_headers) is not None

    @abc.abstractmethod
    def authenticate(self, request: WebhookRequest, credentials: Sequence[Credential]) -> Authentication:
        """How far the credentials can be checked from the headers alone (the body may not be read yet).

        Token and Basic schemes decide here. Signature schemes answer MISSING/MISMATCH when the header
        is absent or malformed, else name the MACs to compute over the body as it arrives, so a forged
        body is never held whole or parsed just to find out that it is forged.
        """

    def verify(self, request: WebhookRequest, credentials: Sequence[Credential]) -> Verdict:
        """Check a complete request against every credential set; OK if any one matches (constant time)."""
        auth = self.authenticate(request, credentials)
        if auth.verdict is not None:
            return auth.verdict
        if auth.needs_whole_body:
            return self.verify_whole_body(request, credentials)
        stream = MacStream(auth.macs)
        stream.update(request.body)
        return stream.verdict()

    def verify_whole_body(self, request: WebhookRequest, credentials: Sequence[Credential]) -> Verdict:
        """For schemes that sign something other than the raw body (only reached when `authenticate` says so)."""
        return Verdict.MISMATCH

    @abc.abstractmethod
    def parse(self, request: WebhookRequest) -> tuple[Parsed, ...]:
        """Every event in the delivery, one per ref change, provider-neutral: what the receiver acts on.
        Never empty. Raises PayloadError / UnsupportedMediaType.

        Most hosts send one ref per delivery (`SingleEventProvider`); Bitbucket Cloud, Bitbucket
        Server and Azure DevOps batch several ref changes into one.
        """


class SingleEventProvider(Provider):
    """A host whose every delivery carries one event: it implements `parse_event`."""

    def parse(self, request: WebhookRequest) -> tuple[Parsed, ...]:
        return (self.parse_event(request),)

    @abc.abstractmethod
    def parse_event(self, request: WebhookRequest) -> Parsed:
        """The delivery's one event. Raises PayloadError / UnsupportedMediaType."""


# ---------------------------------------------------------------------------------------------
# Shared helpers. They never raise anything but PayloadError/UnsupportedMediaType on bad input.


def hmac_hex(secret: bytes, message: bytes, algorithm: str = "sha256") -> str:
    """Lower-case hex HMAC of `message`."""
    return hmac.new(secret, message, getattr(hashlib, algorithm)).hexdigest()


def token_matches(token: str, secrets: Sequence[bytes]) -> bool:
    """Constant-time comparison of a plain shared token with each configured secret."""
    given = token.encode("utf-8", "replace")
    matched = False
    for secret in secrets:
        # Compare digests so lengths never leak either.
        matched |= hmac.compare_digest(hashlib.sha256(secret).digest(), hashlib.sha256(given).digest())
    return matched


def values_for(credentials: Sequence[Credential], key: str) -> list[bytes]:
    """The non-empty values stored under `key` in each credential set (empty values never verify)."""
    return [c[key] for c in credentials if c.get(key)]


def strip_prefix(value: str, prefix: str) -> str | None:
    """`value` without `prefix` (case-insensitive), or None when the prefix is absent."""
    if value[: len(prefix)].lower() == prefix.lower():
        return value[len(prefix) :]
    return None


def _check_depth(document: Any) -> None:
    """Reject absurdly nested JSON before anything walks it."""
    # Level by level, only containers kept: a push payload has thousands of scalars and a few hundred
    # containers, and this runs on every delivery with more than MAX_JSON_DEPTH brackets.
    level = [document] if type(document) in _CONTAINERS else []
    depth = 0
    while level:
        if depth >= MAX_JSON_DEPTH and any(level):  # their children would be deeper than allowed
            raise PayloadError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        below: list[Any] = []
        for node in level:
            below.extend(
                child for child in (node.values() if type(node) is dict else node) if type(child) in _CONTAINERS
            )
        level = below
        depth += 1


_CONTAINERS = frozenset({dict, list})


def _may_be_too_deep(raw: bytes | str) -> bool:
    """Whether the text has enough brackets to nest past MAX_JSON_DEPTH (a C-speed count, no walk).

    A typical push payload has fewer than MAX_JSON_DEPTH brackets in all, so the walk is skipped.
    """
    if isinstance(raw, bytes):  # one pass: what is left once the brackets are deleted
        return len(raw) - len(raw.translate(None, b"{[")) > MAX_JSON_DEPTH
    return raw.count("{") + raw.count("[") > MAX_JSON_DEPTH


def loads_json(raw: bytes | str) -> Any:
    """Parse JSON strictly (valid UTF-8, no NaN), raising PayloadError with a short reason.

    orjson first: several times faster than the standard library on push payloads (many short
    strings), and as strict (it refuses NaN, invalid UTF-8). What it refuses beyond RFC 8259's strict
    reading (integers over 64 bits, lone surrogates) goes through the standard library, so the
    verdicts and error messages are exactly the standard library's.
    """
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _loads_json_stdlib(raw)
    if _may_be_too_deep(raw):
        _check_depth(document)
    return document


def _loads_json_stdlib(raw: bytes | str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise PayloadError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    if _may_be_too_deep(raw):
        _check_depth(document)
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def form_payload(body: bytes) -> str:
    """The `payload` field of an `application/x-www-form-urlencoded` body (GitHub, Gitea, Gogs)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise PayloadError("form body is not valid URL-encoded ASCII") from None
    try:
        fields = urllib.parse.parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=64)
    except ValueError as exc:
        raise PayloadError(f"form body cannot be parsed: {exc}") from None
    values = fields.get("payload")
    if not values:
        raise PayloadError("form body has no 'payload' field")
    return values[0]


def json_document(request: WebhookRequest, *, allow_form: bool) -> Any:
    """The JSON document of a delivery, accepting a form-encoded `payload=` where the provider may send it."""
    media = request.media_type
    if media in JSON_MEDIA_TYPES or media == "" or media.endswith("+json"):
        return loads_json(request.body)
    if allow_form and media == FORM_MEDIA_TYPE:
        return loads_json(form_payload(request.body))
    raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; send application/json")


def dig(document: Any, *path: str | int) -> Any:
    """Walk dicts/lists safely: any missing key, wrong type or out-of-range index yields None."""
    node = document
    for step in path:
        if type(step) is str:  # the common step; `type(...) is` keeps the hot loop cheap
            if not isinstance(node, dict):
                return None
            node = node.get(step)
        elif isinstance(step, int):
            if not isinstance(node, list) or not -len(node) <= step < len(node):
                return None
            node = node[step]
        else:
            return None
    return node


def text(document: Any, *path: str | int) -> str:
    """A string field, or "" when it is missing or not a string."""
    value = dig(document, *path)
    return value if isinstance(value, str) else ""


def texts(*values: str) -> tuple[str, ...]:
    """The non-empty, distinct strings among `values`, in order."""
    return tuple(dict.fromkeys(v for v in values if v))


def require_object(document: Any, what: str = "body") -> dict[str, Any]:
    """The document as a JSON object, or PayloadError naming what was expected."""
    if not isinstance(document, dict):
        raise PayloadError(f"{what} must be a JSON object, got {type(document).__name__}")
    return document


# ---------------------------------------------------------------------------------------------
# Helpers shared by the provider modules (verdicts from signature headers, typed field access).


_HEX_LENGTH = {"sha256": 64, "sha1": 40}


def hex_signature_auth(
    header_value: str,
    secrets: Sequence[bytes],
    *,
    prefix: str = "",
    algorithm: str = "sha256",
    signed_prefix: bytes = b"",
) -> Authentication:
    """Authentication for a hex HMAC of the raw body carried in one header, behind an optional `sha256=`.

    No header is MISSING; a header without the prefix, a value that is not hex of the digest's
    length, or no usable secret is MISMATCH at once. Otherwise the body decides.
    """
    value = header_value.strip()
    if not value:
        return Authentication(Verdict.MISSING)
    claimed_hex = strip_prefix(value, prefix) if prefix else value
    # The digest's length is public (64 hex digits for SHA-256): refusing other lengths leaks nothing.
    hex_length = _HEX_LENGTH.get(algorithm) or 2 * hashlib.new(algorithm).digest_size
    if claimed_hex is None or not secrets or len(claimed_hex) != hex_length or not claimed_hex.isascii():
        return Authentication(Verdict.MISMATCH)
    try:
        claimed = bytes.fromhex(claimed_hex)
    except ValueError:
        return Authentication(Verdict.MISMATCH)
    return Authentication(None, (BodyMac(algorithm, tuple(secrets), (claimed,), signed_prefix),))


def with_hex_signature(
    headers: Mapping[str, str],
    header: str,
    secret: bytes,
    signed: bytes,
    *,
    prefix: str = "",
    algorithm: str = "sha256",
) -> dict[str, str]:
    """`headers` plus `header: prefix + hex HMAC(secret, signed)`: how most hosts sign (see `sign`)."""
    return {**headers, header: prefix + hmac_hex(secret, signed, algorithm)}


def field_name(path: Sequence[str | int]) -> str:
    """A JSON path as users read it: `push.changes[0].new.target.hash`."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "body"


def require_text(document: Any, *path: str | int) -> str:
    """A non-empty string field, or PayloadError naming the field."""
    value = dig(document, *path)
    if value is None:
        raise PayloadError(f"field '{field_name(path)}' is missing")
    if not isinstance(value, str):
        raise PayloadError(f"field '{field_name(path)}' must be a string, got {_json_type(value)}")
    if not value:
        raise PayloadError(f"field '{field_name(path)}' must not be empty")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def is_sha(value: str) -> bool:
    """Whether `value` is a full commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits."""
    return _SHA.fullmatch(value) is not None


def is_zero_sha(value: str | None) -> bool:
    """Whether `value` is the all-zero id git hosts send for a created or deleted ref."""
    return bool(value) and set(value or "") == {"0"}


def require_sha(document: Any, *path: str | int) -> str:
    """A full commit SHA (lower-cased), or PayloadError naming the field."""
    value = require_text(document, *path).lower()
    if not is_sha(value):
        raise PayloadError(f"field '{field_name(path)}' must be a 40- or 64-digit hex commit SHA")
    return value


def optional_sha(document: Any, *path: str | int) -> str | None:
    """A commit SHA when the field is present and not null; PayloadError when it is malformed."""
    if dig(document, *path) is None:
        return None
    return require_sha(document, *path)


def optional_bool(document: Any, *path: str | int) -> bool:
    """A boolean field that defaults to False; PayloadError when it holds anything but a boolean."""
    value = dig(document, *path)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise PayloadError(f"field '{field_name(path)}' must be a boolean, got {_json_type(value)}")
    return value


def require_list(document: Any, *path: str | int) -> list[Any]:
    """A non-empty JSON array, or PayloadError naming the field."""
    value = dig(document, *path)
    if not isinstance(value, list):
        what = "is missing" if value is None else f"must be an array, got {_json_type(value)}"
        raise PayloadError(f"field '{field_name(path)}' {what}")
    if not value:
        raise PayloadError(f"field '{field_name(path)}' must not be empty")
    return value


def require_field_object(document: Any, *path: str | int) -> dict[str, Any]:
    """A JSON object field, or PayloadError naming the field (null counts as missing)."""
    value = dig(document, *path)
    if value is None:
        raise PayloadError(f"field '{field_name(path)}' is missing")
    return require_object(value, f"field '{field_name(path)}'")


def require_header(request: WebhookRequest, name: str) -> str:
    """A header the provider always sends, or PayloadError naming it."""
    value = request.header(name).strip()
    if not value:
        raise PayloadError(f"header {name} is missing")
    return value


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """A plain dict of `headers` under lower-case names (to pickle, or to build a request by hand)."""
    return {name.lower(): value for name, value in headers.items()}


def first_header(request: WebhookRequest, *names: str) -> str | None:
    """The first non-empty value among `names`, or None."""
    header = request.header
    for name in names:
        value = header(name)
        if value and (value := value.strip()):
            return value
    return None


def require_urls(urls: tuple[str, ...], field: str) -> tuple[str, ...]:
    """`urls` when there is at least one, else PayloadError: a push we cannot match is a bad payload."""
    if not urls:
        raise PayloadError(f"field '{field}' names no repository URL")
    return urls
