"""Repository URL -> canonical identity: the only place where payload URLs meet GitRepo URLs.

Fleet matches a payload URL against every GitRepo's `spec.repo` with a regular expression built
from the payload (fleet-receiver-facts.md §2.2). That design produced a string of bugs: `repo`
matched `repo-suffix` (#4648), regex metacharacters in a forged payload matched every GitRepo
(GHSA-jmf4-m7j9-g72r), a trailing `/` or a missing `.git` broke matches, and `%20` versus a space
in Azure project names did not match (#4507). Here every URL, payload and GitRepo alike, is reduced
to a `RepoKey` (host, path) and two URLs name the same repository exactly when their keys are equal.
There is no regex and no prefix test anywhere: a key is a dict key, so lookups are O(1) and a
metacharacter is just a character.

What is part of the identity and what is not:

* The scheme is not (`https`, `http`, `ssh`, `git`, `git+ssh`, `ssh+git` all name the same repo);
  any other scheme (`file`, `ftp`, ...) is not a usable repo URL.
* Userinfo (`git@`, `user:token@`, `x-access-token:ghp_...@`) is dropped and never reaches the key.
* Ports are dropped: the same server often serves HTTPS on 443/8443 and SSH on 22/7999.
* Query strings and fragments are dropped.
* The host is lower-cased, one trailing dot is dropped, and the host must be ASCII (IDN hosts in
  punycode). Hosts with any other character (`*`, `%`, `\\`, ...) make the URL unusable, so
  `https://.*/.*` gives no key at all.
* The path is percent-decoded exactly once, so `My%20Project` and `My Project` are the same
  (Fleet #4507). Empty segments (duplicate or trailing slashes) are dropped. Trailing `.git`
  (any case, repeated) is dropped from the last segment. Paths with `.` or `..` segments, control
  characters, or bytes that are not UTF-8 are rejected rather than resolved: nothing legitimate
  sends them and resolving them would let `evil/../victim` name `victim`.
* The path is lower-cased unless `case_sensitive_path=True`. GitHub, GitLab, Bitbucket (Cloud and
  Server/Data Center), Gitea/Gogs and Azure DevOps all resolve owner and repository names
  case-insensitively, and Fleet's own regex is `(?i)`, so users write URLs in whatever case they
  copied. Turn it on for servers that map paths to a case-sensitive file system (plain `git`
  over SSH, cgit, gitolite). Structural markers (`_git`, `scm`, `v3`, ...) are always recognised
  in any case; in case-sensitive mode the names around them keep their case.

scp-like syntax (no `://`), following git's own rule that a `:` before any `/` means a remote:

* `user@host:path` is always a remote (any host, e.g. `git@gitserver:repo.git`), and the path is
  taken literally as git does: `git@host:7999/proj/repo` names path `7999/proj/repo`.
* `host:path` without a user is accepted only when the host contains a dot and the path's first
  segment is not all digits. That rejects Windows drive letters (`C:/x`), bare names
  (`localhost:x`) and the ambiguous `host:7999/proj/repo` (port or path?), which should be
  written `ssh://host:7999/proj/repo`.
* Anything else without a scheme (`github.com/owner/repo`, `/srv/git/repo`) is a local path to
  git, not a remote, and gives no key.

Hosts that serve SSH under another name are folded onto the web host by a small fixed table
(`KNOWN_HOST_ALIASES`): only the public services whose aliases are documented. A leading `ssh.`
is never stripped from arbitrary hosts, because `ssh.example.com` may well be a different server;
self-hosted mappings are passed explicitly as `ssh_host_aliases`.

Provider-specific path shapes:

* Azure DevOps: `dev.azure.com/org/project/_git/repo` (and `.../_git/_full|_optimized/repo`),
  `org.visualstudio.com[/DefaultCollection]/project/_git/repo`, and SSH
  `ssh.dev.azure.com:v3/org/project/repo` / `vs-ssh.visualstudio.com:v3/org/project/repo` all
  become host `dev.azure.com`, path `org/project/repo`. `dev.azure.com/org/_git/repo` (the form
  Azure shows when project and repo share a name) becomes `org/repo/repo`. On-premises Azure
  DevOps Server keeps `_git` in both its HTTPS and SSH URLs, so its paths are left alone.
* Bitbucket Server/Data Center (any host other than the public services above): a path whose
  third-to-last segment is `scm` keeps only its last two segments, so `scm/proj/repo` and a
  context path like `bitbucket/scm/proj/repo` both become `proj/repo`, as its SSH URL
  `ssh://git@host:7999/proj/repo.git` does. Browse URLs `projects/PROJ/repos/repo[/...]` become
  `proj/repo` and `users/alice/repos/repo[/...]` become `~alice/repo` (the personal-repo clone
  path). Risk accepted: on a self-hosted GitLab a group literally named `scm` with a subgroup
  would fold onto the subgroup's path.
* GitLab: subgroups keep all segments; web URLs are cut at a `-` segment (`group/repo/-/tree/main`
  becomes `group/repo`), on any host, since `-` is never a valid name.
* GitHub and Bitbucket Cloud web URLs (`owner/repo/tree/main`, `owner/repo/src/main`) are NOT cut:
  the extra segments are ambiguous in general, and such a key simply matches nothing.
* `github.com`, `gitlab.com` and `bitbucket.org` need at least `owner/repo`; `dev.azure.com` needs
  exactly `org/project/repo`. Other hosts accept a single segment (`git@host:repo.git`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NamedTuple
from urllib.parse import quote, unquote_to_bytes

SUPPORTED_SCHEMES: Final = frozenset({"http", "https", "ssh", "git", "git+ssh", "ssh+git"})

AZURE_HOST: Final = "dev.azure.com"
_VISUALSTUDIO_SUFFIX: Final = ".visualstudio.com"

# Hosts that are the same service as another host. Only documented aliases of public services:
#   ssh.github.com        GitHub's SSH-over-443 endpoint
#   altssh.gitlab.com     GitLab.com's SSH-over-443 endpoint
#   altssh.bitbucket.org  Bitbucket Cloud's SSH-over-443 endpoint
#   ssh.dev.azure.com     Azure DevOps SSH (`git@ssh.dev.azure.com:v3/org/project/repo`)
#   vs-ssh.visualstudio.com  legacy Azure DevOps SSH (`org@vs-ssh.visualstudio.com:v3/...`)
#   www.*                 the web hosts redirect www to the bare name
KNOWN_HOST_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ssh.github.com": "github.com",
        "www.github.com": "github.com",
        "altssh.gitlab.com": "gitlab.com",
        "www.gitlab.com": "gitlab.com",
        "altssh.bitbucket.org": "bitbucket.org",
        "www.bitbucket.org": "bitbucket.org",
        "ssh.dev.azure.com": AZURE_HOST,
        "vs-ssh.visualstudio.com": AZURE_HOST,
    }
)

# Public services whose path shapes are known; Bitbucket Server rules never apply to them.
_MIN_SEGMENTS: Final[Mapping[str, int]] = MappingProxyType(
    {"github.com": 2, "gitlab.com": 2, "bitbucket.org": 2, AZURE_HOST: 3}
)

# Character checks run on every payload URL of every delivery, so they are compiled patterns (one C
# loop) rather than per-character Python loops, which were most of the cost of `repo_key`.
_SCHEME: Final = re.compile(r"[A-Za-z0-9+.\-]+")
_HOST_LABELS: Final = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*")  # non-empty labels, dot-separated
_CONTROL_CHAR: Final = re.compile(r"[\x00-\x1f\x7f]")
_IPV6_CHARS: Final = frozenset("0123456789abcdef:.")
_AZURE_GIT_VARIANTS: Final = frozenset({"_full", "_optimized"})
_REDACT_LIMIT: Final = 200


class RepoKey(NamedTuple):
    """Canonical identity of a git repository: lower-case host and normalized path (no slashes at
    either end, no `.git`). Hashable; equal keys mean the same repository.

    A tuple, so hashing and comparing it (every index lookup does both) run in C: a frozen
    dataclass computes both in Python, a few microseconds per delivery.
    """

    host: str
    path: str

    def __str__(self) -> str:
        return f"{self.host}/{self.path}"

    def url(self) -> str:
        """The canonical HTTPS form; `repo_key(key.url())` gives this key back."""
        return f"https://{self.host}/{quote(self.path, safe='/')}"


class _Unusable(Exception):
    """Internal: why a string is not a usable repo URL (never escapes this module)."""


def repo_key(
    url: str,
    *,
    case_sensitive_path: bool = False,
    ssh_host_aliases: Mapping[str, str] | None = None,
) -> RepoKey | None:
    """The canonical identity of a git repository URL, or None when it is not a usable repo URL.

    `ssh_host_aliases` maps extra host names onto the host they stand for (for example
    `{"ssh.git.example.com": "git.example.com"}`); it is consulted before `KNOWN_HOST_ALIASES`.
    Never raises for any string.
    """
    try:
        return _parse(url, case_sensitive_path, ssh_host_aliases)
    except _Unusable:
        return None


def unusable_reason(
    url: str,
    *,
    case_sensitive_path: bool = False,
    ssh_host_aliases: Mapping[str, str] | None = None,
) -> str | None:
    """Why `repo_key(url)` is None (a short phrase without the URL itself), or None if it is not."""
    try:
        _parse(url, case_sensitive_path, ssh_host_aliases)
    except _Unusable as exc:
        return str(exc)
    return None


def explain_difference(
    a: str,
    b: str,
    *,
    case_sensitive_path: bool = False,
    ssh_host_aliases: Mapping[str, str] | None = None,
) -> str:
    """A short human reason why two URLs do (not) name the same repository.

    Credentials, query strings and fragments never appear in the text.
    """
    keys: list[RepoKey] = []
    problems: list[str] = []
    for label, url in (("first", a), ("second", b)):
        try:
            keys.append(_parse(url, case_sensitive_path, ssh_host_aliases))
        except _Unusable as exc:
            problems.append(f"{label} URL {redact_url(url)!r} is not a usable repo URL: {exc}")
    if problems:
        return "; ".join(problems)
    ka, kb = keys
    if ka == kb:
        return f"same repository: {ka}"
    reasons: list[str] = []
    if ka.host != kb.host:
        reasons.append(f"hosts differ: {ka.host} vs {kb.host}")
    if ka.path != kb.path:
        reasons.append(f"paths differ: {ka.path} vs {kb.path}{_path_hint(ka.path, kb.path)}")
    return "; ".join(reasons)


def redact_url(url: str) -> str:
    """`url` fit for a log line or an error message: no userinfo, query or fragment, bounded length.

    Every form is covered: `scheme://user:token@host/...`, scp-like `user:token@host:path` and
    `user:token@host/path`, tokens holding `/` or `@`. Everything up to the last `@` goes: a path
    with an `@` in it loses more than it must, but no credential is ever shown in part.
    """
    text = url.strip()
    for sep in ("?", "#"):
        text = text.partition(sep)[0]
    scheme, sep, rest = text.partition("://")
    if not sep:
        rest = text
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    text = f"{scheme}://{rest}" if sep else rest
    if len(text) > _REDACT_LIMIT:
        text = text[:_REDACT_LIMIT] + "..."
    return text


def _path_hint(pa: str, pb: str) -> str:
    sa, sb = pa.split("/"), pb.split("/")
    if pa.lower() == pb.lower():
        return " (only letter case differs, and case-sensitive paths are on)"
    shorter, longer = (sa, sb) if len(sa) < len(sb) else (sb, sa)
    if longer[: len(shorter)] == shorter:
        extra = "/".join(longer[len(shorter) :])
        return f" (extra trailing segments {extra!r}: matching is exact, never by prefix)"
    if sa[:-1] == sb[:-1]:
        return " (same owner, different repository)"
    return ""


def _parse(url: str, case_sensitive_path: bool, aliases: Mapping[str, str] | None) -> RepoKey:
    text = url.strip()
    if not text:
        raise _Unusable("empty")
    if _has_control_chars(text):
        raise _Unusable("contains control characters")
    raw_host, raw_path = _split(text)
    host = _normalize_host(raw_host)
    host = _resolve_alias(host, aliases)
    segments = _decode_path(raw_path)
    host, segments = _reshape(host, segments)
    segments[-1] = _strip_dot_git(segments[-1])
    if any(seg in ("", ".", "..") for seg in segments):
        raise _Unusable("path ends in an empty, '.' or '..' segment once '.git' is dropped")
    minimum = _MIN_SEGMENTS.get(host)
    if host == AZURE_HOST and len(segments) != 3:
        raise _Unusable("Azure DevOps paths are org/project/repo (or org/project/_git/repo)")
    if minimum is not None and len(segments) < minimum:
        raise _Unusable(f"{host} paths need at least owner/repo")
    path = "/".join(segments)
    return RepoKey(host, path if case_sensitive_path else path.lower())


def _has_control_chars(text: str) -> bool:
    return _CONTROL_CHAR.search(text) is not None


def _cut_query(path: str) -> str:
    for sep in ("?", "#"):
        path = path.partition(sep)[0]
    return path


def _split(text: str) -> tuple[str, str]:
    """(host[:port] with userinfo removed, raw path) for URL and scp-like syntax."""
    scheme, sep, rest = text.partition("://")
    if sep and scheme and _SCHEME.fullmatch(scheme):
        if scheme.lower() not in SUPPORTED_SCHEMES:
            raise _Unusable(f"unsupported scheme {scheme.lower()!r}")
        end = len(rest)
        for stop in ("/", "?", "#"):
            pos = rest.find(stop)
            if pos != -1:
                end = min(end, pos)
        hostport = rest[:end].rpartition("@")[2]
        return _drop_port(hostport), _cut_query(rest[end:])
    return _split_scp(text)


def _split_scp(text: str) -> tuple[str, str]:
    colon = text.find(":")
    slash = text.find("/")
    if colon == -1 or (slash != -1 and slash < colon):
        raise _Unusable("no scheme and not user@host:path")
    _, at, host = text[:colon].rpartition("@")
    path = _cut_query(text[colon + 1 :])
    if host.startswith("[") and not host.endswith("]"):
        # `[::1]:repo` style: the first colon is inside the brackets.
        close = text.find("]")
        if close == -1 or text[close + 1 : close + 2] != ":":
            raise _Unusable("invalid bracketed host")
        _, at, host = text[: close + 1].rpartition("@")
        path = _cut_query(text[close + 2 :])
    if not at:
        if "." not in host:
            raise _Unusable("no scheme, and host:path without user@ needs a dotted host name")
        first = next((seg for seg in path.split("/") if seg), "")
        if first.isascii() and first.isdigit():
            raise _Unusable("ambiguous host:port/path without a scheme; write ssh://host:port/path")
    return host, path


def _drop_port(hostport: str) -> str:
    if hostport.startswith("["):
        close = hostport.find("]")
        if close == -1:
            raise _Unusable("invalid bracketed host")
        host, rest = hostport[: close + 1], hostport[close + 1 :]
        if rest and not rest.startswith(":"):
            raise _Unusable("invalid host")
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5 and int(port) <= 65535):
        raise _Unusable(f"invalid port {port[:16]!r}")
    return host


def _normalize_host(raw: str) -> str:
    host = raw.lower()
    if host.endswith(".") and not host.startswith("["):
        host = host[:-1]
    if not host:
        raise _Unusable("no host")
    if host.startswith("["):
        inner = host[1:-1]
        if not host.endswith("]") or not inner or not all(ch in _IPV6_CHARS for ch in inner):
            raise _Unusable("invalid host")
        return host
    if not _HOST_LABELS.fullmatch(host):
        raise _Unusable("invalid host (ASCII letters, digits, '-', '_' and dots only)")
    return host


def _resolve_alias(host: str, aliases: Mapping[str, str] | None) -> str:
    if aliases:
        for name, target in aliases.items():
            if name.lower().rstrip(".") == host:
                return target.lower().rstrip(".")
    return KNOWN_HOST_ALIASES.get(host, host)


def _decode_path(raw: str) -> list[str]:
    try:
        decoded = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeError as exc:
        raise _Unusable("path is not valid UTF-8 after percent-decoding") from exc
    if _has_control_chars(decoded):
        raise _Unusable("path contains control characters")
    segments = [seg for seg in decoded.split("/") if seg]
    if any(seg in (".", "..") for seg in segments):
        raise _Unusable("path has '.' or '..' segments")
    if "-" in segments:  # GitLab web URL: group/repo/-/tree/main
        segments = segments[: segments.index("-")]
    if not segments:
        raise _Unusable("no path")
    segments[-1] = _strip_dot_git(segments[-1])
    if not segments[-1]:
        raise _Unusable("path is only '.git'")
    return segments


def _strip_dot_git(segment: str) -> str:
    while len(segment) >= 4 and segment[-4:].isascii() and segment[-4:].lower() == ".git":
        segment = segment[:-4]
    return segment


def _reshape(host: str, segments: list[str]) -> tuple[str, list[str]]:
    """Apply the provider-specific path shapes described in the module docstring."""
    if host.endswith(_VISUALSTUDIO_SUFFIX):
        org = host[: -len(_VISUALSTUDIO_SUFFIX)]
        if org and "." not in org:
            if segments[0].lower() == "defaultcollection":
                segments = segments[1:]
            host, segments = AZURE_HOST, [org, *segments]
    if host == AZURE_HOST:
        return host, _azure_path(segments)
    if host in _MIN_SEGMENTS:
        return host, segments
    return host, _bitbucket_server_path(segments)


def _azure_path(segments: list[str]) -> list[str]:
    lowered = [seg.lower() for seg in segments]
    # `_git` followed by at least one segment; the last segment alone may be a repo named `_git`.
    if "_git" in lowered[:-1]:
        i = lowered.index("_git")
        rest = segments[i + 1 :]
        if len(rest) > 1 and rest[0].lower() in _AZURE_GIT_VARIANTS:
            rest = rest[1:]
        repo = _strip_dot_git(rest[0])
        before = segments[:i]
        if len(before) == 2:
            return [*before, repo]
        if len(before) == 1:
            return [before[0], repo, repo]
        raise _Unusable("Azure DevOps paths are org/project/_git/repo")
    first = lowered[0]
    if len(segments) == 4 and len(first) >= 2 and first[0] == "v" and first[1:].isascii() and first[1:].isdigit():
        return segments[1:]
    return segments


def _bitbucket_server_path(segments: list[str]) -> list[str]:
    if len(segments) >= 3 and segments[-3].lower() == "scm":
        return segments[-2:]
    lowered = [seg.lower() for seg in segments]
    for i in range(len(segments) - 3):
        if lowered[i] in ("projects", "users") and lowered[i + 2] == "repos":
            owner = segments[i + 1] if lowered[i] == "projects" else "~" + segments[i + 1]
            return [owner, segments[i + 3]]
    return segments
