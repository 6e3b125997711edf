"""Issue 22, part 1, on a real `fleet-webhook serve` and kube-apiserver: an unsigned body buys no planning.

The route has a GitRepo with its own spec.webhookSecret that opted into the monorepo paths rule, the
worst case: a body the route's secret does not sign is still parsed (within
limits.unverifiedParseBytes) to find GitRepo secrets. Before the fix the paths rule then ran on it: a
few hundred gzip-compressed bytes naming one path of 8,000 segments cost about 260 MB and 0.35 s.
Now only the repository is taken from such a body; planning runs only for GitRepos whose secret
verified it, and a changed path that deep is one the paths rule does not read at all.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.index import TRIGGER_ON_PATHS_ANNOTATION
from controller.kube import GROUP, PLURAL, VERSION
from tests.integration.receiver_env import ReceiverEnv, gitrepo_body
from tests.integration.test_intake import FORGED_SIGNATURE, RssSampler, send, warm_up
from tests.live import build_request
from tests.support import delivery, secret_data, sha, sign
from tools.served import Served, start_serve

SECRET = "intake-secret-41c7"
OWN_SECRET = "own-secret-9d2e"
URL = "https://github.com/example-org/intake"
MONOREPO = "https://github.com/example-org/monorepo"
MIB = 1 << 20
DEEP_PATH = "/".join(["d"] * 8000)


@pytest.fixture
def served(
    control_plane: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[tuple[Served, ReceiverEnv]]:
    env = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    env.create_secret("gitjob-webhook", secret_data("github", SECRET))
    env.create_gitrepo("intake", URL)
    env.create_secret("own-secret", {"github": OWN_SECRET})
    body = gitrepo_body("mono", MONOREPO, webhookSecret="own-secret", paths=["deploy"])
    body["metadata"]["annotations"] = {TRIGGER_ON_PATHS_ANNOTATION: "true"}
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    config = f"watch:\n  namespaces: [{namespace}]\n"
    proc = start_serve(control_plane.kubeconfig, namespace, tmp_path, config)
    yield proc, env
    proc.stop()


def deep_push(commit: str, secret: str | None) -> tuple[dict[str, str], bytes]:
    d = delivery("github", https_url=MONOREPO, commit=sha(commit), before=sha("base"), files=[DEEP_PATH], secret=None)
    headers = {k: v for k, v in d.headers.items() if "signature" not in k.lower()}
    if secret is not None:
        headers = sign("github", headers, d.body, secret)
    return headers, d.body


def test_an_unsigned_deep_path_push_costs_neither_memory_nor_time(served: tuple[Served, ReceiverEnv]) -> None:
    proc, env = served
    warm_up(proc)
    headers, body = deep_push("forged", None)
    packed = gzip.compress(body)
    assert len(packed) < 4096  # what the attacker sends: the fixture push plus ~50 bytes for the path
    forged = {**headers, "X-Hub-Signature-256": FORGED_SIGNATURE, "Content-Encoding": "gzip"}
    with RssSampler(proc) as rss:
        started = time.monotonic()
        answers = [send(proc.port, build_request(forged, packed)) for _ in range(20)]
        seconds = time.monotonic() - started
    assert {a.status for a in answers} == {401}, [a.body for a in answers]
    print(f"20 unsigned deep-path pushes: {seconds * 1000:.0f} ms in all, RSS +{rss.growth / MIB:.1f} MiB")
    assert rss.growth < 32 * MIB, rss.growth / MIB
    assert env.webhook_commit("mono") is None


def test_the_same_push_signed_by_the_gitrepo_secret_triggers_without_judging_the_path(
    served: tuple[Served, ReceiverEnv],
) -> None:
    proc, env = served
    headers, body = deep_push("signed", OWN_SECRET)
    answer = send(proc.port, build_request(headers, body))
    assert answer.status == 200, answer.body
    document = json.loads(answer.body)
    assert [u["name"] for u in document["updated"]] == ["mono"]
    assert "cannot tell" in document["updated"][0]["pathsRule"]
    assert env.webhook_commit("mono") == sha("signed")
