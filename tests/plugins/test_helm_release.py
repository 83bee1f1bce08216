"""icn.super_node.helm_release against a lab API server, run as Ansible runs it: a rerun with the
same values and chart is unchanged (its local-render fast path), and a template edited without a
chart version bump is still seen as a change."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from labkit import ROOT
from playbook import module_command, module_env, module_result

pytestmark = pytest.mark.multi

def helm_release(args: dict, *extra: str) -> dict:
    proc = subprocess.run(module_command("icn.super_node.helm_release", args, *extra), env=module_env(),
                          cwd=ROOT, text=True, capture_output=True, timeout=300)
    result = module_result(proc)
    assert not result.get("failed"), result.get("msg")
    return result


def test_a_rerun_is_unchanged_and_an_edited_template_is_a_change(lab, namespace_in, tmp_path):
    region, cluster = list(lab.items())[-1]
    ns = namespace_in(cluster)
    chart = tmp_path / "super-node"
    shutil.copytree(ROOT / "charts/super-node", chart)
    args = {"name": f"probe-{region}", "namespace": ns, "chart_ref": str(chart),
            "values": {"global": {"environment": "lab", "regions": [region]}},
            "kubeconfig": str(cluster.kubeconfig), "context": cluster.context}

    installed = helm_release(args)
    assert installed["changed"] is True and installed["reasons"] == ["release is not installed"]
    rerun = helm_release(args)
    assert rerun["changed"] is False and rerun["reasons"] == [], rerun["reasons"]
    assert rerun["revision"] == installed["revision"]
    assert rerun["chart"] == installed["chart"] and installed["chart"].startswith("icn-super-node-")

    # The same chart version, one template edited: only rendering tells; it must not be missed.
    configmap = chart / "templates/configmap.yaml"
    text = configmap.read_text()
    assert "data:" in text
    configmap.write_text(text.replace("data:", "data:\n  probe-edit: \"1\"", 1))
    edited = helm_release(args, "--check")
    assert edited["changed"] is True and "rendered objects differ" in edited["reasons"], edited
    applied = helm_release(args)
    assert applied["changed"] is True and applied["revision"] == installed["revision"] + 1
    manifest = subprocess.run(["helm", "get", "manifest", args["name"], "-n", ns, "--kubeconfig",
                               args["kubeconfig"], "--kube-context", cluster.context],
                              text=True, capture_output=True, check=True).stdout
    assert 'probe-edit: "1"' in manifest
    assert helm_release(args)["changed"] is False
