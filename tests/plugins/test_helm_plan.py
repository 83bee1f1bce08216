"""How icn.super_node.helm_release decides (plugins/module_utils/helm_release.py), without helm or
a cluster: the manifest split object by object, its normal form, the diff, and the plan."""
from __future__ import annotations

import base64
import gzip
import json
import shutil
import sys

import pytest

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.helm_release import (  # noqa: E402
    VERDICT_ANNOTATION, decode_release, inputs_label, manifest_diff, normalise_manifest, plan,
    render_inputs_digest, revision_verdict, split_manifest, stored_head, values_diff)

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


def test_decode_release_reads_what_helms_secret_driver_writes():
    release_json = {"name": "r", "version": 4, "info": {"status": "deployed"}, "config": {"a": 1}}
    helm_encoded = base64.b64encode(gzip.compress(json.dumps(release_json).encode()))
    assert decode_release(base64.b64encode(helm_encoded).decode()) == release_json
    # An older Helm wrote it without gzip.
    plain = base64.b64encode(json.dumps(release_json).encode())
    assert decode_release(base64.b64encode(plain).decode()) == release_json


def test_the_digest_reads_the_clusters_apis_only_for_a_chart_that_names_capabilities(tmp_path):
    """Istio's charts never name .Capabilities: their digest needs the cluster's version alone (one
    request, not the two discovery documents), and is the one the APIs' tuple gives."""
    helm = shutil.which("python3") or sys.executable
    plain = tmp_path / "plain"
    (plain / "templates").mkdir(parents=True)
    (plain / "Chart.yaml").write_text("name: plain\nversion: 1.0.0\n")
    (plain / "templates/cm.yaml").write_text("kind: ConfigMap\n")
    asked = []

    def caps(with_apis):
        asked.append(with_apis)
        return ("v1.36.3", ["apps/v1", "v1"] if with_apis else None)

    for chart, names_capabilities in ((plain, False), (ROOT / "charts/super-node", True)):
        asked.clear()
        lazy = render_inputs_digest(str(chart), "r", "icn", {"a": 1}, caps, helm)
        assert asked == [names_capabilities]
        assert lazy == render_inputs_digest(str(chart), "r", "icn", {"a": 1}, ("v1.36.3", ["apps/v1", "v1"]), helm)
    # no version, or no APIs where the chart needs them: the digest cannot tell
    assert render_inputs_digest(str(plain), "r", "icn", {}, lambda with_apis: None, helm) is None
    assert render_inputs_digest(str(ROOT / "charts/super-node"), "r", "icn", {},
                                lambda with_apis: ("v1.36.3", None), helm) is None


def test_the_render_inputs_digest_changes_with_every_input_and_only_with_them(tmp_path):
    chart = tmp_path / "chart"
    shutil.copytree(ROOT / "charts/super-node", chart)
    helm = shutil.which("python3") or sys.executable  # any file stands in for the helm binary
    caps = ("v1.36.3", ["apps/v1", "v1"])

    def digest(values=None, caps=caps, name="r", namespace="icn"):
        return render_inputs_digest(str(chart), name, namespace, values or {"a": 1, "b": [1, 2]}, caps, helm)

    base = digest()
    assert len(base) == 40 and base == digest()
    assert digest({"b": [1, 2], "a": 1}) == base  # the values' key order is not an input
    assert digest({"a": 2, "b": [1, 2]}) != base
    assert digest(name="s") != base and digest(namespace="other") != base
    assert digest(caps=("v1.36.4", caps[1])) != base
    assert digest(caps=(caps[0], caps[1] + ["networking.istio.io/v1"])) != base
    template = chart / "templates/configmap.yaml"
    template.write_text(template.read_text() + "\n")
    assert digest() != base
    (chart / "templates/new.yaml").write_text("")
    edited = digest()
    (chart / "templates/new.yaml").unlink()
    assert digest() != edited

    # A chart whose files never name .Capabilities renders the same whatever APIs the cluster
    # serves (Istio's base chart, which installs CRDs): the APIs are not an input of it.
    for path in chart.rglob("*"):
        if path.is_file() and b"Capabilities" in path.read_bytes():
            path.write_bytes(path.read_bytes().replace(b"Capabilities", b"Values"))
    blind = digest()
    assert digest(caps=(caps[0], caps[1] + ["networking.istio.io/v1"])) == blind
    assert digest(caps=("v1.36.4", caps[1])) != blind  # the version still is (Chart.yaml kubeVersion)


def test_the_inputs_label_is_a_valid_label_value_that_names_its_revision():
    value = inputs_label(123, "0123456789abcdef0123456789abcdef01234567")
    assert value.startswith("123.") and len(value) <= 63


class Listing:
    """Stands in for KubeClient.request answering the metadata-only list of Helm's Secrets."""

    def __init__(self, *metas):
        self.items = [{"metadata": m} for m in metas]

    def request(self, method, path, what, query=None, accept=None):
        assert (method, query["labelSelector"]) == ("GET", "owner=helm,name=r")
        return {"items": self.items}


def revision_meta(version, status, annotations=None):
    return {"name": f"sh.helm.release.v1.r.v{version}", "annotations": annotations,
            "labels": {"owner": "helm", "name": "r", "version": str(version), "status": status}}


def test_the_head_revision_carries_its_secrets_annotations_and_the_verdict_upgrade_yml_recorded():
    pending = json.dumps({"verdict": "pending", "revision_before": 3, "tag_before": "v1.0.0", "gate_at": 1.5})
    head = stored_head(Listing(revision_meta(3, "superseded", {VERDICT_ANNOTATION: '{"verdict": "passed"}'}),
                               revision_meta(4, "deployed", {VERDICT_ANNOTATION: pending})), "r", "icn")
    assert (head["revision"], head["secret"]) == (4, "sh.helm.release.v1.r.v4")
    assert revision_verdict(head) == {"verdict": "pending", "revision_before": 3, "tag_before": "v1.0.0",
                                      "gate_at": 1.5}
    # A revision with no annotation (made by helm by hand, or by a rollback) has no verdict.
    assert revision_verdict(stored_head(Listing(revision_meta(5, "deployed")), "r", "icn")) is None
    assert revision_verdict(None) is None and revision_verdict(False) is None


@pytest.mark.parametrize("raw", ["pending", '{"verdict": "maybe"}', "[1]", "{"])
def test_a_verdict_upgrade_yml_did_not_write_is_refused_naming_the_secret_and_what_is_allowed(raw):
    head = stored_head(Listing(revision_meta(2, "deployed", {VERDICT_ANNOTATION: raw})), "r", "icn")
    with pytest.raises(ValueError) as err:
        revision_verdict(head)
    assert str(err.value).startswith(f"Secret sh.helm.release.v1.r.v2: annotation icn.io/analysis is {raw!r}; "
                                     "allowed: the JSON upgrade.yml writes, with verdict one of pending, passed, "
                                     "unjudged (remove it with kubectl annotate secret sh.helm.release.v1.r.v2 "
                                     "icn.io/analysis-)")
