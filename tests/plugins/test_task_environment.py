"""A task's `environment:` reaches the collection's modules when they run inside the worker
(plugins/plugin_utils/in_worker.py), as it does a module process: K8S_AUTH_KUBECONFIG and
K8S_AUTH_CONTEXT set there point cluster_info at a fake API server on 127.0.0.1. No lab."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fakeapi import FakeAPI
from labkit import ROOT
from playbook import ansible_env

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.plugin_utils.in_worker import (  # noqa: E402
    environment_of_task)


def test_the_task_environment_is_set_and_restored(monkeypatch):
    monkeypatch.setenv("ICN_TEST_KEPT", "before")
    monkeypatch.delenv("ICN_TEST_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with environment_of_task({"ICN_TEST_KEPT": "during", "ICN_TEST_NEW": 5}):
            assert os.environ["ICN_TEST_KEPT"] == "during" and os.environ["ICN_TEST_NEW"] == "5"
            raise RuntimeError("the module failed")
    assert os.environ["ICN_TEST_KEPT"] == "before" and "ICN_TEST_NEW" not in os.environ


PLAYBOOK = [{
    "hosts": "localhost", "gather_facts": False,
    "tasks": [
        {"name": "Reach the cluster named by the task's environment",
         "icn.super_node.cluster_info": {"api_grace": 0},
         "environment": {"K8S_AUTH_KUBECONFIG": "{{ fake_kubeconfig }}",
                         "K8S_AUTH_CONTEXT": "from-task-env"}},
        {"name": "Without it, the worker's own environment",
         "icn.super_node.cluster_info": {"api_grace": 0},
         "ignore_errors": True},
    ]}]


@pytest.mark.parametrize("in_worker", ["1", "0"])
def test_a_tasks_environment_reaches_the_module(tmp_path, in_worker):
    with FakeAPI() as fake:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": fake.url}}],
            "users": [{"name": "fake", "user": {"token": "t"}}],
            "contexts": [{"name": "from-task-env", "context": {"cluster": "fake", "user": "fake"}}]}))
        playbook = tmp_path / "playbook.yml"
        playbook.write_text(yaml.safe_dump(PLAYBOOK, sort_keys=False))
        env = ansible_env({"ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                           "ICN_MODULES_IN_WORKER": in_worker,
                           "KUBECONFIG": str(tmp_path / "no-such-kubeconfig")})
        for var in ("K8S_AUTH_KUBECONFIG", "K8S_AUTH_CONTEXT"):
            env.pop(var, None)
        proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), str(playbook),
                               "-e", f"fake_kubeconfig={kubeconfig}",
                               "-e", f"ansible_python_interpreter={sys.executable}"],
                              cwd=ROOT, env=env, text=True, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout  # other enabled callbacks may print around the json callback's document
    start = 0 if out.startswith("{") else out.index("\n{\n") + 1
    tasks = json.JSONDecoder().raw_decode(out, start)[0]["plays"][0]["tasks"]
    first, second = (t["hosts"]["localhost"] for t in tasks)
    assert not first.get("failed"), first.get("msg")
    assert first["version"] == "1.36.3" and fake.requests
    assert second["failed"] is True
    assert "cannot read kubeconfig" in second["msg"] and "no-such-kubeconfig" in second["msg"]
