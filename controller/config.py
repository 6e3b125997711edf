"""The user's config file: YAML -> JSON Schema -> typed, immutable objects.

This is the only module that looks inside the raw config document. Everything else receives a
`Config` and reads attributes. Defaults come from the schema's `default` keywords, so the schema
in `schema/config.schema.json` is the single source of truth for both validation and defaults.

Errors are collected, not raised one by one: a user fixing a file sees every problem at once, as
`file:line: json.path: message`.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from controller.durations import FLEET_INTERVAL_MAX_SECONDS, parse_duration
from controller.providers import PROVIDER_NAMES, Provider, by_name

MAX_CONFIG_BYTES = 4 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Errors


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, located as precisely as the document allows."""

    source: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}"


class ConfigError(Exception):
    """A config file was rejected; `problems` lists every reason."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------------------------
# Typed config


@dataclass(frozen=True, slots=True)
class SecretSource:
    """A Kubernetes Secret (`name` in `namespace`, "" = controller's) or a folder of key files."""

    name: str = ""
    namespace: str = ""
    directory: str = ""

    @property
    def is_directory(self) -> bool:
        """Whether keys are files in a folder rather than data of a Kubernetes Secret."""
        return bool(self.directory)

    def describe(self) -> str:
        """Human description for logs and errors (never includes a value)."""
        if self.directory:
            return f"directory {self.directory}"
        return f"secret {self.namespace or '<controller namespace>'}/{self.name}"


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Switches for one provider."""

    name: str
    enabled: bool
    allow_unauthenticated: bool
    implementation: Provider  # the provider as this block's options shape it (`Provider.configured`)
    base_url: str = ""  # Bitbucket Server: builds the repository URL when a payload names none


@dataclass(frozen=True, slots=True)
class SecretsConfig:
    """Where secrets come from and how long they are cached."""

    source: SecretSource
    gitrepo_secrets: bool
    previous_suffix: str
    cache_seconds: float


@dataclass(frozen=True, slots=True)
class Route:
    """An HTTP path that accepts deliveries, with its optional provider/namespace limits."""

    path: str
    prefix: bool
    providers: frozenset[str]
    namespaces: frozenset[str]
    secret: SecretSource | None
    bitbucket_server_base_url: str = ""

    def serves(self, path: str) -> bool:
        """Whether a request path belongs to this route."""
        if path == self.path:
            return True
        if not self.prefix:
            return False
        base = self.path.rstrip("/")
        return path.startswith(base + "/")

    def allows_provider(self, provider: str) -> bool:
        """Whether deliveries of `provider` are accepted here."""
        return not self.providers or provider in self.providers

    def allows_namespace(self, namespace: str) -> bool:
        """Whether GitRepos in `namespace` may be updated through this route."""
        return not self.namespaces or namespace in self.namespaces


@dataclass(frozen=True, slots=True)
class Requirement:
    """One set-based label selector requirement."""

    key: str
    operator: str
    values: frozenset[str]

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Kubernetes semantics of In/NotIn/Exists/DoesNotExist."""
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A label selector; an empty one matches nothing (so a missing selector never selects all)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        """True when the selector has no terms."""
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every term holds for `labels`."""
        if self.empty:
            return False
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )


@dataclass(frozen=True, slots=True)
class GitRepoRef:
    """A GitRepo by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class RepoMapping:
    """Extra targets for pushes to `repo`: mirrors, explicit GitRepos, label-selected GitRepos."""

    repo: str
    aliases: tuple[str, ...]
    gitrepos: tuple[GitRepoRef, ...]
    selector: LabelSelector
    exclude: frozenset[GitRepoRef]
    # The monorepo paths rule for every GitRepo a push to `repo` reaches (an annotation overrides it).
    trigger_on_paths: bool = False


@dataclass(frozen=True, slots=True)
class Exclusions:
    """GitRepos that no webhook ever updates."""

    gitrepos: frozenset[GitRepoRef] = frozenset()
    namespaces: frozenset[str] = frozenset()
    selector: LabelSelector = field(default_factory=LabelSelector)

    @property
    def empty(self) -> bool:
        """Nothing is excluded (the usual case: the rule is then skipped, not evaluated per GitRepo)."""
        return not (self.gitrepos or self.namespaces) and self.selector.empty

    def excludes(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        """Whether this GitRepo is excluded globally."""
        return (
            namespace in self.namespaces
            or GitRepoRef(namespace, name) in self.gitrepos
            or self.selector.matches(labels)
        )


@dataclass(frozen=True, slots=True)
class WatchConfig:
    """Which GitRepos are indexed and how their URLs are compared."""

    namespaces: frozenset[str]
    case_sensitive_paths: bool
    ssh_host_aliases: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PollingPolicy:
    """Management of `spec.pollingInterval` on GitRepos reached by webhooks."""

    manage: bool
    default_interval: str
    webhook_interval: str
    fallback_after_seconds: float


@dataclass(frozen=True, slots=True)
class Limits:
    """Protection of the receiver against big, slow or repeated deliveries."""

    max_body_bytes: int
    read_timeout_seconds: float
    request_timeout_seconds: float
    max_concurrent_requests: int
    body_memory_bytes: int
    spool_after_bytes: int
    spool_bytes: int
    unverified_body_share: float
    unverified_parse_bytes: int
    dedupe_seconds: int
    dedupe_entries: int
    max_gitrepos_per_delivery: int


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated config; replaced atomically on reload, never edited."""

    source: str
    providers: tuple[ProviderConfig, ...]
    secrets: SecretsConfig
    routes: tuple[Route, ...]
    mappings: tuple[RepoMapping, ...]
    exclusions: Exclusions
    watch: WatchConfig
    polling: PollingPolicy
    limits: Limits

    def provider(self, name: str) -> ProviderConfig:
        """Settings of one provider by its config key."""
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)

    def bitbucket_server_base_url(self, route: Route | None) -> str:
        """The Bitbucket Server base URL for deliveries on `route`: the route's own, else the provider's."""
        if route is not None and route.bitbucket_server_base_url:
            return route.bitbucket_server_base_url
        return self.provider("bitbucket-server").base_url

    def route_for(self, path: str) -> Route | None:
        """The most specific route serving `path` (exact beats prefix, longer prefix beats shorter)."""
        best: Route | None = None
        for route in self.routes:
            if not route.serves(path):
                continue
            if route.path == path:
                return route
            if best is None or len(route.path) > len(best.path):
                best = route
        return best

    def summary(self) -> str:
        """One line describing what this config does, for `check-config` and reload logs."""
        enabled = [p.name for p in self.providers if p.enabled]
        return (
            f"{len(enabled)} providers ({', '.join(enabled)}), {len(self.routes)} routes "
            f"({', '.join(r.path + ('/*' if r.prefix else '') for r in self.routes)}), "
            f"{len(self.mappings)} mappings, polling {'managed' if self.polling.manage else 'untouched'}"
        )


# --------------------------------------------------------------------------------------------
# Schema


@functools.cache
def schema() -> dict[str, Any]:
    """The config JSON Schema shipped with the package (a copy of schema/config.schema.json)."""
    text: str = resources.files("controller.data").joinpath("config.schema.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(schema())


def with_defaults(document: Any, node_schema: Mapping[str, Any] | None = None) -> Any:
    """A copy of `document` with every absent property filled from the schema's `default`."""
    node_schema = schema() if node_schema is None else node_schema
    if isinstance(document, dict):
        result = dict(document)
        for key, sub in node_schema.get("properties", {}).items():
            if key not in result and "default" in sub and sub["default"] is not None:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = with_defaults(result[key], sub)
        return result
    if isinstance(document, list) and isinstance(node_schema.get("items"), dict):
        return [with_defaults(item, node_schema["items"]) for item in document]
    return document


# --------------------------------------------------------------------------------------------
# Loading


def load_file(path: Path | str) -> Config:
    """Read, validate and convert a config file. Raises ConfigError listing every problem."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigProblem(source, None, "$", f"cannot read file: {exc.strerror or exc}")]) from None
    return load_text(raw, source)


def load_text(raw: bytes | str, source: str = "<config>") -> Config:
    """Validate and convert config text (YAML or JSON). Raises ConfigError listing every problem."""
    document = parse_yaml(raw, source)
    problems = sorted(validate(document, source), key=lambda p: (p.line or 0, p.path))
    if problems:
        raise ConfigError(problems)
    config = _build(with_defaults(_plain(document)), source)
    problems = list(_semantic_problems(config, document, source))
    if problems:
        raise ConfigError(problems)
    return config


@functools.cache
def default_config() -> Config:
    """The config of an empty file: Fleet's defaults (immutable, so built once and shared)."""
    return load_text("", "<defaults>")


def parse_yaml(raw: bytes | str, source: str) -> Any:
    """Safe YAML parse keeping line numbers; an empty document is an empty mapping."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigProblem(source, None, "$", f"file is larger than {MAX_CONFIG_BYTES} bytes")])
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([ConfigProblem(source, None, "$", f"not UTF-8 text (byte {exc.start})")]) from None
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(raw)
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError([ConfigProblem(source, line, "$", f"duplicate key: {exc.problem}")]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigProblem(source, line, "$", f"invalid YAML: {exc.problem or exc}")]) from None
    except YAMLError as exc:
        raise ConfigError([ConfigProblem(source, None, "$", f"invalid YAML: {exc}")]) from None
    return {} if document is None else document


def validate(document: Any, source: str) -> Iterator[ConfigProblem]:
    """Every schema violation of `document`, located by JSON path and line."""
    errors = sorted(_validator().iter_errors(_plain(document)), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        path = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            schema_node: Any = error.schema
            allowed = set(schema_node.get("properties", {}))
            for extra in sorted(set(error.instance) - allowed):
                hint = _closest(extra, allowed)
                message = f"unknown field {extra!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                yield ConfigProblem(source, _line_of(document, [*path, extra]), _json_path([*path, extra]), message)
            continue
        yield ConfigProblem(source, _line_of(document, path), _json_path(path), _message(error))


def _message(error: jsonschema.ValidationError) -> str:
    """A short, user-facing rewording of common jsonschema messages."""
    kind = error.validator
    expected: Any = error.validator_value
    node_schema: Any = error.schema
    if kind == "type":
        return f"expected {expected}, got {_type_name(error.instance)}"
    if kind == "enum":
        return f"must be one of {', '.join(map(repr, expected))}; got {error.instance!r}"
    if kind == "required":
        return error.message.replace("is a required property", "is required")
    if kind == "pattern":
        hint = node_schema.get("description", "") if isinstance(node_schema, dict) else ""
        return f"{error.instance!r} does not have the expected form: {hint}".strip()
    if kind == "oneOf":
        return "set exactly one of: " + ", ".join(sorted({r for s in expected for r in s.get("required", [])}))
    return error.message


def _type_name(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _json_path(path: Iterable[Any]) -> str:
    out = "$"
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else f".{step}"
    return out


def _line_of(document: Any, path: list[Any]) -> int | None:
    """1-based line of the deepest node of `path` present in the ruamel document."""
    node = document
    line: int | None = 1
    for step in path:
        try:
            if isinstance(node, CommentedMap) and step in node:
                line = node.lc.key(step)[0] + 1
                node = node[step]
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                line = node.lc.item(step)[0] + 1
                node = node[step]
            else:
                break
        except (TypeError, KeyError, IndexError, AttributeError):  # nodes built by tags carry no positions
            break
    return line


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers and scalars as plain Python values."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


# --------------------------------------------------------------------------------------------
# Conversion (the document is valid and has defaults filled in)


def _secret_source(doc: Mapping[str, Any]) -> SecretSource:
    if doc.get("directory"):
        return SecretSource(directory=doc["directory"])
    kube = doc["kubernetes"]
    return SecretSource(name=kube.get("name", "gitjob-webhook"), namespace=kube.get("namespace", ""))


def _selector(doc: Mapping[str, Any] | None) -> LabelSelector:
    if not doc:
        return LabelSelector()
    return LabelSelector(
        match_labels=tuple(sorted(doc.get("matchLabels", {}).items())),
        match_expressions=tuple(
            Requirement(e["key"], e["operator"], frozenset(e.get("values", [])))
            for e in doc.get("matchExpressions", [])
        ),
    )


def _refs(items: Iterable[Mapping[str, Any]]) -> tuple[GitRepoRef, ...]:
    return tuple(GitRepoRef(i["namespace"], i["name"]) for i in items)


def _build(doc: Mapping[str, Any], source: str) -> Config:
    providers = tuple(
        ProviderConfig(
            name=name,
            enabled=doc["providers"][name]["enabled"],
            allow_unauthenticated=doc["providers"][name]["allowUnauthenticated"],
            implementation=by_name(name).configured(doc["providers"][name]),
            base_url=doc["providers"][name].get("baseUrl", ""),
        )
        for name in PROVIDER_NAMES
    )
    secrets = doc["secrets"]
    limits = doc["limits"]
    polling = doc["polling"]
    watch = doc["watch"]
    exclusions = doc["exclusions"]
    return Config(
        source=source,
        providers=providers,
        secrets=SecretsConfig(
            source=_secret_source(secrets["source"]),
            gitrepo_secrets=secrets["gitRepoSecrets"],
            previous_suffix=secrets["previousSuffix"],
            cache_seconds=float(secrets["cacheSeconds"]),
        ),
        routes=tuple(
            Route(
                path=r["path"],
                prefix=r["prefix"],
                providers=frozenset(r["providers"]),
                namespaces=frozenset(r["namespaces"]),
                secret=_secret_source(r["secret"]) if r.get("secret") else None,
                bitbucket_server_base_url=r["bitbucketServerBaseUrl"],
            )
            for r in doc["routes"]
        ),
        mappings=tuple(
            RepoMapping(
                repo=m["repo"],
                aliases=tuple(m["aliases"]),
                gitrepos=_refs(m["gitRepos"]),
                selector=_selector(m.get("selector")),
                exclude=frozenset(_refs(m["exclude"])),
                trigger_on_paths=m["triggerOnPaths"],
            )
            for m in doc["mappings"]
        ),
        exclusions=Exclusions(
            gitrepos=frozenset(_refs(exclusions["gitRepos"])),
            namespaces=frozenset(exclusions["namespaces"]),
            selector=_selector(exclusions.get("selector")),
        ),
        watch=WatchConfig(
            namespaces=frozenset(watch["namespaces"]),
            case_sensitive_paths=watch["caseSensitivePaths"],
            ssh_host_aliases=tuple(sorted((k.lower(), v.lower()) for k, v in watch["sshHostAliases"].items())),
        ),
        polling=PollingPolicy(
            manage=polling["manage"],
            default_interval=polling["defaultInterval"],
            webhook_interval=polling["webhookInterval"],
            fallback_after_seconds=parse_duration(polling["fallbackAfter"]),
        ),
        limits=Limits(
            max_body_bytes=limits["maxBodyBytes"],
            read_timeout_seconds=float(limits["readTimeoutSeconds"]),
            request_timeout_seconds=float(limits["requestTimeoutSeconds"]),
            max_concurrent_requests=limits["maxConcurrentRequests"],
            body_memory_bytes=limits["bodyMemoryBytes"],
            spool_after_bytes=limits["spoolAfterBytes"],
            spool_bytes=limits["spoolBytes"],
            unverified_body_share=float(limits["unverifiedBodyShare"]),
            unverified_parse_bytes=limits["unverifiedParseBytes"],
            dedupe_seconds=limits["dedupeSeconds"],
            dedupe_entries=limits["dedupeEntries"],
            max_gitrepos_per_delivery=limits["maxGitReposPerDelivery"],
        ),
    )


def _semantic_problems(config: Config, document: Any, source: str) -> Iterator[ConfigProblem]:
    """Rules a JSON Schema cannot express: uniqueness across items, URLs that must parse, scope."""
    from controller.normalize import redact_url, repo_key

    def at(path: list[Any], message: str) -> ConfigProblem:
        return ConfigProblem(source, _line_of(document, path), _json_path(path), message)

    seen: dict[tuple[str, bool], int] = {}
    for i, route in enumerate(config.routes):
        key = (route.path, route.prefix)
        if key in seen:
            yield at(["routes", i, "path"], f"route {route.path!r} is already defined at routes[{seen[key]}]")
        seen[key] = i
        if config.watch.namespaces and route.namespaces - config.watch.namespaces:
            outside = ", ".join(sorted(route.namespaces - config.watch.namespaces))
            yield at(["routes", i, "namespaces"], f"namespaces not watched (add them to watch.namespaces): {outside}")
        for name in sorted(route.providers):
            if not config.provider(name).enabled:
                yield at(["routes", i, "providers"], f"provider {name!r} is disabled in providers.{name}.enabled")
    if not any(p.enabled for p in config.providers):
        yield at(["providers"], "every provider is disabled; enable at least one")
    for i, mapping in enumerate(config.mappings):
        if repo_key(mapping.repo) is None:
            yield at(["mappings", i, "repo"], f"{redact_url(mapping.repo)!r} is not a repository URL")
        for j, alias in enumerate(mapping.aliases):
            if repo_key(alias) is None:
                yield at(["mappings", i, "aliases", j], f"{redact_url(alias)!r} is not a repository URL")
        if not (
            mapping.aliases
            or mapping.gitrepos
            or not mapping.selector.empty
            or mapping.exclude
            or mapping.trigger_on_paths
        ):
            yield at(
                ["mappings", i], "mapping does nothing: give aliases, gitRepos, selector, exclude or triggerOnPaths"
            )
    try:
        seconds = parse_duration(config.polling.webhook_interval)
        if seconds <= 0:
            yield at(["polling", "webhookInterval"], "must be longer than 0 (use polling.manage: false instead)")
        elif seconds > FLEET_INTERVAL_MAX_SECONDS:
            yield at(
                ["polling", "webhookInterval"],
                "is longer than 2562047h, the most Fleet's GitRepo CRD accepts for spec.pollingInterval",
            )
    except ValueError as exc:
        yield at(["polling", "webhookInterval"], str(exc))
