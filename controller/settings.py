"""Process settings: knobs fixed for the life of the process, from environment and CLI flags.

Everything a platform team changes at run time lives in the *config* file instead (config.py).
All variables share the prefix FLEET_WEBHOOK_, e.g. FLEET_WEBHOOK_PORT=8080.
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FLEET_WEBHOOK_"
NATS_SCHEMES = ("nats", "tls")


class LogFormat(enum.StrEnum):
    """How log lines are written."""

    JSON = "json"
    TEXT = "text"  # key=value pairs, for humans at a terminal


class LogLevel(enum.StrEnum):
    """Minimum level of log lines."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Settings(BaseSettings):
    """Process settings; see `fleet-webhook serve --help` for the flag of each."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    config: Path | None = Field(
        default=None,
        description="Config file (YAML). Watched and hot-reloaded. Unset: built-in defaults (Fleet's behaviour).",
    )
    host: str = Field(default="0.0.0.0", description="Address to listen on.")  # noqa: S104 - a server
    port: int = Field(default=8080, ge=1, le=65535, description="Port to listen on (Fleet's receiver uses 8080).")
    probe_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "Serve /healthz, /readyz and /metrics on this port only, not on the webhook port, so an Ingress "
            "in front of the webhooks cannot expose them (the chart uses 8081). Unset: on the webhook port."
        ),
    )
    namespace: str = Field(
        default="cattle-fleet-system",
        description="The controller's own namespace: where the default secret `gitjob-webhook` is read.",
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file. Unset: in-cluster service account, else $KUBECONFIG / ~/.kube/config.",
    )
    log_level: LogLevel = Field(default=LogLevel.INFO, description="Minimum log level.")
    log_format: LogFormat = Field(default=LogFormat.JSON, description="Log line format: json or text.")
    spool_dir: Path | None = Field(
        default=None,
        description=(
            "Folder for request bodies larger than limits.spoolAfterBytes while they are authenticated "
            "(unnamed files, gone when closed). Unset: the system temp folder; the chart mounts an emptyDir."
        ),
    )
    shutdown_delay_seconds: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description=(
            "On SIGTERM, keep serving this long with /readyz failing before closing the listener, so "
            "endpoints are updated first (the chart sets 5)."
        ),
    )
    shutdown_grace_seconds: float = Field(
        default=20.0, ge=0, le=600, description="On SIGTERM, time allowed for in-flight deliveries to finish."
    )
    event_interval_seconds: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description=(
            "At most one Kubernetes Event per GitRepo and reason in this many seconds: the first at once, "
            "later ones folded into one sent when the interval ends, so a push costs one API write per "
            "GitRepo. 0: one Event per write."
        ),
    )
    api_warm_connections: int = Field(
        default=8,
        ge=0,
        le=32,
        description=(
            "Connections to the API server kept open for GitRepo writes while nothing is written (one GET "
            "/version on each every 30 s), so a push after a quiet spell pays no TCP and TLS handshake. 0: none."
        ),
    )
    shared_order: bool = Field(
        default=False,
        description=(
            "Keep each GitRepo's recent delivery ids and commit order in its annotation "
            "fleet-webhook.cattle.io/webhook-ledger instead of in this process only, so several replicas "
            "(or a restarted one) never move webhookCommit back. Needs patch on gitrepos; the chart sets it."
        ),
    )

    # --- relay mode (docs/relay.md): an edge that queues deliveries, a cluster that pulls them ---------
    relay_publish: str | None = Field(
        default=None,
        description=(
            "Relay edge: NATS server URL(s), comma-separated (nats:// or tls://). Deliveries are admitted and, "
            "where this process holds the secret, verified, then stored in the JetStream stream and answered "
            "202 once the broker acknowledged them. No Kubernetes API is used. Exclusive with --relay-consume."
        ),
    )
    relay_consume: str | None = Field(
        default=None,
        description=(
            "Relay consumer: NATS server URL(s), comma-separated. Connects outward only, pulls deliveries from "
            "the stream with a durable consumer and runs each through the normal pipeline with this cluster's "
            "secrets; acked once the answer is final, redelivered otherwise."
        ),
    )
    relay_stream: str = Field(
        default="FLEET_WEBHOOK",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="JetStream stream holding relayed deliveries (created or updated by the edge).",
    )
    relay_subject: str = Field(
        default="fleet-webhook.deliveries",
        pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
        description="Subject the edge publishes to and the stream captures (no wildcards).",
    )
    relay_durable: str = Field(
        default="fleet-webhook",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Name of the consumer's durable pull consumer: its position survives restarts of either side.",
    )
    relay_max_age_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        le=365 * 24 * 3600.0,
        description=(
            "How long the stream keeps a delivery the cluster has not taken yet: the longest the cluster may "
            "be offline without losing one (edge; default 7 days)."
        ),
    )
    relay_max_bytes: int = Field(
        default=1024**3,
        ge=1024 * 1024,
        description=(
            "Most bytes the stream holds (edge). When full, new deliveries are refused (503, the host may "
            "retry) rather than old ones dropped: nothing already acknowledged is ever discarded early."
        ),
    )
    relay_ack_wait_seconds: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description=(
            "Consumer: a fetched delivery not acknowledged within this time is redelivered (a consumer that "
            "crashed mid-delivery). Keep it above the config's limits.requestTimeoutSeconds."
        ),
    )
    relay_max_deliver: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description=(
            "Consumer: attempts per delivery whose answer stays 5xx (a GitRepo write failing) before it is "
            "given up (logged and terminated, never retried forever)."
        ),
    )
    relay_publish_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Edge: how long to wait for the broker's acknowledgement before answering 503 (retry).",
    )
    relay_credentials_file: Path | None = Field(
        default=None,
        description="NATS credentials file (.creds: user JWT + nkey seed) for the broker; mounted from a Secret.",
    )
    relay_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle (PEM) that signed the NATS server's certificate (tls:// URLs)."
    )
    relay_tls_cert_file: Path | None = Field(
        default=None, description="Client certificate (PEM) for NATS mutual TLS; needs --relay-tls-key-file."
    )
    relay_tls_key_file: Path | None = Field(default=None, description="Private key (PEM) of --relay-tls-cert-file.")

    @field_validator("relay_publish", "relay_consume")
    @classmethod
    def _nats_urls(cls, value: str | None) -> str | None:
        """Catch a wrong URL at start-up with its flag named, not as a connection error later."""
        if value is None:
            return None
        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls:
            raise ValueError("give at least one NATS URL, e.g. nats://nats.example.com:4222")
        for url in urls:
            scheme, sep, rest = url.partition("://")
            if not sep or scheme not in NATS_SCHEMES or not rest:
                shown = f"{scheme}://..." if sep else "a value without a scheme"  # never echo a password in the URL
                raise ValueError(f"{shown} is not a NATS URL (expected nats://host:port or tls://host:port)")
        return ",".join(urls)

    @field_validator("relay_consume")
    @classmethod
    def _one_role(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A process is the edge or the consumer: both at once would consume its own queue."""
        if value is not None and info.data.get("relay_publish") is not None:
            raise ValueError("set either --relay-publish (edge) or --relay-consume (cluster), not both")
        return value

    @field_validator("relay_tls_key_file")
    @classmethod
    def _cert_and_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """A client certificate is useless without its key, and the other way round."""
        if (value is None) != (info.data.get("relay_tls_cert_file") is None):
            raise ValueError("--relay-tls-cert-file and --relay-tls-key-file go together")
        return value

    @property
    def relay_urls(self) -> list[str]:
        """The NATS URLs of whichever role is set (empty: no relay)."""
        value = self.relay_publish or self.relay_consume
        return value.split(",") if value else []
