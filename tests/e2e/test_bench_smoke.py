"""The push-to-Job headline benchmark (bench/push_to_job.py) run once, tiny, on the suite's stack.

Structure and sanity only, never timings (a 5 s polling interval keeps the polling leg short)."""

from __future__ import annotations

from bench import push_to_job, receivers
from tools.e2e import Stack


def test_push_to_job_bench_smoke(stack: Stack) -> None:
    result = push_to_job.run(2, polling_workers=2, stack=stack, polling_interval_s=5)
    for mode in push_to_job.MODES:
        assert result[mode]["n"] == 2, result
        assert 0 < result[mode]["median"] <= result[mode]["p95"] <= result[mode]["max"]
    rows = push_to_job.rows(result)
    assert [r[0].split(" (")[1].split(",")[0] for r in rows] == ["median", "p95"]


def test_receivers_bench_smoke() -> None:
    """Both receivers, tiny, on a control plane of its own (a second Fleet controller must not act
    on the suite's GitRepos): every push answered and readable, each row's figures filled in."""
    result = receivers.run([12, 30], rate=20, seconds=1, blocks=2, targets=3)
    assert result["failure"] is None, result
    assert [r["gitrepos"] for r in result["rows"]] == [12, 30]
    for row in result["rows"]:
        for kind in receivers.KINDS:
            entry = row[kind]
            assert entry["statuses"] == {"200": entry["sent"]}, (kind, entry)
            assert entry["lost"] == 0, (kind, entry)
            assert 0 < entry["visible_ms"]["p50"] <= entry["visible_ms"]["p99"]
            assert entry["cpu_ms_per_delivery"] > 0
            assert entry["rss_mib"] > 10
        ours = row["fleet-webhook"]
        assert sum(c["gitrepos_updated"] for c in ours["counters_per_block"]) == ours["sent"]  # read from /metrics
        assert all(c["api_connections_opened"] >= 0 for c in ours["counters_per_block"])
        assert row["fleet-receiver"]["counters_per_block"] == [None, None]
        assert row["fleet_settle_after_warmup"]["waited_s"] > 0
    assert len(receivers.rows(result)) == 4
