"""The headline, end to end: from `git push` returning to Fleet's Job for that commit existing.

Real parts only (tools/e2e.py): Gitea v1.27.3 on loopback receives the push over HTTP, Fleet's
gitjob controller v0.16.1 runs against a real etcd + kube-apiserver and ls-remotes Gitea, and a
watch-free poll of the Job list (every 20 ms) sees the Job with annotation `commit` = the pushed
commit. Three ways to get there, each over its own Gitea repository and GitRepo:

1. **fleet-webhook**: a Gitea `gitea` hook -> `fleet-webhook serve` -> status.webhookCommit;
   the GitRepo polls hourly, so only the webhook can be this fast;
2. **Fleet's own receiver**: a Gitea `gogs` hook -> `fleetcontroller gitjob --listen` (the same
   process that makes the Jobs), same hourly polling;
3. **polling**: no hook, Fleet's default `pollingInterval` of 15 s. Pushes are spread at random
   over the polling period (a push right after a Job would always wait a full period), and several
   repositories push in parallel so the run stays short.

Pushes are sequential within a repository (each waits for its Job). Median and p95 per mode.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.stats import percentile, summary
from tools.controlplane import ControlPlane
from tools.e2e import WEBHOOK_SECRET, Stack
from tools.gitea import Worktree

POLLING_INTERVAL_S = 15.0  # Fleet's default spec.pollingInterval
MODES = ("fleet-webhook", "fleet-receiver", "polling")


def _latency(values: list[float]) -> dict[str, Any]:
    s = summary(values, 3)
    s["p95"] = round(percentile(values, 95), 3) if values else None
    s["mean"] = round(sum(values) / len(values), 3) if values else None
    return s


class _Target:
    """One Gitea repository, its clone and the GitRepo that tracks it."""

    def __init__(self, stack: Stack, workdir: Path, mode: str, index: int, polling_interval_s: float) -> None:
        assert stack.gitea is not None
        self.stack = stack
        self.mode = mode
        name = f"bench-{mode}-{index}-{time.monotonic_ns() % 10**6}"
        stack.gitea.create_repo(name)
        self.wt = Worktree(stack.gitea, name, workdir / name)
        self.namespace = stack.namespace(f"bench-{mode}"[:40])
        self.gitrepo = "apps"
        if mode != "polling":
            spec: dict[str, Any] = {"pollingInterval": "1h"}
        elif polling_interval_s == POLLING_INTERVAL_S:
            spec = {}  # Fleet's default, as most GitRepos have it
        else:
            spec = {"pollingInterval": f"{polling_interval_s:g}s"}
        stack.create_gitrepo(self.namespace, self.gitrepo, stack.gitea.clone_url(name), **spec)
        stack.wait_first_job(self.namespace, self.gitrepo, self.wt.git("rev-parse", "HEAD"), 60)
        if mode == "fleet-webhook":
            assert stack.webhook is not None
            stack.gitea.create_hook(name, "gitea", stack.webhook.url, secret=WEBHOOK_SECRET)
        elif mode == "fleet-receiver":
            assert stack.fleet is not None
            stack.gitea.create_hook(name, "gogs", stack.fleet.receiver_url, secret=WEBHOOK_SECRET)

    def push_once(self, within: float) -> float:
        """Commit, push, and return seconds from `git push` returning to the Job existing."""
        commit = self.wt.commit(f"bench {self.mode}")
        self.wt.push("HEAD:refs/heads/main")
        pushed = time.monotonic()
        self.stack.wait_job(self.namespace, self.gitrepo, commit, within, poll=0.02)
        return time.monotonic() - pushed


@contextmanager
def _stack(kubeconfig: Path | None, running: Stack | None) -> Iterator[Stack]:
    if running is not None:
        yield running
        return
    with ExitStack() as stack:
        if kubeconfig is None:
            from tools.fleet import install_fleet_prerequisites

            cp = stack.enter_context(ControlPlane())
            install_fleet_prerequisites(cp.kubeconfig)
            kubeconfig = cp.kubeconfig
        yield stack.enter_context(Stack(kubeconfig))


def run(
    pushes: int,
    polling_workers: int = 4,
    kubeconfig: Path | None = None,
    *,
    stack: Stack | None = None,
    polling_interval_s: float = POLLING_INTERVAL_S,
    seed: int = 14,
) -> dict[str, Any]:
    """`pushes` measured pushes per mode (plus one warm-up per webhook repository).

    Starts its own control plane and Stack unless given a cluster (`kubeconfig`) or a running
    `stack` (the smoke test in tests/e2e shares the suite's). `polling_interval_s` other than 15
    is for that smoke test only."""
    rng = random.Random(seed)
    with _stack(kubeconfig, stack) as stack:
        assert stack.tmpdir is not None
        workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=stack.tmpdir))
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        for mode in ("fleet-webhook", "fleet-receiver"):
            target = _Target(stack, workdir, mode, 0, polling_interval_s)
            target.push_once(30)  # warm-up: first delivery of this hook, first webhookCommit of this GitRepo
            for _ in range(pushes):
                samples[mode].append(target.push_once(30))

        workers = max(1, min(polling_workers, pushes))
        targets = [_Target(stack, workdir, "polling", i, polling_interval_s) for i in range(workers)]
        shares = [pushes // workers + (1 if i < pushes % workers else 0) for i in range(workers)]
        delays = [[rng.uniform(0, polling_interval_s) for _ in range(n)] for n in shares]
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker(target: _Target, pauses: list[float]) -> None:
            try:
                for pause in pauses:
                    time.sleep(pause)
                    seconds = target.push_once(polling_interval_s * 2 + 10)
                    with lock:
                        samples["polling"].append(seconds)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t, d)) for t, d in zip(targets, delays, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        timings = dict(stack.timings)
    result: dict[str, Any] = {
        "description": "git push returned -> Fleet's Job for that commit exists (real Gitea, real Fleet gitjob)",
        "pushes_per_mode": pushes,
        "polling_interval_s": polling_interval_s,
        "fleet_version": "v0.16.1",
        "gitea_version": "v1.27.3",
        "stack_start_s": {k: round(v, 2) for k, v in timings.items()},
    }
    for mode in MODES:
        result[mode] = _latency(samples[mode])
    ours, fleets, polling = (result[m]["median"] for m in MODES)
    result["speedup_median_vs_polling"] = round(polling / ours, 1) if ours else None
    result["speedup_median_vs_fleet_receiver"] = round(fleets / ours, 2) if ours else None
    return result


def rows(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """Table rows for bench/report.py: the three modes side by side, median then p95."""
    out: list[tuple[str, ...]] = []
    for stat in ("median", "p95"):
        ours, fleets, polling = (r[m][stat] for m in MODES)
        out.append(
            (
                f"7 git push -> Fleet Job ({stat}, n={r['fleet-webhook']['n']})",
                f"{ours:.2f} s",
                f"Fleet's receiver {fleets:.2f} s; 15 s polling {polling:.2f} s",
                f"{polling / ours:,.1f}x sooner than polling" if ours else "",
                "",
                "",
            )
        )
    return out
