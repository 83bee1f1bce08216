#!/usr/bin/env python3
"""Writes the region facts of charts/super-node/values.schema.json from the catalogue
charts/super-node/regions.yaml (the one source): the region enum, and routing.neighbours' keys.
values.schema.json cannot be templated, so its copy is generated; `--check` only says whether it
is stale (tests/test_one_source.py runs it) and exits 1 if so.

    python scripts/sync_regions.py          # rewrite the schema
    python scripts/sync_regions.py --check  # exit 1 when the schema is stale
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "super-node"
CATALOGUE = CHART / "regions.yaml"
SCHEMA = CHART / "values.schema.json"


def catalogue_regions(path: Path = CATALOGUE) -> list[str]:
    """The regions' names, in the catalogue's order."""
    return [str(entry["name"]) for entry in yaml.safe_load(path.read_text())["regions"]]


def synced(schema: dict, regions: list[str]) -> dict:
    out = copy.deepcopy(schema)
    out["definitions"]["region"]["enum"] = list(regions)
    out["definitions"]["region"]["description"] = "One of the regions of the catalogue regions.yaml."
    neighbours = out["properties"]["routing"]["properties"]["neighbours"]
    template = {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/region"}}
    neighbours["properties"] = {r: dict(copy.deepcopy(template), description=f"Nearest-first neighbours of {r}.")
                                for r in regions}
    neighbours["required"] = list(regions)
    return out


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the schema is stale; change nothing")
    args = parser.parse_args(argv)
    text = SCHEMA.read_text()
    want = render(synced(json.loads(text), catalogue_regions()))
    if text == want:
        return 0
    if args.check:
        print(f"{SCHEMA} is stale: run python scripts/sync_regions.py", file=sys.stderr)
        return 1
    SCHEMA.write_text(want)
    print(f"wrote {SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
