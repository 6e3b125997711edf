"""`redact_url`: every form a repository URL with a credential can take loses the credential before it
reaches a log line, an answer or a config error; the host stays, so the line still says where."""

from __future__ import annotations

import pytest

from controller import config as cfg
from controller.normalize import redact_url

TOKEN = "glpat-s3cr3tT0ken"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (f"https://user:{TOKEN}@git.example.com/org/repo.git", "https://***@git.example.com/org/repo.git"),
        (f"https://{TOKEN}@git.example.com/org/repo", "https://***@git.example.com/org/repo"),
        (f"HTTP://oauth2:{TOKEN}@git.example.com", "HTTP://***@git.example.com"),
        (f"ssh://git:{TOKEN}@git.example.com:7999/org/repo.git", "ssh://***@git.example.com:7999/org/repo.git"),
        (f"git+ssh://git:{TOKEN}@git.example.com/org/repo", "git+ssh://***@git.example.com/org/repo"),
        (f"user:{TOKEN}@git.example.com:org/repo.git", "***@git.example.com:org/repo.git"),
        (f"user:{TOKEN}@git.example.com:7999/org/repo.git", "***@git.example.com:7999/org/repo.git"),
        (f"user:{TOKEN}@git.example.com/org/repo", "***@git.example.com/org/repo"),
        (f"{TOKEN}@git.example.com:org/repo", "***@git.example.com:org/repo"),
        (f"u:a/{TOKEN}@git.example.com:org/repo", "***@git.example.com:org/repo"),  # a '/' in the token
        (f"https://u:a/{TOKEN}@git.example.com/org/repo", "https://***@git.example.com/org/repo"),
        (f"https://u:a@b{TOKEN}@git.example.com/org/repo", "https://***@git.example.com/org/repo"),
        (f"https://git.example.com/org/repo?private_token={TOKEN}", "https://git.example.com/org/repo"),
        (f"https://git.example.com/org/repo#{TOKEN}", "https://git.example.com/org/repo"),
        ("git@git.example.com:org/repo.git", "***@git.example.com:org/repo.git"),
        ("https://git.example.com/org/repo", "https://git.example.com/org/repo"),
    ],
)
def test_every_credential_form_is_redacted(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert TOKEN not in redact_url(f"  {url}  ")


def test_config_errors_do_not_repeat_a_credential_in_a_mapping_url() -> None:
    text = f"mappings:\n  - repo: 'user:{TOKEN}@'\n    aliases: ['https://user:{TOKEN}@']\n"
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load_text(text, "c.yaml")
    assert "is not a repository URL" in str(caught.value)
    assert TOKEN not in str(caught.value)
