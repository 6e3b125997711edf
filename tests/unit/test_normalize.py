"""Repo URL normalization: which URLs name the same repository, and which must never."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from controller.normalize import RepoKey, explain_difference, repo_key, unusable_reason

# (a, b): both must give the same key.
SAME_REPO = [
    # GitHub: web, clone, scp, ssh, credentials, ports, decorations
    ("https://github.com/example-org/app", "https://github.com/example-org/app.git"),
    ("https://github.com/example-org/app", "git@github.com:example-org/app.git"),
    ("https://github.com/example-org/app", "ssh://git@github.com/example-org/app.git"),
    ("https://github.com/example-org/app", "ssh://git@ssh.github.com:443/example-org/app.git"),
    ("https://github.com/example-org/app", "git@ssh.github.com:example-org/app.git"),
    ("https://github.com/example-org/app", "https://x-access-token:ghp_abc123@github.com/example-org/app"),
    ("https://github.com/example-org/app", "https://user:token@github.com:443/example-org/app.git"),
    ("https://github.com/example-org/app", "http://github.com/example-org/app/"),
    ("https://github.com/example-org/app", "https://github.com/example-org/app.git/"),
    ("https://github.com/example-org/app", "https://github.com//example-org///app//"),
    ("https://github.com/example-org/app", "HTTPS://GitHub.COM/Example-Org/App.GIT"),
    ("https://github.com/example-org/app", "https://github.com./example-org/app"),
    ("https://github.com/example-org/app", "https://www.github.com/example-org/app"),
    ("https://github.com/example-org/app", "git://github.com:9418/example-org/app.git"),
    ("https://github.com/example-org/app", "git+ssh://git@github.com/example-org/app.git"),
    ("https://github.com/example-org/app", "ssh+git://git@github.com:22/example-org/app"),
    ("https://github.com/example-org/app", "https://github.com/example-org/app?tab=readme#top"),
    ("https://github.com/example-org/app", "  https://github.com/example-org/app  "),
    ("https://github.com/example-org/app", "github.com:example-org/app.git"),
    # GitLab: subgroups, altssh, web URLs cut at /-/
    ("https://gitlab.com/group/sub/deeper/app", "git@gitlab.com:group/sub/deeper/app.git"),
    ("https://gitlab.com/group/app", "ssh://git@altssh.gitlab.com:443/group/app.git"),
    ("https://gitlab.com/group/sub/app", "https://gitlab.com/group/sub/app/-/tree/main/charts"),
    ("https://gitlab.example.com/g/app", "https://gitlab.example.com/g/app/-/merge_requests/7"),
    ("https://gitlab.example.com/g/app", "ssh://git@gitlab.example.com:2222/g/app.git"),
    # Bitbucket Cloud
    ("https://bitbucket.org/team/app", "git@bitbucket.org:team/app.git"),
    ("https://bitbucket.org/team/app", "ssh://git@altssh.bitbucket.org:443/team/app.git"),
    ("https://bitbucket.org/team/app", "https://alice@bitbucket.org/team/app.git"),
    # Bitbucket Server / Data Center
    ("https://bitbucket.example.com/scm/proj/repo.git", "ssh://git@bitbucket.example.com:7999/proj/repo.git"),
    (
        "https://bitbucket.example.com/scm/proj/repo.git",
        "https://bitbucket.example.com/projects/PROJ/repos/repo/browse",
    ),
    ("https://bitbucket.example.com/scm/proj/repo.git", "https://bitbucket.example.com:8443/scm/PROJ/repo"),
    (
        "https://bitbucket.example.com/scm/proj/repo.git",
        "https://bitbucket.example.com/bitbucket/scm/proj/repo.git",
    ),
    (
        "https://bitbucket.example.com/scm/~alice/repo.git",
        "https://bitbucket.example.com/users/alice/repos/repo/browse",
    ),
    (
        "https://bitbucket.example.com/scm/~alice/repo.git",
        "ssh://git@bitbucket.example.com:7999/~alice/repo.git",
    ),
    # Azure DevOps: every documented form
    ("https://dev.azure.com/org/project/_git/repo", "https://org@dev.azure.com/org/project/_git/repo"),
    ("https://dev.azure.com/org/project/_git/repo", "https://org.visualstudio.com/project/_git/repo"),
    (
        "https://dev.azure.com/org/project/_git/repo",
        "https://org.visualstudio.com/DefaultCollection/project/_git/repo",
    ),
    ("https://dev.azure.com/org/project/_git/repo", "git@ssh.dev.azure.com:v3/org/project/repo"),
    ("https://dev.azure.com/org/project/_git/repo", "ssh://git@ssh.dev.azure.com:22/v3/org/project/repo"),
    ("https://dev.azure.com/org/project/_git/repo", "org@vs-ssh.visualstudio.com:v3/org/project/repo"),
    ("https://dev.azure.com/org/project/_git/repo", "https://dev.azure.com/org/project/_git/_optimized/repo"),
    (
        "https://dev.azure.com/org/project/_git/repo",
        "https://dev.azure.com/org/project/_git/repo?path=/charts",
    ),
    ("https://dev.azure.com/org/My%20Project/_git/repo", "https://dev.azure.com/org/My Project/_git/repo"),
    ("https://org.visualstudio.com/My%20Project/_git/repo", "git@ssh.dev.azure.com:v3/org/My Project/repo"),
    ("https://dev.azure.com/org/My%20Project/_git/repo", "git@ssh.dev.azure.com:v3/org/My%20Project/repo"),
    ("https://dev.azure.com/org/_git/shared", "git@ssh.dev.azure.com:v3/org/shared/shared"),
    (
        "https://tfs.example.com/tfs/DefaultCollection/project/_git/repo",
        "ssh://tfs.example.com:22/tfs/DefaultCollection/project/_git/repo",
    ),
    # Gitea / Gogs / self-hosted
    ("https://gitea.example.com/o/app", "ssh://git@gitea.example.com:2222/o/app.git"),
    ("git@gitserver:app.git", "ssh://git@gitserver/app"),
    ("git@git.example.com:/srv/git/app.git", "ssh://git@git.example.com/srv/git/app"),
    ("ssh://git@[2001:db8::1]:22/o/app.git", "https://[2001:DB8::1]/o/app"),
    ("https://git.example.com/o/my%2Dapp", "https://git.example.com/o/my-app"),
]

# (a, b): must give different keys (both usable).
DIFFERENT_REPO = [
    ("https://github.com/example-org/app", "https://github.com/example-org/app-suffix"),
    ("https://github.com/example-org/app", "https://github.com/example-org/app.git.bak"),
    ("https://github.com/example-org/app", "https://github.com/example-org/ap"),
    ("https://github.com/example-org/app", "https://github.com/other-org/app"),
    ("https://github.com/example-org/app", "https://gitlab.com/example-org/app"),
    ("https://github.com/example-org/app", "https://github.example.com/example-org/app"),
    ("https://github.com/example-org/app", "https://github.com/example-org/app/tree/main"),
    ("https://github.com/example-org/app", "https://github.com/example-org/a.p"),
    ("https://github.com/example-org/app", "https://github.com/.*/.*"),
    ("https://github.com/example-org/app", "https://github.com/example-org/app%2Fextra"),
    ("https://gitlab.com/group/app", "https://gitlab.com/group/sub/app"),
    ("https://gitlab.example.com/g/app", "https://ssh.gitlab.example.com/g/app"),
    ("https://dev.azure.com/org/project/_git/repo", "https://dev.azure.com/org/other-project/_git/repo"),
    ("https://dev.azure.com/org/project/_git/repo", "https://dev.azure.com/other-org/project/_git/repo"),
    ("https://dev.azure.com/org/project/_git/repo", "git@ssh.dev.azure.com:v3/org/project/repo2"),
    ("https://bitbucket.example.com/scm/proj/repo.git", "https://bitbucket.example.com/scm/other/repo.git"),
    (
        "https://bitbucket.example.com/scm/proj/repo.git",
        "ssh://git@bitbucket.example.com:7999/proj/repo-2.git",
    ),
    ("https://bitbucket.example.com/scm/proj/repo.git", "https://bitbucket.example.com/scm/~proj/repo.git"),
    ("https://bitbucket.example.com/scm/proj/repo.git", "git@bitbucket.example.com:7999/proj/repo.git"),
    ("https://bitbucket.org/team/app", "https://bitbucket.org/team/app/src/main"),
    ("https://gitea.example.com/o/app", "https://gitea.example.org/o/app"),
    ("https://git.example.com/o/app", "https://git.example.com/o/app%20"),
]

# (a, b): equal by default, different with case_sensitive_path=True.
CASE_ONLY = [
    ("https://git.example.com/Team/App", "https://git.example.com/team/app"),
    ("git@git.example.com:srv/Repo.git", "ssh://git@git.example.com/srv/repo"),
    ("https://dev.azure.com/org/Project/_git/repo", "https://dev.azure.com/org/project/_git/repo"),
]

EXPECTED_KEYS = [
    ("https://github.com/Example-Org/App.git", RepoKey("github.com", "example-org/app")),
    ("git@ssh.dev.azure.com:v3/org/project/repo", RepoKey("dev.azure.com", "org/project/repo")),
    ("https://org.visualstudio.com/My%20Project/_git/repo", RepoKey("dev.azure.com", "org/my project/repo")),
    (
        "https://bitbucket.example.com/projects/PROJ/repos/repo/browse",
        RepoKey("bitbucket.example.com", "proj/repo"),
    ),
    ("https://gitlab.com/a/b/c/repo/-/tree/main", RepoKey("gitlab.com", "a/b/c/repo")),
    ("https://github.com/o/r/tree/main", RepoKey("github.com", "o/r/tree/main")),
    ("https://git.example.com/o/repo.git.git", RepoKey("git.example.com", "o/repo")),
    ("https://github.com/.*/.*", RepoKey("github.com", ".*/.*")),
]

NOT_A_REPO = [
    "",
    "   ",
    "not a url",
    "https://",
    "https:///owner/repo",
    "https://github.com",
    "https://github.com/",
    "https://github.com/owner",
    "https://github.com/.git",
    "git@github.com",
    "git@github.com:",
    "github.com/owner/repo",
    "/srv/git/repo.git",
    "C:/Users/me/repo",
    "localhost:owner/repo",
    "git.example.com:7999/proj/repo.git",
    "file:///srv/git/repo.git",
    "ftp://git.example.com/o/repo",
    "https://.*/.*",
    "https://gith*b.com/o/r",
    "https://git%68ub.com/o/r",
    "https://github.com:notaport/o/r",
    "https://github.com:99999/o/r",
    "ssh://git@ssh.dev.azure.com:v3/org/project/repo",
    "https://github.com/evil/../victim/repo",
    "https://github.com/./o/r",
    "https://github.com/o/r%00",
    "https://github.com/o/%ff",
    "https://git.example.com/o\n/r",
    "https://github.com\\evil.com/o/r",
    "https://dev.azure.com/org/project",
    "https://dev.azure.com/a/b/c/_git/repo",
    "https://gitlab.com/-/ide/project",
    "https://exämple.com/o/r",
]


@pytest.mark.parametrize(("a", "b"), SAME_REPO)
def test_same_repository(a: str, b: str) -> None:
    ka = repo_key(a)
    assert ka is not None
    assert ka == repo_key(b)
    assert hash(ka) == hash(repo_key(b))


@pytest.mark.parametrize(("a", "b"), DIFFERENT_REPO)
def test_different_repository(a: str, b: str) -> None:
    ka, kb = repo_key(a), repo_key(b)
    assert ka is not None
    assert kb is not None
    assert ka != kb


@pytest.mark.parametrize(("a", "b"), CASE_ONLY)
def test_case_sensitive_path_mode(a: str, b: str) -> None:
    assert repo_key(a) == repo_key(b)
    strict_a = repo_key(a, case_sensitive_path=True)
    assert strict_a is not None
    assert strict_a != repo_key(b, case_sensitive_path=True)
    assert strict_a.host == strict_a.host.lower()


@pytest.mark.parametrize(("url", "key"), EXPECTED_KEYS)
def test_canonical_key(url: str, key: RepoKey) -> None:
    assert repo_key(url) == key


@pytest.mark.parametrize("url", NOT_A_REPO)
def test_not_a_repo_url(url: str) -> None:
    assert repo_key(url) is None
    assert unusable_reason(url)


def test_str_is_host_slash_path_and_never_holds_credentials() -> None:
    key = repo_key("https://x-access-token:ghp_secret@github.com:443/o/r.git?token=q")
    assert str(key) == "github.com/o/r"
    assert "ghp_secret" not in repr(key)


def test_keys_index_a_dict() -> None:
    index = {repo_key("git@github.com:o/r.git"): "gitrepo-a"}
    assert index.get(repo_key("https://github.com/O/R/")) == "gitrepo-a"
    assert index.get(repo_key("https://github.com/o/r-suffix")) is None


def test_self_hosted_ssh_alias() -> None:
    aliases = {"SSH.Git.Example.com": "git.example.com"}
    web = "https://git.example.com/o/app"
    ssh = "git@ssh.git.example.com:o/app.git"
    assert repo_key(web) != repo_key(ssh)
    assert repo_key(web, ssh_host_aliases=aliases) == repo_key(ssh, ssh_host_aliases=aliases)
    # known public aliases still apply when a custom table is given
    assert repo_key("git@ssh.github.com:o/r", ssh_host_aliases=aliases) == RepoKey("github.com", "o/r")


def test_ssh_prefix_is_not_stripped_from_unknown_hosts() -> None:
    assert repo_key("git@ssh.example.com:o/r") == RepoKey("ssh.example.com", "o/r")


def test_scp_with_user_takes_digits_as_path_like_git() -> None:
    # git itself reads this as path "7999/proj/repo", which does not clone on Bitbucket Server
    assert repo_key("git@bitbucket.example.com:7999/proj/repo.git") == RepoKey(
        "bitbucket.example.com", "7999/proj/repo"
    )


# --- explain_difference -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (
            "https://github.com/example-org/app",
            "https://gitlab.com/example-org/app",
            "hosts differ: github.com vs gitlab.com",
        ),
        (
            "https://github.com/example-org/app",
            "https://github.com/example-org/app-suffix",
            "paths differ: example-org/app vs example-org/app-suffix (same owner, different repository)",
        ),
        (
            "https://github.com/example-org/app",
            "https://github.com/example-org/app/tree/main",
            "paths differ: example-org/app vs example-org/app/tree/main "
            "(extra trailing segments 'tree/main': matching is exact, never by prefix)",
        ),
        (
            "https://github.com/a/app",
            "https://gitlab.com/b/app",
            "hosts differ: github.com vs gitlab.com; paths differ: a/app vs b/app",
        ),
        (
            "git@github.com:Example-Org/App.git",
            "https://github.com/example-org/app",
            "same repository: github.com/example-org/app",
        ),
    ],
)
def test_explain_difference(a: str, b: str, expected: str) -> None:
    assert explain_difference(a, b) == expected


def test_explain_difference_case_sensitive() -> None:
    text = explain_difference(
        "https://git.example.com/Team/App", "https://git.example.com/team/app", case_sensitive_path=True
    )
    assert text == "paths differ: Team/App vs team/app (only letter case differs, and case-sensitive paths are on)"


def test_explain_difference_unusable_url_hides_credentials() -> None:
    text = explain_difference("https://user:hunter2@github.com?token=abc", "https://github.com/o/r")
    assert text.startswith("first URL 'https://***@github.com' is not a usable repo URL: ")
    assert "hunter2" not in text
    assert "abc" not in text
    both = explain_difference("", "ftp://x.example/o/r")
    assert "first URL '' is not a usable repo URL: empty" in both
    assert "second URL 'ftp://x.example/o/r' is not a usable repo URL: unsupported scheme 'ftp'" in both


def test_explain_difference_uses_aliases() -> None:
    aliases = {"ssh.git.example.com": "git.example.com"}
    a, b = "https://git.example.com/o/app", "git@ssh.git.example.com:o/app.git"
    assert explain_difference(a, b) == "hosts differ: git.example.com vs ssh.git.example.com"
    assert explain_difference(a, b, ssh_host_aliases=aliases) == "same repository: git.example.com/o/app"


# --- properties ---------------------------------------------------------------------------------

URL_TOKENS = [
    *"abcxyzABC019.-_~@:/?#%[]+* \\\t",
    *["://", ".git", "git@", "ssh://", "https://", "_git", "v3", "scm", "%20", "%2F", "%ff", "-/", "é", "İ"],
]
URLISH = st.lists(st.sampled_from(URL_TOKENS), max_size=40).map("".join) | st.text(max_size=80)

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
HOST = st.one_of(
    st.sampled_from(["github.com", "gitlab.com", "bitbucket.org", "git.example.com", "bitbucket.example.com"]),
    st.lists(LABEL, min_size=2, max_size=4).map(".".join),
)
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789-_.~ ", min_size=1, max_size=10).filter(
    lambda s: s not in {".", "..", "-"} and s.strip() == s
)
PATH = st.lists(SEGMENT, min_size=2, max_size=5).map("/".join)


@given(URLISH, st.booleans())
@example("https://.*/.*", False)
@example("git@[::1]:repo", False)
@example("[::1]:repo", False)
@example("https://[::1", True)
@example("ssh://git@host:" + "9" * 5000 + "/o/r", False)
@example("https://dev.azure.com/org/proj/_git/_git", False)
def test_never_raises_and_canonical_form_is_a_fixed_point(text: str, case_sensitive: bool) -> None:
    key = repo_key(text, case_sensitive_path=case_sensitive)
    if key is None:
        assert unusable_reason(text, case_sensitive_path=case_sensitive)
        return
    assert repo_key(key.url(), case_sensitive_path=case_sensitive) == key
    assert isinstance(explain_difference(text, key.url()), str)


@given(HOST, PATH, st.booleans())
def test_decorations_never_change_the_key(host: str, path: str, case_sensitive: bool) -> None:
    base = repo_key(f"https://{host}/{path}", case_sensitive_path=case_sensitive)
    assume(base is not None)
    assert base is not None
    assert repo_key(base.url(), case_sensitive_path=case_sensitive) == base
    variants = [
        f"https://{host}/{path}.git",
        f"https://{host}/{path}/",
        f"https://{host}/{path}.git/",
        f"https://user@{host}/{path}",
        f"https://x-access-token:ghp_x@{host}/{path}",
        f"https://{host}:8443/{path}",
        f"ssh://git@{host}:7999/{path}.git",
        f"git@{host}:{path}.git",
        f"https://{host.upper()}/{path}",
    ]
    for variant in variants:
        assert repo_key(variant, case_sensitive_path=case_sensitive) == base, variant


@given(HOST, PATH, SEGMENT)
def test_a_longer_name_never_matches(host: str, path: str, suffix: str) -> None:
    base = repo_key(f"https://{host}/{path}")
    assume(base is not None)
    longer = repo_key(f"https://{host}/{path}-{suffix}")
    assume(longer is not None)
    assert longer != base


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://git.a.example.com/owner/scm/team/app.git", "https://git.b.example.com/team/app.git"),
        ("https://git.b.example.com/team/app.git", "https://git.a.example.com/owner/scm/team/app.git"),
        ("git@git.a.example.com:owner/scm/team/app.git", "ssh://git@git.b.example.com:7999/team/app.git"),
        ("ssh://git@git.b.example.com:7999/team/app.git", "https://git.a.example.com/bitbucket/scm/team/app"),
    ],
    ids=["folded-a-vs-b", "b-vs-folded-a", "scp-folded-vs-ssh", "ssh-vs-context-path"],
)
def test_bitbucket_server_folding_stays_on_its_host(a: str, b: str) -> None:
    """`owner/scm/team/app` folds to `team/app` (a Bitbucket Server context path) on its own host only:
    the key keeps the host, so it never matches `team/app` on another one, whichever side is folded."""
    ka, kb = repo_key(a), repo_key(b)
    assert ka is not None
    assert kb is not None
    assert ka.path == kb.path == "team/app"
    assert ka != kb
    assert explain_difference(a, b).startswith("hosts differ")
