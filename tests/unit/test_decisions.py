"""Pure matching decisions: candidates via spec.repo, aliases, explicit targets, selectors; rule order."""

from __future__ import annotations

import itertools
from typing import Any

from controller.config import load_text
from controller.decisions import Action, CommitHistory, plan, ref_mismatch
from controller.deliveries import PushEvent, RefKind
from controller.index import gitrepo_info
from tests.factories import index_of
from tests.support import sha

URL = "https://github.com/example-org/fleet-apps"


def gitrepo(
    ns: str, name: str, repo: str, branch: str = "main", labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    status = {"webhookCommit": spec.pop("commit")} if "commit" in spec else {}
    return {
        "metadata": {"namespace": ns, "name": name, "resourceVersion": "5", "labels": labels or {}},
        "spec": {"repo": repo, "branch": branch, **spec},
        "status": status,
    }


def push(
    ref_name: str = "main",
    kind: RefKind = RefKind.BRANCH,
    commit: str = sha("new"),
    before: str | None = None,
    deleted: bool = False,
) -> PushEvent:
    return PushEvent(
        "github", "d1", (URL, "git@github.com:example-org/fleet-apps.git"), kind, ref_name, commit, before, deleted
    )


def outcome(decisions: list[Any]) -> dict[str, tuple[Action, str]]:
    return {d.gitrepo.name: (d.action, d.reason) for d in decisions}


def test_explicit_targets_selectors_aliases_and_exclusions() -> None:
    config = load_text(
        f"""
mappings:
  - repo: {URL}
    aliases: [https://mirror.example.com/fleet-apps.git]
    gitRepos: [{{namespace: ops, name: explicit}}]
    selector: {{matchLabels: {{follow: fleet-apps}}}}
    exclude: [{{namespace: ops, name: by-url-but-excluded}}]
exclusions:
  namespaces: [sandbox]
  selector: {{matchLabels: {{frozen: "yes"}}}}
""",
        "m.yaml",
    )
    index = index_of(
        gitrepo("ops", "by-url", URL),
        gitrepo("ops", "by-url-but-excluded", URL),
        gitrepo("ops", "mirror", "https://mirror.example.com/fleet-apps"),
        gitrepo("ops", "explicit", "https://elsewhere.example.com/x/y"),
        gitrepo("ops", "labelled", "https://elsewhere.example.com/p/q", labels={"follow": "fleet-apps"}),
        gitrepo("ops", "frozen", URL, labels={"frozen": "yes"}),
        gitrepo("sandbox", "sandboxed", URL),
        gitrepo("ops", "unrelated", "https://github.com/example-org/other"),
    )
    result = outcome(plan(push(), index, config, config.route_for("/"), CommitHistory()))
    assert set(result) == {"by-url", "by-url-but-excluded", "mirror", "explicit", "labelled", "frozen", "sandboxed"}
    assert {n for n, (a, _) in result.items() if a is Action.UPDATE} == {"by-url", "mirror", "explicit", "labelled"}
    assert "excluded by mapping" in result["by-url-but-excluded"][1]
    assert result["frozen"][1] == "excluded by config exclusions"
    assert result["sandboxed"][1] == "excluded by config exclusions"


def test_each_gitrepo_is_decided_once_even_if_reached_twice() -> None:
    config = load_text(f"mappings:\n  - repo: {URL}\n    gitRepos: [{{namespace: a, name: both}}]\n", "m.yaml")
    decisions = plan(push(), index_of(gitrepo("a", "both", URL)), config, None, CommitHistory())
    assert len(decisions) == 1
    assert decisions[0].via == "spec.repo"


def test_ref_rules() -> None:
    info = gitrepo_info(gitrepo("a", "b", URL, branch=""))
    assert info is not None
    assert ref_mismatch(push("master"), info) is None, "empty branch means Fleet's default 'master'"
    assert "master" in (ref_mismatch(push("main"), info) or "")
    pinned = gitrepo_info(gitrepo("a", "p", URL, branch="main", revision="v1"))
    assert pinned is not None
    assert ref_mismatch(push("v1", RefKind.TAG), pinned) is None, "revision wins over branch"
    assert ref_mismatch(push("main"), pinned) is not None
    plain = gitrepo_info(gitrepo("a", "d", URL))
    assert plain is not None
    deleted = ref_mismatch(push("main", deleted=True), plain)
    assert deleted is not None
    assert "deleted" in deleted
    tag_for_branch = ref_mismatch(push("v1", RefKind.TAG), plain)
    assert tag_for_branch is not None


def test_commit_history_orders_chains() -> None:
    history = CommitHistory(max_entries=10)
    a, b, c, d = sha("a"), sha("b"), sha("c"), sha("d")
    history.learn(push(commit=b, before=a))
    history.learn(push(commit=c, before=b))
    assert history.precedes(a, c)
    assert history.precedes(b, c)
    assert not history.precedes(c, a)
    assert not history.precedes(d, c), "unrelated commits have no known order"


def test_commit_history_is_bounded() -> None:
    history = CommitHistory(max_entries=3)
    commits = [sha(str(i)) for i in range(10)]
    for before, after in itertools.pairwise(commits):
        history.learn(push(commit=after, before=before))
    assert not history.precedes(commits[0], commits[9])
    assert history.precedes(commits[7], commits[9])


def test_unchanged_and_out_of_order() -> None:
    config = load_text("", "c.yaml")
    old, new = sha("old"), sha("new")
    history = CommitHistory()
    history.learn(push(commit=new, before=old))
    idx = index_of(gitrepo("a", "at-new", URL, commit=new))
    assert outcome(plan(push(commit=new), idx, config, None, history))["at-new"][0] is Action.UNCHANGED
    late = outcome(plan(push(commit=old), idx, config, None, history))["at-new"]
    assert late[0] is Action.SKIP
    assert "out of order" in late[1]
