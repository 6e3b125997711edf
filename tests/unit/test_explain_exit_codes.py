"""`fleet-webhook explain` exit codes as docs/troubleshooting.md documents them, and its reasons.

A saved payload that is not a push (a ping, a pull or merge request) exits 2 and says which event
it is and why the receiver ignores it, as the receiver would answer it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main as cli_main
from tests.support import PAYLOADS

NOT_PUSHES = [
    ("github", "ping", "ping"),
    ("github", "pull-request", "'pull_request' is ignored: only push events move a GitRepo"),
    ("gitlab", "merge-request", "'Merge Request Hook' is ignored"),
    ("bitbucket", "pullrequest-created", "'pullrequest:created' is ignored: only repo:push moves a GitRepo"),
    ("bitbucket-server", "diagnostics-ping", "ping"),
    ("azure-devops", "git-pullrequest-created", "'git.pullrequest.created' is ignored: only git.push moves"),
    ("generic", "ping", "ping"),
]


def explain(capsys: pytest.CaptureFixture[str], provider: str, payload: Path, *args: str) -> tuple[int, str, str]:
    code = cli_main(["explain", "--provider", provider, "--payload", str(payload), "--gitrepos", "/dev/null", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("provider", "fixture", "reason"), NOT_PUSHES)
def test_a_payload_without_a_push_exits_2_and_says_why(
    capsys: pytest.CaptureFixture[str], provider: str, fixture: str, reason: str
) -> None:
    code, out, err = explain(capsys, provider, PAYLOADS / provider / f"{fixture}.json")
    assert code == 2
    assert reason in err
    assert "updates nothing" in err
    assert out == ""


def test_an_explicit_event_header_gives_the_same_answer(capsys: pytest.CaptureFixture[str]) -> None:
    payload = PAYLOADS / "gitlab" / "merge-request.json"
    code, _, err = explain(capsys, "gitlab", payload, "--header", "X-Gitlab-Event: Merge Request Hook")
    assert code == 2
    assert "'Merge Request Hook' is ignored" in err


def test_a_push_that_updates_nothing_still_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = explain(capsys, "github", PAYLOADS / "github" / "push.json")
    assert code == 1
    assert "would update: nothing" in out


def test_a_gogs_tag_create_is_explained_as_a_tag_push(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = explain(capsys, "gogs", PAYLOADS / "gogs" / "create-tag.json")
    assert code == 1
    assert "gogs tag 'v0.7.0'" in out
