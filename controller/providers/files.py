"""Which files a push changed, read from the per-commit lists GitHub, GitLab, Gitea and Gogs send.

Each of those hosts lists, for every commit of a push, the files it `added`, `modified` and
`removed` (a rename is a removal plus an addition). The union over the commits is what the push
changed, but only when the list of commits is the whole push. It is not, and the answer is "cannot
tell" (the monorepo paths rule then triggers), when:

* the push created the ref (`before` all zeros: nothing to compare with) or deleted it;
* the host marks it forced (GitHub `forced`): the lists say what the new commits changed, not what
  the commits it replaced had changed;
* the push may have been forced and nothing says it was not: GitLab, Gitea and Gogs never mark a
  force push (unless the operator sets `refusesForcePush`: branch protection refuses them), and a
  GitHub payload without its `forced` flag is no better;
* the payload lists no commits although the ref moved (a rollback to an older commit, a branch
  moved onto existing commits);
* the commit list is cut: fewer listed than the host's count (`total_commits_count` on GitLab,
  `total_commits` on Gitea), or, where the host sends no count (GitHub, Gogs), as many as the most
  it sends;
* the pushed commit is not among the listed ones, or a commit's lists are missing, malformed,
  so long that the host may have cut them, or all three empty (GitHub sends them empty for very
  large commits; a commit that really changed nothing is rare enough to trigger for).

Nothing here raises: a payload this module cannot read is a payload that cannot tell.
"""

from __future__ import annotations

from typing import Any

from controller.deliveries import ChangedFiles
from controller.providers import base

FILE_LISTS = ("added", "modified", "removed")
# A commit listing this many files in one list is taken as possibly cut. Hosts cap these lists
# (GitHub documents a cap of a few thousand paths per list) and a commit that large touches most of
# a monorepo anyway.
MAX_LISTED_FILES = 1000
# The generic format's `changedFiles` is ours and complete by contract; the limit only bounds memory.
MAX_GENERIC_FILES = 100_000


def from_commits(
    document: Any,
    *,
    host: str,
    after: str,
    before: str | None,
    deleted: bool,
    forced: bool | None,
    marks_forced: bool = True,
    total: int | None = None,
    cap: int | None = None,
) -> ChangedFiles:
    """The union of the files the listed commits changed, or why the payload cannot tell.

    `total` is the host's count of commits in the push, when it sends one; `cap` the most commits
    it lists, for hosts that send no count (then a list of `cap` commits may be cut). `forced` is
    None when the push may have been forced: `marks_forced` says whether the host would have said.
    """
    if deleted:
        return ChangedFiles.cannot_tell("the push deleted the ref")
    if before is None or base.is_zero_sha(before):
        return ChangedFiles.cannot_tell("the push created the ref: there is no previous commit to compare with")
    if forced:
        return ChangedFiles.cannot_tell("forced push: the file lists do not say what the replaced commits had changed")
    if forced is None and marks_forced:
        return ChangedFiles.cannot_tell("the payload does not say whether the push was forced (no boolean 'forced')")
    if forced is None:
        return ChangedFiles.cannot_tell(
            f"{host} does not mark force pushes, so the file lists may miss what replaced commits had changed "
            f"(set providers.{host}.refusesForcePush when branch protection refuses them)"
        )
    commits = base.dig(document, "commits")
    if not isinstance(commits, list) or not commits:
        return ChangedFiles.cannot_tell("the payload lists no commits for this push")
    if total is not None and total > len(commits):
        return ChangedFiles.cannot_tell(f"the payload lists {len(commits)} of the push's {total} commits")
    if total is None and cap is not None and len(commits) >= cap:
        return ChangedFiles.cannot_tell(
            f"the payload lists {len(commits)} commits, the most {host} lists, so some may be missing"
        )
    ids = {c.get("id", "").lower() for c in commits if isinstance(c, dict) and isinstance(c.get("id"), str)}
    if after.lower() not in ids:
        return ChangedFiles.cannot_tell(f"the pushed commit {after[:12]} is not among the listed commits")
    files: set[str] = set()
    for number, commit in enumerate(commits):
        if isinstance(commit, dict) and all(commit.get(key) == [] for key in FILE_LISTS):
            return ChangedFiles.cannot_tell(
                f"commits[{number}] lists no files (GitHub leaves the lists empty for very large commits)"
            )
        for key in FILE_LISTS:
            listed = commit.get(key) if isinstance(commit, dict) else None
            if not isinstance(listed, list) or not all(isinstance(f, str) for f in listed):
                return ChangedFiles.cannot_tell(f"commits[{number}].{key} is not a list of file paths")
            if len(listed) >= MAX_LISTED_FILES:
                return ChangedFiles.cannot_tell(
                    f"commits[{number}].{key} lists {len(listed)} files, so the host may have cut it"
                )
            files.update(listed)
    return ChangedFiles.of(frozenset(files))


def marked_forced(document: Any) -> bool | None:
    """The host's `forced` flag (GitHub), or None when the payload does not carry it as a boolean."""
    value = base.dig(document, "forced")
    return value if isinstance(value, bool) else None


def unmarked_forced(refuses_force_push: bool) -> bool | None:
    """Whether a push of a host that never marks force pushes was forced: not when the operator says
    branch protection refuses them (`refusesForcePush`), else unknown."""
    return False if refuses_force_push else None


REFUSES_FORCE_PUSH_OPTION = "refusesForcePush"
REFUSES_FORCE_PUSH_SCHEMA = {
    REFUSES_FORCE_PUSH_OPTION: {
        "type": "boolean",
        "default": False,
        "description": "Branch protection on this host refuses force pushes to every branch a GitRepo with the "
        "monorepo paths rule tracks. The host does not mark a force push, and a force push lists only its new "
        "commits, so without this the paths rule cannot trust the file lists and triggers every such GitRepo.",
    }
}


def count(document: Any, key: str) -> int | None:
    """A commit count the host sends (`total_commits`), or None when absent or not a number."""
    value = base.dig(document, key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
