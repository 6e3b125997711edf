"""`fleet-webhook explain`: the payload's matches and a reason for every kind of near miss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.cli import main as cli_main
from tests.support import PAYLOADS

PAYLOAD = PAYLOADS / "github" / "push.json"
COMMIT = json.loads(PAYLOAD.read_text())["after"]
URL = "https://github.com/example-org/fleet-apps"

GITREPOS = f"""
apiVersion: v1
kind: List
items:
- metadata: {{namespace: fleet-default, name: match-https}}
  spec: {{repo: {URL}.git, branch: main}}
- metadata: {{namespace: fleet-default, name: match-ssh}}
  spec: {{repo: "git@github.com:example-org/fleet-apps.git", branch: main}}
- metadata: {{namespace: fleet-default, name: already}}
  spec: {{repo: {URL}, branch: main}}
  status: {{webhookCommit: {COMMIT}}}
- metadata: {{namespace: fleet-default, name: wrong-branch}}
  spec: {{repo: {URL}, branch: dev}}
- metadata: {{namespace: fleet-default, name: pinned}}
  spec: {{repo: {URL}, revision: v1.0.0}}
- metadata: {{namespace: team-b, name: other-namespace}}
  spec: {{repo: {URL}, branch: main}}
- metadata: {{namespace: fleet-default, name: excluded}}
  spec: {{repo: {URL}, branch: main}}
- metadata: {{namespace: fleet-default, name: suffix}}
  spec: {{repo: {URL}-suffix, branch: main}}
- metadata: {{namespace: fleet-default, name: unrelated}}
  spec: {{repo: https://gitlab.com/someone/else, branch: main}}
---
metadata: {{namespace: fleet-default, name: no-branch}}
spec: {{repo: {URL}}}
"""

CONFIG = """
routes:
  - path: /hooks/default
    namespaces: [fleet-default]
mappings:
  - repo: https://github.com/example-org/fleet-apps
    exclude: [{namespace: fleet-default, name: excluded}]
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    gitrepos = tmp_path / "gitrepos.yaml"
    gitrepos.write_text(GITREPOS)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    return gitrepos, config


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["explain", "--provider", "github", "--payload", str(PAYLOAD), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_near_miss_reason_is_reported(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gitrepos, config = files
    code, out, _ = run(
        capsys, "--gitrepos", str(gitrepos), "--config", str(config), "--route", "/hooks/default", "--output", "json"
    )
    assert code == 0
    [report] = json.loads(out)
    assert report["commit"] == COMMIT
    assert report["repositoryKeys"] == ["github.com/example-org/fleet-apps"]
    assert {u["gitrepo"] for u in report["wouldUpdate"]} == {"fleet-default/match-https", "fleet-default/match-ssh"}
    assert {u["gitrepo"] for u in report["unchanged"]} == {"fleet-default/already"}
    reasons = {m["gitrepo"]: m["reason"] for m in report["nearMisses"]}
    assert "branch differs" in reasons["fleet-default/wrong-branch"]
    assert "revision pinned to 'v1.0.0'" in reasons["fleet-default/pinned"]
    assert "not allowed by route '/hooks/default'" in reasons["team-b/other-namespace"]
    assert "excluded by mapping" in reasons["fleet-default/excluded"]
    assert "spec.branch is empty: Fleet uses 'master'" in reasons["fleet-default/no-branch"]
    suffix = reasons["fleet-default/suffix"]
    assert suffix.startswith("URL differs: ")
    assert "example-org/fleet-apps" in suffix
    assert "example-org/fleet-apps-suffix" in suffix
    assert "gitlab.com/someone/else" not in out, "unrelated GitRepos are not near misses"


def test_text_output_names_matches_and_misses(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    gitrepos, _ = files
    code, out, _ = run(capsys, "--gitrepos", str(gitrepos))
    assert code == 0
    assert "would update:" in out
    assert "fleet-default/match-ssh" in out
    assert "near misses:" in out
    assert "fleet-default/wrong-branch" in out


def test_nothing_matches_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gitrepos = tmp_path / "g.yaml"
    gitrepos.write_text("metadata: {namespace: a, name: b}\nspec: {repo: 'https://github.com/example-org/other'}\n")
    code, out, _ = run(capsys, "--gitrepos", str(gitrepos))
    assert code == 1
    assert "would update: nothing" in out
    assert "URL differs" in out


def test_bad_payload_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"ref": 5}')
    code = cli_main(["explain", "--provider", "github", "--payload", str(bad), "--gitrepos", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert "payload not understood as a github push" in err


def test_tag_push_reaches_pinned_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    payload = tmp_path / "tag.json"
    payload.write_text((PAYLOADS / "github" / "push-tag.json").read_text())
    tag = json.loads(payload.read_text())["ref"].removeprefix("refs/tags/")
    gitrepos = tmp_path / "g.yaml"
    gitrepos.write_text(f"metadata: {{namespace: a, name: pinned}}\nspec: {{repo: '{URL}', revision: '{tag}'}}\n")
    code = cli_main(["explain", "--provider", "github", "--payload", str(payload), "--gitrepos", str(gitrepos)])
    assert code == 0
    assert "a/pinned" in capsys.readouterr().out
