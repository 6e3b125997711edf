"""Relay mode against the real nats-server and the real kube-apiserver: edge -> JetStream -> consumer.

The edge is `build_edge` behind the same aiohttp app `serve --relay-publish` runs; the consumer is
`build_consumer` in front of a receiver built exactly as `serve --relay-consume` builds it. Each test
has a stream, subject and durable consumer of its own on the shared broker (or a broker of its own
when it restarts it). Nothing about NATS or Kubernetes is faked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp.test_utils import TestClient, TestServer
from kubernetes import client

from controller import relay
from controller.app import make_app
from controller.config import load_text
from controller.relay import Link
from controller.relay_consume import Consumer
from controller.runtime import Edge, build_consumer, build_edge
from controller.settings import Settings
from tests.integration.receiver_env import ReceiverEnv, Response, github_env
from tests.support import Delivery, delivery, secret_data, sha, sign
from tools.controlplane import CertKey, free_ports, issue_cert, new_ca
from tools.nats import NatsServer, ServerTls
from tools.nats_auth import ServerAuth
from tools.served import Served, start_serve

SECRET = "relay-secret-0b7e"
REPO = "https://github.com/example-org/relayed-apps"
pytestmark = pytest.mark.timeout(120)


def relay_names() -> dict[str, Any]:
    """Stream, subject and durable of one test (kept apart from every other test on the broker)."""
    tag = uuid.uuid4().hex[:8]
    return {
        "relay_stream": f"T{tag}",
        "relay_subject": f"t.{tag}.deliveries",
        "relay_durable": f"c{tag}",
        "relay_ack_wait_seconds": 2.0,
    }


class Relay:
    """An edge and a consumer on one broker, started and stopped as a test needs."""

    def __init__(self, env: ReceiverEnv, url: str, edge_config: str = "") -> None:
        self.env = env
        self.url = url
        self.names = relay_names()
        self.edge_config = edge_config
        self.edge: Edge | None = None
        self.http: TestClient[Any, Any] | None = None
        self.consumer: Consumer | None = None
        self.consumer_link: Link | None = None
        self._tasks: dict[str, list[asyncio.Task[Any]]] = {"edge": [], "consumer": []}

    def settings(self, **role: Any) -> Settings:
        return Settings(namespace=self.env.namespace, **self.names, **role)

    async def start_edge(self, url: str | None = None) -> None:
        """The edge app (its own config: the cluster's Secrets are not readable there)."""
        settings = self.settings(relay_publish=url or self.url)
        self.edge = build_edge(settings, load_text(self.edge_config or "{}", "edge.yaml"), "")
        edge = self.edge
        self._tasks["edge"] += [
            asyncio.create_task(edge.link.run(edge.publisher.ensure_stream)),
            asyncio.create_task(relay.report_queue(edge.link, edge.receiver.metrics.relay_queue)),
        ]
        self.http = TestClient(TestServer(make_app(edge.receiver, complete=edge.publisher.complete)))
        await self.http.start_server()

    async def wait_edge_connected(self, within: float = 10.0) -> None:
        assert self.edge is not None
        async with asyncio.timeout(within):
            await self.edge.link.connected_once.wait()
            while not self.edge.publisher._stream_ready:  # noqa: ASYNC110 - set by the link task
                await asyncio.sleep(0.02)

    async def stop_edge(self) -> None:
        await self._cancel("edge")
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.edge is not None:
            await self.edge.close()
            self.edge = None

    async def start_consumer(self) -> None:
        """The consumer in front of the test's receiver (its index already synced)."""
        assert self.env.components is not None
        self.consumer_link, self.consumer = build_consumer(
            self.settings(relay_consume=self.url), self.env.components.receiver
        )
        self._tasks["consumer"] += [
            asyncio.create_task(self.consumer_link.run()),
            asyncio.create_task(self.consumer.run()),
        ]

    async def stop_consumer(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop(5)
        await self._cancel("consumer")
        if self.consumer_link is not None:
            await self.consumer_link.close()
        self.consumer = self.consumer_link = None

    async def _cancel(self, role: str) -> None:
        tasks, self._tasks[role] = self._tasks[role], []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.stop_consumer()
        await self.stop_edge()

    async def send(self, d: Delivery, path: str = "/") -> Response:
        assert self.http is not None
        resp = await self.http.post(path, data=d.body, headers=d.headers)
        text = await resp.text()
        return Response(resp.status, json.loads(text) if text else {}, dict(resp.headers))

    async def stream_messages(self) -> int:
        """How many deliveries the stream holds (read with a client of the test's own)."""
        nc = await nats.connect(self.url)
        try:
            info = await nc.jetstream().stream_info(self.names["relay_stream"])
            return int(info.state.messages)
        finally:
            await nc.close()

    def consumed(self, outcome: str) -> float:
        assert self.env.components is not None
        registry = self.env.components.receiver.metrics.registry
        return registry.get_sample_value("fleet_webhook_relay_consumed_total", {"outcome": outcome}) or 0.0


async def wait_for(check: Callable[[], bool], within: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def push(commit: str, before: str = "0" * 40, secret: str | None = SECRET) -> Delivery:
    return delivery("github", https_url=REPO, commit=commit, before=before, secret=secret)


@pytest.fixture
async def env(kube_api: client.ApiClient, control_plane: Any, namespace: str) -> AsyncIterator[ReceiverEnv]:
    async with github_env(kube_api, control_plane.kubeconfig, namespace, SECRET) as e:
        e.create_gitrepo("apps", REPO)
        await e.start(f"watch:\n  namespaces: [{namespace}]\n")
        await e.wait_indexed("apps")
        yield e


@contextlib.asynccontextmanager
async def relay_on(env: ReceiverEnv, url: str, edge_config: str = "") -> AsyncIterator[Relay]:
    r = Relay(env, url, edge_config)
    try:
        yield r
    finally:
        await r.close()


def handled_commits(caplog: pytest.LogCaptureFixture) -> list[tuple[str, list[str]]]:
    """(commit, GitRepos updated) of every "delivery handled" line, in order."""
    return [
        (rec.__dict__["commit"], rec.__dict__["updated"])
        for rec in caplog.records
        if rec.getMessage() == "delivery handled"
    ]


async def test_signed_push_is_answered_202_after_the_broker_ack_and_recorded_by_the_consumer(
    env: ReceiverEnv, nats_server: NatsServer
) -> None:
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()
        commit = sha("relay-1")

        resp = await r.send(push(commit))

        assert resp.status == 202, resp.body
        assert resp.body["relayed"] is True
        assert resp.body["seq"] == 1
        assert resp.body["verifiedAtEdge"] is False  # the edge holds no secret: the cluster verifies
        assert await r.stream_messages() == 1  # stored before the answer
        assert env.webhook_commit("apps") is None  # the edge writes nothing

        await r.start_consumer()
        await wait_for(lambda: env.webhook_commit("apps") == commit, what="webhookCommit")
        await wait_for(lambda: r.consumed("accepted") == 1, what="the ack")
        metrics = await env.metrics()
        assert 'fleet_webhook_relay_consumed_total{outcome="accepted"} 1.0' in metrics
        assert r.edge is not None
        assert r.edge.receiver.metrics.registry.get_sample_value("fleet_webhook_relay_published_total") == 1


async def test_pushes_while_the_consumer_is_offline_are_all_recorded_in_order_once(
    env: ReceiverEnv, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet_webhook")
    commits = [sha(f"offline-{i}") for i in range(5)]
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()
        before = "0" * 40
        for commit in commits:
            resp = await r.send(push(commit, before))
            assert resp.status == 202, resp.body
            before = commit
        assert await r.stream_messages() == 5
        assert env.webhook_commit("apps") is None

        await r.start_consumer()
        await wait_for(lambda: r.consumed("accepted") == 5, what="5 acks")
        await asyncio.sleep(r.names["relay_ack_wait_seconds"] + 1)  # nothing comes back after ack_wait

        assert env.webhook_commit("apps") == commits[-1]
        updated = [c for c, names in handled_commits(caplog) if names == [f"{env.namespace}/apps"]]
        assert updated == commits  # each one, in push order, none twice
        assert r.consumed("accepted") == 5
        assert r.consumed("retry") == 0


async def test_a_delivery_fetched_but_never_acked_is_redelivered_and_recorded_once(
    env: ReceiverEnv, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet_webhook")
    async with relay_on(env, nats_server.url) as r:
        await r.start_consumer()  # creates the durable consumer, then goes away
        await wait_for(lambda: r.consumer_link is not None and r.consumer_link.connected, what="consumer")
        await asyncio.sleep(0.5)
        await r.stop_consumer()
        await r.start_edge()
        await r.wait_edge_connected()
        commit = sha("crash-1")
        assert (await r.send(push(commit))).status == 202

        # A consumer that crashed after fetching: it took the message with the durable and died unacked.
        nc = await nats.connect(nats_server.url)
        sub = await nc.jetstream().pull_subscribe_bind(r.names["relay_durable"], r.names["relay_stream"])
        (taken,) = await sub.fetch(1, timeout=5)
        assert taken.metadata.num_delivered == 1
        await nc.close()

        await r.start_consumer()
        await wait_for(lambda: env.webhook_commit("apps") == commit, what="the redelivered commit")
        await wait_for(lambda: r.consumed("accepted") == 1, what="the ack")
        await asyncio.sleep(r.names["relay_ack_wait_seconds"] + 1)

        attempts = [
            rec.__dict__["attempt"] for rec in caplog.records if rec.getMessage() == "relayed delivery consumed"
        ]
        assert attempts == [2]  # the second delivery of the message, processed once
        assert [c for c, _ in handled_commits(caplog)] == [commit]


async def test_a_git_host_retry_of_a_stored_delivery_is_stored_once(env: ReceiverEnv, nats_server: NatsServer) -> None:
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()
        d = push(sha("retry-1"))

        first, again = await r.send(d), await r.send(d)  # the host never saw the first 202

        assert (first.status, again.status) == (202, 202)
        assert (first.body["duplicate"], again.body["duplicate"]) == (False, True)
        assert again.body["seq"] == first.body["seq"]
        assert await r.stream_messages() == 1


async def test_a_broker_restart_between_publish_and_consume_loses_nothing(env: ReceiverEnv, tmp_path: Path) -> None:
    with NatsServer(store_dir=tmp_path / "broker") as broker:
        async with relay_on(env, broker.url) as r:
            await r.start_edge()
            await r.wait_edge_connected()
            first, second = sha("restart-1"), sha("restart-2")
            assert (await r.send(push(first))).status == 202
            assert (await r.send(push(second, first))).status == 202

            await asyncio.to_thread(broker.stop)
            down = await r.send(push(sha("restart-x"), second))
            await asyncio.to_thread(broker.start)  # same port, same store

            assert down.status == 503, down.body
            assert down.headers.get("Retry-After") == "5"
            await r.start_consumer()
            await wait_for(lambda: env.webhook_commit("apps") == second, what="both stored commits")
            assert r.edge is not None
            await wait_for(lambda: r.edge is not None and r.edge.link.connected, what="the edge reconnecting")
            third = sha("restart-3")
            assert (await r.send(push(third, second))).status == 202  # the edge reconnected by itself
            await wait_for(lambda: env.webhook_commit("apps") == third, what="the commit after the restart")
            await wait_for(lambda: r.consumed("accepted") == 3, what="three acks")  # the ack follows the write


async def test_an_edge_restart_loses_nothing_it_acknowledged(env: ReceiverEnv, nats_server: NatsServer) -> None:
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()
        commit = sha("edge-restart-1")
        assert (await r.send(push(commit))).status == 202
        await r.stop_edge()
        await r.start_edge()
        await r.wait_edge_connected()  # its stream set-up again is harmless: same limits, same messages

        await r.start_consumer()

        await wait_for(lambda: env.webhook_commit("apps") == commit, what="the commit stored before the restart")


async def test_an_unreachable_broker_gets_503_with_retry_after(env: ReceiverEnv) -> None:
    (port,) = free_ports(1)  # nothing listens there
    async with relay_on(env, f"nats://127.0.0.1:{port}") as r:
        await r.start_edge()

        resp = await r.send(push(sha("nowhere")))

        assert resp.status == 503
        assert resp.headers.get("Retry-After") == "5"
        assert "not stored" in resp.body["error"]


async def test_a_forged_signature_is_refused_by_the_consumer_and_acked_not_retried(
    env: ReceiverEnv, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleet_webhook")
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()
        assert (await r.send(push(sha("forged"), secret="not-the-secret"))).status == 202  # edge cannot tell

        await r.start_consumer()
        await wait_for(lambda: r.consumed("refused") == 1, what="the refusal")
        await asyncio.sleep(r.names["relay_ack_wait_seconds"] + 1.5)

        assert r.consumed("refused") == 1  # acked: no redelivery loop
        assert env.webhook_commit("apps") is None
        statuses = [rec.__dict__["status"] for rec in caplog.records if rec.getMessage() == "relayed delivery consumed"]
        assert statuses == [401]
        assert any(rec.getMessage() == "webhook verification failed" for rec in caplog.records)


async def test_body_bytes_cross_the_relay_exactly(env: ReceiverEnv, nats_server: NatsServer) -> None:
    base = push(sha("bytes-1"))
    doc = json.loads(base.body)
    doc["head_commit"]["message"] = "caf\u00e9 \u2603 ünïcode"
    # Odd whitespace and key order no JSON re-encoding would keep: only the exact bytes verify.
    raw = json.dumps(doc, indent=3, ensure_ascii=False).replace('": ', '"  :\t').encode() + b"\r\n\n"
    headers = {k: v for k, v in base.headers.items() if not k.lower().startswith("x-hub-signature")}
    signed = Delivery(sign("github", headers, raw, SECRET), raw)
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()
        assert (await r.send(signed)).status == 202

        await r.start_consumer()

        await wait_for(lambda: env.webhook_commit("apps") == sha("bytes-1"), what="the verified commit")
        await wait_for(lambda: r.consumed("accepted") == 1, what="the ack")  # the ack follows the write


async def test_an_edge_holding_the_secret_refuses_a_forgery_before_the_broker(
    env: ReceiverEnv, nats_server: NatsServer, tmp_path: Path
) -> None:
    secrets = tmp_path / "edge-secrets"
    secrets.mkdir()
    (secrets / "github").write_text(SECRET)
    config = f"secrets:\n  source:\n    directory: {secrets}\n  gitRepoSecrets: false\n"
    async with relay_on(env, nats_server.url, edge_config=config) as r:
        await r.start_edge()
        await r.wait_edge_connected()

        forged = await r.send(push(sha("edge-forged"), secret="wrong"))
        genuine = await r.send(push(sha("edge-genuine")))

        assert forged.status == 401, forged.body
        assert genuine.status == 202
        assert genuine.body["verifiedAtEdge"] is True
        assert await r.stream_messages() == 1  # the forgery never reached the broker


def test_relay_settings_reach_serve_as_flags() -> None:
    from controller.cli import build_parser, settings_from

    args = build_parser().parse_args(["serve", "--relay-consume", "nats://127.0.0.1:4222", "--relay-max-deliver", "3"])
    settings = settings_from(args)
    assert settings.relay_urls == ["nats://127.0.0.1:4222"]
    assert settings.relay_max_deliver == 3
    assert re.fullmatch(r"[A-Za-z0-9_-]+", settings.relay_stream)


# --- the real program: `fleet-webhook serve --relay-publish` and `--relay-consume` as processes ----------


async def test_the_serve_processes_relay_across_consumer_and_edge_kills(
    kube_api: client.ApiClient, control_plane: Any, namespace: str, nats_server: NatsServer, tmp_path: Path
) -> None:
    env = ReceiverEnv(kube_api, control_plane.kubeconfig, namespace)
    env.create_secret("gitjob-webhook", secret_data("github", SECRET))
    env.create_gitrepo("apps", REPO)
    names = relay_names()
    flags = tuple(f"--{k.replace('_', '-')}={v}" for k, v in names.items())
    watch = f"watch:\n  namespaces: [{namespace}]\n"
    for role in ("edge", "consumer"):
        (tmp_path / role).mkdir()

    def edge() -> Served:  # a kubeconfig that does not exist: the edge must not need Kubernetes
        return start_serve(
            tmp_path / "no-kubeconfig",
            namespace,
            tmp_path / "edge",
            "{}",
            extra_args=(f"--relay-publish={nats_server.url}", *flags),
        )

    def consumer() -> Served:
        return start_serve(
            control_plane.kubeconfig,
            namespace,
            tmp_path / "consumer",
            watch,
            extra_args=(f"--relay-consume={nats_server.url}", *flags),
        )

    served_edge, served_consumer = await asyncio.to_thread(edge), await asyncio.to_thread(consumer)
    try:
        first = sha("proc-1")
        assert (await asyncio.to_thread(served_edge.post, push(first)))[0] == 202
        await wait_for(lambda: env.webhook_commit("apps") == first, what="the first commit")
        # Killed only once it acked: a kill between the write and the ack (which happened here) leaves the
        # message for redelivery, harmless but a third one in the backlog counted below.
        accepted = 'fleet_webhook_relay_consumed_total{outcome="accepted"}'
        await wait_for(lambda: served_consumer.metric(accepted) == 1, what="the first ack")

        served_consumer.proc.kill()  # the cluster goes away without a goodbye
        served_consumer.proc.wait(5)
        second, third = sha("proc-2"), sha("proc-3")
        assert (await asyncio.to_thread(served_edge.post, push(second, first)))[0] == 202
        assert (await asyncio.to_thread(served_edge.post, push(third, second)))[0] == 202
        served_edge.proc.kill()  # and the edge crashes after answering
        served_edge.proc.wait(5)
        served_edge = await asyncio.to_thread(edge)
        await wait_for(lambda: served_edge.metric("fleet_webhook_relay_queue_depth") == 2, what="the backlog gauge")
        assert (served_edge.metric("fleet_webhook_relay_oldest_age_seconds") or 0) > 0
        assert env.webhook_commit("apps") == first

        served_consumer = await asyncio.to_thread(consumer)
        await wait_for(lambda: env.webhook_commit("apps") == third, what="the backlog recorded")
        await wait_for(lambda: served_consumer.metric("fleet_webhook_relay_queue_depth") == 0, what="an empty queue")

        served_consumer.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(served_consumer.proc.wait, 20) == 0
        roles = {line.get("role") for line in served_edge.log_lines() if line.get("msg") == "serving"}
        assert roles == {"relay edge"}
    finally:
        served_edge.stop()
        served_consumer.stop()


def write_pem(folder: Path, name: str, pair: CertKey) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    key.chmod(0o600)
    return cert, key


async def test_mutual_tls_between_edge_broker_and_consumer(env: ReceiverEnv, tmp_path: Path) -> None:
    ca = new_ca("relay-test-ca")
    (ca_file, _) = write_pem(tmp_path, "ca", ca)
    server_cert, server_key = write_pem(
        tmp_path, "server", issue_cert(ca, "nats", ip_addresses=["127.0.0.1"], server=True)
    )
    client_cert, client_key = write_pem(tmp_path, "client", issue_cert(ca, "fleet-webhook", client=True))
    tls = ServerTls(server_cert, server_key, ca_file, verify_clients=True)
    with NatsServer(store_dir=tmp_path / "broker", tls=tls) as broker:
        async with relay_on(env, broker.url) as r:
            r.names |= {
                "relay_tls_ca_file": ca_file,
                "relay_tls_cert_file": client_cert,
                "relay_tls_key_file": client_key,
            }
            await r.start_edge()
            await r.wait_edge_connected()
            commit = sha("tls-1")
            assert (await r.send(push(commit))).status == 202
            await r.start_consumer()
            await wait_for(lambda: env.webhook_commit("apps") == commit, what="the commit over TLS")

        async with relay_on(env, broker.url) as stranger:  # knows the CA, has no client certificate
            stranger.names["relay_tls_ca_file"] = ca_file
            await stranger.start_edge()
            await asyncio.sleep(1.5)
            resp = await stranger.send(push(sha("tls-stranger")))
            assert resp.status == 503
            assert stranger.edge is not None
            assert not stranger.edge.link.connected
            assert stranger.edge.link.last_error is not None


def least_privilege_users(names: dict[str, Any], edge_password: str, consumer_password: str) -> str:
    """The nats-server `authorization` block docs/relay.md recommends: each role only its own subjects."""
    stream, subject, durable = names["relay_stream"], names["relay_subject"], names["relay_durable"]
    api = "$JS.API"
    edge = [
        subject,
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.CREATE.{stream}",
        f"{api}.STREAM.UPDATE.{stream}",
        f"{api}.CONSUMER.INFO.{stream}.{durable}",
        f"{api}.STREAM.MSG.GET.{stream}",
    ]
    consumer = [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.CREATE.{stream}",
        f"{api}.CONSUMER.CREATE.{stream}.{durable}.>",
        f"{api}.CONSUMER.INFO.{stream}.{durable}",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
        f"{api}.STREAM.MSG.GET.{stream}",
    ]

    def user(name: str, password: str, publish: list[str]) -> str:
        allowed = ", ".join(json.dumps(s) for s in publish)
        return (
            f'    {{user: "{name}", password: "{password}", '
            f'permissions: {{publish: {{allow: [{allowed}]}}, subscribe: {{allow: ["_INBOX.>"]}}}}}}\n'
        )

    return (
        "authorization {\n  users: [\n"
        + user("edge", edge_password, edge)
        + user("cluster", consumer_password, consumer)
        + "  ]\n}\n"
    )


async def test_least_privilege_users_for_edge_and_consumer_are_enough(env: ReceiverEnv, tmp_path: Path) -> None:
    names = relay_names()
    edge_pw, cluster_pw = uuid.uuid4().hex, uuid.uuid4().hex
    users = least_privilege_users(names, edge_pw, cluster_pw)
    with NatsServer(store_dir=tmp_path / "broker", extra_config=users) as broker:
        host = broker.url.removeprefix("nats://")
        async with relay_on(env, f"nats://cluster:{cluster_pw}@{host}") as r:
            r.names = names
            await r.start_consumer()  # makes the stream and the durable consumer with its own rights
            await wait_for(lambda: r.consumer_link is not None and r.consumer_link.connected, what="consumer")
            await asyncio.sleep(0.5)
            await r.stop_consumer()
            await r.start_edge(f"nats://edge:{edge_pw}@{host}")
            await r.wait_edge_connected()
            commit = sha("least-privilege")
            assert (await r.send(push(commit))).status == 202
            assert r.edge is not None
            edge_metrics = r.edge.receiver.metrics.registry
            await wait_for(
                lambda: edge_metrics.get_sample_value("fleet_webhook_relay_queue_depth") == 1,
                within=15,
                what="the backlog as the edge sees it",
            )
            await r.start_consumer()
            await wait_for(lambda: env.webhook_commit("apps") == commit, what="the commit with least privilege")
            await wait_for(lambda: r.consumed("accepted") == 1, what="the ack")
        assert "Violation" not in broker.log_tail(500)

        # The edge's user cannot take deliveries: a stolen edge credential does not read the queue.
        nc = await nats.connect(f"nats://edge:{edge_pw}@{host}")
        try:
            sub = await nc.jetstream().pull_subscribe_bind(names["relay_durable"], names["relay_stream"])
            with pytest.raises(nats.errors.TimeoutError):
                await sub.fetch(1, timeout=2)
        finally:
            await nc.close()
        refusal = '"$G/user:edge" - Publish Violation - Subject "$JS.API.CONSUMER.MSG.NEXT.'
        assert refusal in broker.log_tail(50)


def padded_push(seed: str, size: int) -> Delivery:
    """A push whose body is about `size` bytes (a long commit message), signed."""
    base = push(sha(seed))
    doc = json.loads(base.body)
    doc["head_commit"]["message"] = "x" * size
    raw = json.dumps(doc).encode()
    headers = {k: v for k, v in base.headers.items() if not k.lower().startswith("x-hub-signature")}
    return Delivery(sign("github", headers, raw, SECRET), raw)


async def test_a_full_stream_refuses_new_deliveries_and_keeps_the_stored_ones(
    env: ReceiverEnv, nats_server: NatsServer
) -> None:
    async with relay_on(env, nats_server.url) as r:
        r.names["relay_max_bytes"] = 1024 * 1024
        await r.start_edge()
        await r.wait_edge_connected()

        stored = await r.send(padded_push("full-1", 700_000))
        refused = await r.send(padded_push("full-2", 700_000))

        assert stored.status == 202
        assert refused.status == 503, refused.body
        assert "the relay stream is full" in refused.body["error"]
        assert refused.headers.get("Retry-After") == "5"
        assert await r.stream_messages() == 1  # the first is still there: nothing acknowledged is dropped


async def test_a_delivery_over_the_brokers_max_payload_gets_413_naming_it(
    env: ReceiverEnv, nats_server: NatsServer
) -> None:
    async with relay_on(env, nats_server.url) as r:
        await r.start_edge()
        await r.wait_edge_connected()

        resp = await r.send(padded_push("huge", 9 * 1024 * 1024))  # the test broker's max_payload is 8 MiB

        assert resp.status == 413, resp.body
        assert "max_payload" in resp.body["error"]
        assert await r.stream_messages() == 0


async def test_a_running_consumer_survives_a_broker_restart(env: ReceiverEnv, tmp_path: Path) -> None:
    with NatsServer(store_dir=tmp_path / "broker") as broker:
        async with relay_on(env, broker.url) as r:
            await r.start_edge()
            await r.wait_edge_connected()
            await r.start_consumer()
            first = sha("live-restart-1")
            assert (await r.send(push(first))).status == 202
            await wait_for(lambda: env.webhook_commit("apps") == first, what="the commit before the restart")

            await asyncio.to_thread(broker.stop)
            await asyncio.sleep(1)
            await asyncio.to_thread(broker.start)
            await wait_for(lambda: r.edge is not None and r.edge.link.connected, what="the edge reconnecting")
            second = sha("live-restart-2")
            assert (await r.send(push(second, first))).status == 202

            await wait_for(lambda: env.webhook_commit("apps") == second, within=30, what="the commit after the restart")
            await wait_for(lambda: r.consumed("accepted") == 2, what="two acks")  # the ack follows the write


async def test_nats_creds_files_authenticate_edge_and_consumer(env: ReceiverEnv, tmp_path: Path) -> None:
    auth = ServerAuth()
    edge_creds = auth.user_creds(tmp_path / "edge.creds", "edge")
    cluster_creds = auth.user_creds(tmp_path / "cluster.creds", "cluster")
    with NatsServer(store_dir=tmp_path / "broker", extra_config=auth.server_config()) as broker:
        async with relay_on(env, broker.url) as r:
            r.names["relay_credentials_file"] = edge_creds
            await r.start_edge()
            await r.wait_edge_connected()
            commit = sha("creds-1")
            assert (await r.send(push(commit))).status == 202
            r.names["relay_credentials_file"] = cluster_creds
            await r.start_consumer()
            await wait_for(lambda: env.webhook_commit("apps") == commit, what="the commit with .creds")

        async with relay_on(env, broker.url) as stranger:  # no credentials: the broker refuses it
            await stranger.start_edge()
            await asyncio.sleep(1.5)
            assert (await stranger.send(push(sha("creds-stranger")))).status == 503
            edge = stranger.edge
            assert edge is not None
            # The broker may reset the connection before its -ERR arrives; a later attempt (every 2 s) names it.
            await wait_for(lambda: "Authorization" in (edge.link.last_error or ""), 15, "the broker's refusal")
