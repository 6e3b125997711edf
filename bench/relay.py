"""Benchmark 9: push -> status.webhookCommit through the relay (edge -> JetStream -> consumer).

Everything real, each in its own process: etcd + kube-apiserver (or BENCH_KUBECONFIG), nats-server
with JetStream on file storage (tools/nats.py), `fleet-webhook serve --relay-publish` (the edge, with
no Kubernetes API) and `fleet-webhook serve --relay-consume` (the cluster). The consumer is also an
ordinary receiver on its own port, which gives the baseline in the same run: the same signed GitHub
pushes sent **direct** to it. Pushes go open-loop at `rate` per second to `targets` GitRepos (a fresh
commit each, `before` = the previous one), the two ways in alternating blocks; a watch on the
namespace records when each commit becomes readable (bench/e2e.py's CommitWatch).

Per way: push -> answer (202 after the broker's ack for the relay, 200 after the write direct) and
push -> readable, p50/p90/p99; the relay's added latency is relay minus direct at each percentile.
One warm-up push per target first (the first write also sets pollingInterval).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench import data
from bench.e2e import CommitWatch, latency, open_loop, own_cluster, target_url
from controller.runtime import HEADER_TIMEOUT_SECONDS

WAYS = ("relay", "direct")


class Pushes:
    """The commit chains per target, and the timings of each way."""

    def __init__(self, targets: int) -> None:
        self.targets = targets
        self.last = [data.ZERO_SHA] * targets
        self.seq = 0
        self.run_id = uuid.uuid4().hex[:6]

    def next(self) -> tuple[int, str, str]:
        i = self.seq % self.targets
        self.seq += 1
        commit = data.sha(f"relay-{self.run_id}-{self.seq}")
        before, self.last[i] = self.last[i], commit
        return i, commit, before


async def _block(
    url: str, rate: float, count: int, pushes: Pushes, watch: CommitWatch, session: aiohttp.ClientSession
) -> dict[str, Any]:
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    statuses: dict[str, int] = {}

    async def one() -> None:
        i, commit, before = pushes.next()
        d = data.push_delivery_for(target_url(i), commit, before)
        sent[commit] = time.monotonic()
        try:
            async with session.post(url, data=d.body, headers=d.headers) as resp:
                await resp.read()
                key = str(resp.status)
        except aiohttp.ClientError as exc:
            key = type(exc).__name__
        answered[commit] = time.monotonic()
        statuses[key] = statuses.get(key, 0) + 1

    await open_loop(rate, count, one)
    await watch.wait_for(list(sent), within=30)
    return {
        "sent": count,
        "statuses": statuses,
        "visible_ms": [1000 * (watch.seen[c] - t) for c, t in sent.items() if c in watch.seen],
        "answer_ms": [1000 * (answered[c] - t) for c, t in sent.items() if c in answered],
    }


async def _drive(
    urls: dict[str, str], rate: float, pushes_per_way: int, blocks: int, pushes: Pushes, watch: CommitWatch
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {w: [] for w in WAYS}
    connector = aiohttp.TCPConnector(limit=100, keepalive_timeout=HEADER_TIMEOUT_SECONDS / 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        warm = await _block(urls["direct"], rate, pushes.targets, pushes, watch, session)
        if len(warm["visible_ms"]) != pushes.targets:
            raise AssertionError(f"warm-up pushes not all visible: {warm['statuses']}")
        per_block = max(1, pushes_per_way // blocks)
        for b in range(blocks):
            for way in WAYS if b % 2 == 0 else WAYS[::-1]:
                results[way].append(await _block(urls[way], rate, per_block, pushes, watch, session))
    return results


def run(
    pushes_per_way: int = 100,
    rate: float = 10.0,
    targets: int = 10,
    blocks: int = 4,
    kubeconfig: Path | None = None,
) -> dict[str, Any]:
    """The relay benchmark; starts its own control plane unless given a kubeconfig."""
    from tools.nats import NatsServer
    from tools.served import start_serve

    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        cluster = own_cluster(stack, kubeconfig)
        cluster.setup(targets, 0)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-webhook-relay-bench-")))
        broker = stack.enter_context(NatsServer(store_dir=folder / "broker"))
        for role in ("edge", "consumer"):
            (folder / role).mkdir()
        common = ("--log-level=warning", f"--relay-stream=B{uuid.uuid4().hex[:8]}")
        consumer = start_serve(
            cluster.kubeconfig,
            cluster.namespace,
            folder / "consumer",
            f"watch:\n  namespaces: [{cluster.namespace}]\n",
            extra_args=(f"--relay-consume={broker.url}", *common),
        )
        stack.callback(consumer.stop)
        edge = start_serve(
            folder / "no-kubeconfig",  # the edge needs no Kubernetes API
            cluster.namespace,
            folder / "edge",
            "{}",
            extra_args=(f"--relay-publish={broker.url}", *common),
        )
        stack.callback(edge.stop)
        watch = CommitWatch(cluster.api, cluster.namespace)
        watch.start()
        stack.callback(watch.stop)
        setup_s = time.monotonic() - started
        urls = {"relay": f"http://127.0.0.1:{edge.port}/", "direct": f"http://127.0.0.1:{consumer.port}/"}
        blocks_out = asyncio.run(_drive(urls, rate, pushes_per_way, blocks, Pushes(targets), watch))

    result: dict[str, Any] = {"rate": rate, "targets": targets, "blocks": blocks, "setup_s": round(setup_s, 1)}
    for way in WAYS:
        visible = [v for b in blocks_out[way] for v in b["visible_ms"]]
        answer = [v for b in blocks_out[way] for v in b["answer_ms"]]
        statuses: dict[str, int] = {}
        for b in blocks_out[way]:
            for k, n in b["statuses"].items():
                statuses[k] = statuses.get(k, 0) + n
        sent = sum(b["sent"] for b in blocks_out[way])
        result[way] = {
            "sent": sent,
            "statuses": statuses,
            "lost": sent - len(visible),
            "visible_ms": latency(visible),
            "answer_ms": latency(answer),
        }
    result["added_visible_ms"] = {
        q: round(result["relay"]["visible_ms"][q] - result["direct"]["visible_ms"][q], 2) for q in ("p50", "p90", "p99")
    }
    return result


def rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows for bench/report.py."""
    relay, direct = r["relay"], r["direct"]
    out: list[tuple[str, ...]] = []
    for q in ("p50", "p99"):
        out.append(
            (
                f"9 push -> webhookCommit through the relay ({q}, n={relay['visible_ms']['n']}, {r['rate']:g}/s)",
                f"{relay['visible_ms'][q]:.1f} ms",
                f"direct {direct['visible_ms'][q]:.1f} ms",
                f"+{r['added_visible_ms'][q]:.1f} ms",
                "",
                "lost 0" if relay["lost"] == 0 and direct["lost"] == 0 else f"lost {relay['lost']}/{direct['lost']}",
            )
        )
    out.append(
        (
            "9 relay edge answer (202 after the broker ack, p50)",
            f"{relay['answer_ms']['p50']:.1f} ms",
            f"direct 200 after the write {direct['answer_ms']['p50']:.1f} ms",
            "",
            "",
            "",
        )
    )
    return out
