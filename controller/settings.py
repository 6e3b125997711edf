"""Process settings: knobs fixed for the life of the process, from environment and CLI flags.

Everything a platform team changes at run time lives in the *config* file instead (config.py).
All variables share the prefix FLEET_WEBHOOK_, e.g. FLEET_WEBHOOK_PORT=8080.
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "FLEET_WEBHOOK_"


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
    shared_order: bool = Field(
        default=False,
        description=(
            "Keep each GitRepo's recent delivery ids and commit order in its annotation "
            "fleet-webhook.cattle.io/webhook-ledger instead of in this process only, so several replicas "
            "(or a restarted one) never move webhookCommit back. Needs patch on gitrepos; the chart sets it."
        ),
    )
