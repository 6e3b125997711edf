"""A benchmark server in its own process: `python -m bench.server --kind ours|bare|real ...`.

* `ours`: the real receiver app (`make_app`) over an index of N GitRepos, `updater=None` and an
  in-memory secret reader, like tests/unit/test_app.py. The GitRepos the push reaches already
  carry the pushed commit, so every delivery is answered "unchanged" without an API write.
* `bare`: an aiohttp handler that reads the body and answers 200 (bench/baselines.py).
* `real`: the receiver exactly as `fleet-webhook serve` wires it (runtime.build), against the
  cluster of `--kubeconfig`, watching `--namespace`.

All three are served with the same options as `serve` (AppRunner(handle_signals=False,
access_log=None, **runtime.server_options()), TCPSite(backlog=512, reuse_address=True)) and log like `serve` (JSON, INFO) to
stderr, which the parent points at a file. Once listening, one JSON line goes to stdout:
{"port": ..., "pid": ..., "rss_bytes": ..., "gitrepos": ...}. SIGTERM or SIGINT stops the server;
with `--profile FILE` the server runs under a profiler and writes its report there on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from bench import baselines, data
from bench.stats import rss_bytes
from controller import logs
from controller.app import WebhookRunner, make_app
from controller.config import load_text
from controller.metrics import Metrics
from controller.pipeline import Receiver
from controller.reload import ConfigHolder
from controller.secrets import SecretStore
from controller.settings import LogFormat, LogLevel

SHUTDOWN_GRACE = 1.0


def runner_options() -> dict[str, Any]:
    """The AppRunner options `serve` uses (connection limits included when this version has them)."""
    from controller import runtime

    options: dict[str, Any] = {"handle_signals": False, "access_log": None, "shutdown_timeout": SHUTDOWN_GRACE}
    server_options = getattr(runtime, "server_options", None)
    if server_options is not None:
        options.update(server_options())
    return options


def _freeze_long_lived() -> None:
    """controller/heap.py's freeze, when the controller package run has it (an A/B copy may not)."""
    try:
        from controller.heap import freeze_long_lived
    except ImportError:
        return
    freeze_long_lived()


def ours_app(gitrepos: int) -> tuple[web.Application, int]:
    """The receiver app over `gitrepos` GitRepos whose push targets already hold the pushed commit."""
    config = load_text("", "bench")
    index = data.build_index(data.gitrepo_infos(gitrepos, webhook_commit=data.PUSH_COMMIT))
    secrets = SecretStore(data.secret_reader(), data.CONTROLLER_NAMESPACE)
    receiver = Receiver(ConfigHolder(config), index, secrets, Metrics(), updater=None)
    return make_app(receiver), len(index)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    components: Any = None
    warming: asyncio.Task[None] | None = None
    if args.kind == "ours":
        app, count = ours_app(args.gitrepos)
    elif args.kind == "bare":
        app, count = baselines.bare_app(), 0
    else:
        from controller.kube import Kube, load_api_client
        from controller.runtime import build
        from controller.settings import Settings

        config = load_text(f"watch:\n  namespaces: [{args.namespace}]\n", "bench-e2e")
        settings = Settings(namespace=args.namespace, kubeconfig=Path(args.kubeconfig))
        components = build(settings, config, "", Kube(load_api_client(settings.kubeconfig)))
        components.sync.start(config.watch)
        if settings.api_warm_connections:  # as serve does
            from controller.api_pool import keep_warm

            warming = asyncio.create_task(keep_warm(components.kube.http, settings.api_warm_connections))
        await components.wait_synced(60)
        app, count = make_app(components.receiver), len(components.receiver.index)

    _freeze_long_lived()  # what serve does once the index has synced, for every kind
    runner = WebhookRunner(app, **runner_options())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=512, reuse_address=True)
    await site.start()
    server = site._server  # the bound socket tells the port when 0 was asked for
    sockets = getattr(server, "sockets", None)  # asyncio.Server, or uvloop's
    port = sockets[0].getsockname()[1] if sockets else args.port
    print(
        json.dumps(
            {"port": port, "pid": os.getpid(), "rss_bytes": rss_bytes(), "gitrepos": count, "time": time.time()}
        ),
        flush=True,
    )
    profiler = _Profiler(args.profile, args.profiler) if args.profile else None
    if profiler is not None:
        profiler.start()
    try:
        await stop.wait()
    finally:
        if profiler is not None:
            profiler.stop()
        await runner.cleanup()
        if warming is not None:
            warming.cancel()
        if components is not None:
            await components.close()


class _Profiler:
    """Profiles the serving phase only (not the index build) and writes a text report."""

    def __init__(self, path: str, kind: str) -> None:
        self.path = Path(path)
        self.kind = kind
        self._impl: Any = None

    def start(self) -> None:
        if self.kind == "pyinstrument":
            from pyinstrument import Profiler

            self._impl = Profiler(interval=0.0005, async_mode="disabled")
            self._impl.start()
        else:
            import cProfile

            # CPU time, not wall time: on a shared machine a preempted call must not look expensive.
            self._impl = cProfile.Profile(time.process_time)
            self._impl.enable()

    def stop(self) -> None:
        if self.kind == "pyinstrument":
            self._impl.stop()
            self.path.write_text(self._impl.output_text(unicode=True, color=False, show_all=False))
            return
        import pstats

        self._impl.disable()
        self._impl.dump_stats(str(self.path.with_suffix(".pstats")))
        with self.path.open("w") as f:
            stats = pstats.Stats(self._impl, stream=f)
            stats.sort_stats("tottime").print_stats(40)
            stats.sort_stats("cumulative").print_stats(60)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__)
    parser.add_argument("--kind", choices=("ours", "bare", "real"), required=True)
    parser.add_argument("--gitrepos", type=int, default=10_000, help="GitRepos to index (kind ours)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="cluster to use (kind real)")
    parser.add_argument("--namespace", help="namespace to watch and read the secret from (kind real)")
    parser.add_argument("--profile", help="write a profile of the serving phase to this file")
    parser.add_argument("--profiler", choices=("pyinstrument", "cprofile"), default="pyinstrument")
    args = parser.parse_args(argv)
    if args.kind == "real" and not (args.kubeconfig and args.namespace):
        parser.error("--kind real needs --kubeconfig and --namespace")
    logs.configure(LogLevel.INFO, LogFormat.JSON)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
