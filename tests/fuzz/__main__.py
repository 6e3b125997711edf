"""`python -m tests.fuzz TARGET [atheris/libFuzzer flags] [corpus dirs or files]`.

TARGET is a provider's config key (every provider in the registry has a target) or `normalize`.
"""

from __future__ import annotations

import sys

from tests.fuzz.common import main
from tests.fuzz.targets import TARGETS

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz {{{','.join(TARGETS)}}} [fuzzer flags] [corpus ...]")
    target = TARGETS[sys.argv.pop(1)]
    main(target)
