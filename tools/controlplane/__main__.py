"""`python -m tools.controlplane [--crds DIR_OR_FILE ...]`: a control plane until Ctrl-C (`make cluster`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from tools.controlplane.binaries import ToolsMissingError
from tools.controlplane.cluster import ControlPlane, ControlPlaneError
from tools.controlplane.crds import install_crds
from tools.controlplane.processes import tail

if TYPE_CHECKING:
    pass

# --------------------------------------------------------------------------------------------------
# CLI


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.controlplane",
        description="Run a throw-away etcd + kube-apiserver on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--crds",
        action="append",
        default=[],
        metavar="DIR",
        help="CRD file or folder to install (repeatable); `make cluster` passes Fleet's (tools.fleet.fleet_crds_file)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="startup timeout in seconds")
    args = parser.parse_args(argv)

    # SIGINT may be inherited as ignored (e.g. `make cluster &`); make Ctrl-C / kill -INT always work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        with ControlPlane(start_timeout=args.timeout) as cp:
            phases = ", ".join(f"{k} {v:.2f}s" for k, v in cp.timings.items())
            say(f"control plane ready in {cp.startup_seconds:.2f}s ({phases}); server {cp.server}")
            say(f"logs: {cp.tmpdir}/etcd.log, {cp.tmpdir}/kube-apiserver.log")
            if args.crds:
                t = time.monotonic()
                names = install_crds(cp.kubeconfig, args.crds)
                say(f"installed CRDs {', '.join(names)} in {time.monotonic() - t:.2f}s")
            print(f"export KUBECONFIG={cp.kubeconfig}", flush=True)
            say("Ctrl-C to stop")
            while True:
                dead = [name for name, alive in cp.running().items() if not alive]
                if dead:
                    say(f"{', '.join(dead)} exited unexpectedly; logs in {cp.tmpdir}:")
                    for name in dead:
                        say(tail(cp.tmpdir / f"{name}.log"))
                    return 1
                time.sleep(1)
    except KeyboardInterrupt:
        say("stopped")
        return 130
    except ToolsMissingError as exc:
        say(f"error: {exc}")
        return 2
    except ControlPlaneError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
