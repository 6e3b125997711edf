"""The test control plane's PKI: what kube-apiserver will read from the certs (no binaries needed)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.controlplane import (
    Pki,
    ToolsMissingError,
    find_tools_bin,
    generate_pki,
    issue_cert,
    write_kubeconfig,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return generate_pki(tmp_path_factory.mktemp("pki"))


def names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def test_admin_is_system_masters(pki: Pki) -> None:
    cert = x509.load_pem_x509_certificate(pki.admin_cert_file.read_bytes())
    assert names(cert, NameOID.COMMON_NAME) == ["admin"]
    assert names(cert, NameOID.ORGANIZATION_NAME) == ["system:masters"]
    assert ExtendedKeyUsageOID.CLIENT_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(pki.client_ca.cert)


def test_serving_cert_covers_loopback(pki: Pki) -> None:
    cert = x509.load_pem_x509_certificate(pki.serving_cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(pki.ca_file.read_bytes()))


def test_user_cert_groups_become_organizations(pki: Pki) -> None:
    cert = issue_cert(pki.client_ca, "alice", organizations=["dev", "ops"], client=True).cert
    assert names(cert, NameOID.COMMON_NAME) == ["alice"]
    assert names(cert, NameOID.ORGANIZATION_NAME) == ["dev", "ops"]


def test_private_keys_are_owner_only_and_sa_key_is_rsa(pki: Pki) -> None:
    for path in (pki.serving_key_file, pki.admin_key_file, pki.sa_key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert isinstance(pki.sa_key, rsa.RSAPrivateKey)
    assert pki.sa_pub_file.read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_mutual_tls_handshake_with_generated_certs(pki: Pki) -> None:
    """The serving cert verifies for 127.0.0.1 and the server accepts the admin client cert."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.serving_cert_file, pki.serving_key_file)
    server_ctx.load_verify_locations(pki.client_ca_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    client_ctx.load_cert_chain(pki.admin_cert_file, pki.admin_key_file)

    a, b = socket.socketpair()
    peer: dict[str, object] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(a, server_side=True) as tls:
            peer.update(tls.getpeercert() or {})

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(b, server_hostname="127.0.0.1") as tls:
        assert tls.version() is not None
    thread.join(5)
    subject = peer["subject"]
    assert isinstance(subject, tuple)
    assert ((("commonName", "admin"),)) in subject


def test_kubeconfig_embeds_everything(pki: Pki, tmp_path: Path) -> None:
    import yaml

    path = write_kubeconfig(
        tmp_path / "kc",
        server="https://127.0.0.1:6443",
        ca_pem=pki.serving_ca.cert_pem,
        user_name="u",
        user={"token": "t"},
        namespace="ns",
    )
    cfg = yaml.safe_load(path.read_text())
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert cfg["contexts"][0]["context"] == {"cluster": "fleet-webhook-test", "user": "u", "namespace": "ns"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_missing_binaries_name_make_tools(tmp_path: Path) -> None:
    with pytest.raises(ToolsMissingError, match="make tools"):
        find_tools_bin({"FLEET_WEBHOOK_TOOLS_CACHE": str(tmp_path)})
    with pytest.raises(ToolsMissingError, match="FLEET_WEBHOOK_TOOLS_BIN"):
        find_tools_bin({"FLEET_WEBHOOK_TOOLS_BIN": str(tmp_path)})
    for name in ("etcd", "kube-apiserver"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    assert find_tools_bin({"KUBEBUILDER_ASSETS": str(tmp_path)}) == tmp_path
