"""Write the per-provider blocks of schema/config.schema.json from the provider registry.

    python tools/gen_config_schema.py           rewrite schema/config.schema.json in place
    python tools/gen_config_schema.py --check   exit 1 when the committed file is stale (tests)
    make chart-schema                           this, then chart/values.schema.json

The schema is the one source of the config and is written by hand, except for what it would
otherwise repeat: one block per provider under `properties.providers.properties`. Each block is the
switches every provider has (`definitions.providerSwitches`, written once in the schema) plus the
provider's own options (`Provider.options_schema`), described by `Provider.title`, in the registry's
order. Adding a provider to `controller/providers/` and running this is all the schema needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a script: `python tools/gen_config_schema.py`

from controller.providers import PROVIDERS  # noqa: E402 - needs the path above

SCHEMA = REPO_ROOT / "schema" / "config.schema.json"


def with_provider_blocks(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `properties.providers.properties` generated from the registry."""
    switches = schema["definitions"]["providerSwitches"]
    blocks = {
        p.name: {
            "type": "object",
            "additionalProperties": False,
            "default": {},
            "description": p.title,
            "properties": {**switches, **p.options_schema},
        }
        for p in PROVIDERS
    }
    out: dict[str, Any] = json.loads(json.dumps(schema))
    out["properties"]["providers"]["properties"] = blocks
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only report whether the file is current")
    args = parser.parse_args(argv)
    current = SCHEMA.read_text()
    wanted = render(with_provider_blocks(json.loads(current)))
    if args.check:
        if current != wanted:
            print(f"{SCHEMA} is stale: run `make chart-schema`", file=sys.stderr)
            return 1
        return 0
    SCHEMA.write_text(wanted)
    print(f"wrote {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
