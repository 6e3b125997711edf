"""A body no route secret vouches for buys a stranger nothing but a bounded look for GitRepo secrets.

Issue 22, parts 1 and 4, on the pipeline called directly: an unverified body is never planned (no
decisions, no paths rule), per-GitRepo secrets are read only in the route's namespaces, at most a
bounded number per request, refusals are cached, an unverified request holds no processing slot,
and one unreadable Secret fails only its own GitRepo. Part 5's replay item is here too: the
delivery cache is keyed on what the signature covers, not on a delivery id alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller import decisions
from controller import pipeline as pipeline_module
from controller.config import PollingPolicy, load_text
from controller.deliveries import ChangedFiles, PushEvent
from controller.index import TRIGGER_ON_PATHS_ANNOTATION, GitRepoIndex, GitRepoInfo, gitrepo_info
from controller.kube import Forbidden
from controller.metrics import Metrics
from controller.pipeline import MAX_UNVERIFIED_SECRETS, Pipeline, Receiver
from controller.providers.base import WebhookRequest
from controller.reload import ConfigHolder
from controller.secrets import SecretStore
from controller.updater import WriteResult
from tests.live import FakeUpdater
from tests.support import delivery, secret_data, sha

NS = "cattle-fleet-system"
ROUTE_SECRET = "route-secret"
URL = "https://github.com/example-org/tenants"
OTHER_URL = "https://github.com/example-org/elsewhere"
DEEP_PATH = "/".join(["d"] * 8000)  # the issue's: about 260 MB and 0.35 s for the old change index
DEEP_SHORT_PATH = "/".join(["d"] * 2000)  # within the length cap, over the depth cap


@dataclass
class Secrets:
    """Secrets by "namespace/name"; records every read; a name in `forbidden` is refused by RBAC."""

    data: dict[str, dict[str, str]]
    forbidden: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    reads: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None

    async def read(self, namespace: str, name: str) -> dict[str, bytes] | None:
        where = f"{namespace}/{name}"
        self.reads.append(where)
        if self.gate is not None and where != f"{NS}/gitjob-webhook":
            await self.gate.wait()
        if where in self.forbidden:
            raise Forbidden(where)
        if where in self.down:
            raise ConnectionError(where)
        found = self.data.get(where)
        return None if found is None else {k: v.encode() for k, v in found.items()}


class IndexedUpdater(FakeUpdater):
    """Records writes and, as the real updater does, puts what it wrote into the index."""

    def __init__(self, index: GitRepoIndex) -> None:
        super().__init__()
        self.index = index

    async def record(
        self, info: GitRepoInfo, event: PushEvent, policy: PollingPolicy, deadline: float, *rest: Any
    ) -> WriteResult:
        result = await super().record(info, event, policy, deadline, *rest)
        self.index.upsert(dataclasses.replace(info, webhook_commit=event.commit))
        return result


def gitrepo(name: str, namespace: str = "team-a", paths_rule: bool = False, **spec: Any) -> dict[str, Any]:
    annotations = {TRIGGER_ON_PATHS_ANNOTATION: "true"} if paths_rule else {}
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "1", "annotations": annotations},
        "spec": {"repo": URL, "branch": "main", "paths": ["deploy"], **spec},
    }


CONFIG = """
routes:
  - path: /
  - path: /team-a
    namespaces: [team-a]
"""


def make(
    gitrepos: list[dict[str, Any]], secrets: Secrets, config: str = CONFIG
) -> tuple[Pipeline, FakeUpdater, Secrets]:
    index = GitRepoIndex()
    index.replace_all([i for i in map(gitrepo_info, gitrepos) if i is not None])
    index.synced = True
    updater = IndexedUpdater(index)
    store = SecretStore(secrets.read, NS)
    receiver = Receiver(ConfigHolder(load_text(config, "t.yaml")), index, store, Metrics(), updater)
    return Pipeline(receiver), updater, secrets


def secrets(**own: str) -> Secrets:
    """The route's secret plus one GitRepo secret per keyword: `a_own="value"` is team-a/a-own."""
    data = {f"{NS}/gitjob-webhook": secret_data("github", ROUTE_SECRET)}
    for key, value in own.items():
        namespace, _, name = key.partition("__")
        data[f"{namespace.replace('_', '-')}/{name.replace('_', '-')}"] = {"github": value}
    return Secrets(data)


def request(headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, body)


def signed(
    secret: str | None,
    commit: str = "c1",
    delivery_id: str | None = None,
    before: str = sha("parent"),
    files: list[str] | None = None,
    url: str = URL,
) -> WebhookRequest:
    d = delivery("github", https_url=url, commit=sha(commit), before=before, secret=secret, files=files)
    headers = dict(d.headers)
    if delivery_id is not None:
        headers = {k: (delivery_id if k.lower() == "x-github-delivery" else v) for k, v in headers.items()}
    return request(headers, d.body)


def spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Record the arguments of every call to module.name (and still call it)."""
    calls: list[Any] = []
    real: Callable[..., Any] = getattr(module, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, recording)
    return calls


# --- part 1: planning only for GitRepos whose secret verified the body ---------------------------


async def test_an_unverified_body_is_never_planned(monkeypatch: pytest.MonkeyPatch) -> None:
    p, updater, _ = make([gitrepo("own", webhookSecret="own", paths_rule=True)], secrets(team_a__own="own-secret"))
    plans = spy(monkeypatch, pipeline_module, "plan_delivery")
    judged = spy(monkeypatch, decisions, "paths_decision")
    answer = await p.deliver("/", signed("a-guess", files=[DEEP_PATH]))
    assert answer.status == 401, answer.body
    assert plans == []
    assert judged == []
    assert updater.written == []


async def test_a_body_vouched_for_by_one_gitrepo_secret_is_planned_for_that_secrets_gitrepos_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gitrepos = [
        gitrepo("alpha", webhookSecret="alpha", paths_rule=True),
        gitrepo("beta", webhookSecret="beta", paths_rule=True),
        gitrepo("open", paths_rule=True),
    ]
    p, updater, _ = make(gitrepos, secrets(team_a__alpha="alpha-secret", team_a__beta="beta-secret"))
    judged = spy(monkeypatch, decisions, "paths_decision")
    answer = await p.deliver("/", signed("alpha-secret", files=["deploy/app.yaml"]))
    assert answer.status == 200, answer.body
    assert [u["name"] for u in answer.body["updated"]] == ["alpha"]
    assert answer.body.get("notListed") == 2  # beta and open: counted, never named
    assert [args[1].name for args in judged] == ["alpha"]
    assert updater.written == [("team-a", "alpha", sha("c1"))]


async def test_a_path_deeper_than_any_repository_is_a_push_that_cannot_tell() -> None:
    """Whatever the sender: signed with the route's secret, 8,000 segments do not build an index."""
    p, updater, _ = make([gitrepo("open", paths_rule=True)], secrets())
    answer = await p.deliver("/", signed(ROUTE_SECRET, files=[DEEP_PATH]))
    assert answer.status == 200, answer.body
    assert [u["name"] for u in answer.body["updated"]] == ["open"]
    assert "cannot tell" in answer.body["updated"][0]["pathsRule"]
    assert updater.written == [("team-a", "open", sha("c1"))]


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ([f"f{i}" for i in range(100_001)], "files"),
        (["a" * 5000], "characters"),
        (["dir/" + "s" * 300 + "/file"], "segment"),
        ([DEEP_SHORT_PATH], "segments"),
        ([DEEP_PATH], "longer"),
    ],
)
def test_changed_file_lists_over_the_caps_cannot_tell(files: list[str], why: str) -> None:
    changes = ChangedFiles.of(frozenset(files))
    assert changes.paths is None
    assert why in changes.unknown


def test_changed_file_lists_within_the_caps_are_kept() -> None:
    files = frozenset({"a/b/c.yaml", "/".join(["d"] * 100) + "/f", "s" * 255})
    assert ChangedFiles.of(files).paths == files


# --- part 4: per-GitRepo secrets --------------------------------------------------------------


async def test_unverified_requests_read_secrets_only_in_the_routes_namespaces() -> None:
    gitrepos = [gitrepo("mine", webhookSecret="mine"), gitrepo("theirs", namespace="team-b", webhookSecret="theirs")]
    p, _, store = make(gitrepos, secrets(team_a__mine="mine-secret", team_b__theirs="theirs-secret"))
    answer = await p.deliver("/team-a", signed("a-guess"))
    assert answer.status == 401
    assert "team-b/theirs" not in store.reads
    assert "team-a/mine" in store.reads
    # Signed with team-b's secret but sent to team-a's route: not even read, so not accepted.
    answer = await p.deliver("/team-a", signed("theirs-secret"))
    assert answer.status == 401
    assert "team-b/theirs" not in store.reads


async def test_a_refused_secret_read_is_cached_like_any_answer() -> None:
    store = secrets(team_a__own="own-secret")
    store.forbidden.add("team-a/own")
    p, _, _ = make([gitrepo("own", webhookSecret="own")], store)
    for n in range(5):
        answer = await p.deliver("/", signed("a-guess", commit=f"c{n}"))
        assert answer.status == 401, answer.body
    assert store.reads.count("team-a/own") == 1


async def test_an_unreachable_api_is_not_asked_again_by_every_stranger() -> None:
    store = secrets(team_a__own="own-secret")
    store.down.add("team-a/own")
    p, _, _ = make([gitrepo("own", webhookSecret="own")], store)
    for n in range(5):  # 503: the secret that signs it may be the one the API cannot serve now
        answer = await p.deliver("/", signed("a-guess", commit=f"c{n}"))
        assert answer.status == 503, answer.body
    assert store.reads.count("team-a/own") == 1


async def test_the_work_one_unverified_request_buys_is_bounded() -> None:
    count = MAX_UNVERIFIED_SECRETS * 3
    gitrepos = [gitrepo(f"g{i}", webhookSecret=f"s{i}") for i in range(count)]
    store = secrets(**{f"team_a__s{i}": f"secret-{i}" for i in range(count)})
    p, _, _ = make(gitrepos, store)
    answer = await p.deliver("/", signed("a-guess"))
    assert answer.status == 401
    own_reads = [r for r in store.reads if r.startswith("team-a/")]
    assert 0 < len(own_reads) <= MAX_UNVERIFIED_SECRETS


async def test_an_unverified_request_holds_no_processing_slot() -> None:
    store = secrets(team_a__own="own-secret")
    store.gate = asyncio.Event()  # the GitRepo secret read hangs until released
    config = CONFIG + "limits:\n  maxConcurrentRequests: 1\n"
    own = gitrepo("own", webhookSecret="own")
    own["spec"]["repo"] = OTHER_URL
    p, updater, _ = make([own, gitrepo("open")], store, config)
    stranger = asyncio.create_task(p.deliver("/", signed("a-guess", url=OTHER_URL)))
    await asyncio.sleep(0.05)
    answer = await p.deliver("/", signed(ROUTE_SECRET, commit="real"))
    assert answer.status == 200, answer.body
    assert ("team-a", "open", sha("real")) in updater.written
    store.gate.set()
    assert (await stranger).status == 401


async def test_one_unreadable_gitrepo_secret_fails_only_its_own_gitrepo() -> None:
    store = secrets(team_a__good="good-secret")
    store.forbidden.add("team-a/broken")
    gitrepos = [gitrepo("broken", webhookSecret="broken"), gitrepo("good", webhookSecret="good"), gitrepo("open")]
    p, updater, _ = make(gitrepos, store)
    answer = await p.deliver("/", signed("good-secret"))
    assert answer.status == 200, answer.body
    assert [u["name"] for u in answer.body["updated"]] == ["good"]
    answer = await p.deliver("/", signed(ROUTE_SECRET, commit="c2"))
    assert answer.status == 200, answer.body
    assert [u["name"] for u in answer.body["updated"]] == ["open"]
    skipped = {s["name"]: s["reason"] for s in answer.body["skipped"]}
    assert "RBAC" in skipped["broken"], skipped
    assert ("team-a", "open", sha("c2")) in updater.written


async def test_a_gitrepo_secret_the_api_cannot_serve_now_fails_that_gitrepo_with_a_retry() -> None:
    store = secrets()
    store.down.add("team-a/flaky")
    p, updater, _ = make([gitrepo("flaky", webhookSecret="flaky"), gitrepo("open")], store)
    answer = await p.deliver("/", signed(ROUTE_SECRET))
    assert answer.status == 503, answer.body  # the host retries; "open" is already written
    assert [f["name"] for f in answer.body["failed"]] == ["flaky"]
    assert answer.headers.get("Retry-After")
    assert updater.written == [("team-a", "open", sha("c1"))]


# --- part 5: the delivery cache keys on what the signature covers --------------------------------


async def test_a_delivery_id_reused_with_another_signed_body_is_not_answered_from_the_cache() -> None:
    p, updater, _ = make([gitrepo("open")], secrets())
    first = await p.deliver("/", signed(ROUTE_SECRET, commit="c1", delivery_id="same-id"))
    assert first.status == 200
    again = await p.deliver("/", signed(ROUTE_SECRET, commit="c1", delivery_id="same-id"))
    assert again.body.get("duplicate") is True  # a true redelivery is still answered from the cache
    newer = await p.deliver("/", signed(ROUTE_SECRET, commit="c2", delivery_id="same-id", before=sha("c1")))
    assert newer.status == 200, newer.body
    assert "duplicate" not in newer.body
    assert updater.written == [("team-a", "open", sha("c1")), ("team-a", "open", sha("c2"))]


async def test_a_replayed_older_signed_delivery_does_not_move_a_gitrepo_back() -> None:
    p, updater, _ = make([gitrepo("open")], secrets())
    old = signed(ROUTE_SECRET, commit="c1")
    assert (await p.deliver("/", old)).status == 200
    d2 = delivery("github", https_url=URL, commit=sha("c2"), before=sha("c1"), secret=ROUTE_SECRET)
    assert (await p.deliver("/", request(d2.headers, d2.body))).status == 200
    replay = request({**old.headers, "x-github-delivery": "replayed-with-a-new-id"}, old.body)
    answer = await p.deliver("/", replay)
    assert answer.status == 200, answer.body
    assert updater.written[-1] == ("team-a", "open", sha("c2"))
    assert json.dumps(answer.body).count("open") == 1
