"""What is inside the built image: its Python packages, its layers, and what was cut from the venv.

* The package list `make image` prints (read from the image's own venv) is the runtime closure of
  pyproject.toml's dependencies, each at exactly the version constraints.txt pins.
* No layer holds the machine's CA bundle (mounted for pip during the build only), a build-only file
  (source tree, wheels, pip cache, pip itself) or a credential; the layers the Dockerfile adds write
  only the venv and the service user.
* What the Dockerfile removes from the venv (kubernetes/aio, packages' `tests` folders, pip, setuptools)
  is never imported by what stays: checked on the same package versions installed in the project's venv.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata as metadata
import json
import re
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.chart.support import REPO_ROOT, present
from tests.image.conftest import Built
from tests.image.support import podman
from tools import image

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
HOST_CA_BUNDLE = image.HOST_CA_BUNDLE
SITE = "opt/fleet-webhook/lib/python3.11/site-packages"
DISTRIBUTION_CAS = Path("/usr/share/ca-certificates")


def pinned() -> dict[str, str]:
    """constraints.txt as canonical name -> version."""
    out: dict[str, str] = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            out[canonicalize_name(name)] = ver
    return out


def runtime_closure() -> set[str]:
    """Canonical names of fleet-webhook's dependencies and theirs, from installed metadata.

    Extras count where a dependency asks for them (`nats-py[nkeys]` brings nkeys and PyNaCl), and
    only there: nothing of fleet-webhook's own [dev] extra.
    """
    seen: dict[str, set[str]] = {}  # package -> the extras already followed ("" = none)
    todo = [(Requirement(r), "") for r in PYPROJECT["project"]["dependencies"]]
    while todo:
        req, parent_extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": parent_extra}):
            continue
        name = canonicalize_name(req.name)
        wanted = {""} | set(req.extras)
        new = wanted - seen.setdefault(name, set())
        if not new:
            continue
        seen[name] |= new
        for child in metadata.requires(req.name) or []:
            todo += [(Requirement(child), extra) for extra in new]
    return set(seen)


def test_the_printed_package_list_is_the_runtime_closure_at_the_pinned_versions(built: Built) -> None:
    printed: dict[str, str] = {canonicalize_name(name): ver for name, ver in built.packages.items()}
    assert printed.pop("fleet-webhook") == PYPROJECT["project"]["version"]
    assert set(printed) == runtime_closure()  # nothing from [dev], nothing missing; no pip or setuptools
    pins = pinned()
    assert {name: pins.get(name) for name in printed} == printed
    # ...and it is what the image holds, read again from the image itself.
    assert {canonicalize_name(k): v for k, v in image.packages_in(built.ref).items()} == {
        **printed,
        "fleet-webhook": PYPROJECT["project"]["version"],
    }
    assert built.image_id.startswith("sha256:")
    inspected = podman("image", "inspect", "--format", "{{.Id}}", built.ref, check=True).stdout.strip()
    assert built.image_id.removeprefix("sha256:") == inspected.removeprefix("sha256:")


# --------------------------------------------------------------------------------------------------
# Layers


def layers(ref: str, folder: Path) -> tuple[list[str], dict[str, Path]]:
    """`podman save` as an OCI layout: the image's diff ids in order, and diff id -> uncompressed layer tar."""
    out = folder / "oci"
    podman("image", "save", "--format=oci-dir", f"--output={out}", ref, check=True, timeout=300, isolate=True)

    def blob(digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        return out / "blobs" / algo / hexdigest

    index = json.loads((out / "index.json").read_text())
    manifest = json.loads(blob(index["manifests"][0]["digest"]).read_text())
    config = json.loads(blob(manifest["config"]["digest"]).read_text())
    diff_ids: list[str] = config["rootfs"]["diff_ids"]
    files = {diff: blob(layer["digest"]) for diff, layer in zip(diff_ids, manifest["layers"], strict=True)}
    return diff_ids, files


def members(layer: Path) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    with tarfile.open(layer, "r:*") as tar:
        for info in tar:
            yield tar, info


def pem_bodies(text: str) -> set[str]:
    """The base64 bodies of the certificates in a PEM bundle, whitespace removed."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.DOTALL)
    return {re.sub(r"\s+", "", block) for block in blocks}


@pytest.fixture(scope="module")
def saved(built: Built, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, Path], set[str]]:
    """The image's layers, and the diff ids of its base (stand-in or upstream python:3.11-slim)."""
    diff_ids, files = layers(built.ref, tmp_path_factory.mktemp("saved"))
    base = image.STANDIN_BASE if built.base.startswith("stand-in") else image.UPSTREAM_BASE
    base_layers = json.loads(podman("image", "inspect", "--format={{json .RootFS.Layers}}", base, check=True).stdout)
    assert diff_ids[: len(base_layers)] == base_layers, "the image does not start with its base's layers"
    return diff_ids, files, set(base_layers)


# What the final stage's two filesystem steps may write: the service user (groupadd/useradd) and the venv.
ALLOWED_IN_APP_LAYERS = re.compile(
    r"etc/?|etc/(passwd|group|shadow|gshadow)-?|etc/\.pwd\.lock|opt/?|opt/fleet-webhook(/.*)?"
)
# Mount points buildah leaves behind for a RUN step (empty: the host's files were mounted over them).
EMPTY_MOUNT_POINTS = {"etc/hosts", "etc/resolv.conf", "etc/hostname", "run", "run/.containerenv"}
BUILD_ONLY = re.compile(
    r"(^|/)(src|wheels)/|\.whl$|(^|/)\.cache/|(^|/)pip/|(^|/)setuptools/|kubeconfig|\.netrc$|pip\.conf$"
    r"|(^|/)id_(rsa|ed25519|ecdsa)|\.key$|/kubernetes/aio/|/tests/"
)


def test_no_layer_holds_the_ca_bundle_a_build_only_file_or_a_credential(
    saved: tuple[list[str], dict[str, Path], set[str]],
) -> None:
    diff_ids, files, base = saved
    host_bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    host_digest = hashlib.sha256(host_bundle).hexdigest()
    base_bundle = ""
    app_paths: list[str] = []
    for diff in diff_ids:
        for tar, info in members(files[diff]):
            path = PurePosixPath(info.name).as_posix().removeprefix("./")
            if diff in base:
                if path == "etc/ssl/certs/ca-certificates.crt" and info.isfile():
                    base_bundle = present(tar.extractfile(info)).read().decode()
                continue
            if path.rstrip("/") in EMPTY_MOUNT_POINTS:
                assert info.size == 0, f"{path} has content in a layer"
                continue
            app_paths.append(path)
            assert not BUILD_ONLY.search(path), f"build-only file in the image: {path}"
            if info.isfile() and info.size == len(host_bundle):
                data = present(tar.extractfile(info)).read()
                assert hashlib.sha256(data).hexdigest() != host_digest, f"the machine's CA bundle is in {path}"
    unexpected = [p for p in app_paths if not ALLOWED_IN_APP_LAYERS.fullmatch(p)]
    assert not unexpected, f"the Dockerfile's layers write outside the venv and the user: {unexpected[:20]}"
    assert any(p.startswith(f"{SITE}/controller/") for p in app_paths)

    # The certificates only this machine trusts (added locally, e.g. a TLS-intercepting proxy's, on top of
    # the distribution's in /usr/share/ca-certificates) appear in no file of any layer.
    assert base_bundle, "the base image has no CA bundle"
    packaged = {body for crt in DISTRIBUTION_CAS.glob("**/*.crt") for body in pem_bodies(crt.read_text())}
    machine_only = pem_bodies(host_bundle.decode(errors="replace")) - (packaged or pem_bodies(base_bundle))
    for diff in diff_ids:
        for tar, info in members(files[diff]):
            if info.isfile() and 0 < info.size < 50_000_000:
                text = re.sub(rb"\s+", b"", present(tar.extractfile(info)).read())
                for body in machine_only:
                    assert body.encode() not in text, f"a certificate of this machine's CA bundle is in {info.name}"


# --------------------------------------------------------------------------------------------------
# What was cut


def catches_import_error(handler: ast.ExceptHandler) -> bool:
    """Whether an except clause catches a failed import (bare, Exception, ImportError, ModuleNotFoundError)."""
    if handler.type is None:
        return True
    return any(name in ast.unparse(handler.type) for name in ("ImportError", "ModuleNotFoundError", "Exception"))


def imported_modules(path: Path, package: str) -> Iterator[tuple[str, bool]]:
    """(absolute module name, guarded) for every import in a file; guarded: inside try/except ImportError."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    guarded_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(catches_import_error(h) for h in node.handlers):
            for inner in node.body:
                guarded_nodes |= {id(n) for n in ast.walk(inner)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, id(node) in guarded_nodes
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = parts[: len(parts) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield base, id(node) in guarded_nodes
            for alias in node.names:
                yield f"{base}.{alias.name}", id(node) in guarded_nodes


def module_name(rel: Path) -> str:
    """Dotted module name of a file path relative to site-packages."""
    return ".".join(rel.with_suffix("").parts).removesuffix(".__init__")


def is_removed(module: str, removed: set[str]) -> bool:
    """Whether a module, or a package it lives in, is one the image no longer has."""
    parts = module.split(".")
    return any(".".join(parts[:n]) in removed for n in range(1, len(parts) + 1))


def test_what_the_dockerfile_removes_is_never_imported_by_what_stays(built: Built) -> None:
    """Removed = the .py files of the runtime packages installed here (same pins) that the image lacks."""
    site = Path(str(metadata.distribution("kubernetes").locate_file("")))  # typed SimplePath; a Path here
    listing = podman(
        "run", "--rm", "--network=none", "--read-only", "--entrypoint=/usr/bin/find", built.ref,
        f"/{SITE}", "-name", "*.py",
    ).stdout  # fmt: skip
    in_image = {Path(line).relative_to(f"/{SITE}") for line in listing.splitlines() if line}
    assert Path("kubernetes/client/api_client.py") in in_image
    here: set[Path] = set()
    for name in runtime_closure() | {"pip", "setuptools"}:
        dist = metadata.distribution(name)
        here |= {Path(item) for item in dist.files or [] if item.suffix == ".py" and not Path(item).is_absolute()}
    here = {rel for rel in here if not rel.parts[0].startswith("..")}  # scripts outside site-packages
    removed = {module_name(rel) for rel in here - in_image}
    for expected in ("kubernetes.aio", "jsonschema.tests", "pip", "setuptools"):
        assert expected in removed, f"{expected} was expected to be cut from the image"

    kept = [(site / rel, rel) for rel in here & in_image if rel.name != "setup.py"]  # setup.py: build scripts
    kept += [(path, path.relative_to(REPO_ROOT)) for path in (REPO_ROOT / "controller").rglob("*.py")]
    offenders = []
    for path, rel in kept:
        module = module_name(rel)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for imported, guarded in imported_modules(path, package):
            if is_removed(imported, removed) and not guarded:
                offenders.append(f"{rel} imports {imported}")
    assert not offenders, offenders


def test_the_image_config_is_what_the_chart_expects(built: Built, helm: Any) -> None:
    from tests.chart.support import one

    config = json.loads(podman("image", "inspect", "--format={{json .Config}}", built.ref, check=True).stdout)
    pod = one(helm.template(), "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = pod["securityContext"]
    assert config["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert security["runAsUser"] != 0
    assert sorted(int(p.split("/")[0]) for p in config["ExposedPorts"]) == sorted(
        p["containerPort"] for p in container["ports"]
    )
    assert config["Entrypoint"] == ["fleet-webhook"]
    assert config["Cmd"] == container["args"]
