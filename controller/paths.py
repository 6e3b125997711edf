"""Which repository files a GitRepo deploys, as Fleet reads `spec.paths` and `spec.bundles`.

Fleet v0.16.1 (`internal/cmd/cli/apply/apply.go`) takes each `spec.paths` entry, strips leading
`/`, expands it with Go's `filepath.Glob` relative to the repository root, keeps the directories it
matches and walks each of them recursively. So an entry is a directory, possibly a glob: `*`, `?`
and `[...]` match within one path segment (`charts/*` is every folder directly under `charts/`,
and everything below them), `\\` escapes. A changed file concerns the GitRepo when it lies below a
directory an entry matches: `apps/a` covers `apps/a/x.yaml` and `apps/a/b/c.yaml`, never
`apps/ab/x.yaml` nor the file `apps/a` itself. Empty `spec.paths` means the whole repository.

With `spec.bundles` (Fleet's driven scan) `spec.paths` is ignored; each bundle's `base` is a
directory (not a glob) and its `options` a file relative to that base.

Entries are compared after lexical clean-up: `./`, empty segments and a trailing `/` do not matter,
`a/../b` is `b`. An entry that climbs out of the repository (`../x`) or is not a valid glob cannot
be judged; the caller then triggers. Paths are case-sensitive, as git's are.

Tenants write these globs, so a glob compiles to a `Glob`, which decides in one forward pass
(no backtracking regex): matching costs time linear in the path whatever the entry.
"""

from __future__ import annotations

import bisect
import functools
import re
from dataclasses import dataclass

GLOB_CHARS = frozenset("*?[\\")


class BadPath(ValueError):
    """A `spec.paths` entry that names no place inside the repository, or an invalid glob."""


@dataclass(frozen=True, slots=True)
class Watched:
    """One cleaned entry: the segments a file's leading segments must match."""

    text: str  # as the GitRepo spells it, for reasons
    segments: tuple[str | Glob, ...]  # literal segment, or a compiled glob segment
    is_file: bool = False  # a bundle's options file: matched exactly, not as a directory

    @property
    def is_root(self) -> bool:
        """Whether the entry is the repository root (`.`, `/`): every file is below it."""
        return not self.segments and not self.is_file

    def covers(self, file_segments: tuple[str, ...]) -> bool:
        """Whether a changed file (split on `/`) lies below this directory, or is this file."""
        wanted = len(self.segments)
        if self.is_file:
            if len(file_segments) != wanted:
                return False
        elif len(file_segments) <= wanted:
            return False
        for pattern, segment in zip(self.segments, file_segments, strict=False):
            if isinstance(pattern, str):
                if pattern != segment:
                    return False
            elif not pattern.matches(segment):
                return False
        return True


def clean_segments(path: str) -> tuple[str, ...]:
    """`path` split on `/` with `.`, empty segments and `x/..` pairs removed; BadPath if it climbs out."""
    out: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not out:
                raise BadPath(f"{path!r} climbs out of the repository")
            out.pop()
            continue
        out.append(segment)
    return tuple(out)


def split_file(path: str) -> tuple[str, ...]:
    """A changed file's segments; a path that cannot be cleaned keeps its raw segments (matches nothing odd)."""
    try:
        return clean_segments(path)
    except BadPath:
        return tuple(path.split("/"))


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of a glob between two stars: fixed-width (each item matches exactly one character)."""

    pattern: re.Pattern[str]
    width: int


@dataclass(frozen=True, slots=True)
class Glob:
    """One glob segment, compiled so that judging it never backtracks.

    A tenant writes `spec.paths`; handed to `re` as `.*` runs, `*a*a*a...b` against a long segment
    takes exponential time (800 characters of stars: minutes). Instead the glob is cut at its stars
    into fixed-width pieces `head * middle... * tail`: `head` must match at the start, `tail` at the
    end, and each middle piece is found leftmost after the one before it. Leftmost is always right
    for a star (a later match only leaves less text for the rest), so one forward pass decides:
    O(len(segment) x the widest piece), however many stars.
    """

    pieces: tuple[Piece, ...]  # one piece when there is no star; else head, middle..., tail

    def matches(self, segment: str) -> bool:
        """Whether the whole segment matches, as Go's `filepath.Match` does within one segment."""
        if len(self.pieces) == 1:
            return self.pieces[0].pattern.fullmatch(segment) is not None
        head, *middle, tail = self.pieces
        end = len(segment) - tail.width
        if end < head.width:
            return False  # head and tail would overlap
        if head.pattern.match(segment) is None or tail.pattern.fullmatch(segment, end) is None:
            return False
        position = head.width
        for piece in middle:
            found = piece.pattern.search(segment, position, end)
            if found is None:
                return False
            position = found.end()
        return True


def _glob_segment(segment: str, entry: str) -> str | Glob:
    """One segment as Go's filepath.Match reads it: the literal text, or a compiled glob."""
    if not GLOB_CHARS & set(segment):
        return segment
    runs: list[list[str]] = [[]]  # regexes of single characters, a new run after each star
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            if runs[-1] or len(runs) == 1:
                runs.append([])  # `**` is `*`: consecutive stars make one
        elif char == "?":
            runs[-1].append(".")
        elif char == "\\":
            if i + 1 >= len(segment):
                raise BadPath(f"{entry!r} ends with an unfinished escape")
            i += 1
            runs[-1].append(re.escape(segment[i]))
        elif char == "[":
            i, klass = _glob_class(segment, i + 1, entry)
            runs[-1].append(klass)
        else:
            runs[-1].append(re.escape(char))
        i += 1
    return Glob(tuple(Piece(re.compile("".join(run), re.DOTALL), len(run)) for run in runs))


def _glob_class(segment: str, i: int, entry: str) -> tuple[int, str]:
    """A `[...]` class starting after `[`: (index of its `]`, regex). Go's rules: `^` negates, `a-z`
    ranges, `\\` escapes, at least one item, and a lone `-` or `]` where an item starts is invalid."""
    negate = i < len(segment) and segment[i] == "^"
    i += negate
    items: list[str] = []
    while True:
        if i >= len(segment):
            raise BadPath(f"{entry!r} has an unclosed '['")
        if segment[i] == "]" and items:
            break
        low, i = _class_char(segment, i, entry)
        if i < len(segment) and segment[i] == "-":
            high, i = _class_char(segment, i + 1, entry)
            if high < low:
                raise BadPath(f"{entry!r} has a range {low}-{high} that runs backwards")
            items.append(f"{re.escape(low)}-{re.escape(high)}")
        else:
            items.append(re.escape(low))
    return i, "[" + ("^" if negate else "") + "".join(items) + "]"


def _class_char(segment: str, i: int, entry: str) -> tuple[str, int]:
    if i >= len(segment) or segment[i] in "-]":
        raise BadPath(f"{entry!r} has an invalid character class")
    if segment[i] == "\\":
        i += 1
        if i >= len(segment):
            raise BadPath(f"{entry!r} ends with an unfinished escape")
    return segment[i], i + 1


def directory(entry: str, *, glob: bool = True) -> Watched:
    """A `spec.paths` entry (or, `glob=False`, a bundle `base`) as a directory to watch."""
    segments = clean_segments(entry)
    if not glob:
        return Watched(entry, segments)
    return Watched(entry, tuple(_glob_segment(s, entry) for s in segments))


def options_file(base: str, options: str) -> Watched:
    """A bundle's `options` file, relative to its `base`."""
    segments = clean_segments(f"{base}/{options}")
    if not segments:
        raise BadPath(f"options {options!r} of base {base!r} names no file")
    return Watched(f"{base.rstrip('/')}/{options}" if base else options, segments, is_file=True)


@dataclass(frozen=True, slots=True)
class ChangeIndex:
    """A push's changed files, prepared once per push for every GitRepo it reaches.

    The files are sorted by their segments, so the files below a directory are one contiguous run
    that starts where the directory's own segments would sort: a literal `spec.paths` entry is
    judged with one binary search however many files the push changed, in memory linear in the
    files (a table of every directory prefix, as before, grew with the square of a path's depth).
    Globs and option files scan the files.
    """

    files: tuple[tuple[str, tuple[str, ...]], ...]  # (file, its segments), sorted by segments, one per segments
    keys: tuple[tuple[str, ...], ...]  # the segments alone, for bisect

    def first_below(self, directory: tuple[str, ...]) -> str | None:
        """A changed file that lies below `directory` (the root: any file), or None."""
        depth = len(directory)
        at = bisect.bisect_left(self.keys, directory)
        if at < len(self.keys) and self.keys[at] == directory:
            at += 1  # the file that is the directory itself does not lie below it
        if at < len(self.keys) and self.keys[at][:depth] == directory:
            return self.files[at][0]
        return None

    def first_covered(self, watched: tuple[Watched, ...]) -> tuple[str, Watched] | None:
        """A changed file some entry covers, with that entry; None when no entry covers any."""
        for entry in watched:
            literal = tuple(s for s in entry.segments if isinstance(s, str))
            if not entry.is_file and len(literal) == len(entry.segments):
                file = self.first_below(literal)
                if file is not None:
                    return file, entry
                continue
            for file, segments in self.files:
                if entry.covers(segments):
                    return file, entry
        return None


@functools.lru_cache(maxsize=16)
def change_index(files: frozenset[str]) -> ChangeIndex:
    """The ChangeIndex of a push's files (cached: each GitRepo of one push asks with the same set)."""
    by_segments: dict[tuple[str, ...], str] = {}
    for file in sorted(files):
        by_segments.setdefault(split_file(file), file)  # `a/b` and `./a/b` are one file
    ordered = sorted(by_segments.items())
    return ChangeIndex(tuple((file, segments) for segments, file in ordered), tuple(k for k, _ in ordered))


@functools.lru_cache(maxsize=4096)
def watched_for(paths: tuple[str, ...], bundles: tuple[tuple[str, str], ...]) -> tuple[Watched, ...]:
    """What a GitRepo deploys: its bundles' bases and options files, else its `spec.paths` (BadPath).

    Cached by value, so a GitRepo's globs are compiled once, not on every push.
    """
    if bundles:
        out: list[Watched] = []
        for base, options in bundles:
            out.append(directory(base, glob=False))
            if options:
                out.append(options_file(base, options))
        return tuple(out)
    return tuple(directory(p) for p in paths)
