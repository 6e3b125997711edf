"""Command line: `fleet-webhook serve | check-config | explain`.

Flags of `serve` are generated from the Settings model, so every setting has exactly one flag and
one environment variable (FLEET_WEBHOOK_<NAME>), documented in one place.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from controller import __version__
from controller.config import ConfigError, load_file
from controller.index import GitRepoInfo
from controller.providers import PROVIDER_NAMES
from controller.settings import ENV_PREFIX, Settings


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        default = field.default.value if isinstance(field.default, enum.Enum) else field.default
        help_text = f"{field.description} [env {env}; default {default!r}]"
        choices = None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            choices = [m.value for m in annotation]
        parser.add_argument(flag, dest=name, default=None, choices=choices, help=help_text, metavar=None)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to render --help in the docs)."""
    parser = argparse.ArgumentParser(
        prog="fleet-webhook",
        description="Receives git provider webhooks and records the pushed commit on Fleet GitRepos.",
    )
    parser.add_argument("--version", action="version", version=f"fleet-webhook {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the webhook receiver",
        description="Run the webhook receiver. Every flag can also be set through its environment variable.",
    )
    _add_settings_flags(serve)
    check = sub.add_parser(
        "check-config",
        help="validate config files (exit 1 listing every error)",
        description="Validate config files: one summary line per valid file; file:line: path: message per error.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    ex = sub.add_parser(
        "explain",
        help="show which GitRepos a payload would update, and why not the others",
        description=(
            "Run the receiver's matching on a saved payload (e.g. copied from the provider's delivery log), "
            "against the cluster's GitRepos or a YAML file of them. Nothing is written."
        ),
    )
    ex.add_argument("--provider", required=True, choices=sorted(PROVIDER_NAMES), help="who sent the payload")
    ex.add_argument("--payload", required=True, type=Path, metavar="FILE", help="the JSON body of the delivery")
    ex.add_argument("--config", type=Path, metavar="FILE", help="config file (default: built-in defaults)")
    ex.add_argument(
        "--gitrepos",
        type=Path,
        metavar="FILE",
        help="YAML of GitRepos (kubectl get gitrepos -A -o yaml); default: cluster",
    )
    ex.add_argument("--kubeconfig", type=Path, metavar="FILE", help="kubeconfig when reading GitRepos from the cluster")
    ex.add_argument("--route", default="/", help="the path the provider posts to (route namespace limits apply)")
    ex.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra request header (repeatable)"
    )
    ex.add_argument("--output", choices=["text", "json"], default="text")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from flags (when given) over environment variables over defaults."""
    given: dict[str, Any] = {
        name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None
    }
    return Settings(**given)


def check_config(files: Sequence[Path]) -> int:
    """Validate each file; print a summary or every problem. Exit code 0 only if all are valid."""
    status = 0
    for path in files:
        try:
            config = load_file(path)
        except ConfigError as exc:
            status = 1
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        print(f"{path}: ok: {config.summary()}")
    return status


def run_serve(args: argparse.Namespace) -> int:
    """Start the receiver; configuration problems exit 2 with a clear message."""
    from controller import logs
    from controller.runtime import serve

    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            loc = ".".join(str(x) for x in error["loc"])
            print(
                f"invalid setting {loc} (flag --{loc.replace('_', '-')}, env {ENV_PREFIX}{loc.upper()}): "
                f"{error['msg']}",
                file=sys.stderr,
            )
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        return asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"config rejected:\n{exc}", file=sys.stderr)
        return 2


def run_explain(args: argparse.Namespace) -> int:
    """Explain a payload; exit 0 when it would update something, 1 when not, 2 on bad input or no push."""
    from controller import explain
    from controller.config import default_config
    from controller.deliveries import PushEvent
    from controller.providers.base import PayloadError, UnsupportedMediaType

    try:
        config = load_file(args.config) if args.config else default_config()
        raw = args.payload.read_bytes()
        base_url = config.bitbucket_server_base_url(config.route_for(args.route))
        parsed = explain.parse_delivery(args.provider, raw, args.header, base_url)
        events = [item for item in parsed if isinstance(item, PushEvent)]
        if args.gitrepos:
            gitrepos = explain.load_gitrepos(args.gitrepos.read_text())
        else:
            gitrepos = _cluster_gitrepos(args.kubeconfig)
    except ConfigError as exc:
        print(f"config rejected:\n{exc}", file=sys.stderr)
        return 2
    except (PayloadError, UnsupportedMediaType) as exc:
        print(f"payload not understood as a {args.provider} push: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except Exception as exc:  # the cluster could not be listed: say so instead of a traceback
        print(f"cannot list GitRepos from the cluster: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if config.route_for(args.route) is None:
        print(f"no route of the config serves {args.route!r} (the receiver would answer 404)", file=sys.stderr)
        return 2
    if not events:
        print(explain.why_not_a_push(parsed), file=sys.stderr)
        return 2
    results = explain.explain(events, gitrepos, config, args.route)
    if args.output == "json":
        print(explain.render_json(results))
    else:
        print(explain.render_text(results, args.route))
        polling = config.polling
        if polling.manage:
            print(
                f"polling: a GitRepo without spec.pollingInterval polls every {polling.default_interval} (Fleet's "
                f"default) until a webhook reaches it; then it is set to {polling.webhook_interval}"
            )
    return 0 if any(r.would_update or r.unchanged for r in results) else 1


def _cluster_gitrepos(kubeconfig: Path | None) -> list[GitRepoInfo]:
    """Every GitRepo of the cluster, listed as the watch lists them (in pages, over aiohttp)."""
    from controller.index import gitrepo_info
    from controller.kube import Kube, load_api_client

    async def listed() -> list[GitRepoInfo]:
        kube = Kube(load_api_client(kubeconfig))
        try:
            items, _ = await kube.list_gitrepos(None, convert=gitrepo_info)
        finally:
            kube.close()  # on the loop that made its connections
        return [i for i in items if i is not None]

    return asyncio.run(listed())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fleet-webhook` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "check-config":
        return check_config(args.files)
    if args.command == "explain":
        return run_explain(args)
    return run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
