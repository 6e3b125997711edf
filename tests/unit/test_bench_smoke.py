"""Each benchmark run once at tiny sizes, so bench/ cannot rot. Structure and sanity, never timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import baselines, data, e2e, intake, lookup, memory, report, throughput
from bench.stats import REPO_ROOT, percentile, ratios, summary
from controller.index import gitrepo_info

TRIGGERED = sorted(f"{ns}/{name}" for ns, name in data.TRIGGERED)


def test_summary_and_ratios() -> None:
    s = summary([3.0, 1.0, 2.0])
    assert (s["n"], s["median"], s["min"], s["max"]) == (3, 2.0, 1.0, 3.0)
    assert ratios([10.0, 20.0], [5.0, 5.0]) == [2.0, 4.0]
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


@pytest.mark.parametrize(
    ("repo", "matches"),
    [
        ("https://github.com/example-org/fleet-apps", True),
        ("https://GitHub.com/Example-Org/Fleet-Apps.git", True),  # (?i)
        ("git@github.com:example-org/fleet-apps.git", True),  # [:/] separator
        ("ssh://git@github.com:22/example-org/fleet-apps", True),  # optional port
        ("https://x-token@github.com/example-org/fleet-apps", True),  # unanchored start, \w+@
        ("https://github.com/example-org/fleet-apps-suffix", False),  # trailing $
        ("https://github.com/example-org/fleet-apps/", False),  # trailing slash never matched Fleet
        ("https://gitlab.com/example-org/fleet-apps", False),
    ],
)
def test_fleet_baseline_follows_the_documented_regex(repo: str, matches: bool) -> None:
    regex = baselines.fleet_regex(data.PUSH_HTTPS)
    assert regex is not None
    assert (regex.search(repo) is not None) is matches


def test_fleet_baseline_quotes_metacharacters_and_converts_ssh_urls() -> None:
    assert baselines.quote_meta("a.b+c(d)") == r"a\.b\+c\(d\)"
    forged = baselines.fleet_regex("https://.*/.*")
    assert forged is not None
    assert forged.search("https://github.com/any/repo") is None
    assert baselines.ssh_url_to_parsable("git@github.com:org/repo.git") == "ssh://git@github.com/org/repo"
    assert baselines.ssh_url_to_parsable("no-user-here") == ""
    azure = baselines.fleet_regex("https://dev.azure.com/org/proj/_git/repo")
    assert azure is not None
    assert azure.search("git@ssh.dev.azure.com:v3/org/proj/repo")


def test_argocd_baseline_is_anchored_and_checks_the_revision_first() -> None:
    regex = baselines.argocd_regex(data.PUSH_HTTPS)
    assert regex.search("git@github.com:example-org/fleet-apps.git")
    assert regex.search("https://evil.example/github.com/example-org/fleet-apps") is None  # ^ anchored
    assert baselines.argocd_revision_changed("main", "main", touched_head=False)
    assert baselines.argocd_revision_changed("", "dev", touched_head=True)
    assert not baselines.argocd_revision_changed("refs/heads/dev", "main", touched_head=True)


def test_every_matcher_selects_the_same_gitrepos_over_the_dataset() -> None:
    infos = data.gitrepo_infos(300)
    event = data.push_event()
    fleet = baselines.fleet_scan(
        baselines.fleet_payload_urls(data.PUSH_HTTPS, data.PUSH_SSH), "main", event.commit, infos
    )
    argo = baselines.argocd_scan([data.PUSH_HTTPS], "refs/heads/main", "main", event.commit, infos)
    assert {m.gitrepo.ref for m in fleet} == {m.gitrepo.ref for m in argo} == set(data.TRIGGERED)


def test_dataset_is_deterministic_and_varied() -> None:
    first = [gitrepo_info(o) for o in data.gitrepo_objects(200)]
    again = [gitrepo_info(o) for o in data.gitrepo_objects(200)]
    assert first == again
    hosts = {i.repo.split("/")[2].split("@")[-1].split(":")[0] for i in first if i and "://" in i.repo}
    assert {"github.com", "gitlab.example.com", "bitbucket.example.com", "dev.azure.com"} <= hosts
    assert len({(i.namespace, i.name) for i in first if i}) == 200


def test_lookup_smoke() -> None:
    result = lookup.run([8, 60], repeats=1, min_seconds=0.001)
    assert [r["gitrepos"] for r in result["rows"]] == [8, 60]
    for row in result["rows"]:
        assert row["selected"] == TRIGGERED
        for key in ("ours_us", "fleet_us", "argocd_us", "speedup_vs_fleet", "speedup_vs_argocd"):
            assert row[key]["n"] == 1
            assert row[key]["median"] > 0
    assert result["ours_growth"]["from"] == 8
    assert result["ours_growth"]["to"] == 60
    assert result["speedup_at_largest"]["gitrepos"] == 60


def test_throughput_smoke() -> None:
    result = throughput.run(gitrepos=50, repeats=1, duration=0.3, warmup=0.2, connections=2)
    assert result["gitrepos"] == 50
    assert result["body_bytes"] > 5000
    for kind in ("ours", "bare"):
        run = result["runs"][kind][0]
        assert set(run["statuses"]) == {"200"}
        assert run["completed"] > 0
        assert run["lost_connections"] == 0
        assert run["server_cpu_us_per_request"] >= 0
    assert result["ratio"]["median"] > 0
    assert isinstance(result["ok"], bool)
    forged = result["forged"]
    assert set(forged["runs"]["ours"][0]["statuses"]) == {"401"}  # refused, every one
    assert set(forged["runs"]["bare"][0]["statuses"]) == {"200"}
    assert forged["ratio"]["median"] > 0
    assert forged["cpu_ratio"]["median"] > 0
    answer = result["sample_answer"]
    assert answer["updated"] == []
    assert sorted(f"{e['namespace']}/{e['name']}" for e in answer["unchanged"]) == TRIGGERED


def test_memory_smoke() -> None:
    result = memory.run([40], repeats=1, target_gitrepos=40)
    assert [r["mode"] for r in result["rows"]] == list(memory.MODES)
    for row in result["rows"]:
        assert row["baseline_mib"]["median"] > 10  # the interpreter with serve's imports
        assert row["rss_mib"]["median"] >= row["baseline_mib"]["median"] - 1
        assert row["peak_mib"]["median"] >= row["rss_mib"]["median"] - 1
    assert result["target"]["gitrepos"] == 40
    assert result["target"]["rss_mib"] is not None


def test_headline_is_polling_mean_over_webhook_mean() -> None:
    fake = {"receiver_visible_ms": {"mean": 7.5, "p99": 30.0}}
    line = e2e.headline(fake)
    assert line["speedup_mean"] == 1000.0
    assert line["speedup_worst_vs_p99"] == 500.0


def test_table_renders_every_section(tmp_path: Path) -> None:
    results = {
        "environment": {"python": "3", "aiohttp": "3", "cpus": 2, "loadavg_start": [0], "loadavg_end": [0]},
        "lookup": lookup.run([8, 16], repeats=1, min_seconds=0.001),
        "memory": memory.run([20], repeats=1, modes=("index",), target_gitrepos=20),
    }
    text = report.table(results)
    assert "1 lookup, 8 GitRepos" in text
    assert "4 RSS index, 20 GitRepos" in text
    json.dumps(results)  # results.json must be plain JSON


def test_main_writes_results_and_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {
        **os.environ,
        "BENCH_ONLY": "lookup,memory",
        "BENCH_LOOKUP_SIZES": "8,16",
        "BENCH_REPEATS": "1",
        "BENCH_MEMORY_SIZES": "10",
        "BENCH_MEMORY_REPEATS": "1",
        "BENCH_OUT": str(out),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "1 lookup growth 8 -> 16" in proc.stdout
    written = json.loads(out.read_text())
    assert set(written) >= {"environment", "settings", "lookup", "memory"}
    assert "throughput" not in written


def test_intake_smoke() -> None:
    result = intake.run(100, smoke=True)
    ours, bare = result["ours"], result["bare"]
    assert ours["forged_statuses"] == {"401": ours["forged_statuses"]["401"]}  # every forged request refused
    assert bare["forged_statuses"].keys() == {"200"}
    assert result["forged_rejected_ratio"] > 0
    for attack in ours["attacks"].values():
        assert attack["signed"] > 0
        assert attack["codes"] == [200]
    assert ours["forged_24mib_rss_growth_mib"] < 16
    assert set(result["met"]) == {
        "forged_24mib_rss_growth_mib",
        "signed_p99_ms",
        "parked_gzip",
        "forged_rejected_ratio",
    }
    assert ours["attacks"]["parked_gzip"]["wire_bytes"] > 0


def test_the_benchmarks_import_nothing_from_the_test_suite() -> None:
    """`bench/` runs from a checkout without tests/ being importable (issue: bench independent of tests)."""
    import ast
    from pathlib import Path

    offenders = []
    for path in sorted((Path(__file__).resolve().parents[2] / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert offenders == []
