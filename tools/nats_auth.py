"""NATS decentralized authentication for tests: an operator, one account and users, as `nsc` makes them.

Why hand-made: `nsc` is another Go tool to build, and what it writes is small and documented (nkeys
ed25519 keys, JWTs signed with `alg: ed25519-nkey`, `.creds` files). `ServerAuth.server_config()` is the
nats-server block (operator JWT, a system account, memory resolver with both accounts preloaded, JetStream
allowed for the account); `ServerAuth.user_creds(...)` writes a `.creds` file for one user, the file
`--relay-credentials-file` takes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Key:
    """One nkey: its seed (secret) and public key."""

    seed: bytes
    public: str

    @classmethod
    def new(cls, prefix: int) -> Key:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(seed).public_key.decode())

    def sign(self, data: bytes) -> bytes:
        signature: bytes = nkeys.from_seed(self.seed).sign(data)
        return signature


def jwt(issuer: Key, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (v2 claims) for `subject`, signed by `issuer`."""
    claims: dict[str, Any] = {"iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject, "nats": nats}
    claims["jti"] = (
        base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode().rstrip("=")
    )
    head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims).encode())
    return f"{head}.{body}.{_b64(issuer.sign(f'{head}.{body}'.encode()))}"


UNLIMITED_ACCOUNT = {
    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1,
    "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
}  # fmt: skip


class ServerAuth:
    """An operator and one JetStream-enabled account; users are issued on demand."""

    def __init__(self) -> None:
        self.operator = Key.new(nkeys.PREFIX_BYTE_OPERATOR)
        self.account = Key.new(nkeys.PREFIX_BYTE_ACCOUNT)
        self.system = Key.new(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream in operator mode needs a system account
        self.operator_jwt = jwt(
            self.operator, self.operator.public, "test-operator", {"type": "operator", "version": 2}
        )
        self.account_jwt = jwt(
            self.operator,
            self.account.public,
            "fleet-webhook",
            {"limits": UNLIMITED_ACCOUNT, "type": "account", "version": 2},
        )
        self.system_jwt = jwt(self.operator, self.system.public, "SYS", {"type": "account", "version": 2})

    def server_config(self) -> str:
        """The nats-server config block for this operator and account."""
        return (
            f'operator: "{self.operator_jwt}"\n'
            f'system_account: "{self.system.public}"\n'
            "resolver: MEMORY\n"
            f'resolver_preload: {{\n  {self.account.public}: "{self.account_jwt}"\n'
            f'  {self.system.public}: "{self.system_jwt}"\n}}\n'
        )

    def user_creds(self, path: Path, name: str, publish: list[str] | None = None) -> Path:
        """Write a `.creds` file for a new user of the account (`publish`: its allowed subjects, else all)."""
        user = Key.new(nkeys.PREFIX_BYTE_USER)
        permissions: dict[str, Any] = {"pub": {"allow": publish} if publish is not None else {}, "sub": {}}
        token = jwt(
            self.account,
            user.public,
            name,
            {**permissions, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2},
        )
        path.write_text(
            f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n------END USER NKEY SEED------\n"
        )
        path.chmod(0o600)
        return path
