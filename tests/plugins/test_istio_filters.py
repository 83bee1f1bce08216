"""The istio role's filters (plugins/filter/istio.py) render exactly what the role's Jinja loops
rendered before them (the expressions below are those of roles/istio/tasks/remote_secrets.yml
before the filters), on sample data, in a real ansible-playbook run (no cluster)."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import yaml

from labkit import ROOT
from playbook import ansible_env

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.filter.istio import (  # noqa: E402
    istio_reader_token_ready, istio_remote_kubeconfig, istio_remote_secrets)

OLD_KUBECONFIG = """{{ {'apiVersion': 'v1', 'kind': 'Config',
    'clusters': [{'name': _istio_cluster_name,
                  'cluster': {'server': _istio_server, 'certificate-authority-data': __istio_data['ca.crt']}}],
    'contexts': [{'name': _istio_cluster_name, 'context': {'cluster': _istio_cluster_name, 'user': _istio_cluster_name}}],
    'current-context': _istio_cluster_name, 'preferences': {},
    'users': [{'name': _istio_cluster_name, 'user': {'token': __istio_data.token | b64decode}}]} | to_nice_yaml(indent=2) }}"""
OLD_DEFINITIONS = """{%- set out = [] -%}
{%- for host in _istio_owners if host != inventory_hostname and hostvars[host].__istio_remote is defined -%}
{%- set remote = hostvars[host].__istio_remote -%}
{%- set _ = out.append({'apiVersion': 'v1', 'kind': 'Secret',
      'metadata': {'name': 'istio-remote-secret-' ~ remote.cluster, 'namespace': istio_namespace,
                   'labels': {'istio/multiCluster': 'true'},
                   'annotations': {'networking.istio.io/cluster': remote.cluster}},
      'data': {remote.cluster: remote.kubeconfig | b64encode}}) -%}
{%- endfor -%}
{{ out }}"""
# What roles/istio/tasks/remote_secrets.yml writes now.
TASKS = yaml.safe_load((ROOT / "roles/istio/tasks/remote_secrets.yml").read_text())
NEW_KUBECONFIG = next(t for t in TASKS if "ansible.builtin.set_fact" in t)["ansible.builtin.set_fact"][
    "__istio_remote"]["kubeconfig"]
NEW_DEFINITIONS = next(t for t in TASKS if "remote secret of every other" in t["name"])[
    "icn.super_node.k8s_apply"]["definitions"]

PLAY = [{
    "hosts": "all", "gather_facts": False,
    "vars": {"_istio_owners": ["na-west", "eu-west", "apac"], "istio_namespace": "istio-system",
             "_istio_cluster_name": "{{ inventory_hostname }}",
             "_istio_server": "https://{{ inventory_hostname }}.example:6443"},
    "tasks": [
        {"name": "old", "ansible.builtin.set_fact": {
            "__istio_remote": {"cluster": "{{ _istio_cluster_name }}", "kubeconfig": OLD_KUBECONFIG},
            "new_kubeconfig": NEW_KUBECONFIG},
         "when": "inventory_hostname != 'apac'"},  # apac: its token not read yet, so no remote of its own
        {"name": "both", "ansible.builtin.set_fact": {"old_definitions": OLD_DEFINITIONS,
                                                      "new_definitions": NEW_DEFINITIONS}},
        {"name": "write", "ansible.builtin.copy": {
            "dest": "{{ out }}/{{ inventory_hostname }}.json", "mode": "0600",
            "content": "{{ {'old_kubeconfig': __istio_remote.kubeconfig | default(''),"
                       " 'new_kubeconfig': new_kubeconfig | default(''),"
                       " 'old': old_definitions, 'new': new_definitions} | to_json }}"}},
    ]}]


def test_the_filters_render_what_the_jinja_loops_rendered(tmp_path):
    hosts = {}
    for i, host in enumerate(["na-west", "eu-west", "apac", "latam"]):
        ca = base64.b64encode(f"-----BEGIN CERTIFICATE-----\n{host}\n".encode()).decode()
        hosts[host] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                       "__istio_data": {"ca.crt": ca, "token": base64.b64encode(f"tok-{i}-é".encode()).decode()}}
    (tmp_path / "inv.yml").write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    (tmp_path / "play.yml").write_text(yaml.safe_dump(PLAY, sort_keys=False))
    proc = subprocess.run(["ansible-playbook", str(tmp_path / "play.yml"), "-i", str(tmp_path / "inv.yml"),
                           "-e", f"out={tmp_path}"], cwd=ROOT, text=True, capture_output=True, timeout=300,
                          env=ansible_env({"ICN_SUMMARY_PATH": str(tmp_path / "summary.json")}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for host in hosts:
        got = json.loads((tmp_path / f"{host}.json").read_text())
        assert got["new_kubeconfig"] == got["old_kubeconfig"], host
        assert got["new"] == got["old"], host
        others = [h for h in ["na-west", "eu-west"] if h != host]  # latam is no owner, apac has no remote
        assert [s["metadata"]["name"] for s in got["new"]] == [f"istio-remote-secret-{h}" for h in others]
    eu_west = json.loads((tmp_path / "eu-west.json").read_text())["new_kubeconfig"]
    assert yaml.safe_load(eu_west)["users"][0]["user"]["token"] == "tok-1-é"


def test_the_filters_in_python():
    text = istio_remote_kubeconfig("apac", "https://apac:6443", "Q0E=", base64.b64encode(b"t").decode())
    config = yaml.safe_load(text)
    assert config["current-context"] == "apac" and config["users"] == [{"name": "apac", "user": {"token": "t"}}]
    assert config["clusters"] == [{"name": "apac", "cluster": {"server": "https://apac:6443",
                                                               "certificate-authority-data": "Q0E="}}]
    (secret,) = istio_remote_secrets([{"cluster": "apac", "kubeconfig": text}], "istio-system")
    assert secret["metadata"]["name"] == "istio-remote-secret-apac"
    assert base64.b64decode(secret["data"]["apac"]).decode() == text
    assert istio_remote_secrets([], "istio-system") == []


def test_the_reader_token_is_ready_only_once_the_token_controller_filled_it_for_the_reader():
    def found(annotations=None, data=None):
        return {"resources": [{"metadata": {"annotations": annotations or {}}, "data": data or {}}]}

    reader = {"kubernetes.io/service-account.name": "istio-reader-service-account"}
    filled = {"token": "dG9r", "ca.crt": "Y2E="}
    assert istio_reader_token_ready(found(reader, filled), "istio-reader-service-account")
    assert not istio_reader_token_ready({"resources": []}, "istio-reader-service-account")
    assert not istio_reader_token_ready({}, "istio-reader-service-account")
    assert not istio_reader_token_ready(found(reader, {"ca.crt": "Y2E="}), "istio-reader-service-account")
    assert not istio_reader_token_ready(found({}, filled), "istio-reader-service-account")
    assert not istio_reader_token_ready(found(reader, filled), "another-account")
