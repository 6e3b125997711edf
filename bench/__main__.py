"""`python -m bench`: run the benchmarks, print a table, write bench/results.json.

Sizes come from the environment (see bench/README.md); BENCH_QUICK=1 shrinks everything to a
run of about a minute. BENCH_ONLY=lookup,throughput,e2e,memory,intake,push_to_job,receivers,relay picks benchmarks (the trigger headline is
computed from e2e; push_to_job is the git push -> Fleet Job headline with real Gitea and Fleet).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import e2e, intake, lookup, memory, push_to_job, receivers, relay, report, throughput
from bench.stats import REPO_ROOT

BENCHMARKS = ("lookup", "throughput", "e2e", "memory", "intake", "push_to_job", "receivers", "relay")


def _int_list(name: str, default: str) -> list[int]:
    return [int(x) for x in os.environ.get(name, default).replace(" ", "").split(",") if x]


def _num(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def settings() -> dict[str, Any]:
    """Every size and duration, from the environment (BENCH_QUICK=1 changes the defaults)."""
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    return {
        "quick": quick,
        "only": [b for b in os.environ.get("BENCH_ONLY", ",".join(BENCHMARKS)).split(",") if b],
        "repeats": int(_num("BENCH_REPEATS", 2 if quick else 5)),
        "lookup_sizes": _int_list("BENCH_LOOKUP_SIZES", "100,1000,10000" if quick else "100,1000,10000,100000"),
        "throughput_gitrepos": int(_num("BENCH_THROUGHPUT_GITREPOS", 10_000)),
        "throughput_seconds": _num("BENCH_THROUGHPUT_SECONDS", 1.5 if quick else 3.0),
        "throughput_connections": int(_num("BENCH_CONNECTIONS", 32)),
        "pin_cpus": os.environ.get("BENCH_PIN", "") not in ("", "0"),
        "profile": os.environ.get("BENCH_PROFILE") or None,
        "profile_e2e": os.environ.get("BENCH_PROFILE_E2E") or None,
        "profile_dir": Path(os.environ.get("BENCH_PROFILE_DIR", "/tmp/fleet-webhook-bench-profiles")),
        "e2e_rate": _num("BENCH_E2E_RATE", 50.0),
        "e2e_seconds": _num("BENCH_E2E_SECONDS", 4.0 if quick else 20.0),
        "e2e_blocks": int(_num("BENCH_E2E_BLOCKS", 2 if quick else 4)),
        "e2e_targets": int(_num("BENCH_E2E_TARGETS", 20 if quick else 50)),
        "e2e_background": int(_num("BENCH_E2E_BACKGROUND", 100 if quick else 1000)),
        "e2e_kubeconfig": os.environ.get("BENCH_KUBECONFIG") or None,
        "memory_sizes": _int_list("BENCH_MEMORY_SIZES", "1000,10000" if quick else "10000,100000"),
        "memory_repeats": int(_num("BENCH_MEMORY_REPEATS", 1 if quick else 2)),
        "intake_gitrepos": int(_num("BENCH_INTAKE_GITREPOS", 1000 if quick else 10_000)),
        "push_to_job_pushes": int(_num("BENCH_PUSH_TO_JOB_PUSHES", 8 if quick else 20)),
        "push_to_job_workers": int(_num("BENCH_PUSH_TO_JOB_WORKERS", 4)),
        "receivers_sizes": _int_list("BENCH_RECEIVERS_SIZES", "100,1000" if quick else "100,1000,10000"),
        "receivers_seconds": _num("BENCH_RECEIVERS_SECONDS", 4.0 if quick else 10.0),
        "receivers_targets": int(_num("BENCH_RECEIVERS_TARGETS", 10 if quick else 20)),
        "relay_pushes": int(_num("BENCH_RELAY_PUSHES", 20 if quick else 100)),
        "relay_rate": _num("BENCH_RELAY_RATE", 10.0),
        "out": Path(os.environ.get("BENCH_OUT", str(REPO_ROOT / "bench" / "results.json"))),
    }


def environment() -> dict[str, Any]:
    """What the numbers were measured on (load average included: a busy machine shows there)."""
    import aiohttp

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit or None,
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    cfg = settings()
    unknown = set(cfg["only"]) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmarks in BENCH_ONLY: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"environment": environment(), "settings": _jsonable(cfg)}
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "lookup": lambda: lookup.run(cfg["lookup_sizes"], cfg["repeats"]),
        "throughput": lambda: throughput.run(
            cfg["throughput_gitrepos"],
            cfg["repeats"],
            cfg["throughput_seconds"],
            connections=cfg["throughput_connections"],
            profile=cfg["profile"],
            profile_dir=cfg["profile_dir"],
            pin_cpus=cfg["pin_cpus"],
        ),
        "e2e": lambda: e2e.run(
            cfg["e2e_rate"],
            cfg["e2e_seconds"],
            cfg["e2e_targets"],
            cfg["e2e_background"],
            cfg["e2e_blocks"],
            kubeconfig=Path(cfg["e2e_kubeconfig"]) if cfg["e2e_kubeconfig"] else None,
            profile=cfg["profile_e2e"],
            profile_dir=cfg["profile_dir"],
        ),
        "memory": lambda: memory.run(cfg["memory_sizes"], cfg["memory_repeats"]),
        "intake": lambda: intake.run(cfg["intake_gitrepos"], quick=cfg["quick"]),
        "push_to_job": lambda: push_to_job.run(
            cfg["push_to_job_pushes"],
            cfg["push_to_job_workers"],
            kubeconfig=Path(cfg["e2e_kubeconfig"]) if cfg["e2e_kubeconfig"] else None,
        ),
        "receivers": lambda: receivers.run(
            cfg["receivers_sizes"],
            cfg["e2e_rate"],
            cfg["receivers_seconds"],
            targets=cfg["receivers_targets"],
            kubeconfig=Path(cfg["e2e_kubeconfig"]) if cfg["e2e_kubeconfig"] else None,
        ),
        "relay": lambda: relay.run(
            cfg["relay_pushes"],
            cfg["relay_rate"],
            kubeconfig=Path(cfg["e2e_kubeconfig"]) if cfg["e2e_kubeconfig"] else None,
        ),
    }
    started = time.monotonic()
    for name in BENCHMARKS:
        if name not in cfg["only"]:
            continue
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        results[name] = steps[name]()
        results[name]["elapsed_s"] = round(time.monotonic() - t0, 1)
        if name == "e2e":
            results["headline"] = e2e.headline(results["e2e"])
    results["environment"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["environment"]["elapsed_s"] = round(time.monotonic() - started, 1)
    cfg["out"].parent.mkdir(parents=True, exist_ok=True)
    cfg["out"].write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(report.table(results))
    print(f"\nwrote {cfg['out']}")
    return 0


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    def show(value: Any) -> Any:
        if not isinstance(value, Path):
            return value
        return str(value.relative_to(REPO_ROOT)) if value.is_relative_to(REPO_ROOT) else str(value)

    return {k: show(v) for k, v in cfg.items()}


if __name__ == "__main__":
    sys.exit(main())
