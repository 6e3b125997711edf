"""The delivery pipeline called directly, without HTTP: authentication decides before any parse."""

from __future__ import annotations

import json
import logging
from typing import Any

from controller.config import load_text
from controller.decisions import CommitHistory, collapse, plan_delivery
from controller.deliveries import PushEvent, RefKind
from controller.index import GitRepoIndex, gitrepo_info
from controller.metrics import Metrics
from controller.pipeline import Pipeline, Receiver
from controller.providers.base import WebhookRequest
from controller.reload import ConfigHolder
from controller.secrets import SecretStore
from tests.support import delivery, secret_data, sha, sign

NS = "cattle-fleet-system"
SECRET = "pipeline-secret"
URL = "https://github.com/example-org/pipeline"


def pipeline(gitrepos: list[dict[str, Any]] | None = None, secret: str = SECRET) -> Pipeline:
    store = {f"{NS}/gitjob-webhook": secret_data("github", secret), "apps/own": {"github": "own-secret"}}

    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        data = store.get(f"{namespace}/{name}")
        return None if data is None else {k: v.encode() for k, v in data.items()}

    index = GitRepoIndex()
    index.replace_all([i for i in map(gitrepo_info, gitrepos or []) if i is not None])
    index.synced = True
    return Pipeline(Receiver(ConfigHolder(load_text("", "t.yaml")), index, SecretStore(read, NS), Metrics(), None))


def gitrepo(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "apps", "name": name, "resourceVersion": "1"},
        "spec": {"repo": URL, "branch": "main", **spec},
    }


def request(headers: dict[str, str], body: bytes) -> WebhookRequest:
    return WebhookRequest("POST", {k.lower(): v for k, v in headers.items()}, body)


async def test_a_forged_body_is_refused_before_it_is_parsed() -> None:
    """Broken JSON with a wrong signature is a 401, not a 400: the parser never saw it."""
    d = delivery("github", https_url=URL, commit=sha("x"), secret="wrong")
    answer = await pipeline().deliver("/", request(d.headers, b"[{" * 5000))
    assert answer.status == 401
    assert "does not match" in answer.body["error"]


async def test_broken_json_with_the_right_signature_is_a_400() -> None:
    body = b'{"ref": 1}'
    unsigned = delivery("github", https_url=URL, commit=sha("x"), secret=None)
    answer = await pipeline().deliver("/", request(sign("github", unsigned.headers, body, SECRET), body))
    assert answer.status == 400
    assert "malformed github payload" in answer.body["error"]


async def test_unsigned_with_a_gitrepo_secret_around_is_parsed_within_the_budget_only() -> None:
    """With a GitRepo carrying spec.webhookSecret, an unsigned small body may be parsed; a big one never."""
    own = {**gitrepo("own", webhookSecret="own"), "status": {"webhookCommit": sha("y")}}
    p = pipeline([own])
    d = delivery("github", https_url=URL, commit=sha("y"), secret="own-secret")
    small = await p.deliver("/", request(d.headers, d.body))
    assert small.status == 200, small.body  # authenticated by the GitRepo's own secret
    assert [u["name"] for u in small.body["unchanged"]] == ["own"]
    big = json.dumps({"padding": "x" * 400_000, **json.loads(d.body)}).encode()
    headers = sign("github", {k: v for k, v in d.headers.items() if "Signature" not in k}, big, "own-secret")
    answer = await p.deliver("/", request(headers, big))
    assert answer.status == 401  # over limits.unverifiedParseBytes: not parsed, so no GitRepo could vouch


def push(ref: str, commit: str, before: str | None, kind: RefKind = RefKind.BRANCH) -> PushEvent:
    return PushEvent("bitbucket-server", "d", (URL,), kind, ref, commit, before)


def test_changes_to_one_branch_collapse_to_the_newest() -> None:
    a, b, c = sha("a"), sha("b"), sha("c")
    assert [e.commit for e in collapse([push("main", c, b), push("main", b, a)])] == [c]  # chain, any order
    assert [e.commit for e in collapse([push("main", b, None), push("main", c, None)])] == [c]  # last listed
    assert [e.commit for e in collapse([push("main", b, a), push("dev", c, a)])] == [b, c]


def test_a_batch_gives_each_gitrepo_one_decision_about_its_own_branch() -> None:
    index = GitRepoIndex()
    index.replace_all([i for i in map(gitrepo_info, [gitrepo("main"), gitrepo("other", branch="release")]) if i])
    config = load_text("", "t.yaml")
    events = [push(f"feature-{i}", sha(f"f{i}"), sha(f"g{i}")) for i in range(2000)]
    events.append(push("main", sha("m"), sha("m0")))
    decisions = plan_delivery(events, index, config, None, CommitHistory())
    by_name = {d.gitrepo.name: (e, d) for e, d in decisions}
    assert len(decisions) == 2
    assert by_name["main"][1].action == "update"
    assert by_name["main"][0].commit == sha("m")
    assert by_name["other"][1].action == "skip"
    assert "tracks branch 'release'" in by_name["other"][1].reason
    assert "2001 other refs" in by_name["other"][1].reason


async def test_a_signed_delivery_with_nothing_to_act_on_still_leaves_a_log_line(caplog: Any) -> None:
    """A ping or an ignored event answers 200: the log must say so, or "the host sent it and nothing
    happened" cannot be told from "the host never sent it"."""
    caplog.set_level(logging.INFO, logger="fleet_webhook")
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "ping-1", "Content-Type": "application/json"}
    ping = await pipeline().deliver("/", request(sign("github", headers, body, SECRET), body))
    issue = {**headers, "X-GitHub-Event": "issues", "X-GitHub-Delivery": "issue-1"}
    ignored = await pipeline().deliver("/", request(sign("github", issue, body, SECRET), body))

    assert (ping.status, ping.outcome, ignored.status, ignored.outcome) == (200, "ping", 200, "ignored")
    lines = [r.__dict__ for r in caplog.records if r.getMessage() == "delivery ignored"]
    assert [(line["delivery"], line["event"]) for line in lines] == [("ping-1", "ping"), ("issue-1", "issues")]
    assert all(line["reason"] for line in lines)
