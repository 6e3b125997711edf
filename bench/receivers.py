"""Benchmark 8: fleet-webhook and Fleet's own receiver side by side, at 100, 1,000 and 10,000 GitRepos.

One real etcd + kube-apiserver holds every GitRepo in one namespace. Both receivers run at the same
time against it, each in its own process, each over the whole namespace:

* **fleet-webhook**: `bench/server.py --kind real` (what `fleet-webhook serve` wires: watch, index,
  secret from the API, conditional status patch, Events);
* **Fleet's receiver**: `fleetcontroller gitjob --listen` v0.16.1 (tools/fleet.py), the process that
  also runs Fleet's gitjob controller. Its receiver lists every GitRepo from the controller's cache
  and regex-matches each one per delivery (pkg/webhook/webhook.go); it cannot run without the
  controller, so its CPU and RSS include the controller's, exactly as a user runs it.

Each receiver gets its own `targets` GitRepos (repositories nobody else pushes to), so neither sees
the other's writes as a stale `before`; the rest are background GitRepos (`bench/data.py`), all
with `pollingInterval: 1h` so Fleet's poller (which cannot reach github.com here: its proxy is a
closed loopback port) stays quiet after its first round. The same signed GitHub pushes (a fresh
commit each, `before` = the previous one) go open-loop at `rate` per second, the two receivers in
alternating blocks; a watch records when each commit becomes readable in `status.webhookCommit`.

Per size: p50/p99 push -> readable and push -> answer, statuses, lost pushes, CPU per delivery
(the process's CPU during a block divided by its deliveries; for Fleet also net of its idle rate,
measured just before), and RSS of each process after the blocks. Sizes grow in one namespace:
after adding GitRepos both receivers are waited for until a push to a GitRepo created last reaches
it (so each has indexed everything), and Fleet until its controller's CPU settles.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench import data
from bench.e2e import GROUP, PLURAL, VERSION, CommitWatch, latency, open_loop
from bench.procs import start_server
from bench.stats import cpu_seconds, rss_bytes
from controller.runtime import HEADER_TIMEOUT_SECONDS

KINDS = ("fleet-webhook", "fleet-receiver")
POLLING = "1h"
# fleet-webhook counters read before and after each block: metric name -> key in the results.
COUNTERS = {
    "fleet_webhook_api_connections_opened_total": "api_connections_opened",
    "fleet_webhook_gitrepo_write_conflicts_total": "write_conflicts",
    "fleet_webhook_gitrepos_updated_total": "gitrepos_updated",
}
SETTLE_CPU_SHARE = 0.15  # Fleet's controller counts as settled below this share of one core
SETTLE_WITHIN_S = 180.0


def target_url(kind: str, i: int) -> str:
    return f"https://github.com/bench-{kind}/repo-{i:03d}"


class Namespace:
    """The benchmark namespace: the webhook secret (also where Fleet reads it) and GitRepos, grown on demand."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client

        from tools.controlplane import new_api_client

        self.api = new_api_client(kubeconfig)
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        self.count = 0
        self._background = 0

    def setup(self, fleet_namespace: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.name)))
        for ns in (self.name, fleet_namespace):
            secret = client.V1Secret(
                metadata=client.V1ObjectMeta(name="gitjob-webhook"),
                data={"github": base64.b64encode(data.SECRET.encode()).decode()},
            )
            try:
                self.core.create_namespaced_secret(ns, secret)
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def create(self, bodies: list[dict[str, Any]]) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(self._create, bodies))
        self.count += len(bodies)

    def _create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, body)

    def background(self, n: int) -> list[dict[str, Any]]:
        """`n` more background GitRepos."""
        out = []
        for _ in range(n):
            obj = data.background_object(self._background)
            out.append(body(f"bg-{self._background:06d}", obj["spec"]["repo"], obj["spec"].get("branch", "")))
            self._background += 1
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.core.delete_namespace(self.name, _request_timeout=5)
        self.api.close()


def body(name: str, repo: str, branch: str = "main") -> dict[str, Any]:
    spec: dict[str, Any] = {"repo": repo, "pollingInterval": POLLING}
    if branch:
        spec["branch"] = branch
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GitRepo", "metadata": {"name": name}, "spec": spec}


class Pusher:
    """Open-loop signed pushes to one receiver's GitRepos; latencies until the answer and the watch."""

    def __init__(
        self, kind: str, url: str, pid: int, watch: CommitWatch, targets: int, metrics_url: str | None = None
    ) -> None:
        self.kind, self.url, self.pid, self.watch = kind, url, pid, watch
        self.metrics_url = metrics_url  # fleet-webhook's /metrics: its COUNTERS, read per block
        self.urls = [target_url(kind, i) for i in range(targets)]
        self.last = dict.fromkeys(self.urls, data.ZERO_SHA)
        self.seq = 0
        self.run_id = uuid.uuid4().hex[:6]
        self.answers: dict[str, int] = {}

    def _next(self) -> tuple[str, str, str]:
        repo = self.urls[self.seq % len(self.urls)]
        self.seq += 1
        commit = data.sha(f"{self.kind}-{self.run_id}-{self.seq}")
        before, self.last[repo] = self.last[repo], commit
        return repo, commit, before

    async def push(self, session: aiohttp.ClientSession, repo: str, commit: str, before: str) -> int:
        d = data.push_delivery_for(repo, commit, before)
        async with session.post(self.url, data=d.body, headers=d.headers) as resp:
            self._note(await resp.read())
            return resp.status

    def _note(self, raw: bytes) -> None:
        """Count what the answers said (fleet-webhook's JSON names each GitRepo's fate; Fleet's is text)."""
        try:
            answer = json.loads(raw)
        except ValueError:
            key = raw[:40].decode(errors="replace")
        else:
            fates = [(k, e.get("reason", "")) for k in ("updated", "unchanged", "skipped") for e in answer.get(k, [])]
            key = ", ".join(f"{k}: {r}" if r else k for k, r in fates) or str(answer.get("reason", answer))[:60]
        self.answers[key] = self.answers.get(key, 0) + 1

    async def block(self, rate: float, seconds: float, session: aiohttp.ClientSession) -> dict[str, Any]:
        count = max(1, round(rate * seconds))
        sent: dict[str, float] = {}
        answered: dict[str, float] = {}
        statuses: dict[str, int] = {}

        async def one(repo: str, commit: str, before: str) -> None:
            sent[commit] = time.monotonic()
            try:
                key = str(await self.push(session, repo, commit, before))
            except aiohttp.ClientError as exc:
                key = type(exc).__name__
            answered[commit] = time.monotonic()
            statuses[key] = statuses.get(key, 0) + 1

        counters0 = await self.counters(session)
        cpu0 = cpu_seconds(self.pid)
        start = await open_loop(rate, count, lambda: one(*self._next()))
        await self.watch.wait_for(list(sent), within=15)
        cpu_s = cpu_seconds(self.pid) - cpu0
        elapsed = time.monotonic() - start
        counters1 = await self.counters(session)
        return {
            "kind": self.kind,
            "sent": count,
            # What our process did meanwhile (API handshakes, write conflicts re-read and retried).
            "counters": None
            if counters0 is None or counters1 is None
            else {COUNTERS[k]: counters1[k] - counters0[k] for k in COUNTERS},
            "statuses": statuses,
            "cpu_s": cpu_s,
            "elapsed_s": elapsed,
            "visible_ms": [1000 * (self.watch.seen[c] - t) for c, t in sent.items() if c in self.watch.seen],
            "answer_ms": [1000 * (answered[c] - t) for c, t in sent.items() if c in answered],
        }

    async def counters(self, session: aiohttp.ClientSession) -> dict[str, float] | None:
        """fleet-webhook's COUNTERS now, each summed over its labels (None for Fleet's receiver)."""
        if self.metrics_url is None:
            return None
        async with session.get(self.metrics_url) as resp:
            text = await resp.text()
        totals = dict.fromkeys(COUNTERS, 0.0)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in totals:
                    totals[sample.name] += sample.value
        return totals

    async def reaches(self, session: aiohttp.ClientSession, repo: str, within: float) -> float:
        """Push to `repo` until its commit is readable (the receiver has indexed it); seconds taken."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            commit = data.sha(f"probe-{uuid.uuid4().hex}")
            with contextlib.suppress(aiohttp.ClientError):
                await self.push(session, repo, commit, data.ZERO_SHA)
            await self.watch.wait_for([commit], within=2)
            if commit in self.watch.seen:
                return time.monotonic() - started
        raise AssertionError(f"{self.kind} never recorded a push to {repo} within {within:.0f}s")


def settle(pid: int, within: float = SETTLE_WITHIN_S, window: float = 2.0) -> dict[str, float]:
    """Wait until a process uses less than SETTLE_CPU_SHARE of a core over `window`; its idle rate."""
    started = time.monotonic()
    while True:
        cpu0 = cpu_seconds(pid)
        time.sleep(window)
        share = (cpu_seconds(pid) - cpu0) / window
        if share < SETTLE_CPU_SHARE or time.monotonic() - started > within:
            return {"waited_s": round(time.monotonic() - started, 1), "idle_cpu_share": round(share, 3)}


async def _size(
    ns: Namespace, pushers: dict[str, Pusher], fleet_pid: int, size: int, rate: float, seconds: float, blocks: int
) -> dict[str, Any]:
    """Grow to `size` GitRepos, wait for both receivers, measure alternating blocks."""
    t0 = time.monotonic()
    sentinels = {kind: body(f"last-{size}-{kind}", f"https://github.com/bench-{kind}/last-{size}") for kind in KINDS}
    ns.create(ns.background(max(0, size - ns.count - len(sentinels))))
    ns.create(list(sentinels.values()))
    created_s = time.monotonic() - t0
    connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=HEADER_TIMEOUT_SECONDS / 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        caught_up = {
            kind: round(await p.reaches(session, sentinels[kind]["spec"]["repo"], 120), 2)
            for kind, p in pushers.items()
        }
        settled = await asyncio.to_thread(settle, fleet_pid)
        for p in pushers.values():  # warm-up: the first write to each target also sets nothing new
            await p.block(rate, len(p.urls) / rate, session)
        # Fleet's controller reconciles every GitRepo whose webhookCommit moved, both receivers' targets
        # alike, for seconds after a burst. Without this wait the first measured block (always ours)
        # ran beside its reaction to both warm-ups: ours was the worse block in 13 of 14 runs.
        settled_after_warmup = await asyncio.to_thread(settle, fleet_pid)
        out: list[dict[str, Any]] = []
        for b in range(blocks):
            for kind in KINDS if b % 2 == 0 else tuple(reversed(KINDS)):
                out.append(await pushers[kind].block(rate, seconds / blocks, session))
    row: dict[str, Any] = {
        "gitrepos": ns.count,
        "create_s": round(created_s, 1),
        "caught_up_s": caught_up,
        "fleet_settle": settled,
        "fleet_settle_after_warmup": settled_after_warmup,
    }
    for kind, p in pushers.items():
        mine = [b for b in out if b["kind"] == kind]
        sent = sum(b["sent"] for b in mine)
        visible = [v for b in mine for v in b["visible_ms"]]
        statuses: dict[str, int] = {}
        for block in mine:
            for code, n in block["statuses"].items():
                statuses[code] = statuses.get(code, 0) + n
        cpu = sum(b["cpu_s"] for b in mine)
        elapsed = sum(b["elapsed_s"] for b in mine)
        entry = {
            "sent": sent,
            "lost": sent - len(visible),
            "statuses": statuses,
            "visible_ms": latency(visible),
            "answer_ms": latency([v for b in mine for v in b["answer_ms"]]),
            "visible_ms_per_block": [latency(b["visible_ms"]) for b in mine],
            "answer_ms_per_block": [latency(b["answer_ms"]) for b in mine],
            "cpu_ms_per_delivery_per_block": [round(1000 * b["cpu_s"] / b["sent"], 3) for b in mine],
            "counters_per_block": [b["counters"] for b in mine],
            "cpu_ms_per_delivery": round(1000 * cpu / sent, 3),
            "rss_mib": round(rss_bytes(p.pid) / 2**20, 1),
            "answers": dict(p.answers),
        }
        p.answers.clear()
        if kind == "fleet-receiver":
            idle = settled["idle_cpu_share"] * elapsed
            entry["cpu_ms_per_delivery_net_of_idle"] = round(1000 * max(0.0, cpu - idle) / sent, 3)
        row[kind] = entry
    ours, fleet = row["fleet-webhook"]["visible_ms"], row["fleet-receiver"]["visible_ms"]
    row["p99_ratio_fleet_over_ours"] = round(fleet["p99"] / ours["p99"], 2) if ours["p99"] else None
    return row


@contextlib.contextmanager
def _cluster(kubeconfig: Path | None) -> Iterator[Path]:
    from tools.fleet import install_fleet_prerequisites

    if kubeconfig is not None:
        install_fleet_prerequisites(kubeconfig)
        yield kubeconfig
        return
    from tools.controlplane import ControlPlane

    with ControlPlane() as cp:
        install_fleet_prerequisites(cp.kubeconfig)
        yield cp.kubeconfig


def run(
    sizes: list[int],
    rate: float = 50.0,
    seconds: float = 10.0,
    blocks: int = 2,
    targets: int = 20,
    kubeconfig: Path | None = None,
) -> dict[str, Any]:
    """Both receivers at each size (ascending); starts its own control plane unless given a kubeconfig."""
    from tools.fleet import FLEET_NAMESPACE, FleetController

    rows: list[dict[str, Any]] = []
    failure: str | None = None
    with contextlib.ExitStack() as stack:
        kubeconfig = stack.enter_context(_cluster(kubeconfig))
        ns = Namespace(kubeconfig)
        stack.callback(ns.close)
        ns.setup(FLEET_NAMESPACE)
        ns.create([body(f"{kind}-{i:03d}", target_url(kind, i)) for kind in KINDS for i in range(targets)])
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-webhook-receivers-")))
        ours = start_server("real", log_dir, ["--kubeconfig", str(kubeconfig), "--namespace", ns.name])
        stack.callback(ours.stop)
        fleet = stack.enter_context(FleetController(kubeconfig))
        assert fleet.proc is not None
        watch = CommitWatch(ns.api, ns.name)
        watch.start()
        stack.callback(watch.stop)
        pushers = {
            "fleet-webhook": Pusher(
                "fleet-webhook",
                f"http://127.0.0.1:{ours.port}/",
                ours.pid,
                watch,
                targets,
                metrics_url=f"http://127.0.0.1:{ours.port}/metrics",
            ),
            "fleet-receiver": Pusher("fleet-receiver", fleet.receiver_url, fleet.proc.pid, watch, targets),
        }
        for size in sorted(sizes):
            try:
                rows.append(asyncio.run(_size(ns, pushers, fleet.proc.pid, size, rate, seconds, blocks)))
            except (AssertionError, OSError, RuntimeError) as exc:  # e.g. Fleet out of memory at 100,000
                failure = f"at {size:,} GitRepos: {type(exc).__name__}: {exc}"
                break
            if not (ours.alive() and fleet.alive()):
                failure = f"at {size:,} GitRepos: a receiver died (fleet-webhook alive: {ours.alive()})"
                break
    last = rows[-1] if rows else None
    return {
        "description": "fleet-webhook and Fleet's receiver (fleetcontroller gitjob v0.16.1), same apiserver, "
        "same GitRepos, same signed pushes: push -> status.webhookCommit readable",
        "rate_per_s": rate,
        "seconds_per_receiver": seconds,
        "targets_per_receiver": targets,
        "rows": rows,
        "failure": failure,
        "target": "fleet-webhook p99 <= Fleet's receiver p99 at every size, no lost pushes",
        "ok": bool(
            rows
            and failure is None
            and all(
                r["fleet-webhook"]["lost"] == 0
                and r["fleet-webhook"]["visible_ms"]["p99"] <= r["fleet-receiver"]["visible_ms"]["p99"]
                for r in rows
            )
        ),
        "largest": last["gitrepos"] if last else None,
    }


def rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows: per size, p50/p99 push -> readable of both, then CPU per delivery and RSS."""
    out: list[tuple[str, ...]] = []
    for r in result["rows"]:
        ours, fleet = r["fleet-webhook"], r["fleet-receiver"]
        size = f"{r['gitrepos']:,} GitRepos"
        ok = ours["lost"] == 0 and ours["visible_ms"]["p99"] <= fleet["visible_ms"]["p99"]
        out.append(
            (
                f"8 vs Fleet's receiver, {size}: p50 / p99",
                f"{ours['visible_ms']['p50']:.0f} / {ours['visible_ms']['p99']:.0f} ms (lost {ours['lost']})",
                f"Fleet {fleet['visible_ms']['p50']:.0f} / {fleet['visible_ms']['p99']:.0f} ms (lost {fleet['lost']})",
                f"p99 {r['p99_ratio_fleet_over_ours']}x" if r["p99_ratio_fleet_over_ours"] is not None else "",
                "p99 <= Fleet's",
                "yes" if ok else "NO",
            )
        )
        out.append(
            (
                f"8 vs Fleet's receiver, {size}: CPU/delivery, RSS",
                f"{ours['cpu_ms_per_delivery']:.2f} ms, {ours['rss_mib']:.0f} MiB",
                f"Fleet {fleet['cpu_ms_per_delivery']:.2f} ms (net of idle "
                f"{fleet['cpu_ms_per_delivery_net_of_idle']:.2f}), {fleet['rss_mib']:.0f} MiB",
                "",
                "",
                "",
            )
        )
    if result.get("failure"):
        out.append(("8 vs Fleet's receiver: stopped", result["failure"][:60], "", "", "", ""))
    return out
