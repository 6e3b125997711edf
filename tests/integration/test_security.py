"""Security properties against the real API: nothing leaks, refused deliveries write nothing, routes stay in
their namespaces.

Logging is set up exactly as `fleet-webhook serve --log-level debug` sets it up (`logs.configure`), and a
handler on the root logger keeps every record that passes, rendered by both product formatters.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes import client

from controller import logs
from controller.settings import LogFormat, LogLevel
from tests.factories import forms
from tests.integration.receiver_env import ReceiverEnv
from tests.support import AZURE_USER, PROVIDERS, delivery, secret_data, sha, sign

SECRET = "integ-secret-3e8b51"
OLD = "integ-old-secret-90af"
TEAM = "integ-team-secret-c4d2"
WRONG = "integ-attacker-guess-1b7e"
NOISY = ("aiohttp.access", "aiohttp.server", "kubernetes", "urllib3")


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.json, self.text = logs.JsonFormatter(), logs.TextFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += [self.json.format(record), self.text.format(record), repr(record.__dict__)]


@pytest.fixture
def production_logs() -> Iterator[Capture]:
    """The product's DEBUG logging, plus a capture of every record on the root logger."""
    root = logging.getLogger()
    level = root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    logs.configure(LogLevel.DEBUG, LogFormat.JSON)
    installed = list(root.handlers)
    capture = Capture()
    root.addHandler(capture)
    try:
        yield capture
    finally:
        for handler in [*installed, capture]:
            root.removeHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
        logging.getLogger("aiohttp.server").removeFilter(logs.CLIENT_ERRORS)


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    e = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    yield e
    await e.stop()


def every_form(*secrets: str) -> dict[str, str]:
    """How each secret could show up: raw, base64 (Secret data), and inside a Basic Authorization value."""
    forms_: dict[str, str] = {}
    for value in secrets:
        forms_[value] = value
        forms_[f"base64({value})"] = base64.b64encode(value.encode()).decode()
        forms_[f"basic({value})"] = base64.b64encode(f"{AZURE_USER}:{value}".encode()).decode()
    return forms_


def versions(env: ReceiverEnv, names: list[str], namespace: str | None = None) -> dict[str, str]:
    return {n: env.gitrepo(n, namespace)["metadata"]["resourceVersion"] for n in names}


async def test_no_secret_in_logs_answers_or_metrics_and_refusals_write_nothing(
    env: ReceiverEnv, production_logs: Capture
) -> None:
    data: dict[str, str] = {}
    for provider in PROVIDERS:
        data.update(secret_data(provider, SECRET))
        data.update({f"{k}.previous": v for k, v in secret_data(provider, OLD).items()})
    env.create_secret("gitjob-webhook", data)
    team: dict[str, str] = {}
    for provider in PROVIDERS:
        team.update(secret_data(provider, TEAM))
    env.create_secret("team-secret", team)
    names = [f"r-{p}" for p in PROVIDERS]
    for provider in PROVIDERS:
        env.create_gitrepo(f"r-{provider}", forms(provider, "vault")[0])
        env.create_gitrepo(f"t-{provider}", forms(provider, "teamvault")[0], webhookSecret="team-secret")
    await env.start(f"watch:\n  namespaces: [{env.namespace}]\nsecrets:\n  cacheSeconds: 0\n")
    await env.wait_indexed(*names, *(f"t-{p}" for p in PROVIDERS))
    # `configure` pins client-library loggers above DEBUG: their debug output is not vetted for secrets.
    assert logging.getLogger("kubernetes").getEffectiveLevel() >= logging.WARNING
    await asyncio.to_thread(logging.getLogger("fleet_webhook.canary").debug, "canary %s", "CANARY-7f3a")
    events_before = len(client.CoreV1Api(env.api).list_namespaced_event(env.namespace).items)

    answers: list[str] = []
    n = 0
    for provider in PROVIDERS:
        https, ssh = forms(provider, "vault")
        team_https, _ = forms(provider, "teamvault")
        # Refused: wrong secret, no credentials, the team's secret on a GitRepo that does not use it.
        for secret, url in ((WRONG, https), (None, https), (TEAM, https), (WRONG, team_https)):
            n += 1
            before = versions(env, [*names, f"t-{provider}"])
            resp = await env.send(delivery(provider, https_url=url, ssh_url=ssh, commit=sha(f"x{n}"), secret=secret))
            answers.append(repr(resp.body))
            assert resp.status in (200, 401), resp.body
            assert resp.body.get("updated", []) == [], resp.body
            assert versions(env, [*names, f"t-{provider}"]) == before, f"{provider}/{secret}: a refused delivery wrote"
        # Accepted: current, previous and the GitRepo's own secret.
        for secret, url, name in (
            (SECRET, https, f"r-{provider}"),
            (OLD, https, f"r-{provider}"),
            (TEAM, team_https, f"t-{provider}"),
        ):
            n += 1
            commit = sha(f"ok{n}")
            resp = await env.send(delivery(provider, https_url=url, ssh_url=ssh, commit=commit, secret=secret))
            answers.append(repr(resp.body))
            assert resp.status == 200, resp.body
            assert resp.names("updated") == {name}, resp.body
        # Malformed but authentic, and malformed and unauthenticated.
        d = delivery(provider, https_url=https, commit=sha("m"), secret=None)
        for secret in (SECRET, WRONG):
            body = b'{"repository": null, "token": "' + WRONG.encode() + b'"}'
            bad = type(d)(sign(provider, d.headers, body, secret), body)
            resp = await env.send(bad)
            answers.append(repr(resp.body))
            assert resp.status in (400, 401), resp.body
    assert env.http is not None
    for path in ("/metrics", "/readyz", "/healthz"):
        answers.append(await (await env.http.get(path)).text())
    assert env.components is not None
    await env.components.updater.drain(within=5)

    events = client.CoreV1Api(env.api).list_namespaced_event(env.namespace).items
    assert len(events) - events_before == 3 * len(PROVIDERS), "only accepted deliveries leave Events"
    assert len(production_logs.lines) > 150
    assert any("CANARY-7f3a" in line for line in production_logs.lines), "the capture misses records"
    haystack = answers + production_logs.lines + [f"{e.message} {e.reason}" for e in events]
    for label, form in every_form(SECRET, OLD, TEAM, WRONG).items():
        leaks = [text[:160] for text in haystack if form in text]
        assert leaks == [], f"{label} leaked: {leaks[:3]}"


async def test_a_route_scoped_to_one_namespace_never_writes_another(
    env: ReceiverEnv, kube_api: client.ApiClient
) -> None:
    a, b = env.namespace, env.namespace + "-b"
    client.CoreV1Api(kube_api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=b)))
    env.create_secret("gitjob-webhook", secret_data("github", SECRET))
    https, ssh = forms("github", "tenant")
    env.create_gitrepo("app", https)
    env.create_gitrepo("app", https, namespace=b)
    env.create_gitrepo("app-ssh", ssh, namespace=b)
    env.create_gitrepo("mapped", "https://github.com/example-org/elsewhere", namespace=b)
    config = (
        f"watch:\n  namespaces: [{a}, {b}]\n"
        f"routes:\n  - path: /team-a\n    namespaces: [{a}]\n  - path: /team-b\n    namespaces: [{b}]\n"
        f"mappings:\n  - repo: {https}\n    gitRepos: [{{namespace: {b}, name: mapped}}]\n"
        f"    aliases: [https://github.com/example-org/elsewhere]\n"
    )
    await env.start(config)
    await env.wait_indexed("app")
    await env.wait_indexed("app", "app-ssh", "mapped", namespace=b)
    b_names = ["app", "app-ssh", "mapped"]
    b_before = versions(env, b_names, b)

    for i in range(3):
        commit = sha(f"a{i}")
        resp = await env.send(
            delivery("github", https_url=https, ssh_url=ssh, commit=commit, before=sha(f"a{i - 1}"), secret=SECRET),
            path="/team-a",
        )
        assert resp.status == 200, resp.body
        assert {(u["namespace"], u["name"]) for u in resp.body["updated"]} == {(a, "app")}
        assert b not in repr(resp.body), "the answer names another tenant's GitRepos"
        assert env.webhook_commit("app") == commit
    assert versions(env, b_names, b) == b_before, "route /team-a wrote to another namespace"
    assert all(env.webhook_commit(n, b) is None for n in b_names)

    a_before = versions(env, ["app"])
    resp = await env.send(
        delivery("github", https_url=https, ssh_url=ssh, commit=sha("b"), secret=SECRET), path="/team-b"
    )
    assert {(u["namespace"], u["name"]) for u in resp.body["updated"]} == {(b, "app"), (b, "app-ssh"), (b, "mapped")}
    assert versions(env, ["app"]) == a_before
    unrouted = await env.send(delivery("github", https_url=https, commit=sha("root"), secret=SECRET), path="/")
    assert unrouted.status == 404
