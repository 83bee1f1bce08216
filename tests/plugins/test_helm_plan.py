"""How icn.super_node.helm_release decides (plugins/module_utils/helm_release.py), without helm or
a cluster: the manifest split object by object, its normal form, the diff, and the plan."""
from __future__ import annotations

import sys

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.helm_release import (  # noqa: E402
    manifest_diff, normalise_manifest, plan, split_manifest, values_diff)

SERVICE = "# Source: super-node/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: a"
SERVICE_B = "# Source: super-node/templates/service.yaml\napiVersion: v1\nkind: Service\nmetadata:\n  name: b"
CONFIGMAP = "# Source: super-node/templates/configmap.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c"
MANIFEST = f"---\n{SERVICE}\n---\n{SERVICE_B}\n---\n{CONFIGMAP}\n"


def release(manifest=MANIFEST, values=None, status="deployed"):
    return {"revision": 3, "status": status, "manifest": manifest, "values": {"a": 1} if values is None else values}


def test_split_manifest_keys_each_object_by_template_and_rank():
    docs = split_manifest(MANIFEST)
    assert docs == {"super-node/templates/service.yaml #1": SERVICE,
                    "super-node/templates/service.yaml #2": SERVICE_B,
                    "super-node/templates/configmap.yaml #1": CONFIGMAP}


def test_split_manifest_skips_empty_documents_and_names_sourceless_ones():
    assert split_manifest("") == {} and split_manifest(None) == {}
    assert split_manifest("---\n\n---\n") == {}
    assert split_manifest("kind: A\n---\nkind: B") == {"(no source) #1": "kind: A", "(no source) #2": "kind: B"}


def test_normalise_manifest_ignores_the_order_of_templates_and_blank_lines():
    reordered = f"{CONFIGMAP}\n---\n\n{SERVICE}\n---\n{SERVICE_B}\n\n"
    assert normalise_manifest(reordered) == normalise_manifest(MANIFEST)
    assert normalise_manifest(MANIFEST).endswith("\n")
    assert normalise_manifest("") == ""


def test_manifest_diff_is_empty_for_the_same_objects_and_names_both_sides():
    assert manifest_diff(MANIFEST, MANIFEST.replace("---\n", "---\n\n"), "r") == ""
    diff = manifest_diff(MANIFEST, MANIFEST.replace("name: c", "name: d"), "r")
    assert diff.startswith("--- r (deployed)\n+++ r (desired)\n")
    assert "-  name: c\n" in diff and "+  name: d\n" in diff
    assert values_diff({"a": 1}, {"a": 1}, "r") == ""
    assert '-  "a": 1' in values_diff({"a": 1}, {"a": 2}, "r")


def test_plan_installs_a_missing_release():
    assert plan(None, {"config": {}}) == (True, ["release is not installed"])


def test_plan_is_unchanged_for_the_same_objects_and_values():
    assert plan(release(), {"manifest": MANIFEST.replace("\n---", "\n\n---"), "config": {"a": 1}}) == (False, [])
    # the values alone decide when the desired release holds no manifest
    assert plan(release(), {"config": {"a": 1}}) == (False, [])
    assert plan(release(values={}), {"config": None}) == (False, [])


def test_plan_names_every_reason():
    assert plan(release(), {"manifest": MANIFEST.replace("name: c", "name: d"), "config": {"a": 1}}) == (
        True, ["rendered objects differ"])
    assert plan(release(), {"config": {"a": 2}}) == (True, ["values differ"])
    assert plan(release(status="failed"), {"manifest": "", "config": {}}) == (
        True, ["release status is failed", "rendered objects differ", "values differ"])
