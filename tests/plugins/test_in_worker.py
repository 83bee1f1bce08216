"""The collection's modules run inside the Ansible worker (plugins/plugin_utils/in_worker.py).
The same calls, in the worker and out of process (ICN_MODULES_IN_WORKER=0), against a lab API
server must give the same results: changes, check mode, diff, and failures with their messages."""
from __future__ import annotations

import subprocess

import pytest

from labkit import ROOT
from playbook import module_command, module_env, module_result

pytestmark = pytest.mark.multi


def run(module: str, args: dict, *extra: str, in_worker: bool) -> tuple[dict, str]:
    env = module_env()
    env["ICN_MODULES_IN_WORKER"] = "1" if in_worker else "0"
    proc = subprocess.run(module_command(module, args, "-vvv", *extra), env=env, cwd=ROOT,
                          text=True, capture_output=True, timeout=120)
    result = module_result(proc)
    # Each road says which it took: the worker names itself, the process road ships AnsiballZ.
    assert ("in the worker" in proc.stdout) is in_worker, proc.stdout[-2000:]
    assert ("AnsiballZ_" in proc.stdout) is not in_worker, proc.stdout[-2000:]
    return result, proc.stdout


def both(module: str, args: dict, *extra: str) -> dict:
    """The result of the call out of process, asserting the worker's is the same."""
    worker, _ = run(module, args, *extra, in_worker=True)
    process, _ = run(module, args, *extra, in_worker=False)
    for result in (worker, process):
        result.pop("invocation", None)
    assert worker == process
    return worker


def test_the_worker_and_a_module_process_give_the_same_results(lab, namespace_in):
    region, cluster = next(iter(lab.items()))
    ns = namespace_in(cluster)
    target = {"kubeconfig": str(cluster.kubeconfig), "context": cluster.context}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "in-worker-probe", "namespace": ns}, "data": {"a": "1"}}
    apply = dict(target, field_manager="in-worker-test", definitions=[configmap])

    info = both("icn.super_node.cluster_info", target)
    assert info["version"].startswith("1.") and "apps/v1" in info["apis"]

    # Check mode with diff: a creation is shown and nothing is written, on both roads.
    planned = both("icn.super_node.k8s_apply", apply, "--check", "--diff")
    assert planned["changed"] is True and planned["objects"][0]["action"] == "created"
    read = ["kubectl", "--kubeconfig", target["kubeconfig"], "--context", cluster.context,
            "-n", ns, "get", "configmap", "in-worker-probe", "-o", "jsonpath={.data.a}"]
    assert subprocess.run(read, capture_output=True, text=True).returncode != 0

    created, _ = run("icn.super_node.k8s_apply", apply, in_worker=True)
    assert created["changed"] is True
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout == "1"
    again = both("icn.super_node.k8s_apply", apply)
    assert again["changed"] is False and again["objects"][0]["action"] == "unchanged"

    changed = dict(apply, definitions=[dict(configmap, data={"a": "2"})])
    diff = both("icn.super_node.k8s_apply", changed, "--check", "--diff")
    assert diff["changed"] is True and "a: '2'" in diff["diff"]["after"], diff


def test_failures_read_the_same_in_the_worker(lab):
    cluster = next(iter(lab.values()))
    unknown = both("icn.super_node.cluster_info",
                   {"kubeconfig": str(cluster.kubeconfig), "context": "icn-nowhere"})
    assert unknown["failed"] is True and "icn-nowhere" in unknown["msg"]
    bad_option = both("icn.super_node.cluster_info",
                      {"kubeconfig": str(cluster.kubeconfig), "context": cluster.context,
                       "bogus": 1})
    assert bad_option["failed"] is True and "Unsupported parameters" in bad_option["msg"]
    assert "bogus" in bad_option["msg"]
