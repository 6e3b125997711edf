"""Fuzz target: the repository URL normalizer (controller/normalize.py). See tests/fuzz/common.py.

The input bytes are the URL (UTF-8, undecodable bytes replaced). Invariants: nothing raises; a URL has a
key exactly when it has no unusable_reason; a key's canonical URL gives the same key back; the key's
host never carries userinfo; redact_url stays bounded.

    python -m tests.fuzz.fuzz_normalize [atheris/libFuzzer flags] [corpus dirs or files]
"""

from __future__ import annotations

from controller.normalize import explain_difference, redact_url, repo_key, unusable_reason
from tests.fuzz.common import main


def TestOneInput(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for case_sensitive in (False, True):
        key = repo_key(text, case_sensitive_path=case_sensitive)
        reason = unusable_reason(text, case_sensitive_path=case_sensitive)
        assert (key is None) == (reason is not None), (text, reason)
        if key is not None:
            assert repo_key(key.url(), case_sensitive_path=case_sensitive) == key, text
            assert "@" not in key.host, text
            assert key.path, text
            assert not key.path.startswith("/"), key
            assert not key.path.endswith("/"), key
    redacted = redact_url(text)
    assert isinstance(redacted, str)
    assert len(redacted) <= 203
    assert isinstance(explain_difference(text, "https://github.com/o/r"), str)


if __name__ == "__main__":
    main(TestOneInput)
