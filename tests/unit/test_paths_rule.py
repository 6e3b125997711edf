"""The monorepo paths rule: which GitRepos a push that changed these files triggers, and why not the others."""

from __future__ import annotations

import json
from typing import Any

import pytest

from controller import paths
from controller.config import load_text
from controller.decisions import Action, CommitHistory, plan
from controller.deliveries import ChangedFiles, PushEvent, RefKind
from controller.explain import explain, render_json, render_text
from controller.index import ALSO_TRIGGER_ON_PATHS_ANNOTATION, TRIGGER_ON_PATHS_ANNOTATION, gitrepo_info
from tests.factories import index_of
from tests.support import sha

URL = "https://github.com/example-org/fleet-apps"
NO_CONFIG = load_text("{}", "t.yaml")


def covers(entry: str, file: str) -> bool:
    watched = paths.watched_for((entry,), ())
    return paths.change_index(frozenset({file})).first_covered(watched) is not None


@pytest.mark.parametrize(
    ("entry", "file", "expected"),
    [
        ("apps/a", "apps/a/x.yaml", True),
        ("apps/a", "apps/a/deep/er/x.yaml", True),
        ("apps/a", "apps/ab/x.yaml", False),  # a directory prefix, not a string prefix
        ("apps/a", "apps/a", False),  # the file `apps/a` is not below the directory `apps/a`
        ("apps/a", "apps/x.yaml", False),
        ("./apps/a/", "apps/a/x.yaml", True),
        ("/apps/a", "apps/a/x.yaml", True),
        ("apps//a", "apps/a/x.yaml", True),
        ("apps/b/../a", "apps/a/x.yaml", True),
        ("Apps/A", "apps/a/x.yaml", False),  # git paths are case-sensitive
        ("charts/*", "charts/web/values.yaml", True),
        ("charts/*", "charts/README.md", False),  # Fleet keeps only the directories a glob matches
        ("charts/*", "charts/web/sub/values.yaml", True),
        ("*/base", "team-a/base/k.yaml", True),
        ("*/base", "team-a/overlay/k.yaml", False),
        ("apps/a?", "apps/a1/x", True),
        ("apps/a?", "apps/a12/x", False),
        ("apps/[a-c]", "apps/b/x", True),
        ("apps/[a-c]", "apps/d/x", False),
        ("apps/[^a-c]", "apps/d/x", True),
        ("apps/[^a-c]", "apps/a/x", False),
        ("apps/\\*", "apps/*/x", True),
        ("apps/\\*", "apps/b/x", False),
    ],
)
def test_an_entry_covers_the_files_below_the_directories_it_matches(entry: str, file: str, expected: bool) -> None:
    assert covers(entry, file) is expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("../other", "climbs out of the repository"),
        ("apps/../../x", "climbs out of the repository"),
        ("apps/[a-", "invalid character class"),
        ("apps/[ab", "unclosed '['"),
        ("apps/[]", "invalid character class"),
        ("apps/x\\", "unfinished escape"),
        ("apps/[z-a]", "runs backwards"),
    ],
)
def test_entries_that_cannot_be_judged_are_errors(entry: str, message: str) -> None:
    with pytest.raises(paths.BadPath, match=message.replace("[", "\\[")):
        paths.watched_for((entry,), ())


def test_root_entries() -> None:
    for entry in (".", "/", "", "./", "apps/.."):
        assert paths.directory(entry).is_root, entry


# --- the rule in the decisions -----------------------------------------------------------------


def opted(
    name: str, spec_paths: list[str] | None = None, annotation: str | None = "true", **spec: Any
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"namespace": "fleet", "name": name, "resourceVersion": "5"},
        "spec": {"repo": URL, "branch": "main", **spec},
        "status": {"webhookCommit": sha("old")},
    }
    if spec_paths is not None:
        obj["spec"]["paths"] = spec_paths
    if annotation is not None:
        obj["metadata"]["annotations"] = {TRIGGER_ON_PATHS_ANNOTATION: annotation}
    return obj


def push(files: set[str] | None, unknown: str = "the payload lists no changed files") -> PushEvent:
    changes = ChangedFiles.of(frozenset(files)) if files is not None else ChangedFiles.cannot_tell(unknown)
    return PushEvent("github", "d", (URL,), RefKind.BRANCH, "main", sha("new"), sha("old"), changes=changes)


def decided(event: PushEvent, *objs: dict[str, Any], config: Any = NO_CONFIG) -> dict[str, tuple[Action, str, str]]:
    return {
        d.gitrepo.name: (d.action, d.reason, d.paths_verdict)
        for d in plan(event, index_of(*objs), config, None, CommitHistory())
    }


def test_a_push_to_one_path_triggers_only_the_gitrepo_deploying_it() -> None:
    repos = [opted(f"app-{i:02}", [f"apps/app-{i:02}"]) for i in range(50)]
    out = decided(push({"apps/app-07/deploy.yaml"}), *repos)

    assert [n for n, (a, _, _) in out.items() if a is Action.UPDATE] == ["app-07"]
    assert out["app-07"][2] == "triggers: apps/app-07/deploy.yaml changed under spec.paths entry 'apps/app-07'"
    assert out["app-08"][:2] == (
        Action.SKIP,
        "push changed no file under spec.paths [apps/app-08] (1 files changed, e.g. apps/app-07/deploy.yaml)",
    )
    assert sum(a is Action.SKIP for a, _, _ in out.values()) == 49


def test_any_of_several_entries_and_globs_trigger() -> None:
    out = decided(
        push({"charts/web/values.yaml", "README.md"}),
        opted("two", ["apps/a", "charts/web"]),
        opted("glob", ["charts/*"]),
        opted("none", ["apps/a", "apps/b"]),
    )
    assert out["two"][0] is Action.UPDATE
    assert out["glob"][0] is Action.UPDATE
    assert out["none"][:2] == (
        Action.SKIP,
        "push changed no file under spec.paths [apps/a, apps/b] (2 files changed, e.g. README.md)",
    )


def test_whenever_the_rule_cannot_tell_it_triggers() -> None:
    out = decided(
        push(None, "the payload lists 5 of the push's 12 commits"),
        opted("cut", ["apps/a"]),
    )
    assert out["cut"] == (
        Action.UPDATE,
        "commit recorded",
        "triggers: the payload cannot tell which files changed (the payload lists 5 of the push's 12 commits)",
    )
    out = decided(
        push({"apps/b/x"}),
        opted("whole-repo", None),
        opted("empty", []),
        opted("root", ["apps/a", "./"]),
        opted("escapes", ["../elsewhere"]),
        opted("bad-glob", ["apps/[a"]),
    )
    assert {n: a for n, (a, _, _) in out.items()} == dict.fromkeys(out, Action.UPDATE)
    assert out["empty"][2] == "triggers: spec.paths is empty, so the GitRepo deploys the whole repository"
    assert out["root"][2] == "triggers: spec.paths includes the repository root"
    assert out["escapes"][2] == "triggers: spec.paths cannot be judged ('../elsewhere' climbs out of the repository)"
    assert out["bad-glob"][2] == "triggers: spec.paths cannot be judged ('apps/[a' has an unclosed '[')"


def test_the_rule_is_opt_in_and_an_unusable_annotation_leaves_it_off() -> None:
    out = decided(
        push({"apps/b/x"}),
        opted("not-opted", ["apps/a"], annotation=None),
        opted("false", ["apps/a"], annotation="false"),
        opted("upper", ["apps/a"], annotation="True"),
        opted("typo", ["apps/a"], annotation="yes"),
    )
    assert out["not-opted"] == (Action.UPDATE, "commit recorded", "")
    assert out["false"] == (Action.UPDATE, "commit recorded", "")
    assert out["upper"][0] is Action.SKIP
    assert out["typo"] == (
        Action.UPDATE,
        "commit recorded",
        f"annotation {TRIGGER_ON_PATHS_ANNOTATION}: 'yes' is neither 'true' nor 'false', so it is off",
    )


def test_a_mapping_opts_in_every_gitrepo_of_its_repository_and_the_annotation_overrides_it() -> None:
    config = load_text(f"mappings:\n  - repo: {URL}\n    triggerOnPaths: true\n", "t.yaml")
    repos = (
        opted("by-mapping", ["apps/a"], annotation=None),
        opted("opted-out", ["apps/a"], annotation="false"),
        opted("touched", ["apps/b"], annotation=None),
    )
    out = decided(push({"apps/b/x"}), *repos, config=config)
    assert out["by-mapping"][0] is Action.SKIP
    assert out["opted-out"][0] is Action.UPDATE
    assert out["touched"][0] is Action.UPDATE
    other = load_text("mappings:\n  - repo: https://github.com/example-org/other\n    triggerOnPaths: true\n", "t.yaml")
    assert decided(push({"apps/b/x"}), *repos, config=other)["by-mapping"][0] is Action.UPDATE


def test_ref_rules_and_exclusions_come_first_and_already_at_this_commit_after() -> None:
    current = opted("current", ["apps/b"])
    current["status"]["webhookCommit"] = sha("new")
    out = decided(push({"apps/b/x"}), opted("dev", ["apps/b"], branch="dev"), current)
    assert out["dev"][1] == "branch differs: GitRepo tracks 'dev', push was to 'main'"
    assert out["current"][:2] == (Action.UNCHANGED, "already at this commit")


def test_bundles_replace_paths() -> None:
    bundles = [{"base": "apps/web", "options": "../overlays/web.yaml"}, {"base": "apps/db"}]
    gitrepo = opted("driven", ["ignored/by/fleet"], bundles=bundles)
    assert decided(push({"ignored/by/fleet/x"}), gitrepo)["driven"][1] == (
        "push changed no file under spec.bundles [apps/web, apps/web/../overlays/web.yaml, apps/db]"
        " (1 files changed, e.g. ignored/by/fleet/x)"
    )
    assert decided(push({"apps/overlays/web.yaml"}), gitrepo)["driven"][0] is Action.UPDATE
    assert decided(push({"apps/db/fleet.yaml"}), gitrepo)["driven"][0] is Action.UPDATE


def test_also_trigger_on_paths_adds_what_bundles_read_from_outside_their_folders() -> None:
    web = opted("web", ["apps/web"])
    web["metadata"]["annotations"][ALSO_TRIGGER_ON_PATHS_ANNOTATION] = " charts/common ; shared/*,  "
    assert decided(push({"charts/common/templates/d.yaml"}), web)["web"][2] == (
        f"triggers: charts/common/templates/d.yaml changed under annotation {ALSO_TRIGGER_ON_PATHS_ANNOTATION}"
        " entry 'charts/common'"
    )
    assert decided(push({"shared/base/k.yaml"}), web)["web"][0] is Action.UPDATE
    assert decided(push({"charts/other/x.yaml"}), web)["web"][1] == (
        f"push changed no file under spec.paths [apps/web] nor annotation {ALSO_TRIGGER_ON_PATHS_ANNOTATION}"
        " [charts/common, shared/*] (1 files changed, e.g. charts/other/x.yaml)"
    )
    web["metadata"]["annotations"][ALSO_TRIGGER_ON_PATHS_ANNOTATION] = "../outside"
    assert decided(push({"charts/other/x.yaml"}), web)["web"][2] == (
        f"triggers: annotation {ALSO_TRIGGER_ON_PATHS_ANNOTATION} cannot be judged"
        " ('../outside' climbs out of the repository)"
    )
    not_opted = opted("off", ["apps/web"], annotation=None)
    not_opted["metadata"]["annotations"] = {ALSO_TRIGGER_ON_PATHS_ANNOTATION: "charts/common"}
    assert decided(push({"charts/other/x.yaml"}), not_opted)["off"] == (Action.UPDATE, "commit recorded", "")


def test_the_index_carries_paths_bundles_and_the_annotation() -> None:
    info = gitrepo_info(opted("x", ["apps/a", 7], bundles=[{"base": "b", "options": "o.yaml"}, "junk"]))  # type: ignore[list-item]  # junk on purpose
    assert info is not None
    assert (info.paths, info.bundles, info.trigger_on_paths) == (("apps/a",), (("b", "o.yaml"),), "true")


def test_many_gitrepos_and_files_stay_cheap() -> None:
    import time

    repos = [opted(f"app-{i:04}", [f"apps/app-{i:04}"]) for i in range(2000)]
    files = {f"apps/app-{i:04}/f{j}.yaml" for i in range(0, 2000, 2) for j in range(2)}
    index = index_of(*repos)
    started = time.process_time()
    decisions = plan(push(files), index, NO_CONFIG, None, CommitHistory())
    elapsed = time.process_time() - started
    assert sum(d.action is Action.UPDATE for d in decisions) == 1000
    assert elapsed < 0.5, f"{elapsed:.2f}s of CPU for 2,000 GitRepos and 2,000 files"


# --- explain --------------------------------------------------------------------------------------


def test_explain_shows_the_rules_verdict() -> None:
    infos = [i for i in map(gitrepo_info, (opted("a", ["apps/a"]), opted("b", ["apps/b"]))) if i is not None]
    results = explain([push({"apps/a/x.yaml"})], infos, NO_CONFIG, "/")
    text = render_text(results, "/")
    assert "  changed files: 1 (apps/a/x.yaml)" in text
    assert (
        "fleet/a  (https://github.com/example-org/fleet-apps, via spec.repo); paths rule triggers: apps/a/x.yaml"
        in text
    )
    assert (
        "fleet/b  (https://github.com/example-org/fleet-apps): push changed no file under spec.paths [apps/b]" in text
    )
    [doc] = json.loads(render_json(results))
    assert doc["changedFiles"] == ["apps/a/x.yaml"]
    assert doc["wouldUpdate"][0]["paths"].startswith("triggers: apps/a/x.yaml changed")

    unknown = render_text(explain([push(None, "forced push")], infos, NO_CONFIG, "/"), "/")
    assert "  changed files: cannot tell (forced push)" in unknown
    assert json.loads(render_json(explain([push(None, "forced push")], infos, NO_CONFIG, "/")))[0][
        "changedFilesUnknown"
    ] == ("forced push")
