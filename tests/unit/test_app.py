"""HTTP behaviour of the receiver that needs no Kubernetes writes: status codes, reasons, limits."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from controller.app import make_app
from tests.factories import NS, SECRET, gitrepo, receiver
from tests.support import delivery, raw_delivery, sha

URL = "https://github.com/example-org/fleet-apps"

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


async def post(
    client: TestClient[Any, Any], path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    resp = await client.post(path, data=body, headers=headers)
    return resp.status, json.loads(await resp.text())


@pytest.mark.parametrize("path", ["/", "/gitjob", "/gitjob/", "/gitjob/github", "/hooks/any/depth", "/elsewhere"])
async def test_default_config_serves_every_path_as_fleet_does(aiohttp_client: ClientFactory, path: str) -> None:
    """Fleet's receiver answers on any path; users of its rewrite Ingress post to /gitjob/<x>."""
    client = await aiohttp_client(make_app(receiver()))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    status, body = await post(client, path, d.headers, d.body)
    assert status == 200, body
    assert body["reason"] == "no GitRepo matches this repository"


async def test_with_explicit_routes_an_unknown_path_is_404(aiohttp_client: ClientFactory) -> None:
    routes = "routes:\n  - path: /hooks\n    prefix: true\n  - path: /exact\n"
    client = await aiohttp_client(make_app(receiver(routes)))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    for path in ("/hooks", "/hooks/team-a", "/exact"):
        assert (await post(client, path, d.headers, d.body))[0] == 200, path
    for path in ("/elsewhere", "/hooksx", "/exact/below", "/"):
        status, body = await post(client, path, d.headers, d.body)
        assert status == 404, path
        assert path in body["error"]


async def test_get_is_405_with_allow(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    resp = await client.get("/gitjob")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"


async def test_both_seed_paths_are_served(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    d = raw_delivery("github", "ping", SECRET)
    for path in ("/", "/gitjob", "/gitjob/", "/gitjob/github"):
        status, body = await post(client, path, d.headers, d.body)
        assert (status, body.get("ping")) == (200, True), path


async def test_too_large_is_413_before_reading(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver("limits:\n  maxBodyBytes: 2048\n")))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    status, body = await post(client, "/", d.headers, d.body + b" " * 4096)
    assert status == 413
    assert "2048" in body["error"]


async def test_chunked_too_large_is_413(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver("limits:\n  maxBodyBytes: 2048\n")))

    async def chunks() -> Any:
        for _ in range(100):
            yield b"x" * 1024

    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    resp = await client.post("/", data=chunks(), headers=d.headers)
    assert resp.status == 413


async def test_no_provider_headers_is_400(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    status, body = await post(client, "/", {"Content-Type": "application/json"}, b"{}")
    assert status == 400
    assert "X-GitHub-Event" in body["error"]


async def test_missing_signature_is_401(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver(gitrepos=[gitrepo("a", URL)])))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=None)
    status, body = await post(client, "/", d.headers, d.body)
    assert status == 401
    assert "no signature" in body["error"]


async def test_wrong_signature_is_401_even_when_nothing_matches(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    d = delivery("github", https_url="https://github.com/someone/else", commit=sha("a"), secret="wrong")
    status, body = await post(client, "/", d.headers, d.body)
    assert status == 401
    assert "does not match" in body["error"]


async def test_no_secret_configured_is_401_with_instructions(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver(secrets={})))
    d = delivery("gitlab", https_url=URL, commit=sha("a"), secret="anything")
    status, body = await post(client, "/", d.headers, d.body)
    assert status == 401
    assert "allowUnauthenticated" in body["error"]
    assert "'gitlab'" in body["error"]


async def test_unauthenticated_opt_in_accepts(aiohttp_client: ClientFactory) -> None:
    r = receiver("providers:\n  gitlab: {allowUnauthenticated: true}\n", secrets={})
    client = await aiohttp_client(make_app(r))
    d = delivery("gitlab", https_url=URL, commit=sha("a"), secret=None)
    status, body = await post(client, "/", d.headers, d.body)
    assert status == 200
    assert body["reason"] == "no GitRepo matches this repository"
    metrics = await (await client.get("/metrics")).text()
    assert 'fleet_webhook_unauthenticated_accepted_total{provider="gitlab"} 1.0' in metrics


async def test_bad_json_is_400_and_wrong_type_415(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    from tests.support import sign

    bad = b"{not json"
    status, body = await post(client, "/", sign("github", d.headers, bad, SECRET), bad)
    assert status == 400
    assert "JSON" in body["error"]
    headers = {**d.headers, "Content-Type": "text/plain"}
    status, _ = await post(client, "/", sign("github", headers, d.body, SECRET), d.body)
    assert status == 415


async def test_charset_parameter_is_accepted(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    d = raw_delivery("github", "ping", SECRET)
    from tests.support import sign

    headers = sign("github", {**d.headers, "Content-Type": "application/json; charset=UTF-8"}, d.body, SECRET)
    status, _ = await post(client, "/", headers, d.body)
    assert status == 200


async def test_not_synced_is_503(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver(synced=False)))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    resp = await client.post("/", data=d.body, headers=d.headers)
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "2"
    ready = await client.get("/readyz")
    assert ready.status == 503


async def test_ignored_event_is_200_with_reason(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver()))
    d = raw_delivery("github", "pull-request", SECRET)
    status, body = await post(client, "/", d.headers, d.body)
    assert status == 200
    assert body["ignored"] == "pull_request"


async def test_near_misses_are_explained_without_writing(aiohttp_client: ClientFactory) -> None:
    repos = [
        gitrepo("dev-only", URL, branch="dev"),
        gitrepo("pinned", URL, branch="", revision="v1.0.0"),
        gitrepo("suffix", URL + "-suffix"),
        gitrepo("other-team", URL, namespace="team-b"),
    ]
    r = receiver("routes:\n  - path: /hooks/a\n    namespaces: [fleet-default]\n", gitrepos=repos)
    client = await aiohttp_client(make_app(r))
    d = delivery(
        "github", https_url=URL, ssh_url="git@github.com:example-org/fleet-apps.git", commit=sha("x"), secret=SECRET
    )
    status, body = await post(client, "/hooks/a", d.headers, d.body)
    assert status == 200
    assert body["updated"] == []
    reasons = {s["name"]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == {"dev-only", "pinned"}
    assert "branch differs" in reasons["dev-only"]
    assert "revision pinned" in reasons["pinned"]
    # A GitRepo in a namespace the route may not update is counted, never named (multi-tenancy).
    assert body["notListed"] == 1
    assert "team-b" not in json.dumps(body)


async def test_provider_not_on_route_is_404(aiohttp_client: ClientFactory) -> None:
    r = receiver("routes:\n  - path: /ci\n    providers: [generic]\n")
    client = await aiohttp_client(make_app(r))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    status, body = await post(client, "/ci", d.headers, d.body)
    assert status == 404
    assert "not served on route" in body["error"]


async def test_disabled_provider_is_404(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(make_app(receiver("providers:\n  github: {enabled: false}\n")))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    status, _ = await post(client, "/", d.headers, d.body)
    assert status == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_answer(aiohttp_client: ClientFactory, path: str) -> None:
    client = await aiohttp_client(make_app(receiver()))
    resp = await client.get(path)
    assert resp.status == 200


async def test_duplicate_delivery_ids_are_remembered_per_route(aiohttp_client: ClientFactory) -> None:
    r = receiver("routes:\n  - path: /a\n  - path: /b\n")
    client = await aiohttp_client(make_app(r))
    d = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET, delivery_id="same-id")
    _, first = await post(client, "/a", d.headers, d.body)
    _, again = await post(client, "/a", d.headers, d.body)
    _, other_route = await post(client, "/b", d.headers, d.body)
    assert "duplicate" not in first
    assert again["duplicate"] is True
    assert "duplicate" not in other_route


async def test_gitea_secret_falls_back_to_fleets_gogs_key(aiohttp_client: ClientFactory) -> None:
    r = receiver(secrets={f"{NS}/gitjob-webhook": {"gogs": "gogs-key-value"}})
    client = await aiohttp_client(make_app(r))
    d = delivery("gitea", https_url=URL, commit=sha("a"), secret="gogs-key-value")
    status, _ = await post(client, "/", d.headers, d.body)
    assert status == 200
    wrong = delivery("gitea", https_url=URL, commit=sha("a"), secret="other")
    status, _ = await post(client, "/", wrong.headers, wrong.body)
    assert status == 401


async def test_a_forged_body_that_came_whole_is_refused_without_a_body_buffer(
    aiohttp_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The forged request's short path (Pipeline.verify_arrived): no Body, no budget entry, the same
    401; a signed body that came whole is hashed once."""
    import hmac

    digests: list[int] = []
    real_digest = hmac.digest

    def digest(key: bytes, msg: bytes, algorithm: str) -> bytes:
        digests.append(len(msg))
        return real_digest(key, msg, algorithm)

    monkeypatch.setattr(hmac, "digest", digest)
    from controller.pipeline import Pipeline

    opened: list[object] = []
    real_open = Pipeline.open_body

    def open_body(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "open_body", open_body)
    recorded = gitrepo("a", URL)
    recorded["status"] = {"webhookCommit": sha("a")}
    r = receiver(gitrepos=[recorded])
    client = await aiohttp_client(make_app(r))
    forged = delivery("github", https_url=URL, commit=sha("a"), secret="wrong")
    for _ in range(2):  # the second answer comes from the refusal made once per route and provider
        status, body = await post(client, "/", forged.headers, forged.body)
        assert (status, body) == (401, {"error": "github signature/token does not match the configured secret"})
    assert opened == []
    assert r.budget.in_memory == 0
    signed = delivery("github", https_url=URL, commit=sha("a"), secret=SECRET)
    digests.clear()
    status, body = await post(client, "/", signed.headers, signed.body)
    assert digests == [len(signed.body)]
    assert status == 200, body
    assert [e["name"] for e in body["unchanged"]] == ["a"]
    assert len(opened) == 1


async def test_a_forged_body_still_gets_the_gitrepo_secrets_look_when_one_may_vouch(
    aiohttp_client: ClientFactory,
) -> None:
    """With a GitRepo naming its own spec.webhookSecret, a body the route's secret refuses is not
    refused on the short path: that GitRepo's secret may sign it."""
    own = {f"{NS}/gitjob-webhook": {"github": SECRET}, "fleet-default/own-secret": {"github": "its-own"}}
    own_repo = gitrepo("a", URL, webhookSecret="own-secret")
    own_repo["status"] = {"webhookCommit": sha("b")}
    r = receiver(secrets=own, gitrepos=[own_repo])
    client = await aiohttp_client(make_app(r))
    d = delivery("github", https_url=URL, commit=sha("b"), secret="its-own")
    status, body = await post(client, "/", d.headers, d.body)
    assert status == 200, body
    assert [e["name"] for e in body["unchanged"]] == ["a"]
