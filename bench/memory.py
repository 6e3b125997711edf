"""Benchmark 4, memory: RSS of a process holding the GitRepo index, next to the same process before.

Each figure comes from a fresh subprocess (`python -m bench.memory --gitrepos N --mode M`):
1. import what `fleet-webhook serve` imports (controller.runtime pulls in the app, the Kubernetes
   client, aiohttp, pydantic, prometheus_client ...), collect garbage, read RSS: the baseline;
2. build, collect garbage, read RSS again (and the peak, VmHWM).

Modes:
* `index`: the index the watch keeps, built from realistic GitRepo objects converted one at a
  time (the settled state of a running receiver);
* `relist`: a full re-list as it happens in `serve`: the list arrives in pages of
  `controller.kube.LIST_PAGE_SIZE` objects; each page's JSON response is decoded into dicts (as
  `Kube.list_gitrepos` does), converted to index entries and dropped, then the entries are
  swapped into the index. Reports the peak too, which is what a pod's memory
  limit must allow; CPython keeps most of that peak mapped afterwards (freed memory is reused by
  the process, not returned to the system), so the settled RSS after a re-list stays near it;
* `objects`: for reference, the full API objects kept as they are (what a receiver that caches
  the listed objects instead of an index would hold).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from bench.stats import REPO_ROOT, python, subprocess_env, summary

MODES = ("index", "relist", "objects")


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found")


def _reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0; ignored where not allowed)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass


def _decode_page(page: list[dict[str, Any]]) -> list[Any]:
    """One list page as `Kube.list_gitrepos` handles it: a JSON response decoded, then converted."""
    from controller.index import gitrepo_info

    response = json.dumps({"kind": "GitRepoList", "items": page}).encode()
    items = json.loads(response)["items"]
    return [gitrepo_info(item) for item in items]


def measure(gitrepos: int, mode: str) -> dict[str, Any]:
    """Runs in the subprocess: baseline after imports, then RSS holding the built structure."""
    import controller.runtime  # noqa: F401 - the import set of `serve`
    from bench import data
    from controller.index import GitRepoIndex

    gc.collect()
    base = _status_kib("VmRSS")
    held: Any
    if mode == "index":
        held = data.build_index(data.gitrepo_infos(gitrepos))
    elif mode == "relist":
        from controller.kube import LIST_PAGE_SIZE

        gc.collect()
        _reset_peak()
        infos: list[Any] = []
        page: list[dict[str, Any]] = []
        for obj in data.gitrepo_objects(gitrepos):
            page.append(obj)
            if len(page) == LIST_PAGE_SIZE:
                infos.extend(_decode_page(page))
                page = []
        infos.extend(_decode_page(page))
        held = GitRepoIndex()
        held.replace_all([i for i in infos if i is not None])
        del infos
    else:
        held = list(data.gitrepo_objects(gitrepos))
    gc.collect()
    rss = _status_kib("VmRSS")
    peak = _status_kib("VmHWM")
    assert len(held) == gitrepos
    return {
        "gitrepos": gitrepos,
        "mode": mode,
        "baseline_mib": round(base / 1024, 1),
        "rss_mib": round(rss / 1024, 1),
        "delta_mib": round((rss - base) / 1024, 1),
        "peak_mib": round(peak / 1024, 1),
        "peak_delta_mib": round((peak - base) / 1024, 1),
        "bytes_per_gitrepo": round((rss - base) * 1024 / gitrepos),
    }


def measure_in_subprocess(gitrepos: int, mode: str) -> dict[str, Any]:
    """One fresh interpreter per figure, so nothing measured earlier lingers in the heap."""
    out = subprocess.run(
        [python(), "-m", "bench.memory", "--gitrepos", str(gitrepos), "--mode", mode],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run(
    sizes: list[int],
    repeats: int,
    modes: Sequence[str] = MODES,
    target_gitrepos: int = 10_000,
    target_mib: float = 150.0,
) -> dict[str, Any]:
    """RSS figures per size and mode (median of `repeats` fresh processes)."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        for mode in modes:
            samples = [measure_in_subprocess(n, mode) for _ in range(repeats)]
            row: dict[str, Any] = {"gitrepos": n, "mode": mode}
            for field in ("baseline_mib", "rss_mib", "delta_mib", "peak_mib", "peak_delta_mib", "bytes_per_gitrepo"):
                row[field] = summary([s[field] for s in samples], 1)
            rows.append(row)
    checked = [r for r in rows if r["mode"] == "index" and r["gitrepos"] == target_gitrepos]
    return {
        "description": "resident memory of a process holding the GitRepo index, vs the same process after imports",
        "repeats": repeats,
        "rows": rows,
        "target": {
            "gitrepos": target_gitrepos,
            "rss_mib_below": target_mib,
            "rss_mib": checked[0]["rss_mib"]["median"] if checked else None,
            "ok": bool(checked and checked[0]["rss_mib"]["median"] < target_mib),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--gitrepos", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, default="index")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.gitrepos, args.mode)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
