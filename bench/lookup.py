"""Benchmark 1, lookup scaling: find the GitRepos one push reaches among N GitRepos.

Ours: `records.plan()` over a `GitRepoIndex` (normalize the payload's URLs, one dict lookup per
key, decide per candidate). Baselines: Fleet's and Argo CD's scan of every GitRepo with a regex
(bench/baselines.py), over the very same GitRepoInfo objects. For each size, each repetition times
ours and both baselines back to back, so every ratio compares numbers taken under the same
conditions. Every matcher must select the same GitRepos; the run fails loudly otherwise.
"""

from __future__ import annotations

import gc
import json
from typing import Any

from bench import baselines, data
from bench.stats import ratios, summary, time_per_call
from controller.config import default_config
from controller.decisions import Action, CommitHistory, plan


def _selected_ours(decisions: list[Any]) -> set[tuple[str, str]]:
    return {d.gitrepo.ref for d in decisions if d.action is not Action.SKIP}


def run(sizes: list[int], repeats: int, min_seconds: float = 0.05) -> dict[str, Any]:
    """Time ours vs the baselines at each size; returns the `lookup` section of results.json."""
    delivery = data.push_delivery()
    event = data.push_event(delivery)
    document = json.loads(delivery.body)
    html_url, ssh_url = document["repository"]["html_url"], document["repository"]["ssh_url"]
    default_branch = document["repository"]["default_branch"]
    fleet_urls = baselines.fleet_payload_urls(html_url, ssh_url)
    config = default_config()
    history = CommitHistory()

    rows: list[dict[str, Any]] = []
    for n in sizes:
        infos = data.gitrepo_infos(n)
        index = data.build_index(infos)

        def ours(index: Any = index) -> list[Any]:
            return plan(event, index, config, None, history)

        def fleet(infos: Any = infos) -> list[baselines.Match]:
            return baselines.fleet_scan(fleet_urls, event.ref_name, event.commit, infos)

        def argocd(infos: Any = infos) -> list[baselines.Match]:
            return baselines.argocd_scan(
                [html_url], f"refs/heads/{event.ref_name}", default_branch, event.commit, infos
            )

        selected = {
            "ours": _selected_ours(ours()),
            "fleet": {m.gitrepo.ref for m in fleet()},
            "argocd": {m.gitrepo.ref for m in argocd()},
        }
        for name, refs in selected.items():
            if refs != data.TRIGGERED:
                raise AssertionError(f"{name} selected {sorted(refs)} at N={n}, expected {sorted(data.TRIGGERED)}")

        times: dict[str, list[float]] = {"ours": [], "fleet": [], "argocd": []}
        gc.collect()
        for rep in range(repeats):
            order = [("ours", ours), ("fleet", fleet), ("argocd", argocd)]
            if rep % 2:
                order.reverse()
            for name, fn in order:
                times[name].append(time_per_call(fn, min_seconds) * 1e6)  # microseconds
        rows.append(
            {
                "gitrepos": n,
                "ours_us": summary(times["ours"], 3),
                "fleet_us": summary(times["fleet"], 3),
                "argocd_us": summary(times["argocd"], 3),
                "speedup_vs_fleet": summary(ratios(times["fleet"], times["ours"]), 2),
                "speedup_vs_argocd": summary(ratios(times["argocd"], times["ours"]), 2),
                "selected": sorted(f"{ns}/{name}" for ns, name in selected["ours"]),
            }
        )
        del index, infos
        gc.collect()

    first, last = rows[0], rows[-1]
    growth = last["ours_us"]["median"] / first["ours_us"]["median"]
    return {
        "description": "time to find the GitRepos one push reaches (µs per push), ours vs regex scans",
        "payload_urls": {"ours": list(event.repo_urls), "fleet": fleet_urls, "argocd": [html_url]},
        "repeats": repeats,
        "rows": rows,
        "ours_growth": {
            "from": first["gitrepos"],
            "to": last["gitrepos"],
            "ratio": round(growth, 2),
            "target": 2.0,
            "ok": growth <= 2.0,
        },
        "speedup_at_largest": {
            "gitrepos": last["gitrepos"],
            "vs_fleet": last["speedup_vs_fleet"]["median"],
            "vs_argocd": last["speedup_vs_argocd"]["median"],
        },
        "note": "median of per-repetition ratios; each repetition times all three back to back",
    }
