"""`make image`: build localhost/fleet-webhook:<version> from the Dockerfile with buildah, privately.

    python3 -m tools.image          build (or reuse) the image, print its id, size and Python packages
    python3 -m tools.image --save   the same, then write it as a docker-archive tarball (make image-save)
    python3 -m tools.image --clean  unmount and delete the private storage (make image-clean)
    FLEET_WEBHOOK_BASE=pull ...     base: pull python:3.11-slim (fail if it cannot be pulled)
    FLEET_WEBHOOK_BASE=standin ...  base: the stand-in built from Debian's packages (tools/base-image.sh)

The default (`auto`) reuses a base already in the engine's storage, else pulls `python:3.11-slim` when a
registry answers, else builds the stand-in. The Dockerfile is used as it is either way: the stand-in is
tagged `localhost/python:3.11-slim`, which is what `FROM python:3.11-slim` resolves to with `--pull=never`.

Nothing global is configured: the engine's storage, settings, registries and signature policy are files
under .cache/image/engine/ named by CONTAINERS_STORAGE_CONF, CONTAINERS_CONF and
CONTAINERS_REGISTRIES_CONF (`engine_env()`; tests/image runs podman with the same environment). The
tools themselves are Debian packages that tools/container-tools.sh installs when missing.

Only the standard library is used, so this runs before the project's venv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FLEET_WEBHOOK_IMAGE_CACHE") or ROOT / ".cache" / "image")
ENGINE = CACHE / "engine"
BASE_CACHE = CACHE / "base"
BASE_SCRIPT = ROOT / "tools" / "base-image.sh"
TOOLS_SCRIPT = ROOT / "tools" / "container-tools.sh"

NAME = "localhost/fleet-webhook"
BASE = "python:3.11-slim"
UPSTREAM_BASE = f"docker.io/library/{BASE}"
STANDIN_BASE = f"localhost/{BASE}"
BASE_KEY_LABEL = "io.github.fleet-webhook.standin-base-key"
SUITES = ("bookworm", "bookworm-updates", "bookworm-security")
DEFAULT_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# The build stage's pip must trust the machine's CA bundle (egress may go through a TLS-intercepting
# proxy). It is bind-mounted for the RUN steps only and never committed; tests/image checks the layers.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What the venv itself brings and the SBOM leaves out of the comparison with constraints.txt.
VENV_TOOLING = frozenset({"pip", "setuptools", "wheel"})


def log(message: str) -> None:
    """Progress on stderr, so stdout is only the report."""
    print(f"image: {message}", file=sys.stderr, flush=True)


def version() -> str:
    """The project version from pyproject.toml: the image tag."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return str(data["project"]["version"])


def image_ref() -> str:
    """localhost/fleet-webhook:<version>."""
    return f"{NAME}:{version()}"


# --------------------------------------------------------------------------------------------------
# The private engine configuration


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def engine_env() -> dict[str, str]:
    """os.environ plus the variables that point buildah, podman and skopeo at .cache/image/engine/.

    Settings that had to differ from the packages' defaults on this machine kind: runtime runc (crun
    refuses hybrid cgroups), cgroupfs and file events (no systemd), and explicit ulimits (root here
    lacks CAP_SYS_RESOURCE, so podman's defaults cannot be applied).
    """
    storage = ENGINE / "storage.conf"
    _write_if_changed(
        storage,
        f'[storage]\ndriver = "overlay"\ngraphroot = "{ENGINE / "storage"}"\nrunroot = "{ENGINE / "run"}"\n',
    )
    containers = ENGINE / "containers.conf"
    _write_if_changed(
        containers,
        "\n".join(
            [
                "[containers]",
                'default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]',
                'log_driver = "k8s-file"',
                "[engine]",
                'runtime = "runc"',
                'cgroup_manager = "cgroupfs"',
                'events_logger = "file"',
                f'events_logfile_path = "{ENGINE / "events.log"}"',
                f'tmp_dir = "{ENGINE / "tmp"}"',
                f'static_dir = "{ENGINE / "storage" / "libpod"}"',
                f'volume_path = "{ENGINE / "storage" / "volumes"}"',
                "[network]",
                f'network_config_dir = "{ENGINE / "networks"}"',
                "",
            ]
        ),
    )
    registries = ENGINE / "registries.conf"
    _write_if_changed(registries, 'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n')
    policy = ENGINE / "policy.json"
    _write_if_changed(policy, json.dumps({"default": [{"type": "insecureAcceptAnything"}]}) + "\n")
    return {
        **os.environ,
        "CONTAINERS_STORAGE_CONF": str(storage),
        "CONTAINERS_CONF": str(containers),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
        "TMPDIR": str(ENGINE / "tmp"),
    }


def policy_file() -> Path:
    """The private signature policy (passed explicitly: there is no environment variable for it)."""
    return ENGINE / "policy.json"


def private_var_lib(args: Sequence[str]) -> list[str]:
    """`args` run in a private mount namespace whose /var/lib is an overlay writing to .cache/image/engine/.

    As root, buildah, `podman import`/`pull`/`save` and skopeo keep a blob-info cache in /var/lib/containers/cache
    whatever the configuration says (containers/image's fixed default for euid 0). Seen only by these
    one-shot commands, the overlay keeps that write in the project's cache; the rest of /var/lib reads
    through unchanged. Rootless engines write under $HOME instead, so nothing is wrapped then.
    """
    if os.geteuid() != 0:
        return list(args)
    upper, work = ENGINE / "var-lib" / "upper", ENGINE / "var-lib" / "work"
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    script = f'mount -t overlay overlay -o lowerdir=/var/lib,upperdir={upper},workdir={work} /var/lib && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *args]


def run(
    args: Sequence[str], *, timeout: float = 900, check: bool = True, isolate: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run an engine command with the private configuration; on failure show its output.

    isolate: the command writes to /var/lib/containers as root (see `private_var_lib`).
    """
    proc = subprocess.run(
        private_var_lib(args) if isolate else list(args),
        env=engine_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )
    if check and proc.returncode != 0:
        raise SystemExit(
            f"image: {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
        )
    return proc


def ensure_tools() -> None:
    """Install buildah, podman, runc, mmdebstrap and skopeo from Debian's packages when missing."""
    proc = subprocess.run([str(TOOLS_SCRIPT)], check=False)
    if proc.returncode != 0:
        raise SystemExit(f"image: {TOOLS_SCRIPT.relative_to(ROOT)} could not install the container tools")
    ENGINE.mkdir(parents=True, exist_ok=True)
    (ENGINE / "tmp").mkdir(exist_ok=True)


# --------------------------------------------------------------------------------------------------
# The base image


def apt_mirror_lines(sources: Sequence[Path] | None = None) -> list[str]:
    """The bookworm mirror lines apt uses here (deb822 .sources and one-line .list files).

    Falls back to deb.debian.org when apt names no bookworm suite (another distribution, or none).
    """
    if sources is None:
        sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    lines: list[str] = []
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(
                    (k.strip().lower(), v.strip())
                    for k, _, v in (line.partition(":") for line in stanza.splitlines() if not line.startswith("#"))
                    if v
                )
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                for uri in fields.get("uris", "").split():
                    for suite in fields.get("suites", "").split():
                        if suite in SUITES and "main" in fields.get("components", "").split():
                            lines.append(f"deb {uri} {suite} main")
        else:
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                words = [w for w in words if not w.startswith("[")]  # drop [options]
                if len(words) >= 4 and words[0] == "deb" and words[2] in SUITES and "main" in words[3:]:
                    lines.append(f"deb {words[1]} {words[2]} main")
    return list(dict.fromkeys(lines)) or list(DEFAULT_MIRRORS)


def standin_key(mirrors: Sequence[str]) -> str:
    """Cache key of the stand-in base: sha256 of tools/base-image.sh (package list inside) and the mirrors."""
    digest = hashlib.sha256(BASE_SCRIPT.read_bytes())
    digest.update("\n".join(mirrors).encode())
    return digest.hexdigest()[:16]


def image_exists(ref: str) -> bool:
    """Whether the private storage holds this image."""
    return run(["podman", "image", "exists", ref], check=False).returncode == 0


def label(ref: str, name: str) -> str:
    """One label of a stored image ('' when unset)."""
    out = run(["podman", "image", "inspect", "--format", "{{json .Labels}}", ref]).stdout.strip()
    labels = json.loads(out) if out and out != "null" else {}
    return str(labels.get(name, "")) if isinstance(labels, dict) else ""


def registry_answers() -> bool:
    """Whether python:3.11-slim can be pulled (one quick look at the registry)."""
    proc = run(
        ["skopeo", "--policy", str(policy_file()), "inspect", "--retry-times=0", f"docker://{UPSTREAM_BASE}"],
        check=False,
        timeout=60,
        isolate=True,
    )
    return proc.returncode == 0


def build_standin() -> str:
    """Tag the stand-in base as localhost/python:3.11-slim, from the cached tarball when its key matches."""
    mirrors = apt_mirror_lines()
    key = standin_key(mirrors)
    if image_exists(STANDIN_BASE) and label(STANDIN_BASE, BASE_KEY_LABEL) == key:
        return f"stand-in {key} (in storage)"
    tarball = BASE_CACHE / f"python3.11-bookworm-{key}.tar"
    if not tarball.exists():
        log(f"building the stand-in base from Debian's packages ({', '.join(m.split()[1] for m in mirrors[:1])}...)")
        started = time.monotonic()
        BASE_CACHE.mkdir(parents=True, exist_ok=True)
        build_log = tarball.with_suffix(".log")
        with build_log.open("wb") as out:
            proc = subprocess.run(
                [str(BASE_SCRIPT), str(tarball), *mirrors],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=engine_env(),
                check=False,
                timeout=900,
            )
        if proc.returncode != 0:
            tail = build_log.read_text(errors="replace")[-4000:]
            raise SystemExit(f"image: {BASE_SCRIPT.name} exited {proc.returncode} (log: {build_log}):\n{tail}")
        log(f"stand-in base built in {time.monotonic() - started:.0f}s: {tarball.relative_to(ROOT)}")
    run(
        [
            "podman",
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "ENV LANG=C.UTF-8",
            "--change",
            'CMD ["python3"]',
            "--change",
            f"LABEL {BASE_KEY_LABEL}={key}",
            str(tarball),
            STANDIN_BASE,
        ],
        isolate=True,
    )
    return f"stand-in {key} (imported from {tarball.relative_to(ROOT)})"


def pull_upstream() -> str:
    """Pull the real python:3.11-slim and drop a stand-in tag that would shadow it."""
    run(["podman", "pull", "--signature-policy", str(policy_file()), UPSTREAM_BASE], isolate=True)
    if image_exists(STANDIN_BASE):
        run(["podman", "rmi", STANDIN_BASE], check=False)
    return f"{UPSTREAM_BASE} (pulled)"


def ensure_base(mode: str) -> str:
    """Make `FROM python:3.11-slim` resolvable without a pull; returns what it resolves to."""
    if mode == "standin":
        return build_standin()
    if mode == "pull":
        return pull_upstream()
    if mode != "auto":
        raise SystemExit(f"image: FLEET_WEBHOOK_BASE must be auto, pull or standin, not {mode!r}")
    if image_exists(STANDIN_BASE):
        return build_standin()  # refreshes it when tools/base-image.sh or the mirrors changed
    if image_exists(UPSTREAM_BASE):
        return f"{UPSTREAM_BASE} (in storage)"
    if registry_answers():
        return pull_upstream()
    log(f"{UPSTREAM_BASE} cannot be pulled here: using the stand-in base")
    return build_standin()


# --------------------------------------------------------------------------------------------------
# The image and its package list


@dataclass(frozen=True)
class Built:
    """What `make image` reports."""

    ref: str
    image_id: str
    size: int
    base: str
    packages: dict[str, str]


def build_image(ref: str) -> str:
    """buildah bud of the Dockerfile as it is; cached layers are reused (--layers). Returns the image id."""
    iidfile = ENGINE / "tmp" / "iid"
    args = ["buildah", "bud", "--layers", "--pull=never", "--network=host", "--signature-policy", str(policy_file())]
    if HOST_CA_BUNDLE.is_file():
        args += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    args += ["--iidfile", str(iidfile), "--tag", ref, "--file", "Dockerfile", "."]
    run(["nice", *args], timeout=1800, isolate=True)
    return iidfile.read_text().strip()


def image_size(ref: str) -> int:
    """Uncompressed size in bytes, as `podman images` reports it."""
    return int(run(["podman", "image", "inspect", "--format", "{{.Size}}", ref]).stdout.strip())


# Runs inside the image with its own venv Python: every distribution on its path and its version.
_LIST_PACKAGES = "import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"


def packages_in(ref: str) -> dict[str, str]:
    """Distribution name -> version of every Python package in the image's venv (read from the image)."""
    out = run(
        [
            "podman",
            "run",
            "--rm",
            "--network=none",
            "--read-only",
            "--entrypoint=/opt/fleet-webhook/bin/python",
            ref,
            "-c",
            _LIST_PACKAGES,
        ],
        timeout=120,
    ).stdout
    found: dict[str, str] = json.loads(out)
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def packages_of(ref: str, image_id: str) -> dict[str, str]:
    """`packages_in`, remembered per image id (an image never changes; a rebuilt one has a new id)."""
    memo = CACHE / "packages" / f"{image_id.removeprefix('sha256:')}.json"
    if memo.exists():
        found: dict[str, str] = json.loads(memo.read_text())
        return found
    found = packages_in(ref)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(found, indent=1) + "\n")
    return found


def build(mode: str | None = None) -> Built:
    """Install the tools when missing, make the base resolvable, build, and read back the package list."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    ensure_tools()
    timings["tools"] = time.monotonic() - started
    base = ensure_base(mode or os.environ.get("FLEET_WEBHOOK_BASE", "auto"))
    timings["base"] = time.monotonic() - started - sum(timings.values())
    ref = image_ref()
    image_id = build_image(ref)
    timings["build"] = time.monotonic() - started - sum(timings.values())
    built = Built(ref, image_id, image_size(ref), base, packages_of(ref, image_id))
    timings["packages"] = time.monotonic() - started - sum(timings.values())
    log(", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in timings.items()))
    return built


def report(built: Built) -> str:
    """The text `make image` prints: id, size, base, and an SBOM-style list of the Python packages."""
    lines = [
        f"image {built.ref}",
        f"id    {built.image_id}",
        f"size  {built.size / 1e6:.0f} MB",
        f"base  {built.base}",
        f"python packages in /opt/fleet-webhook ({len(built.packages)}):",
    ]
    lines += [f"  {name}=={ver}" for name, ver in built.packages.items()]
    return "\n".join(lines)


def save(built: Built) -> Path:
    """The image as a docker-archive tarball (kind load image-archive, k3s ctr images import, docker load,
    skopeo copy to a registry), named after its tag, in .cache/image/."""
    out = CACHE / f"fleet-webhook-{built.ref.rpartition(':')[2]}.tar"
    out.unlink(missing_ok=True)
    run(["podman", "save", "--format=docker-archive", f"--output={out}", built.ref], timeout=600, isolate=True)
    log(f"saved {built.ref} ({built.image_id[:19]}) to {out.relative_to(ROOT)}: {out.stat().st_size / 1e6:.0f} MB")
    return out


def clean() -> None:
    """Unmount what podman left mounted under the engine folder, then delete it (base tarballs stay)."""
    if not ENGINE.exists():
        return
    prefix = str(ENGINE.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", target], check=False)
    subprocess.run(["rm", "-rf", str(ENGINE)], check=True)
    log(f"removed {ENGINE.relative_to(ROOT)} (the base tarballs in {BASE_CACHE.relative_to(ROOT)} stay)")


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """Entry point of `make image` (and `make image-clean`: --clean)."""
    if list(argv) == ["--clean"]:
        clean()
        return 0
    if list(argv) == ["--save"]:
        print(save(build()))
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.monotonic()
    built = build()
    print(report(built), flush=True)
    log(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
