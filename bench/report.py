"""The table `python -m bench` prints: each figure next to its baseline, ratio, target and verdict."""

from __future__ import annotations

from typing import Any

from bench.stats import spread_pct

HEAD = ("benchmark", "ours", "baseline", "ratio", "target", "ok")


def _med(s: dict[str, Any] | None, unit: str = "", digits: int = 1) -> str:
    """`median unit (±spread%)`: the spread is (max - min) / median over the repetitions."""
    if not s or s.get("median") is None:
        return "-"
    spread = spread_pct(s)
    tail = f" ±{spread:.0f}%" if spread is not None and s.get("n", 0) > 1 else ""
    return f"{s['median']:,.{digits}f}{unit}{tail}"


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per figure."""
    out: list[tuple[str, ...]] = []
    lk = results.get("lookup")
    if lk:
        for r in lk["rows"]:
            out.append(
                (
                    f"1 lookup, {r['gitrepos']:,} GitRepos",
                    _med(r["ours_us"], " µs"),
                    f"Fleet {_med(r['fleet_us'], ' µs')}; Argo CD {_med(r['argocd_us'], ' µs')}",
                    f"{r['speedup_vs_fleet']['median']:,.1f}x / {r['speedup_vs_argocd']['median']:,.1f}x faster",
                    "",
                    "",
                )
            )
        g = lk["ours_growth"]
        out.append(
            (
                f"1 lookup growth {g['from']:,} -> {g['to']:,}",
                f"x{g['ratio']}",
                "",
                "",
                f"<= x{g['target']}",
                _ok(g["ok"]),
            )
        )
    tp = results.get("throughput")
    if tp:
        out.append(
            (
                f"2 throughput, {tp['gitrepos']:,} GitRepos, {tp['body_bytes'] / 1024:.1f} KiB push",
                _med(tp["ours_rps"], " req/s", 0),
                f"bare {_med(tp['bare_rps'], ' req/s', 0)}",
                _med(tp["ratio"], "", 3),
                f">= {tp['target']}",
                _ok(tp["ok"]),
            )
        )
        cpu_ratio, cpu_target = tp["cpu_ratio"]["median"], tp.get("cpu_target")
        out.append(
            (
                "2 server CPU per request",
                _med(tp["ours_cpu_us_per_request"], " µs", 0),
                f"bare {_med(tp['bare_cpu_us_per_request'], ' µs', 0)}",
                _med(tp["cpu_ratio"], "", 3),
                f">= {cpu_target}" if cpu_target else "",
                _ok(cpu_ratio >= cpu_target) if cpu_target and cpu_ratio is not None else "",
            )
        )
        forged = tp.get("forged")
        if forged:
            out.append(
                (
                    "2 forged push refused (401), req/s",
                    _med(forged["ours_rps"], " req/s", 0),
                    f"bare {_med(forged['bare_rps'], ' req/s', 0)}",
                    _med(forged["ratio"], "", 3),
                    f">= {forged['target']}",
                    _ok(forged["ok"]),
                )
            )
            out.append(
                (
                    "2 forged push, server CPU per request",
                    _med(forged["ours_cpu_us_per_request"], " µs", 0),
                    f"bare {_med(forged['bare_cpu_us_per_request'], ' µs', 0)}",
                    _med(forged["cpu_ratio"], "", 3),
                    "",
                    "",
                )
            )
    ee = results.get("e2e")
    if ee:
        ours, floor = ee["receiver_visible_ms"], ee["floor_visible_ms"]
        out.append(
            (
                f"3 e2e p50 @ {ee['rate_per_s']:g}/s",
                f"{ours['p50']:.1f} ms",
                f"API floor {floor['p50']:.1f} ms",
                f"{ee['ratio_p50_vs_floor']}x (+{ee['overhead_p50_ms']:.1f} ms)",
                "",
                "",
            )
        )
        out.append(
            (
                f"3 e2e p99 @ {ee['rate_per_s']:g}/s ({ee['sent']['receiver']} pushes)",
                f"{ours['p99']:.1f} ms (per block {_med(ee['receiver_p99_per_block_ms'], ' ms')})",
                f"API floor {floor['p99']:.1f} ms",
                f"+{ours['p99'] - floor['p99']:.1f} ms",
                f"< {ee['target_p99_ms']:g} ms",
                _ok(ee["ok"]),
            )
        )
    mem = results.get("memory")
    if mem:
        for r in mem["rows"]:
            label = {"index": "index", "relist": "re-list peak", "objects": "raw objects (ref.)"}[r["mode"]]
            relist = r["mode"] == "relist"
            value = r["peak_mib"] if relist else r["rss_mib"]
            delta = r["peak_delta_mib"] if relist else r["delta_mib"]
            per_gitrepo = 1024 * 1024 * delta["median"] / r["gitrepos"]
            is_target = r["mode"] == "index" and r["gitrepos"] == mem["target"]["gitrepos"]
            out.append(
                (
                    f"4 RSS {label}, {r['gitrepos']:,} GitRepos",
                    _med(value, " MiB"),
                    f"after imports {_med(r['baseline_mib'], ' MiB')}",
                    f"+{delta['median']:,.1f} MiB ({per_gitrepo:,.0f} B/GitRepo)",
                    f"< {mem['target']['rss_mib_below']:g} MiB" if is_target else "",
                    _ok(mem["target"]["ok"]) if is_target else "",
                )
            )
    ik = results.get("intake")
    if ik:
        ours, bare, goals, met = ik["ours"], ik["bare"], ik["goals"], ik["met"]
        out.append(
            (
                "6 intake: RSS growth, one forged 24 MiB body",
                f"+{ours['forged_24mib_rss_growth_mib']:.1f} MiB",
                f"bare +{bare['forged_24mib_rss_growth_mib']:.1f} MiB",
                "",
                f"< {goals['forged_24mib_rss_growth_mib']:g} MiB",
                _ok(met["forged_24mib_rss_growth_mib"]),
            )
        )
        for name, attack in ours["attacks"].items():
            base = bare["attacks"][name]
            goal = goals.get(f"{name}_signed_p99_ms", goals["signed_p99_ms"])
            every = attack.get("signed_200", attack["signed"]) == attack["signed"]
            out.append(
                (
                    f"6 intake: signed push p99 during {name}",
                    f"{attack['p99_ms']:.0f} ms ({attack.get('signed_200', '?')}/{attack['signed']} got 200)",
                    f"bare {base['p99_ms']:.0f} ms",
                    f"{attack['wire_bytes'] / 1024:,.0f} KiB on the wire" if "wire_bytes" in attack else "",
                    f"< {goal:g} ms, all 200",
                    _ok(attack["p99_ms"] < goal and every),
                )
            )
        out.append(
            (
                "6 intake: forged rejected/s, after the attacks",
                f"{ours['forged_per_second']:,.0f}/s",
                f"bare answers {bare['forged_per_second']:,.0f}/s",
                f"{ik['forged_rejected_ratio']:.3f}",
                f">= {goals['forged_rejected_ratio']:g}",
                _ok(met["forged_rejected_ratio"]),
            )
        )
    hl = results.get("headline")
    if hl:
        out.append(
            (
                "5 push -> trigger (mean)",
                f"{hl['webhook_mean_ms']:.1f} ms",
                f"15 s polling {hl['polling_mean_wait_ms'] / 1000:.1f} s",
                f"{hl['speedup_mean']:,.0f}x sooner",
                "",
                "",
            )
        )
    if results.get("push_to_job"):
        from bench import push_to_job

        out += push_to_job.rows(results["push_to_job"])
    if results.get("receivers"):
        from bench import receivers

        out += receivers.rows(results["receivers"])
    if results.get("relay"):
        from bench import relay

        out += relay.rows(results["relay"])
    return out


def table(results: dict[str, Any]) -> str:
    """A plain-text table (fixed-width columns)."""
    body = [HEAD, *rows(results)]
    widths = [max(len(r[i]) for r in body) for i in range(len(HEAD))]
    lines = []
    for n, r in enumerate(body):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    env = results.get("environment", {})
    lines.append("")
    lines.append(
        f"median of repetitions, ±spread = (max-min)/median; python {env.get('python')}, aiohttp {env.get('aiohttp')}, "
        f"{env.get('cpus')} CPUs, load average {env.get('loadavg_start')} -> {env.get('loadavg_end')}"
    )
    return "\n".join(lines)
