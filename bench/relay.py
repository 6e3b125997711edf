"""Benchmark 9: push -> `status.webhookCommit` through the relay, next to a direct receiver in the same run.

One real etcd + kube-apiserver, one real nats-server with JetStream (tools/nats.py), and three real
`fleet-webhook serve` processes on loopback:

* **direct**: a plain receiver (the baseline: what a cluster the git host can reach runs);
* **relay**: an edge (`--relay-publish`, no Kubernetes API) and the cluster's consumer
  (`--relay-consume`), the path a cluster behind a firewall takes: edge -> JetStream -> consumer.

Each gets its own target GitRepos; the same signed pushes (a fresh commit each) go open-loop at
`rate` per second, the two in alternating blocks, and a watch records when each commit becomes
readable. Per way: p50/p99 push -> readable, push -> answer (the edge answers 202 once the broker
stored the delivery), statuses and lost pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.e2e import CommitWatch, latency
from bench.receivers import Namespace, Pusher, body, target_url
from controller.runtime import HEADER_TIMEOUT_SECONDS

WAYS = ("direct", "relay")


async def _measure(pushers: dict[str, Pusher], rate: float, seconds: float, blocks: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=HEADER_TIMEOUT_SECONDS / 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for p in pushers.values():  # warm-up: connections, the stream, the consumer's first fetch
            await p.reaches(session, p.urls[0], 60)
            await p.block(rate, len(p.urls) / rate, session)
        out: list[dict[str, Any]] = []
        for b in range(blocks):
            for way in WAYS if b % 2 == 0 else tuple(reversed(WAYS)):
                out.append(await pushers[way].block(rate, seconds / blocks, session))
    row: dict[str, Any] = {}
    for way in WAYS:
        mine = [b for b in out if b["kind"] == way]
        sent = sum(b["sent"] for b in mine)
        visible = [v for b in mine for v in b["visible_ms"]]
        statuses: dict[str, int] = {}
        for block in mine:
            for code, n in block["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        row[way] = {
            "sent": sent,
            "lost": sent - len(visible),
            "statuses": statuses,
            "visible_ms": latency(visible),
            "answer_ms": latency([v for b in mine for v in b["answer_ms"]]),
        }
    return row


def run(rate: float = 20.0, seconds: float = 10.0, blocks: int = 2, targets: int = 10) -> dict[str, Any]:
    """Both ways on one control plane and one broker; the processes' logs go to a temporary folder."""
    from tools.controlplane import ControlPlane
    from tools.fleet import FLEET_NAMESPACE, install_fleet_prerequisites
    from tools.nats import NatsServer
    from tools.served import start_serve

    with contextlib.ExitStack() as stack:
        cp = stack.enter_context(ControlPlane())
        install_fleet_prerequisites(cp.kubeconfig)
        ns = Namespace(cp.kubeconfig)
        stack.callback(ns.close)
        ns.setup(FLEET_NAMESPACE)
        ns.create([body(f"{way}-{i:03d}", target_url(way, i)) for way in WAYS for i in range(targets)])
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-webhook-relay-bench-")))
        broker = stack.enter_context(NatsServer(store_dir=tmp / "jetstream"))
        config = f"watch:\n  namespaces: [{ns.name}]\n"
        served = {}
        for name, args in (
            ("direct", ()),
            ("edge", (f"--relay-publish={broker.url}",)),
            ("consumer", (f"--relay-consume={broker.url}",)),
        ):
            folder = tmp / name
            folder.mkdir()
            served[name] = start_serve(cp.kubeconfig, ns.name, folder, config, extra_args=args)
            stack.callback(served[name].stop)
        watch = CommitWatch(ns.api, ns.name)
        watch.start()
        stack.callback(watch.stop)
        pushers = {
            "direct": Pusher(
                "direct", f"http://127.0.0.1:{served['direct'].port}/", served["direct"].proc.pid, watch, targets
            ),
            "relay": Pusher(
                "relay", f"http://127.0.0.1:{served['edge'].port}/", served["consumer"].proc.pid, watch, targets
            ),
        }
        row = asyncio.run(_measure(pushers, rate, seconds, blocks))
    relay, direct = row["relay"], row["direct"]
    return {
        "description": "push -> status.webhookCommit readable, through edge -> JetStream -> consumer, "
        "next to a direct receiver in the same run (same apiserver, same signed pushes)",
        "rate_per_s": rate,
        "seconds_per_way": seconds,
        **row,
        "added_p50_ms": round(relay["visible_ms"]["p50"] - direct["visible_ms"]["p50"], 1),
        "target": "no lost pushes through the relay",
        "ok": relay["lost"] == 0 and set(relay["statuses"]) == {"202"},
    }


def rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows: p50/p99 push -> readable through the relay, beside the direct receiver."""
    relay, direct = result["relay"], result["direct"]
    return [
        (
            "9 relay: push -> webhookCommit p50 / p99",
            f"{relay['visible_ms']['p50']:.0f} / {relay['visible_ms']['p99']:.0f} ms (lost {relay['lost']})",
            f"direct {direct['visible_ms']['p50']:.0f} / {direct['visible_ms']['p99']:.0f} ms",
            f"+{result['added_p50_ms']:.1f} ms p50",
            "none lost",
            "yes" if result["ok"] else "NO",
        ),
        (
            "9 relay: edge answer (202 once stored) p50 / p99",
            f"{relay['answer_ms']['p50']:.1f} / {relay['answer_ms']['p99']:.1f} ms",
            f"direct 200 {direct['answer_ms']['p50']:.1f} / {direct['answer_ms']['p99']:.1f} ms",
            "",
            "",
            "",
        ),
    ]
