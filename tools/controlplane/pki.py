"""Certificates and kubeconfig for a throw-away API server: a CA, serving and client certificates."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tools.controlplane.processes import LOOPBACK

if TYPE_CHECKING:
    pass

# --------------------------------------------------------------------------------------------------
# PKI

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CertKey:
    """A certificate and its private key (PEM helpers included)."""

    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    # ECDSA P-256: generated in microseconds (RSA-2048 takes ~100 ms each on a slow core).
    return ec.generate_private_key(ec.SECP256R1())


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=days)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """Digital signature for every certificate; certificate and CRL signing for CAs only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def new_ca(common_name: str, *, days: int = 30) -> CertKey:
    key = _new_ec_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity(days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKey(cert, key)


def issue_cert(
    ca: CertKey,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = 30,
) -> CertKey:
    """Issue a leaf certificate signed by `ca`. For client certs Kubernetes reads CN as the user name
    and each O as a group."""
    key = _new_ec_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    not_before, not_after = _validity(days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),  # the cert's key, typed
            critical=False,
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return CertKey(builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    """All key material of one control plane, plus the paths it was written to."""

    serving_ca: CertKey
    serving: CertKey
    client_ca: CertKey
    admin: CertKey
    sa_key: rsa.RSAPrivateKey
    ca_file: Path
    serving_cert_file: Path
    serving_key_file: Path
    client_ca_file: Path
    admin_cert_file: Path
    admin_key_file: Path
    sa_key_file: Path
    sa_pub_file: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def generate_pki(directory: Path) -> Pki:
    """Create the CA, apiserver serving cert, client CA, admin client cert and SA signing key in
    `directory` (which must exist)."""
    serving_ca = new_ca("fleet-webhook-test-ca")
    serving = issue_cert(
        serving_ca,
        "kube-apiserver",
        dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
        ip_addresses=(LOOPBACK, "10.0.0.1"),
        server=True,
    )
    client_ca = new_ca("fleet-webhook-test-client-ca")
    admin = issue_cert(client_ca, "admin", organizations=("system:masters",), client=True)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths = {
        "ca_file": directory / "ca.crt",
        "serving_cert_file": directory / "apiserver.crt",
        "serving_key_file": directory / "apiserver.key",
        "client_ca_file": directory / "client-ca.crt",
        "admin_cert_file": directory / "admin.crt",
        "admin_key_file": directory / "admin.key",
        "sa_key_file": directory / "sa-signer.key",
        "sa_pub_file": directory / "sa-signer.pub",
    }
    paths["ca_file"].write_bytes(serving_ca.cert_pem)
    paths["serving_cert_file"].write_bytes(serving.cert_pem)
    _write_private(paths["serving_key_file"], serving.key_pem)
    paths["client_ca_file"].write_bytes(client_ca.cert_pem)
    paths["admin_cert_file"].write_bytes(admin.cert_pem)
    _write_private(paths["admin_key_file"], admin.key_pem)
    _write_private(
        paths["sa_key_file"],
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    paths["sa_pub_file"].write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Pki(serving_ca, serving, client_ca, admin, sa_key, **paths)


# --------------------------------------------------------------------------------------------------
# Kubeconfig


def b64(data: bytes) -> str:
    """Base64 text, as kubeconfig fields hold certificates."""
    return base64.b64encode(data).decode("ascii")


def write_kubeconfig(
    path: Path, *, server: str, ca_pem: bytes, user_name: str, user: dict[str, str], namespace: str = ""
) -> Path:
    """Write a self-contained kubeconfig (everything embedded, mode 0600). JSON is valid YAML."""
    context: dict[str, str] = {"cluster": "fleet-webhook-test", "user": user_name}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "fleet-webhook-test",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)},
            }
        ],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": user_name, "context": context}],
        "current-context": user_name,
    }
    _write_private(path, json.dumps(config, indent=2).encode())
    return path
