"""One source for every fact (issue #12): the regions are the catalogue charts/super-node/regions.yaml,
the environments the chart schema's, the clouds inventory_validation.CLOUDS, and a host's region and
namespace the role icn.super_node.region's defaults. Where a static copy cannot read its source
(values.schema.json, argument_specs.yml, the storage_class role's per-cloud classes) this checks
that it agrees; anywhere else a copy fails the test."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from chartkit import CHART, REGIONS, ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.inventory_validation import CLOUDS  # noqa: E402

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
# Where the region list may stand: the catalogue itself, and lab/fleet.yaml, the lab's bigger
# catalogue (its first seven regions are the production ones, with their neighbours).
# plugins/modules/region_health.py: its EXAMPLES (documentation) list the regions.
ALLOWED = {"charts/super-node/regions.yaml", "lab/fleet.yaml", "plugins/modules/region_health.py"}
# Lines that are comments (prose may name regions, e.g. values.yaml's round-trip table).
COMMENT = re.compile(r"^\s*(#|//|\{\{-?\s*/\*)")


def repository_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         text=True, capture_output=True, check=True).stdout.split()
    return sorted(f for f in set(out) if (ROOT / f).is_file())


def region_run(names: list[str], at_least: int = 4) -> re.Pattern:
    """Any `at_least` consecutive regions of the catalogue, in its order, as a list would write them."""
    sep = r"""(?:[\s"',\[\]]|-\s)+"""
    runs = ["(?<![\\w-])" + sep.join(re.escape(n) for n in names[i:i + at_least]) + "(?![\\w-])"
            for i in range(len(names) - at_least + 1)]
    return re.compile("|".join(runs))


def test_the_schema_names_no_region():
    """The schema checks a region's form; which regions exist is the catalogue's (the chart's helpers
    and the inventory validation read it), so a fleet's own catalogue needs no other schema."""
    text = (CHART / "values.schema.json").read_text()
    assert "enum" not in SCHEMA["definitions"]["region"]
    assert not [r for r in REGIONS if f'"{r}"' in text]


def test_the_catalogue_is_the_seven_production_regions_in_order_each_with_its_neighbours():
    assert REGIONS == ["na-west", "na-east", "eu-west", "eu-east", "apac", "latam", "mena"]
    catalogue = yaml.safe_load((CHART / "regions.yaml").read_text())["regions"]
    for entry in catalogue:
        others = [r for r in REGIONS if r != entry["name"]]
        assert sorted(entry["neighbours"]) == sorted(others), entry["name"]
    assert yaml.safe_load((CHART / "values.yaml").read_text())["routing"]["neighbours"] == {}


def test_the_lab_fleet_starts_with_the_production_catalogue():
    fleet = yaml.safe_load((ROOT / "lab/fleet.yaml").read_text())["regions"]
    production = yaml.safe_load((CHART / "regions.yaml").read_text())["regions"]
    assert fleet[:len(production)] == production
    names = [e["name"] for e in fleet]
    assert len(names) == len(set(names)) >= 14
    for entry in fleet:
        assert entry["neighbours"] and entry["name"] not in entry["neighbours"]
        assert set(entry["neighbours"]) <= set(names)


def test_no_copy_of_the_region_list():
    pattern = region_run(REGIONS)
    copies = []
    for path in repository_files():
        if path in ALLOWED or path.endswith(".md") or path == "tests/test_one_source.py":
            continue
        try:
            text = (ROOT / path).read_text()
        except UnicodeDecodeError:
            continue
        code = "\n".join(line for line in text.splitlines() if not COMMENT.match(line))
        for match in pattern.finditer(code):
            copies.append(f"{path}: {match.group(0)[:80]!r}")
    assert not copies, ("a copy of the region list: read charts/super-node/regions.yaml instead\n  "
                        + "\n  ".join(copies))


def test_the_copy_finder_finds_copies():
    pattern = region_run(REGIONS)
    assert pattern.search('REGIONS = ["na-west", "na-east", "eu-west", "eu-east", "apac"]')
    assert pattern.search("regions:\n    - eu-west\n    - eu-east\n    - apac\n    - latam\n")
    assert not pattern.search("regions: [na-west, na-east, eu-west]")  # the molecule scenario's three
    assert not pattern.search("na-west: [na-east, latam, apac, eu-west, eu-east, mena]")  # a neighbours row


def test_the_region_and_namespace_are_defined_once():
    rederived = re.compile(r"super_node_region\s*\|\s*default\(|super_node_namespace\s*\|\s*default\(")
    found = [path for path in repository_files() if path.endswith((".yml", ".yaml"))
             and rederived.search((ROOT / path).read_text())]
    assert not found, f"read super_node_region / super_node_namespace (role icn.super_node.region) in {found}"
    defaults = yaml.safe_load((ROOT / "roles/region/defaults/main.yml").read_text())
    fleet = "{{ groups['super_nodes'] | icn.super_node.fleet_vars(hostvars) }}"
    assert defaults == {"super_node_region": "{{ inventory_hostname }}", "super_node_namespace": "icn",
                        "super_node_catalogue": "", "super_node_fleet": fleet}
    for path in repository_files():
        if path.startswith("roles/") and path.endswith("defaults/main.yml") and path != "roles/region/defaults/main.yml":
            values = yaml.safe_load((ROOT / path).read_text()) or {}
            assert not {"super_node_region", "super_node_namespace"} & set(values), path


def argument_spec(role: str) -> dict:
    return yaml.safe_load((ROOT / f"roles/{role}/meta/argument_specs.yml").read_text())[
        "argument_specs"]["main"]["options"]


def test_the_copies_of_the_clouds_agree():
    assert argument_spec("storage_class")["storage_class_cloud"]["choices"] == list(CLOUDS)
    classes = yaml.safe_load((ROOT / "roles/storage_class/vars/main.yml").read_text())["_storage_class_clouds"]
    assert list(classes) == list(CLOUDS)


def test_the_copies_of_the_environments_agree():
    environments = SCHEMA["properties"]["global"]["properties"]["environment"]["enum"]
    assert argument_spec("super_node")["super_node_environment"]["choices"] == environments


@pytest.mark.parametrize("role", ["secrets", "istio", "super_node"])
def test_the_roles_that_read_the_region_depend_on_the_region_role(role):
    meta = yaml.safe_load((ROOT / f"roles/{role}/meta/main.yml").read_text())
    assert {"role": "icn.super_node.region"} in meta["dependencies"]


def test_the_roles_read_the_other_regions_from_the_fleet_read_once():
    """The cluster and region of the other hosts come from super_node_fleet (set once per run by the
    preflight role), not from hostvars: each hostvars[host] builds that host's variables again, in
    every worker of every task that reads it, a cost that grew with the square of the regions."""
    per_use = re.compile(r"(cluster_hosts|host_regions|cluster_owners)\(hostvars|map\('extract', hostvars\)\s*\|\s*unique")
    found = [path for path in repository_files() if path.startswith(("roles/", "playbooks/"))
             and path.endswith((".yml", ".yaml")) and per_use.search((ROOT / path).read_text())]
    assert not found, found
    validate = (ROOT / "roles/preflight/tasks/validate.yml").read_text()
    assert "super_node_fleet: \"{{ groups['super_nodes'] | icn.super_node.fleet_vars(hostvars) }}\"" in validate
