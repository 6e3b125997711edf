"""Every fuzz target over its seed corpus, its saved crashers and deterministic random inputs.

FLEET_WEBHOOK_FUZZ_RUNS sets the random inputs per target (default 1500; CI keeps the default, a
local hunt can raise it). Any input that fails is written to tests/fixtures/crashers/<target>/ by
`save_crasher` in the failure message's instructions, so it is replayed forever after.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.fuzz.common import CRASHERS, Target, crashers, random_inputs, seed_corpus
from tests.fuzz.targets import TARGETS

RUNS = int(os.environ.get("FLEET_WEBHOOK_FUZZ_RUNS", "1500"))
URL_SEEDS = [
    b"https://github.com/example-org/fleet-apps.git",
    b"git@github.com:example-org/fleet-apps.git",
    b"ssh://git@bitbucket.example.com:7999/plat/apps.git",
    b"https://dev.azure.com/org/Project%20X/_git/repo",
    b"https://org.visualstudio.com/DefaultCollection/p/_git/r",
    b"git@ssh.dev.azure.com:v3/org/p/r",
    b"https://x-access-token:ghp_secret@github.com/o/r",
    b"https://[::1]:8443/o/r.git",
    b"https://bitbucket.example.com/projects/PROJ/repos/repo/browse",
    b"https://gitlab.example.com/group/sub/repo/-/tree/main",
]


def target_of(name: str) -> Target:
    return TARGETS[name]


def save_crasher(name: str, data: bytes) -> Path:
    """Keep an input that broke `name` as a regression case."""
    folder = CRASHERS / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha1(data, usedforsecurity=False).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def run_all(name: str, inputs: list[bytes]) -> None:
    target = target_of(name)
    for data in inputs:
        try:
            target(data)
        except Exception as exc:
            path = save_crasher(name, data)
            raise AssertionError(f"{name} failed on an input saved as {path}: {exc!r}") from exc


def corpus_of(name: str) -> list[bytes]:
    if name == "normalize":
        return URL_SEEDS
    return list(seed_corpus(name))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_its_seed_corpus(name: str) -> None:
    run_all(name, corpus_of(name))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_every_saved_crasher(name: str) -> None:
    run_all(name, [data for _, data in crashers(name)])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_random_inputs(name: str) -> None:
    if name == "normalize":
        import random

        rng = random.Random("normalize")
        pieces = [
            b"://",
            b"@",
            b":",
            b"/",
            b".git",
            b"%",
            b"[",
            b"]",
            b"_git",
            b"v3",
            b"scm",
            b"\xff",
            b" ",
            b"..",
            b"~",
        ]
        inputs = [
            b"".join(rng.choice([*pieces, *URL_SEEDS, bytes([rng.randrange(256)])]) for _ in range(rng.randint(0, 12)))
            for _ in range(RUNS)
        ]
    else:
        inputs = list(random_inputs(name, seed=0, count=RUNS))
    run_all(name, inputs)


def test_every_parser_has_a_target() -> None:
    from controller.providers import PROVIDERS

    assert {p.name for p in PROVIDERS} | {"normalize"} == set(TARGETS)
    for name in TARGETS:
        assert callable(target_of(name))
