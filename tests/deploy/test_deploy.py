"""deploy.yml against the seven lab regions: the objects it makes, a second run that changes
nothing, check mode, refusals of bad input before any cluster is touched, and no key in logs."""
from __future__ import annotations

import base64
import json

import pytest

from labkit import LAB_DIR, snapshot, unreachable_kubeconfig
from playbook import local_inventory, run_playbook

pytestmark = pytest.mark.multi
NS = "icn"


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory):
    """deploy.yml run once on every lab region (the first run on a fresh lab)."""
    run = run_playbook("deploy.yml", "inventories/local", tmp_path=tmp_path_factory.mktemp("deploy"))
    print(f"\ndeploy.yml on {len(lab)} regions: {run.seconds:.1f}s, changed={run.changed()}")
    assert run.rc == 0, run.output[-6000:]
    return run


def test_every_region_gets_its_super_nodes(lab, deployed):
    for region, c in lab.items():
        name = f"icn-super-node-{region}"
        pods = c.ready_pods(NS, f"icn.network/region={region}")
        assert sorted(p.metadata.name for p in pods) == [f"{name}-0", f"{name}-1"], region
        assert len({p.spec.node_name for p in pods}) == 2
        pvcs = c.core.list_namespaced_persistent_volume_claim(NS).items
        assert sorted(p.metadata.name for p in pvcs) == [f"data-{name}-0", f"data-{name}-1"]
        assert all(p.status.phase == "Bound" and p.spec.resources.requests["storage"] == "10Ti"
                   for p in pvcs)
        pdb = c.policy.read_namespaced_pod_disruption_budget(name, NS)
        assert pdb.spec.min_available == 1 and pdb.status.current_healthy == 2
        hpa = c.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, NS)
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 8)
        c.core.read_namespaced_config_map(f"{name}-bootstrap", NS)
        secret = c.core.read_namespaced_secret("icn-staking-keys", NS)
        assert f"{region}-staking-key" in secret.data
        sts = c.apps.read_namespaced_stateful_set(name, NS)
        assert sts.spec.replicas == 2  # the chart sets none: the HPA owns the count
        if deployed.summary["regions"][region]["release"] == "installed":
            # A new region starts at the HPA's minimum (helm_release initial_replicas), so the
            # HPA, which acts only at its first sync, never had to scale it up.
            assert hpa.status.last_scale_time is None, (region, hpa.status.last_scale_time)
        sc = c.storage.read_storage_class("fast-ssd")
        assert sc.reclaim_policy == "Retain" and sc.volume_binding_mode == "WaitForFirstConsumer"


def test_the_staking_key_in_the_cluster_is_the_inventorys(lab, deployed):
    keys = json.loads((LAB_DIR / "staking-keys.json").read_text())
    for region, c in lab.items():
        secret = c.core.read_namespaced_secret("icn-staking-keys", NS)
        assert base64.b64decode(secret.data[f"{region}-staking-key"]).decode() == keys[region]


def revisions(lab) -> dict:
    out = {}
    for region, c in lab.items():
        releases = c.core.list_namespaced_secret(NS, label_selector="owner=helm").items
        out[region] = sorted(s.metadata.name for s in releases)
    return out


def test_second_run_changes_nothing(lab, deployed, tmp_path):
    before = revisions(lab)
    state = snapshot(lab)
    run = run_playbook("deploy.yml", "inventories/local", tmp_path=tmp_path)
    print(f"\nno-op deploy.yml on {len(lab)} regions: {run.seconds:.1f}s")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed() == 0, {h: v["changed"] for h, v in run.recap.items()}
    assert revisions(lab) == before, "a no-op run must not make a Helm revision"
    assert snapshot(lab) == state


def test_check_diff_shows_each_region_and_changes_nothing(lab, deployed, tmp_path):
    state = snapshot(lab)
    run = run_playbook("deploy.yml", "inventories/local", "--check", "--diff",
                       "-e", "super_node_image_tag=v1.0.9", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-4000:]
    for region in lab:
        assert f"+++ icn-super-node-{region} (desired)" in run.output
    assert run.output.count('+          image: "ghcr.io/icn/super-node:v1.0.9"') == len(lab)
    assert run.changed() >= len(lab)
    assert snapshot(lab) == state, "check mode must not change any cluster"


def test_no_key_reaches_the_output_even_at_vvv(lab, deployed, tmp_path):
    keys = json.loads((LAB_DIR / "staking-keys.json").read_text())
    run = run_playbook("deploy.yml", "inventories/local", "-vvv", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-4000:]
    assert len(run.output) > 10000, "-vvv output is expected to be long"
    for region, key in keys.items():
        for form in (key, base64.b64encode(key.encode()).decode()):
            assert form not in run.output, f"the staking key of {region} leaked into the output"


# (id, inventory changes, extra args, the words the error must contain). End to end, these prove
# that a refused run writes nothing: one refused by validate_inventory before any cluster is
# contacted, two by the preflight's reach of the clusters. Every other bad input is decided by the
# validation alone: tests/plugins/test_inventory_validation.py tests those without a lab.
BAD_INPUT = [
    ("unknown-region", {"host_vars": {"eu-north": {"super_node_kube_context": "icn-eu-west"}}}, [],
     ["region eu-north", "super_node_region", "allowed: na-west, na-east"]),
    ("unreachable-cluster", {"kubeconfig": "unreachable"}, [],
     ["region eu-east", "did not answer"]),
    ("kubernetes-too-old", {}, ["-e", "preflight_min_kube_version=1.99"],
     ["runs Kubernetes 1.36", "allowed: Kubernetes >= 1.99"]),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_refused_before_any_cluster_changes(lab, deployed, tmp_path, case):
    name, change, extra, words = case
    kwargs = {"host_vars": change.get("host_vars"), "group_vars": dict(change.get("group_vars") or {})}
    if change.get("kubeconfig") == "unreachable":
        kwargs["kubeconfig"] = unreachable_kubeconfig(tmp_path, "icn-eu-east")
    inventory = local_inventory(tmp_path, **kwargs)
    # A new tag would change every region, so a run that got past preflight would show.
    if "super_node_image_tag" not in kwargs["group_vars"]:
        extra = ["-e", "super_node_image_tag=v9.9.9", *extra]
    state = snapshot(lab)
    run = run_playbook("deploy.yml", inventory, *extra, tmp_path=tmp_path)
    assert run.rc != 0, f"{name}: the run must fail"
    for word in words:
        assert word in run.output, f"{name}: {word!r} not in the output:\n{run.output[-3000:]}"
    assert snapshot(lab) == state, f"{name}: a cluster changed although the input was refused"


def test_a_different_key_in_the_cluster_is_kept_unless_rotated(lab, deployed, tmp_path):
    keys = json.loads((LAB_DIR / "staking-keys.json").read_text())
    region = "eu-east"
    new_key = "ab" * 32
    inventory = local_inventory(tmp_path, group_vars={"super_node_staking_keys": dict(keys, **{region: new_key})})
    secret = lambda: lab[region].core.read_namespaced_secret("icn-staking-keys", NS)  # noqa: E731
    before = secret().metadata.resource_version
    run = run_playbook("deploy.yml", inventory, tmp_path=tmp_path)
    assert run.rc != 0
    assert f"region {region}: Secret icn/icn-staking-keys holds a different {region}-staking-key" in run.output
    assert "secrets_rotate=true" in run.output and new_key not in run.output
    assert secret().metadata.resource_version == before
    assert run.summary["regions"][region]["status"] == "FAILED"
    assert all(run.summary["regions"][r]["status"] == "ok" for r in lab if r != region)
    try:
        run = run_playbook("deploy.yml", inventory, "-e", "secrets_rotate=true", tmp_path=tmp_path)
        assert run.rc == 0, run.output[-3000:]
        assert base64.b64decode(secret().data[f"{region}-staking-key"]).decode() == new_key
    finally:
        run = run_playbook("deploy.yml", "inventories/local", "-e", "secrets_rotate=true", tmp_path=tmp_path)
        assert run.rc == 0, run.output[-3000:]
    assert base64.b64decode(secret().data[f"{region}-staking-key"]).decode() == keys[region]


def test_a_failing_region_does_not_stop_the_others(lab, deployed, tmp_path):
    """eu-west's StorageClass cannot become a GCP class in place: that region fails, the others
    run to the end, the run exits non-zero and the summary names the region and the reason."""
    inventory = local_inventory(tmp_path, host_vars={"eu-west": {"super_node_cloud": "gcp"}})
    sc = lab["eu-west"].storage.read_storage_class("fast-ssd")
    run = run_playbook("deploy.yml", inventory, tmp_path=tmp_path)
    assert run.rc != 0
    regions = run.summary["regions"]
    assert regions["eu-west"]["status"] == "FAILED"
    assert "StorageClass fast-ssd exists with other immutable settings" in regions["eu-west"]["reason"]
    assert all(regions[r]["status"] == "ok" and regions[r]["ready"] == "2/2" for r in lab if r != "eu-west")
    assert lab["eu-west"].storage.read_storage_class("fast-ssd").metadata.resource_version == \
        sc.metadata.resource_version
