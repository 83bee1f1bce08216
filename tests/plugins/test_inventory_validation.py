"""The inventory validation (plugins/module_utils/inventory_validation.py) and the action that
runs it (icn.super_node.validate_inventory, through the preflight role), without any cluster.

These are the bad-input cases that tests/deploy once ran as whole deploy.yml runs against seven
clusters: validate_inventory refuses them before any cluster is contacted, so the validation
alone decides them. A few stay end to end in tests/deploy (they prove nothing is written)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from labkit import ROOT
from chartkit import REGIONS
from playbook import ansible_env

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.action.validate_inventory import (  # noqa: E402
    helm_problems)
from ansible_collections.icn.super_node.plugins.module_utils.inventory_validation import (  # noqa: E402
    CLOUDS, CatalogueError, Rules, kubeconfig_contexts, staking_key_state, validate)

SCHEMA = ROOT / "charts/super-node/values.schema.json"
LOCAL_HOSTS = yaml.safe_load((ROOT / "inventories/local/hosts.yml").read_text())["super_nodes"]["hosts"]
# The super_node role's defaults that are plain values (the templated ones are per host).
DEFAULTS = {k: v for k, v in yaml.safe_load((ROOT / "roles/super_node/defaults/main.yml").read_text()).items()
            if "{{" not in str(v)}
KEYS = {region: f"{i:02x}" * 32 for i, region in enumerate(LOCAL_HOSTS)}


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory):
    """A kubeconfig with the lab's contexts (no server is ever contacted)."""
    path = tmp_path_factory.mktemp("kube") / "kubeconfig"
    names = [v["super_node_kube_context"] for v in LOCAL_HOSTS.values()]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": names[0],
        "clusters": [{"name": n, "cluster": {"server": "https://127.0.0.1:1"}} for n in names],
        "users": [{"name": n, "user": {"token": "t"}} for n in names],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n}} for n in names]}))
    return str(path)


def records(kubeconfig, host_vars=None, group_vars=None, keys=KEYS):
    """What the action hands validate(): one record per host of the lab's inventory, variables the
    inventory leaves out taken from the super_node role's defaults, as the action does."""
    group = {"super_node_kubeconfig": kubeconfig, "super_node_cloud": "local",
             "super_node_environment": "lab", **(group_vars or {})}
    hosts = {h: dict(v) for h, v in LOCAL_HOSTS.items()}
    for host, values in (host_vars or {}).items():
        hosts.setdefault(host, {}).update(values)
    out = []
    for host, values in hosts.items():
        merged = {**DEFAULTS, **group, **values}
        region = merged.get("super_node_region", host)
        out.append({"host": host, "region": region,
                    "context": merged.get("super_node_kube_context"),
                    "kubeconfig": merged.get("super_node_kubeconfig"),
                    "cloud": merged.get("super_node_cloud"),
                    "replicas": merged.get("super_node_replicas"),
                    "storage_size": merged.get("super_node_storage_size"),
                    "bootstrap_nodes": merged.get("super_node_bootstrap_nodes"),
                    "image_tag": merged.get("super_node_image_tag"),
                    "environment": merged.get("super_node_environment"),
                    "staking_key_state": staking_key_state(keys, region)})
    return out


def test_the_lab_inventory_and_the_role_defaults_are_valid(kubeconfig):
    assert validate(records(kubeconfig), Rules(SCHEMA)) == []


# (id, host_vars, group_vars, staking keys, the words the errors must contain); the same cases and
# words as the deploy.yml runs of tests/deploy had.
BAD_INPUT = [
    ("unknown-region", {"eu-north": {"super_node_kube_context": "icn-eu-west"}}, {}, KEYS,
     ["region eu-north", "super_node_region", "allowed: na-west, na-east"]),
    ("region-twice", {"eu-west-2": {"super_node_region": "eu-west", "super_node_kube_context": "icn-eu-west"}},
     {}, KEYS, ["eu-west is listed twice", "super_node_region"]),
    ("missing-context", {"apac": {"super_node_kube_context": None}}, {}, KEYS,
     ["region apac", "super_node_kube_context is missing"]),
    ("unknown-context", {"apac": {"super_node_kube_context": "icn-nowhere"}}, {}, KEYS,
     ["region apac", "'icn-nowhere' is not a context", "icn-apac"]),
    ("replicas-below-2", {"latam": {"super_node_replicas": 1}}, {}, KEYS,
     ["region latam", "super_node_replicas is 1", "from 2"]),
    ("malformed-size", {}, {"super_node_storage_size": "10TB"}, KEYS,
     ["super_node_storage_size is '10TB'", "10Ti"]),
    ("bad-multiaddr", {}, {"super_node_bootstrap_nodes": ["boot1.icn.network:9000"]}, KEYS,
     ["super_node_bootstrap_nodes has 'boot1.icn.network:9000'", "/p2p/<peer id>"]),
    ("missing-key", {}, {}, {r: k for r, k in KEYS.items() if r != "mena"},
     ["region mena", "super_node_staking_keys[mena] is missing"]),
    ("malformed-key", {}, {}, dict(KEYS, **{"na-east": "not-a-key"}),
     ["region na-east", "super_node_staking_keys[na-east] is malformed", "64 hexadecimal"]),
    ("latest-in-prod", {}, {"super_node_environment": "prod", "super_node_image_tag": "latest"}, KEYS,
     ["super_node_image_tag is 'latest' in prod"]),
    ("unknown-cloud", {"eu-west": {"super_node_cloud": "oracle"}}, {}, KEYS,
     ["region eu-west", "super_node_cloud is 'oracle'", "aws, gcp, azure, local"]),
    ("unknown-environment", {}, {"super_node_environment": "qa"}, KEYS,
     ["super_node_environment is 'qa'", "dev, lab, staging, prod"]),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_naming_region_variable_and_what_is_allowed(kubeconfig, case):
    name, host_vars, group_vars, keys, words = case
    errors = validate(records(kubeconfig, host_vars, group_vars, keys), Rules(SCHEMA))
    assert errors, f"{name}: the inventory must be refused"
    text = "\n".join(errors)
    for word in words:
        assert word in text, f"{name}: {word!r} not in {errors}"
    assert "not-a-key" not in text


def test_every_problem_is_reported_at_once(kubeconfig):
    errors = validate(records(kubeconfig, {"latam": {"super_node_replicas": 1},
                                           "eu-west": {"super_node_cloud": "oracle"}},
                              {"super_node_storage_size": "10TB"}), Rules(SCHEMA))
    assert len(errors) == 7 + 2, errors  # the size of each of the seven regions, then latam, eu-west


def test_an_unreadable_kubeconfig_is_named(tmp_path):
    missing = str(tmp_path / "nowhere")
    assert kubeconfig_contexts(missing) is None
    (tmp_path / "bad").write_text("{ not yaml")
    assert kubeconfig_contexts(str(tmp_path / "bad")) is None
    errors = validate(records(missing), Rules(SCHEMA))
    assert len(errors) == 7 and all(f"super_node_kubeconfig {missing} cannot be read" in e for e in errors)


def test_the_staking_key_state_never_holds_the_key():
    assert staking_key_state({"apac": "ab" * 32}, "apac") == (True, True)
    assert staking_key_state({"apac": "AB" * 32}, "apac") == (True, False)
    assert staking_key_state({"apac": ""}, "apac") == (False, False)
    assert staking_key_state(None, "apac") == (False, False)
    assert staking_key_state("ab" * 32, "apac") == (False, False)


def test_the_allowed_values_come_from_the_schema_and_the_regions_from_the_catalogue(tmp_path):
    rules = Rules(SCHEMA)
    schema = json.loads(SCHEMA.read_text())
    assert rules.regions == REGIONS  # the chart's regions.yaml, next to the schema
    fleet = Rules(SCHEMA, str(ROOT / "lab/fleet.yaml"))
    assert fleet.regions[:len(REGIONS)] == REGIONS and "af-south" in fleet.regions
    bad = tmp_path / "catalogue.yaml"
    bad.write_text("regions: [na-west]\n")
    with pytest.raises(CatalogueError, match=r"super_node_catalogue: .* has no list `regions` of entries with a `name`"):
        Rules(SCHEMA, str(bad))
    with pytest.raises(CatalogueError, match=r"super_node_catalogue: /nonexistent cannot be read"):
        Rules(SCHEMA, "/nonexistent")
    assert rules.max_replicas == schema["properties"]["autoscaling"]["properties"]["maxReplicas"].get("maximum", 100)
    assert rules.environments == schema["properties"]["global"]["properties"]["environment"]["enum"]
    assert CLOUDS == ("aws", "gcp", "azure", "local") and "prod" in rules.environments


def fake_helm(tmp_path, version="v3.22.0", rc=0):
    path = tmp_path / "helm"
    path.write_text(f"#!/bin/sh\necho {version}\nexit {rc}\n")
    path.chmod(0o755)
    return str(path)


def test_helm_is_checked_on_the_controller(tmp_path):
    helm = fake_helm(tmp_path)
    assert helm_problems(helm, "3.12.0") == []
    assert helm_problems("/nonexistent/helm", "3.12.0") == [
        "controller: helm binary '/nonexistent/helm' (preflight_helm_binary) is not on the PATH; "
        "allowed: helm >= 3.12.0"]
    (old,) = helm_problems(helm, "9.0.0")
    assert f"{helm} is helm 3.22.0" in old and "allowed: helm >= 9.0.0 (preflight_min_helm_version)" in old
    (broken,) = helm_problems(fake_helm(tmp_path, "boom", rc=1), "3.12.0")
    assert "version failed: boom" in broken


# ---- the action, as the preflight role runs it (ansible-playbook; no cluster is contacted)

PLAY = """
- name: Validate the inventory as the preflight role does
  hosts: super_nodes
  gather_facts: false
  tasks:
    - name: The preflight role's validation
      ansible.builtin.include_role:
        name: icn.super_node.preflight
        tasks_from: validate.yml
"""


def run_validation(tmp_path, kubeconfig, host_vars=None, group_vars=None, keys=KEYS, *extra):
    hosts = {h: dict(v) for h, v in LOCAL_HOSTS.items()}
    for host, values in (host_vars or {}).items():
        hosts.setdefault(host, {}).update(values)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"super_nodes": {"hosts": hosts, "vars": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "super_node_kubeconfig": kubeconfig, "super_node_cloud": "local",
        "super_node_environment": "lab", "super_node_staking_keys": keys, **(group_vars or {})}}}, sort_keys=False))
    return run_play(tmp_path, PLAY, inventory, {}, *extra)


def run_play(tmp_path, play_text, inventory, env_extra, *extra):
    """ansible-playbook of this play on this inventory, with a fake helm on the PATH."""
    play = tmp_path / "play.yml"
    play.write_text(play_text)
    env = ansible_env({"ICN_SUMMARY_PATH": str(tmp_path / "summary.json"), **env_extra})
    env["PATH"] = f"{os.path.dirname(fake_helm(tmp_path))}{os.pathsep}{env['PATH']}"
    return subprocess.run(["ansible-playbook", str(play), "-i", str(inventory), *extra], cwd=ROOT,
                          env=env, text=True, capture_output=True, timeout=300)


def test_the_preflight_role_accepts_the_lab_inventory_with_the_role_defaults(tmp_path, kubeconfig):
    proc = run_validation(tmp_path, kubeconfig, None, None, KEYS, "-v")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "7 region(s) valid: " + ", ".join(LOCAL_HOSTS) in proc.stdout


def test_the_preflight_role_refuses_every_problem_at_once_and_shows_no_key(tmp_path, kubeconfig):
    proc = run_validation(tmp_path, kubeconfig, {"latam": {"super_node_replicas": 1}},
                          {"super_node_bootstrap_nodes": ["boot1.icn.network:9000"]},
                          dict(KEYS, **{"na-east": "not-a-key"}),
                          "-e", "preflight_helm_binary=/nonexistent/helm")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "The inventory has 10 problem(s); nothing was changed in any cluster" in out, out[-3000:]
    for words in ("region latam: super_node_replicas is 1", "super_node_staking_keys[na-east] is malformed",
                  "super_node_bootstrap_nodes has 'boot1.icn.network:9000'",
                  "helm binary '/nonexistent/helm' (preflight_helm_binary) is not on the PATH"):
        assert words in out, words
    assert "not-a-key" not in out


def test_the_role_defaults_reach_the_validation_through_the_task_arguments(tmp_path, kubeconfig):
    """The lab inventory sets no storage size or bootstrap nodes: the super_node role's defaults,
    passed by the preflight role (preflight_super_node_defaults), are what is validated."""
    proc = run_validation(tmp_path, kubeconfig, None, None, KEYS, "-e", "{'preflight_super_node_defaults': {}}")
    assert proc.returncode != 0
    assert "region na-west: super_node_storage_size is None" in proc.stdout, proc.stdout[-3000:]


FLEET_PLAY = """
- name: Read the fleet as deploy.yml and upgrade.yml do
  hosts: super_nodes
  gather_facts: false
  tasks:
    - name: The preflight role's validation (it sets super_node_fleet)
      ansible.builtin.include_role:
        name: icn.super_node.preflight
        tasks_from: validate.yml
    - name: Keep what it read
      ansible.builtin.copy:
        content: "{{ super_node_fleet | to_json }}"
        dest: "{{ fleet_out }}"
        mode: "0600"
      run_once: true
"""


@pytest.mark.parametrize("lab_json", [None, {"prometheus_url": "http://127.0.0.1:9"}, {}])
def test_the_local_inventory_reads_the_fleet_with_or_without_the_labs_prometheus(tmp_path, kubeconfig, lab_json):
    """inventories/local as it is, on clusters that are not the lab's (molecule's kind scenario writes
    no lab.json) or on a lab with or without Prometheus: every region's Prometheus URL is read at the
    preflight (super_node_fleet), and a lab.json that is not there means no URL, not a failed run."""
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "kubeconfig").write_text(open(kubeconfig).read())
    (lab / "staking-keys.json").write_text(json.dumps(KEYS))
    if lab_json is not None:
        (lab / "lab.json").write_text(json.dumps(lab_json))
    proc = run_play(tmp_path, FLEET_PLAY, ROOT / "inventories/local", {"ICN_LAB_DIR": str(lab)},
                    "-e", f"fleet_out={tmp_path / 'fleet.json'}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fleet = json.loads((tmp_path / "fleet.json").read_text())
    assert list(fleet) == list(LOCAL_HOSTS)
    url = (lab_json or {}).get("prometheus_url", "")
    assert {host: values["super_node_prometheus_url"] for host, values in fleet.items()} == \
        {host: url for host in LOCAL_HOSTS}
    assert fleet["na-west"]["super_node_kubeconfig"] == str(lab / "kubeconfig")
