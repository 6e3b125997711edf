"""Provider-neutral values that flow from a parsed webhook to the GitRepo update.

Every provider module turns its own payload into one of these, so nothing after parsing
needs to know which git host sent the request.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RefKind(enum.StrEnum):
    """What kind of git ref a push moved."""

    BRANCH = "branch"
    TAG = "tag"
    OTHER = "other"


ZERO_SHA = "0" * 40


@dataclass(frozen=True, slots=True)
class ChangedFiles:
    """The files a push changed, as the payload lists them, or why the payload cannot tell.

    `paths` is None when the list is unknown: the host sends no file lists (Bitbucket, Azure DevOps),
    the commit list is cut, the push created a ref or was forced. The monorepo paths rule
    (decisions.paths_decision) then triggers, because a push it cannot read may touch anything.
    """

    paths: frozenset[str] | None
    unknown: str = ""  # why `paths` is None, as the answer and `explain` word it

    @classmethod
    def of(cls, paths: frozenset[str]) -> ChangedFiles:
        """A complete list of changed files (repository-relative, `/`-separated), within the caps.

        Whatever the sender, a list over MAX_CHANGED_FILES files, or with a path longer than
        MAX_PATH_CHARS, deeper than MAX_PATH_SEGMENTS or with a segment over MAX_SEGMENT_CHARS, is
        one the paths rule does not read (the push then triggers): no git host produces such paths,
        and judging them would cost memory and time the sender chose.
        """
        problem = _over_caps(paths)
        return cls(paths) if problem is None else cls(None, problem)

    @classmethod
    def cannot_tell(cls, why: str) -> ChangedFiles:
        """No usable list, and why."""
        return cls(None, why)


NO_FILE_LISTS = ChangedFiles.cannot_tell("the payload lists no changed files")

# Caps on the changed files the paths rule reads (git allows deeper and longer, file systems and
# hosts do not: PATH_MAX is 4096 and NAME_MAX 255 on Linux).
MAX_CHANGED_FILES = 100_000
MAX_PATH_CHARS = 4096
MAX_PATH_SEGMENTS = 128
MAX_SEGMENT_CHARS = 255


def _over_caps(paths: frozenset[str]) -> str | None:
    """Why a changed-file list is beyond what the paths rule reads, or None when it is within."""
    if len(paths) > MAX_CHANGED_FILES:
        return f"the push lists {len(paths)} changed files, more than the {MAX_CHANGED_FILES} the paths rule reads"
    for path in paths:
        if len(path) <= MAX_SEGMENT_CHARS:
            continue  # neither too long nor too deep, and no segment can be over the cap
        if len(path) > MAX_PATH_CHARS:
            return f"a changed path is longer than {MAX_PATH_CHARS} characters"
        if path.count("/") >= MAX_PATH_SEGMENTS:
            return f"a changed path has more than {MAX_PATH_SEGMENTS} segments"
        if max(map(len, path.split("/"))) > MAX_SEGMENT_CHARS:
            return f"a changed path has a segment longer than {MAX_SEGMENT_CHARS} characters"
    return None


def split_ref(ref: str) -> tuple[RefKind, str]:
    """Split `refs/heads/x` / `refs/tags/x` into kind and short name; bare names count as branches.

    Fleet treats anything else as "no branch, no tag"; we keep it as OTHER so it never matches.
    """
    if ref.startswith("refs/heads/"):
        return RefKind.BRANCH, ref[len("refs/heads/") :]
    if ref.startswith("refs/tags/"):
        return RefKind.TAG, ref[len("refs/tags/") :]
    if ref and not ref.startswith("refs/"):
        return RefKind.BRANCH, ref
    return RefKind.OTHER, ref


@dataclass(frozen=True, slots=True)
class PushEvent:
    """One ref update, as the receiver understands it.

    `repo_urls` holds every URL the payload names for the repository (web, clone, ssh); matching
    normalizes each of them. `before` is the previous commit when the payload says so; it lets us
    tell the order of two deliveries for the same ref (see decisions.py).
    """

    provider: str
    delivery_id: str | None
    repo_urls: tuple[str, ...]
    ref_kind: RefKind
    ref_name: str
    commit: str
    before: str | None = None
    deleted: bool = False
    forced: bool = False  # the host says history was rewritten (GitHub `forced`): the push is the newest
    # The repository's path on its server when the payload names no URL at all (Bitbucket Server
    # without `repository.links`: `scm/plat/fleet-apps.git`); `repo_urls` is then empty until the
    # configured base URL completes it (providers.complete_urls).
    repo_path: str = ""
    # The files the push changed (added, modified or removed by its commits), when the payload can tell.
    changes: ChangedFiles = NO_FILE_LISTS


@dataclass(frozen=True, slots=True)
class Ping:
    """A verified "hook is set up" delivery: answered 200, never matched or written."""

    provider: str
    delivery_id: str | None
    repo_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ignored:
    """A verified delivery of an event kind we do not act on (pull requests, issues, ...)."""

    provider: str
    delivery_id: str | None
    event: str
    reason: str
    repo_urls: tuple[str, ...] = ()


Parsed = PushEvent | Ping | Ignored
