"""A real, throw-away Gitea on loopback: a git host that sends real webhooks on `git push`.

Built by `make tools` (tools/build-gitea.sh). Everything lives in one temp dir (sqlite database,
repositories, app.ini) and goes away on `stop()`; the process dies with the Python process that
started it (tools.controlplane.spawn).

    with Gitea() as gitea:
        repo = gitea.create_repo("apps")              # auto-initialised, default branch main
        gitea.create_hook("apps", "gitea", "http://127.0.0.1:8080/", secret="s3cret")
        work = gitea.clone("apps", tmp_path / "apps")
        commit = gitea.commit_and_push(work, "main")  # a real `git push` over HTTP with a token

Settings that matter for a test (measured, see ../shared/notes/real-fleet-and-gitea.md):
`[queue] TYPE=channel` (the default level queue adds 1.4-4.9 s of idle backoff to each delivery),
`[security] ALLOWED_HOST_LIST=loopback` (webhooks may target loopback only), `OFFLINE_MODE`, no SSH,
no Actions, and sqlite in WAL mode with a 30 s busy timeout (with the default 500 ms a push processed
while a delivery is being recorded can fail with "database is locked" on a loaded machine, and Gitea
then sends no webhook for it).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tools.controlplane import LOOPBACK, free_ports, spawn, terminate
from tools.fleet import built_tool, tools_cache

GITEA_VERSION = "v1.27.3"  # also in tools/build-gitea.sh and tools/gitea/go.mod
ADMIN = "fleet-admin"
TMP_PREFIX = "fleet-webhook-gitea-"


class GiteaError(RuntimeError):
    """Gitea failed to start, or an API call failed (the message carries the answer or the log)."""


def gitea_home(environ: dict[str, str] | None = None) -> Path:
    """The cache folder holding the gitea binary and its static files (`static/`)."""
    return tools_cache(environ) / f"gitea-{GITEA_VERSION}"


def find_gitea() -> Path:
    """The gitea binary, or GiteaError naming `make tools`."""
    return built_tool("gitea", GITEA_VERSION, "gitea", "build-gitea.sh", GiteaError, "static/templates")


class Gitea:
    """One Gitea process with an admin user and an API token; a context manager."""

    def __init__(self, *, binary: Path | None = None, tmp_parent: Path | None = None) -> None:
        self.binary = binary or find_gitea()
        self.static_root = self.binary.parent / "static"
        self._tmp_parent = tmp_parent
        self.tmpdir: Path | None = None
        self.port = 0
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    # --- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Gitea:
        return self.start()

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The ROOT_URL, with a trailing slash."""
        return f"http://{LOOPBACK}:{self.port}/"

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "gitea.log"

    def _env(self) -> dict[str, str]:
        assert self.tmpdir is not None
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.tmpdir / "home"),
            "GITEA_WORK_DIR": str(self.tmpdir),
            "GITEA_CUSTOM": str(self.tmpdir / "custom"),
            "USER": pwd.getpwuid(os.geteuid()).pw_name,
        }

    def _cli(self, *args: str) -> str:
        assert self.tmpdir is not None
        proc = subprocess.run(
            [str(self.binary), "--config", str(self.tmpdir / "app.ini"), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise GiteaError(f"gitea {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return proc.stdout.strip()

    def _write_app_ini(self) -> None:
        assert self.tmpdir is not None
        secret_key = self._cli("generate", "secret", "SECRET_KEY")
        internal_token = self._cli("generate", "secret", "INTERNAL_TOKEN")
        d = self.tmpdir
        user = pwd.getpwuid(os.geteuid()).pw_name  # Gitea refuses to run as anyone but RUN_USER
        (d / "app.ini").write_text(
            f"""APP_NAME = fleet-webhook e2e
RUN_MODE = prod
RUN_USER = {user}
WORK_PATH = {d}
I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true

[server]
PROTOCOL = http
HTTP_ADDR = {LOOPBACK}
HTTP_PORT = {self.port}
DOMAIN = {LOOPBACK}
ROOT_URL = {self.url}
STATIC_ROOT_PATH = {self.static_root}
APP_DATA_PATH = {d}/data
DISABLE_SSH = true
START_SSH_SERVER = false
OFFLINE_MODE = true
LFS_START_SERVER = false

[database]
DB_TYPE = sqlite3
PATH = {d}/data/gitea.db
SQLITE_JOURNAL_MODE = WAL
SQLITE_TIMEOUT = 30000

[repository]
ROOT = {d}/repos
DEFAULT_BRANCH = main

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret_key}
INTERNAL_TOKEN = {internal_token}
ALLOWED_HOST_LIST = loopback

[webhook]
ALLOWED_HOST_LIST = loopback
DELIVER_TIMEOUT = 10

[queue]
TYPE = channel

[service]
DISABLE_REGISTRATION = true

[actions]
ENABLED = false

[oauth2]
ENABLED = false

[mailer]
ENABLED = false

[indexer]
REPO_INDEXER_ENABLED = false

[cron]
ENABLED = false

[log]
MODE = console
LEVEL = Warn
"""
        )

    def start(self, timeout: float = 60.0) -> Gitea:
        """Write app.ini, start `gitea web` on 127.0.0.1, create the admin user and a token."""
        started = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self._tmp_parent))
        try:
            for sub in ("home", "custom", "data", "repos"):
                (self.tmpdir / sub).mkdir()
            (self.port,) = free_ports(1)
            self._write_app_ini()
            with self.log_path.open("wb") as log:
                self.proc = spawn(
                    [str(self.binary), "--config", str(self.tmpdir / "app.ini"), "web"], log, env=self._env()
                )
            deadline = time.monotonic() + timeout
            while not self._answers():
                if self.proc.poll() is not None:
                    raise GiteaError(f"gitea exited with {self.proc.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise GiteaError(f"gitea did not answer within {timeout:.0f}s:\n{self.log_tail()}")
                time.sleep(0.1)
            password = "e2e-" + os.urandom(12).hex()
            self._cli(
                "admin", "user", "create", "--admin", "--username", ADMIN, "--password", password,
                "--email", f"{ADMIN}@example.invalid", "--must-change-password=false",
            )  # fmt: skip
            self.token = self._cli(
                "admin", "user", "generate-access-token", "--username", ADMIN, "--token-name", "e2e",
                "--scopes", "all", "--raw",
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop gitea and remove its folder."""
        terminate(self.proc, grace)
        self.proc = None
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}api/v1/version", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Gitea's own log (errors and warnings only: LEVEL=Warn)."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    # --- API ---------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call Gitea's REST API (/api/v1 + path) as the admin; JSON in, JSON out."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}api/v1{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise GiteaError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc
        return json.loads(raw) if raw else None

    def create_repo(self, name: str) -> dict[str, Any]:
        """A public repository of the admin, initialised with a README on branch main."""
        repo: dict[str, Any] = self.api(
            "POST", "/user/repos", {"name": name, "auto_init": True, "default_branch": "main", "private": False}
        )
        return repo

    def create_hook(
        self,
        repo: str,
        kind: str,
        url: str,
        *,
        secret: str = "",
        content_type: str = "json",
        branch_filter: str = "*",
        events: tuple[str, ...] = ("push",),
    ) -> int:
        """Add a webhook of type `kind` (gitea, gogs, ...) to the admin's `repo`; returns its id."""
        hook = self.api(
            "POST",
            f"/repos/{ADMIN}/{repo}/hooks",
            {
                "type": kind,
                "active": True,
                "events": list(events),
                "branch_filter": branch_filter,
                "config": {"url": url, "content_type": content_type, "secret": secret, "http_method": "post"},
            },
        )
        return int(hook["id"])

    def delete_hook(self, repo: str, hook_id: int) -> None:
        """Remove a webhook."""
        self.api("DELETE", f"/repos/{ADMIN}/{repo}/hooks/{hook_id}")

    def hook_tasks(self, repo: str, limit: int = 5) -> list[dict[str, Any]]:
        """Gitea's record of the webhooks it sent for `repo`, newest first: hook id, event, delivered,
        succeeded, response status. Read from Gitea's sqlite database, because the API has no
        endpoint for it; the way to tell "Gitea never sent it" from "fleet-webhook ignored it"."""
        assert self.tmpdir is not None
        query = """
            SELECT t.hook_id, t.event_type, t.is_delivered, t.is_succeed, t.response_content
            FROM hook_task t JOIN webhook w ON w.id = t.hook_id JOIN repository r ON r.id = w.repo_id
            WHERE r.lower_name = ? ORDER BY t.id DESC LIMIT ?"""
        uri = f"file:{self.tmpdir / 'data' / 'gitea.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            rows = db.execute(query, (repo.lower(), limit)).fetchall()
        tasks = []
        for hook_id, event, delivered, succeeded, response in rows:
            with contextlib.suppress(ValueError, TypeError):
                response = json.loads(response or "{}").get("status")
            tasks.append(
                {"hook": hook_id, "event": event, "delivered": bool(delivered), "succeeded": bool(succeeded),
                 "status": response}
            )  # fmt: skip
        return tasks

    # --- git ---------------------------------------------------------------------------

    def clone_url(self, repo: str, *, with_token: bool = False) -> str:
        """The HTTP clone URL (with the token as password when pushing)."""
        auth = f"{ADMIN}:{self.token}@" if with_token else ""
        return f"http://{auth}{LOOPBACK}:{self.port}/{ADMIN}/{repo}.git"


def git_env(home: Path) -> dict[str, str]:
    """An environment for the git CLI that reads no user or system config and never prompts."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@example.invalid",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@example.invalid",
        "NO_PROXY": "*",
        "no_proxy": "*",
    }


class Worktree:
    """A local clone of a Gitea repository that commits and pushes with the git CLI."""

    def __init__(self, gitea: Gitea, repo: str, path: Path) -> None:
        self.gitea, self.repo, self.path = gitea, repo, path
        self.env = git_env(path.parent)
        self._n = 0
        subprocess.run(
            ["git", "clone", "-q", gitea.clone_url(repo, with_token=True), str(path)],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def git(self, *args: str) -> str:
        """Run git in the clone; stdout stripped (raises with stderr on failure)."""
        proc = subprocess.run(
            ["git", *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        if proc.returncode != 0:
            raise GiteaError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()

    def commit(self, message: str | None = None) -> str:
        """Change a file and commit on the current branch; returns the new commit id."""
        self._n += 1
        (self.path / "change.txt").write_text(f"{message or 'change'} {self._n} {time.time_ns()}\n")
        self.git("add", "change.txt")
        self.git("commit", "-q", "-m", message or f"change {self._n}")
        return self.git("rev-parse", "HEAD")

    def push(self, *refspecs: str, force: bool = False) -> None:
        """`git push origin REFSPEC...` (returns when git does: the moment the benchmark starts timing).

        Gitea's post-receive hook, which queues the webhooks, cannot fail a push: when it reports an
        error on the `remote:` side band the push has landed but no webhook will follow, so that is
        raised here rather than left for a test to find as a missing delivery."""
        args = ["push", "-q", *(["--force"] if force else []), "origin", *refspecs]
        proc = subprocess.run(
            ["git", *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=60, check=False
        )
        remote_errors = [
            line for line in proc.stderr.splitlines() if line.startswith("remote:") and "error" in line.lower()
        ]
        if proc.returncode != 0 or remote_errors:
            raise GiteaError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")

    def remote_commit(self, ref: str) -> str:
        """The commit `ref` (refs/heads/x, refs/tags/y) names on Gitea now, tags peeled."""
        listing = self.git("ls-remote", "origin", ref, ref + "^{}").splitlines()
        lines = {name: sha for sha, name in (line.split("\t", 1) for line in listing)}
        commit = lines.get(ref + "^{}") or lines.get(ref)
        if not commit:
            raise GiteaError(f"{ref} does not exist on {self.repo}")
        return commit

    def commit_and_push(self, branch: str = "main", message: str | None = None) -> str:
        """Check out `branch` (created from HEAD if new), commit, push; returns the pushed commit id."""
        current = self.git("rev-parse", "--abbrev-ref", "HEAD")
        if current != branch:
            known = self.git("branch", "--list", branch)
            self.git("checkout", "-q", *([branch] if known else ["-b", branch]))
        commit = self.commit(message)
        self.push(f"HEAD:refs/heads/{branch}")
        return commit
