"""The push-to-Job headline benchmark (bench/push_to_job.py) run once, tiny, on the suite's stack.

Structure and sanity only, never timings (a 5 s polling interval keeps the polling leg short)."""

from __future__ import annotations

from bench import push_to_job
from tools.e2e import Stack


def test_push_to_job_bench_smoke(stack: Stack) -> None:
    result = push_to_job.run(2, polling_workers=2, stack=stack, polling_interval_s=5)
    for mode in push_to_job.MODES:
        assert result[mode]["n"] == 2, result
        assert 0 < result[mode]["median"] <= result[mode]["p95"] <= result[mode]["max"]
    rows = push_to_job.rows(result)
    assert [r[0].split(" (")[1].split(",")[0] for r in rows] == ["median", "p95"]
