"""Running the built image the way the chart's Deployment runs it, with podman (tools/image.py's engine).

`PodRun` turns the container of `helm template`'s Deployment into `podman run` arguments: its args, env,
securityContext (user and group, fsGroup, read-only root, dropped capabilities, no privilege escalation)
and volume mounts (configMap or Secret -> a folder of its keys, emptyDir -> tmpfs). Nothing of the chart is
restated here; a volume type or security field this module does not know fails the test, so a chart change
cannot silently stop being exercised.

What a test grants on top, and nothing else: the host network (the control plane listens on loopback
only), loopback as the listen address, free ports in place of 8080/8081 (the host's port space is shared
under host networking; the chart's container ports map to them one to one), and a mounted kubeconfig
standing in for the in-cluster service account.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import image

IMAGE_TIMEOUT = 120


def podman(
    *args: str, timeout: float = IMAGE_TIMEOUT, check: bool = False, isolate: bool = False
) -> subprocess.CompletedProcess[str]:
    """podman with the project's private engine configuration (never the machine's).

    isolate: for `podman save`, which writes /var/lib/containers as root (tools/image.py `private_var_lib`).
    """
    command = ["podman", *args]
    return subprocess.run(
        image.private_var_lib(command) if isolate else command,
        env=image.engine_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tmpfs_size(limit: str) -> str:
    """A Kubernetes quantity (64Mi) as a tmpfs size option (64m)."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", limit)
    assert match, f"sizeLimit {limit!r} not understood"
    return match.group(1) + {"Ki": "k", "Mi": "m", "Gi": "g", None: ""}[match.group(2)]


@dataclass
class PodRun:
    """The chart's pod spec (from `helm template`) as `podman run` arguments."""

    pod: dict[str, Any]
    namespace: str
    configmaps: dict[str, dict[str, str]]
    workdir: Path
    network: str = "none"
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_mounts: list[str] = field(default_factory=list)

    @property
    def container(self) -> dict[str, Any]:
        """The receiver container of the Deployment."""
        (only,) = self.pod["containers"]
        assert isinstance(only, dict)
        return only

    def security_args(self) -> list[str]:
        """securityContext (pod and container) as podman flags; unknown fields fail."""
        pod_sc = dict(self.pod.get("securityContext") or {})
        sc = {**pod_sc, **(self.container.get("securityContext") or {})}
        args: list[str] = []
        known = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
        known |= {"readOnlyRootFilesystem", "allowPrivilegeEscalation", "capabilities"}
        assert set(sc) <= known, f"securityContext fields this test does not apply: {set(sc) - known}"
        if "runAsUser" in sc:
            args.append(f"--user={sc['runAsUser']}:{sc.get('runAsGroup', sc['runAsUser'])}")
        if "fsGroup" in pod_sc:
            args.append(f"--group-add={pod_sc['fsGroup']}")
        if sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if sc.get("allowPrivilegeEscalation") is False:
            args.append("--security-opt=no-new-privileges")
        caps = sc.get("capabilities") or {}
        assert set(caps) <= {"drop"}, f"capabilities this test does not apply: {caps}"
        args += [f"--cap-drop={cap.lower()}" for cap in caps.get("drop", [])]
        seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        assert seccomp == "RuntimeDefault", seccomp  # podman's default profile
        return args

    def volume_args(self) -> list[str]:
        """volumeMounts: configMap/Secret keys as files in a folder (group fsGroup, 0640), emptyDir as tmpfs."""
        volumes = {v["name"]: v for v in self.pod.get("volumes", [])}
        group = (self.pod.get("securityContext") or {}).get("fsGroup")
        args: list[str] = []
        for mount in self.container.get("volumeMounts", []):
            assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
            volume = volumes[mount["name"]]
            ro = ":ro" if mount.get("readOnly") else ""
            if "configMap" in volume or "secret" in volume:
                folder = self.workdir / f"volume-{mount['name']}"
                folder.mkdir(mode=0o755, exist_ok=True)
                if "configMap" in volume:
                    data = self.configmaps[volume["configMap"]["name"]]
                else:
                    data = self.secrets[volume["secret"]["secretName"]]
                for key, text in data.items():
                    path = folder / key
                    path.write_text(text)
                    own_by_fs_group(path, group)
                args.append(f"--volume={folder}:{mount['mountPath']}{ro}")
            elif "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit")
                # An emptyDir is a fresh, world-writable folder (0777); sizeLimit caps it.
                options = "rw,nosuid,nodev,mode=1777" + (f",size={tmpfs_size(size)}" if size else "")
                args.append(f"--tmpfs={mount['mountPath']}:{options}")
            else:
                raise AssertionError(f"volume type of {volume} not applied by this test")
        return args

    def env(self) -> dict[str, str]:
        """The container's env, fieldRefs resolved as the kubelet would, then what the test grants."""
        out: dict[str, str] = {}
        for item in self.container.get("env", []):
            if "value" in item:
                out[item["name"]] = str(item["value"])
            else:
                ref = item["valueFrom"]["fieldRef"]["fieldPath"]
                assert ref == "metadata.namespace", f"fieldRef {ref} not resolved by this test"
                out[item["name"]] = self.namespace
        return {**out, **self.extra_env}

    def ports(self) -> dict[str, int]:
        """containerPort by port name."""
        return {p["name"]: int(p["containerPort"]) for p in self.container["ports"]}

    def args(self, name: str, ref: str, command: list[str] | None = None) -> list[str]:
        """The whole `podman run` command line (foreground; read the exit code with `exit_code`).

        command: in place of the chart's args (a `kubectl debug`-style run of another subcommand).
        No --rm: podman 4.3's `run --rm` can lose the container's exit code in a race with its cleanup
        ("no such exit code") and return 127, so the code is read from the stopped container instead.
        """
        env_args = [f"--env={k}={v}" for k, v in self.env().items()]
        return [
            "run",
            f"--name={name}",
            "--pull=never",
            f"--network={self.network}",
            *self.security_args(),
            *self.volume_args(),
            *self.extra_mounts,
            *env_args,
            ref,
            *(self.container.get("args", []) if command is None else command),
        ]


def exit_code(name: str) -> int:
    """The exit code of a stopped container, which is then removed."""
    state = podman("inspect", "--format={{.State.Status}} {{.State.ExitCode}}", name, check=True).stdout.split()
    podman("rm", "--force", "--ignore", name)
    assert state[0] in ("exited", "stopped"), f"container {name} is {state[0]}"
    return int(state[1])


def run_to_completion(args: list[str], name: str) -> subprocess.CompletedProcess[str]:
    """`podman run` in the foreground; its output, with the container's own exit code."""
    proc = podman(*args)
    return subprocess.CompletedProcess(proc.args, exit_code(name), proc.stdout, proc.stderr)


def own_by_fs_group(path: Path, group: int | None) -> None:
    """What the kubelet does for a volume with fsGroup: group-owned, group-readable, not world-readable."""
    if group is None:
        path.chmod(0o644)
        return
    os.chown(path, 0, group)
    path.chmod(0o640)


def pid_in_its_namespace(host_pid: int) -> int:
    """The innermost PID of a process (NSpid's last field): 1 for a container's init process."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {host_pid}")
