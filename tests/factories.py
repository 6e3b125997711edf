"""The objects tests build, in one place: GitRepo API objects, an index of them, an in-memory receiver,
and each provider's repository URL forms. (Deliveries and signers are in tests/support.py.)"""

from __future__ import annotations

from typing import Any

from controller.config import Config, load_text
from controller.index import GitRepoIndex, gitrepo_info
from controller.metrics import Metrics
from controller.pipeline import Receiver
from controller.reload import ConfigHolder
from controller.secrets import SecretStore
from tests.support import secret_data

SECRET = "unit-secret"
NS = "cattle-fleet-system"

REPO_FORMS: dict[str, tuple[str, str]] = {
    "github": ("https://github.com/example-org/{r}", "git@github.com:example-org/{r}.git"),
    "gitlab": ("https://gitlab.example.com/platform/{r}", "git@gitlab.example.com:platform/{r}.git"),
    "bitbucket": ("https://bitbucket.org/example-org/{r}", "git@bitbucket.org:example-org/{r}.git"),
    "bitbucket-server": (
        "https://bitbucket.example.com/scm/plat/{r}.git",
        "ssh://git@bitbucket.example.com:7999/plat/{r}.git",
    ),
    "gogs": ("https://gogs.example.com/org/{r}", "git@gogs.example.com:org/{r}.git"),
    "gitea": ("https://gitea.example.com/org/{r}", "git@gitea.example.com:org/{r}.git"),
    "azure-devops": (
        "https://dev.azure.com/example-org/Platform/_git/{r}",
        "git@ssh.dev.azure.com:v3/example-org/Platform/{r}",
    ),
    "generic": ("https://git.example.com/platform/{r}.git", "ssh://git@git.example.com:2222/platform/{r}.git"),
}


def forms(provider: str, repo: str) -> tuple[str, str]:
    https, ssh = REPO_FORMS[provider]
    return https.format(r=repo), ssh.format(r=repo)


def gitrepo(
    name: str, repo: str, branch: str = "main", namespace: str = "fleet-default", **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"},
        "spec": {"repo": repo, "branch": branch, **spec},
        "status": {},
    }


def index_of(*objs: dict[str, Any]) -> GitRepoIndex:
    index = GitRepoIndex()
    index.replace_all([i for i in map(gitrepo_info, objs) if i is not None])
    return index


def receiver(
    config_text: str = "",
    secrets: dict[str, dict[str, str]] | None = None,
    synced: bool = True,
    gitrepos: list[dict[str, Any]] | None = None,
) -> Receiver:
    config: Config = load_text(config_text, "test.yaml")
    store_data = secrets if secrets is not None else {f"{NS}/gitjob-webhook": secret_data("github", SECRET)}

    async def read(namespace: str, name: str) -> dict[str, bytes] | None:
        data = store_data.get(f"{namespace}/{name}")
        return None if data is None else {k: v.encode() for k, v in data.items()}

    index = GitRepoIndex()
    index.replace_all([i for i in map(gitrepo_info, gitrepos or []) if i is not None])
    index.synced = synced
    return Receiver(ConfigHolder(config), index, SecretStore(read, NS), Metrics(), updater=None)
