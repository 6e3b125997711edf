"""Fuzz target: the gitea parser (detect, delivery_id, verify, parse, parse_all). See tests/fuzz/common.py.

python -m tests.fuzz.fuzz_gitea [atheris/libFuzzer flags] [corpus dirs or files]
"""

from __future__ import annotations

from tests.fuzz.common import main, provider_target

TestOneInput = provider_target("gitea")

if __name__ == "__main__":
    main(TestOneInput)
