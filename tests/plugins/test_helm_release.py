"""icn.super_node.helm_release against a lab API server, run as Ansible runs it: a rerun with the
same values and chart is unchanged without a render (the revision records its render inputs), a
template edited without a chart version bump is still seen as a change (rendered), and a
revision another tool made is never judged by the inputs ours recorded."""
from __future__ import annotations

import json
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


def release_labels(cluster, ns: str, name: str) -> dict:
    """{revision: its icn.io/render-inputs label} of every revision of the release."""
    proc = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--context", cluster.context,
                           "-n", ns, "get", "secrets", "-l", f"owner=helm,name={name}", "-o", "json"],
                          text=True, capture_output=True, check=True)
    return {int(s["metadata"]["labels"]["version"]): s["metadata"]["labels"].get("icn.io/render-inputs")
            for s in json.loads(proc.stdout)["items"]}


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
    assert installed["decided_by"] == "not installed"
    recorded = release_labels(cluster, ns, args["name"])
    assert list(recorded) == [1] and recorded[1].startswith("1."), recorded
    rerun = helm_release(args)
    assert rerun["changed"] is False and rerun["reasons"] == [], rerun["reasons"]
    assert rerun["decided_by"] == "recorded inputs", rerun
    assert rerun["revision"] == installed["revision"]
    assert rerun["chart"] == installed["chart"] and installed["chart"].startswith("icn-super-node-")

    # The same chart version, one template edited: only rendering tells; it must not be missed.
    configmap = chart / "templates/configmap.yaml"
    text = configmap.read_text()
    assert "data:" in text
    configmap.write_text(text.replace("data:", "data:\n  probe-edit: \"1\"", 1))
    edited = helm_release(args, "--check")
    assert edited["changed"] is True and "rendered objects differ" in edited["reasons"], edited
    assert edited["decided_by"] == "server dry run"  # the local render differs: the server confirms
    applied = helm_release(args)
    assert applied["changed"] is True and applied["revision"] == installed["revision"] + 1
    manifest = subprocess.run(["helm", "get", "manifest", args["name"], "-n", ns, "--kubeconfig",
                               args["kubeconfig"], "--kube-context", cluster.context],
                              text=True, capture_output=True, check=True).stdout
    assert 'probe-edit: "1"' in manifest
    again = helm_release(args)
    assert again["changed"] is False and again["decided_by"] == "recorded inputs", again
    assert release_labels(cluster, ns, args["name"])[2].startswith("2."), release_labels(cluster, ns, args["name"])

    # Another tool upgrades the release from another chart with the same values: Helm carries our
    # label over to its revision, which these inputs did not render. It must be rendered, not trusted.
    other = tmp_path / "other"
    shutil.copytree(chart, other)
    (other / "templates/configmap.yaml").write_text(configmap.read_text().replace("probe-edit", "probe-other", 1))
    values = tmp_path / "values.json"
    values.write_text(json.dumps(args["values"]))
    subprocess.run(["helm", "upgrade", args["name"], str(other), "-n", ns, "--values", str(values),
                    "--kubeconfig", args["kubeconfig"], "--kube-context", cluster.context],
                   text=True, capture_output=True, check=True)
    labels = release_labels(cluster, ns, args["name"])
    assert labels[3] == labels[2], labels  # carried over
    foreign = helm_release(args, "--check")
    assert foreign["changed"] is True and "rendered objects differ" in foreign["reasons"], foreign
    assert foreign["decided_by"] == "server dry run"
    mended = helm_release(args)
    assert mended["revision"] == 4 and release_labels(cluster, ns, args["name"])[4].startswith("4.")
    assert helm_release(args)["decided_by"] == "recorded inputs"
