"""Deliveries per second one replica records, against a real kube-apiserver + etcd (docs/chart.md quotes it).

Not part of `make bench`: run by hand, `python -m bench.replica_rate [seconds] [chains]`.

One `fleet-webhook serve` process; `chains` GitRepos, each sent its own chain of signed GitHub pushes
(A->B, B->C, ...), the next after the previous was answered, so every delivery records a commit (a
status write, an Event, and with --shared-order the ledger write first). Measured twice, without and
with --shared-order. Every answer must be 200 with its GitRepo updated, else the run fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from kubernetes import client

from bench.data import ZERO_SHA, delivery, sha
from tools.controlplane import ControlPlane, install_crds, new_api_client
from tools.fleet import fleet_crds_file
from tools.served import start_serve

SECRET = "bench-replica-rate"
# Alternated, so a change in the machine's load shows as a difference between the two runs of one kind.
RUNS = (("local", ()), ("shared", ("--shared-order=true",)), ("shared2", ("--shared-order=true",)), ("local2", ()))


async def drive(port: int, chains: int, seconds: float, tag: str) -> tuple[int, float]:
    """Closed-loop chains for `seconds`; (deliveries answered, seconds taken)."""
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(force_close=True, limit=0)

    async def chain(i: int, session: aiohttp.ClientSession) -> int:
        before, k = ZERO_SHA, 0
        while time.monotonic() < stop:
            commit = sha(f"{tag}-{i}-{k}")
            d = delivery(
                "github",
                https_url=f"https://github.com/bench/{tag}-{i}",
                ssh_url=f"git@github.com:bench/{tag}-{i}.git",
                ref="refs/heads/main",
                commit=commit,
                before=before,
                secret=SECRET,
            )
            async with session.post(f"http://127.0.0.1:{port}/", data=d.body, headers=d.headers) as resp:
                answer = await resp.json(content_type=None)
                if resp.status != 200 or len(answer.get("updated", [])) != 1:
                    raise AssertionError(f"{resp.status} {answer}")
            before, k = commit, k + 1
        return k

    began = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        counts = await asyncio.gather(*(chain(i, session) for i in range(chains)))
    return sum(counts), time.monotonic() - began


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    chains = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    with contextlib.ExitStack() as stack:
        cp = stack.enter_context(ControlPlane())
        install_crds(cp.kubeconfig, [fleet_crds_file()])
        api = stack.enter_context(new_api_client(cp.kubeconfig))
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        ns = "bench"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        data: dict[str, bytes | str] = {"github": base64.b64encode(SECRET.encode()).decode()}
        core.create_namespaced_secret(
            ns, client.V1Secret(metadata=client.V1ObjectMeta(name="gitjob-webhook"), data=data)
        )
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-webhook-rate-")))
        for tag, args in RUNS:
            for i in range(chains):
                body = {
                    "apiVersion": "fleet.cattle.io/v1alpha1",
                    "kind": "GitRepo",
                    "metadata": {"name": f"{tag}-{i}"},
                    "spec": {"repo": f"https://github.com/bench/{tag}-{i}", "branch": "main"},
                }
                custom.create_namespaced_custom_object("fleet.cattle.io", "v1alpha1", ns, "gitrepos", body)
            served = start_serve(cp.kubeconfig, ns, folder, f"watch:\n  namespaces: [{ns}]\n", extra_args=args)
            try:
                count, took = asyncio.run(drive(served.port, chains, seconds, tag))
            finally:
                served.stop()
            print(f"{tag:>6}: {count} deliveries in {took:.1f}s = {count / took:.0f}/s ({chains} chains)", flush=True)


if __name__ == "__main__":
    main()
