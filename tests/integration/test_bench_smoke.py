"""The end-to-end and relay benchmarks run once, tiny: the e2e one on a control plane of its own, as
`make bench` runs it, the relay one against the session's real control plane."""

from __future__ import annotations

from bench import e2e, relay
from tools.controlplane import ControlPlane


def test_e2e_bench_smoke() -> None:
    result = e2e.run(rate=20.0, seconds=1.0, targets=3, background=5, blocks=2)
    assert result["sent"]["receiver"] == 20
    assert result["sent"]["floor"] == 20
    assert result["statuses"]["receiver"] == {"200": 20}
    assert result["statuses"]["floor"] == {"200": 20}
    assert result["lost"] == {"receiver": 0, "floor": 0}
    for key in ("receiver_visible_ms", "receiver_answer_ms", "floor_visible_ms"):
        assert result[key]["n"] == 20
        assert 0 < result[key]["p50"] <= result[key]["p99"]
    headline = e2e.headline(result)
    assert headline["speedup_mean"] > 1


def test_relay_bench_smoke(control_plane: ControlPlane, nats_server: object) -> None:
    """bench/relay.py once, tiny (nats_server: fails early, never skips, when the binary is missing)."""
    result = relay.run(pushes_per_way=4, rate=10.0, targets=2, blocks=2, kubeconfig=control_plane.kubeconfig)
    assert result["relay"]["statuses"] == {"202": 4}
    assert result["direct"]["statuses"] == {"200": 4}
    assert result["relay"]["lost"] == result["direct"]["lost"] == 0
    for way in relay.WAYS:
        assert 0 < result[way]["visible_ms"]["p50"] <= result[way]["visible_ms"]["p99"]
    assert len(relay.rows(result)) == 3
