"""Config loading: examples load, defaults equal Fleet's, and bad files are refused with line and path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller import config as cfg
from controller.cli import main as cli_main
from controller.providers import PROVIDER_NAMES
from controller.providers.github import GitHubProvider

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    loaded = cfg.load_file(path)
    assert loaded.routes, "every config serves at least one route"


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"minimal.yaml", "example.yaml", "multi-tenant.yaml"}


def test_full_example_uses_every_schema_field() -> None:
    """The annotated example is meant to show every field: walk the schema and look for each key."""
    text = (ROOT / "config" / "example.yaml").read_text()
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if f"{key}:" not in text:
                missing.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
            if isinstance(sub.get("items"), dict):
                walk(sub["items"], f"{path}.{key}[]")

    walk(cfg.schema(), "$")
    assert missing == []


def test_empty_file_is_fleets_defaults() -> None:
    c = cfg.load_text("", "empty.yaml")
    assert c.secrets.source == cfg.SecretSource(name="gitjob-webhook", namespace="")
    assert [(r.path, r.prefix) for r in c.routes] == [("/", True)]  # every path, as Fleet
    assert c.polling.webhook_interval == "1h"
    assert c.polling.default_interval == "15s"
    assert c.polling.manage is True
    assert all(p.enabled and not p.allow_unauthenticated for p in c.providers)
    assert c.secrets.gitrepo_secrets is True
    assert c.route_for("/") is not None
    assert c.route_for("/gitjob") is not None
    assert c.route_for("/gitjob/anything/below") is not None
    assert c.route_for("/gitjobx") is not None  # every path, as Fleet's own receiver
    assert c.route_for("/other") is not None


def test_only_comments_is_defaults_too() -> None:
    assert cfg.load_text("# nothing\n", "c.yaml").routes == cfg.default_config().routes


def test_every_schema_property_has_description_and_default() -> None:
    problems: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        required = set(node.get("required", []))
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                problems.append(f"{path}.{key}: no description")
            if key not in required and "default" not in sub:
                problems.append(f"{path}.{key}: no default")
            walk(sub, f"{path}.{key}")
            if isinstance(sub.get("items"), dict):
                walk(sub["items"], f"{path}.{key}[]")

    walk(cfg.schema(), "$")
    assert problems == []


def test_package_schema_is_the_source_schema() -> None:
    shipped = cfg.schema()
    source = json.loads((ROOT / "schema" / "config.schema.json").read_text())
    assert shipped == source


def test_the_schema_has_one_block_per_registered_provider_with_its_own_options() -> None:
    """The provider blocks are generated (tools/gen_config_schema.py): the committed schema is current,
    names exactly the registry's providers, and each block accepts its provider's own option."""
    from tools.gen_config_schema import main as gen_config_schema

    assert gen_config_schema(["--check"]) == 0, "run `make chart-schema`"
    blocks = cfg.schema()["properties"]["providers"]["properties"]
    assert tuple(blocks) == PROVIDER_NAMES
    config = cfg.load_text(
        "providers:\n  github: {acceptSha1: true}\n  bitbucket-server: {baseUrl: https://bb.example.com}\n", "t"
    )
    github = config.provider("github").implementation
    assert isinstance(github, GitHubProvider)
    assert github.accept_sha1 is True
    assert config.provider("bitbucket-server").base_url == "https://bb.example.com"
    with pytest.raises(cfg.ConfigError, match="acceptSha1"):
        cfg.load_text("providers:\n  gitlab: {acceptSha1: true}\n", "t")  # GitHub's option only


# Each case: (name, YAML, expected line, expected JSON path, a fragment of the message).
INVALID: list[tuple[str, str, int, str, str]] = [
    ("unknown top-level key", "provders: {}\n", 1, "$.provders", "did you mean 'providers'"),
    ("unknown provider", "providers:\n  githb: {}\n", 2, "$.providers.githb", "did you mean 'github'"),
    (
        "provider flag wrong type",
        "providers:\n  github:\n    enabled: yes please\n",
        3,
        "$.providers.github.enabled",
        "expected boolean",
    ),
    (
        "unknown provider field",
        "providers:\n  gitlab:\n    acceptSha1: true\n",
        3,
        "$.providers.gitlab.acceptSha1",
        "unknown field",
    ),
    ("routes not a list", "routes: /hooks\n", 1, "$.routes", "expected array"),
    ("empty routes", "routes: []\n", 1, "$.routes", "should be non-empty"),
    ("route without path", "routes:\n  - prefix: true\n", 2, "$.routes[0]", "'path' is required"),
    ("relative route path", "routes:\n  - path: /ok\n  - path: hooks\n", 3, "$.routes[1].path", "expected form"),
    ("route typo", "routes:\n  - path: /a\n    prefx: true\n", 3, "$.routes[0].prefx", "did you mean 'prefix'"),
    (
        "route unknown provider",
        "routes:\n  - path: /a\n    providers: [github, gitee]\n",
        3,
        "$.routes[0].providers[1]",
        "must be one of",
    ),
    (
        "route bad namespace",
        "routes:\n  - path: /a\n    namespaces: [Team_A]\n",
        3,
        "$.routes[0].namespaces[0]",
        "expected form",
    ),
    ("duplicate route", "routes:\n  - path: /a\n  - path: /a\n", 3, "$.routes[1].path", "already defined"),
    (
        "secret source with both kinds",
        "secrets:\n  source:\n    directory: /x\n    kubernetes: {name: s}\n",
        2,
        "$.secrets.source",
        "exactly one",
    ),
    ("secret source empty", "secrets:\n  source: {}\n", 2, "$.secrets.source", "exactly one"),
    (
        "secret name invalid",
        "secrets:\n  source:\n    kubernetes: {name: Bad_Name}\n",
        3,
        "$.secrets.source.kubernetes.name",
        "expected form",
    ),
    ("cache seconds negative", "secrets:\n  cacheSeconds: -1\n", 2, "$.secrets.cacheSeconds", "minimum"),
    (
        "polling interval not a duration",
        "polling:\n  webhookInterval: one hour\n",
        2,
        "$.polling.webhookInterval",
        "expected form",
    ),
    ("polling interval zero", "polling:\n  webhookInterval: '0'\n", 2, "$.polling.webhookInterval", "longer than 0"),
    ("limits too small", "limits:\n  maxBodyBytes: 10\n", 2, "$.limits.maxBodyBytes", "minimum"),
    (
        "limits float where int",
        "limits:\n  maxConcurrentRequests: 2.5\n",
        2,
        "$.limits.maxConcurrentRequests",
        "expected integer",
    ),
    (
        "mapping without repo",
        "mappings:\n  - aliases: [https://x.example.com/a/b]\n",
        2,
        "$.mappings[0]",
        "'repo' is required",
    ),
    (
        "mapping repo not a URL",
        "mappings:\n  - repo: 'not a url'\n    aliases: [https://a.example.com/o/r]\n",
        2,
        "$.mappings[0].repo",
        "not a repository URL",
    ),
    ("mapping that does nothing", "mappings:\n  - repo: https://github.com/o/r\n", 2, "$.mappings[0]", "does nothing"),
    (
        "mapping gitRepo missing name",
        "mappings:\n  - repo: https://github.com/o/r\n    gitRepos:\n      - namespace: a\n",
        4,
        "$.mappings[0].gitRepos[0]",
        "'name' is required",
    ),
    (
        "selector bad operator",
        "exclusions:\n  selector:\n    matchExpressions:\n      - key: a\n        operator: Equals\n",
        5,
        "$.exclusions.selector.matchExpressions[0].operator",
        "must be one of",
    ),
    (
        "route namespace not watched",
        "watch:\n  namespaces: [a]\nroutes:\n  - path: /x\n    namespaces: [b]\n",
        5,
        "$.routes[0].namespaces",
        "not watched",
    ),
    (
        "route names disabled provider",
        "providers:\n  gogs: {enabled: false}\nroutes:\n  - path: /x\n    providers: [gogs]\n",
        5,
        "$.routes[0].providers",
        "disabled",
    ),
    (
        "all providers disabled",
        "providers:\n" + "".join(f"  {p}: {{enabled: false}}\n" for p in PROVIDER_NAMES),
        1,
        "$.providers",
        "every provider is disabled",
    ),
    ("top level is a list", "- a\n- b\n", 1, "$", "expected object"),
    ("duplicate key", "polling:\n  manage: true\n  manage: false\n", 3, "$", "duplicate key"),
    ("YAML syntax error", "routes:\n  - path: /a\n   bad: [\n", 3, "$", "invalid YAML"),
    (
        "sshHostAliases value wrong type",
        "watch:\n  sshHostAliases:\n    ssh.x.example.com: 5\n",
        3,
        "$.watch.sshHostAliases.ssh.x.example.com",
        "expected string",
    ),
]


@pytest.mark.parametrize(
    ("yaml_text", "line", "path", "fragment"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID]
)
def test_invalid_config_is_rejected_with_line_and_path(yaml_text: str, line: int, path: str, fragment: str) -> None:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load_text(yaml_text, "bad.yaml")
    matching = [p for p in caught.value.problems if p.path == path]
    assert matching, f"no problem at {path}: {caught.value}"
    problem = matching[0]
    assert problem.line == line, str(problem)
    assert fragment in problem.message, str(problem)
    assert str(problem).startswith(f"bad.yaml:{line}: {path}: ")


def test_at_least_twenty_kinds_of_invalid_config() -> None:
    assert len({c[0] for c in INVALID}) >= 20


def test_all_errors_are_reported_at_once() -> None:
    text = "provders: {}\nlimits:\n  maxBodyBytes: big\nrouters: []\n"
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load_text(text, "many.yaml")
    paths = [p.path for p in caught.value.problems]
    assert paths == ["$.provders", "$.limits.maxBodyBytes", "$.routers"]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="cannot read file"):
        cfg.load_file(tmp_path / "absent.yaml")


def test_not_utf8_is_a_config_error() -> None:
    with pytest.raises(cfg.ConfigError, match="not UTF-8"):
        cfg.load_text(b"routes: \xff\xfe\n", "bin.yaml")


def test_yaml_tags_are_not_executed() -> None:
    with pytest.raises(cfg.ConfigError):
        cfg.load_text("routes: !!python/object/apply:os.system ['echo hacked']\n", "evil.yaml")


def test_most_specific_route_wins() -> None:
    c = cfg.load_text(
        "routes:\n  - path: /hooks\n    prefix: true\n  - path: /hooks/team-a\n    prefix: true\n"
        "    namespaces: [team-a]\n",
        "r.yaml",
    )
    route = c.route_for("/hooks/team-a/github")
    assert route is not None
    assert route.path == "/hooks/team-a"
    other = c.route_for("/hooks/else")
    assert other is not None
    assert other.path == "/hooks"


def test_typed_objects_are_immutable() -> None:
    c = cfg.default_config()
    with pytest.raises(AttributeError):
        c.routes = ()  # type: ignore[misc]  # the point: a frozen Config refuses assignment


def test_check_config_cli_reports_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("polling:\n  webhookInterval: 30m\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("polling:\n  webhookInterval: soon\nroutes: []\n")
    assert cli_main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: ok: ")
    assert cli_main(["check-config", str(good), str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}:2: $.polling.webhookInterval: " in err[0]
    assert f"{bad}:3: $.routes: " in err[1]
