"""The fuzz targets: one per provider in the registry (tests/fuzz/common.py) and the URL normalizer.

The normalizer target takes the input bytes as the URL (UTF-8, undecodable bytes replaced).
Invariants: nothing raises; a URL has a key exactly when it has no unusable_reason; a key's canonical
URL gives the same key back; the key's host never carries userinfo; redact_url stays bounded.
"""

from __future__ import annotations

from controller.normalize import explain_difference, redact_url, repo_key, unusable_reason
from controller.providers import PROVIDER_NAMES
from tests.fuzz.common import Target, provider_target


def fuzz_normalize(data: bytes) -> None:
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


TARGETS: dict[str, Target] = {**{name: provider_target(name) for name in PROVIDER_NAMES}, "normalize": fuzz_normalize}
