"""upgrade.yml and drain_node.yml against the seven lab regions: one region at a time, never
below one Ready replica, rolled back and stopped on failure, resumed on rerun; and node drains
that respect the PodDisruptionBudget."""
from __future__ import annotations

import time

import pytest

from labkit import (NS, REGIONS, Watcher, icnlab, is_ready, region_tags, release_revision, snapshot, tag_of,
                    unreachable_kubeconfig, wait_for)
from playbook import local_inventory, run_playbook

pytestmark = pytest.mark.multi


def upgrade(tag: str, tmp_path, *args, inventory="inventories/local"):
    return run_playbook("upgrade.yml", inventory, "-e", f"super_node_image_tag={tag}", *args,
                        tmp_path=tmp_path)


@pytest.fixture(scope="module")
def at_v1(lab, tmp_path_factory):
    """Every region deployed at v1.0.0 (deploy.yml), the starting point of the rollouts."""
    run = run_playbook("deploy.yml", "inventories/local", "-e", "super_node_image_tag=v1.0.0",
                       "-e", "super_node_parallel_restart=true",  # a test's reset of the whole fleet
                       tmp_path=tmp_path_factory.mktemp("deploy"))
    assert run.rc == 0, run.output[-5000:]
    assert all(t == {"v1.0.0"} for t in region_tags(lab).values())
    return run


def test_upgrade_goes_region_by_region_and_keeps_every_region_serving(lab, at_v1, tmp_path):
    with Watcher(lab) as watcher:
        run = upgrade("v1.1.0", tmp_path)
    print(f"\nupgrade.yml v1.0.0 -> v1.1.0 on {len(lab)} regions: {run.seconds:.1f}s, "
          f"{len(watcher.samples)} samples")
    assert run.rc == 0, run.output[-5000:]
    assert len(watcher.samples) >= run.seconds, "the watcher must sample about twice a second"
    for t, sample in watcher.samples:
        assert all(s["ready"] >= 1 for s in sample.values()), f"a region had no Ready replica: {sample}"
        mixed = [r for r, s in sample.items() if len(s["revisions"]) > 1]
        assert len(mixed) <= 1, f"more than one region mid-rollout at once: {mixed}"
    seen = watcher.first_seen("v1.1.0")
    assert sorted(seen, key=seen.get) == [r for r in REGIONS if r in lab], "inventory order"
    assert all(t == {"v1.1.0"} for t in region_tags(lab).values())
    assert {r: v["result"] for r, v in run.summary["regions"].items()} == {r: "upgraded" for r in lab}


def test_a_failing_region_is_rolled_back_and_the_rollout_stops_then_resumes(lab, at_v1, tmp_path):
    if any(t != {"v1.1.0"} for t in region_tags(lab).values()):
        assert upgrade("v1.1.0", tmp_path).rc == 0
    third, later = REGIONS[2], REGIONS[3:]
    before = {r: (release_revision(lab[r], r),
                  sorted(p.metadata.uid for p in lab[r].pods(NS))) for r in later}
    proc = icnlab("fault", third, "--tag", "v1.2.0")
    assert proc.returncode == 0, proc.stderr
    try:
        with Watcher(lab) as watcher:
            run = upgrade("v1.2.0", tmp_path, "-e", "rollout_timeout=40")
    finally:
        assert icnlab("fault", third, "--clear").returncode == 0
    assert run.rc != 0
    assert f"Region {third} failed its upgrade (image v1.1.0 -> v1.2.0" in " ".join(run.output.split())
    for t, sample in watcher.samples:
        assert all(s["ready"] >= 1 for s in sample.values()), f"a region had no Ready replica: {sample}"
    tags = region_tags(lab)
    assert tags[REGIONS[0]] == tags[REGIONS[1]] == {"v1.2.0"}
    assert tags[third] == {"v1.1.0"}, "the failed region must be back at v1.1.0"
    assert all(is_ready(p) for p in lab[third].pods(NS)) and len(lab[third].pods(NS)) == 2
    after = {r: (release_revision(lab[r], r),
                 sorted(p.metadata.uid for p in lab[r].pods(NS))) for r in later}
    assert after == before, "regions after the failed one must not be touched"
    regions = run.summary["regions"]
    assert regions[third]["result"] == "rolled back" and regions[third]["status"] == "FAILED"
    assert all(regions[r]["status"] == "not reached" for r in later), regions
    assert "rolled back" in run.output.split("SUMMARY")[-1]

    # The fault is cleared: the same command resumes, skipping the regions already there.
    revs = {r: release_revision(lab[r], r) for r in REGIONS[:2]}
    run = upgrade("v1.2.0", tmp_path)
    assert run.rc == 0, run.output[-5000:]
    results = {r: v["result"] for r, v in run.summary["regions"].items()}
    assert results == {**{r: "skipped" for r in REGIONS[:2]}, **{r: "upgraded" for r in REGIONS[2:]}}
    assert {r: release_revision(lab[r], r) for r in REGIONS[:2]} == revs, "a skipped region gets no revision"
    assert all(t == {"v1.2.0"} for t in region_tags(lab).values())


def test_the_replica_count_set_by_the_autoscaler_survives_an_upgrade(lab, at_v1, tmp_path):
    region = REGIONS[0]
    c = lab[region]
    name = f"icn-super-node-{region}"
    # Every pod of the region at 80% CPU (the lab's metrics API), the HPA's target, so the HPA keeps
    # the count it has, also while the upgrade replaces a pod. CPU, not bandwidth: a value set there
    # holds at once, where rate() over the counters ramps up over its window, and the HPA would
    # scale a count of 4 set mid-ramp back down. tests/autoscaling drive the HPA on bandwidth.
    key = f"{NS}.{name}.cpu"
    c.set_pod_metrics({key: "80%"})
    try:
        c.apps.patch_namespaced_stateful_set_scale(name, NS, {"spec": {"replicas": 4}})
        wait_for(lambda: len(c.ready_pods(NS, f"icn.network/region={region}")) == 4, 60, "4 Ready pods")
        hpa = lambda: c.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, NS).status  # noqa: E731
        wait_for(lambda: hpa().desired_replicas == 4 and hpa().current_metrics, 30, "the HPA wants 4")
        run = upgrade("v1.3.0", tmp_path, "--limit", region)
        assert run.rc == 0, run.output[-5000:]
        assert c.apps.read_namespaced_stateful_set(name, NS).spec.replicas == 4
        assert hpa().desired_replicas == 4
        pods = c.ready_pods(NS, f"icn.network/region={region}")
        assert len(pods) == 4 and {tag_of(p.spec.containers[0].image) for p in pods} == {"v1.3.0"}
    finally:
        c.set_pod_metrics({key: None})
    c.apps.patch_namespaced_stateful_set_scale(name, NS, {"spec": {"replicas": 2}})
    wait_for(lambda: len(c.pods(NS, f"icn.network/region={region}")) == 2, 60, "back to 2 pods")
    pvcs = [p.metadata.name for p in c.core.list_namespaced_persistent_volume_claim(NS).items]
    assert len(pvcs) == 4, "scaling down keeps the volumes of the removed pods"


def hold_unready(c, pod_name):
    """Holds a pod un-Ready, as a failing readiness probe would (kwok leaves it so)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    c.core.patch_namespaced_pod_status(pod_name, NS, {"status": {"conditions": [
        {"type": "Ready", "status": "False", "reason": "HeldByTest", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "False", "reason": "HeldByTest", "lastTransitionTime": now}]}})


def release_pod(c, pod_name):
    c.core.delete_namespaced_pod(pod_name, NS)
    wait_for(lambda: is_ready(c.core.read_namespaced_pod(pod_name, NS)), 60, f"{pod_name} Ready again")


def test_a_degraded_region_stops_the_rollout_before_the_next_region(lab, at_v1, tmp_path):
    degraded = REGIONS[4]
    pod = f"icn-super-node-{degraded}-1"
    hold_unready(lab[degraded], pod)
    try:
        wait_for(lambda: not is_ready(lab[degraded].core.read_namespaced_pod(pod, NS)), 10, "pod un-Ready")
        state = snapshot(lab)
        run = upgrade("v1.4.0", tmp_path)
        assert run.rc != 0
        assert f"Rollout stopped before region {REGIONS[0]}" in run.output
        assert f"{degraded}: StatefulSet icn-super-node-{degraded}" in run.output
        assert snapshot(lab) == state, "no region may change while another is degraded"
    finally:
        release_pod(lab[degraded], pod)


def test_an_unreachable_region_stops_the_rollout_and_nothing_changes(lab, at_v1, tmp_path):
    kubeconfig = unreachable_kubeconfig(tmp_path, "icn-latam")
    state = snapshot(lab)
    run = upgrade("v1.4.0", tmp_path, inventory=local_inventory(tmp_path, kubeconfig=kubeconfig))
    assert run.rc != 0
    assert "region latam: the cluster of context icn-latam" in run.output
    assert snapshot(lab) == state


def test_drain_refuses_to_take_the_last_ready_replica(lab, at_v1, tmp_path):
    region = REGIONS[1]
    c = lab[region]
    held, other = f"icn-super-node-{region}-1", f"icn-super-node-{region}-0"
    hold_unready(c, held)
    try:
        node = c.core.read_namespaced_pod(other, NS).spec.node_name
        run = run_playbook("playbooks/drain_node.yml", "inventories/local", "-e", f"region={region}",
                           "-e", f"node={node}", tmp_path=tmp_path)
        assert run.rc != 0
        assert f"Refusing to drain {node}" in run.output
        assert not c.core.read_node(node).spec.unschedulable, "a refused drain must not cordon"
        assert c.core.read_namespaced_pod(other, NS).spec.node_name == node
    finally:
        release_pod(c, held)


def test_drain_moves_the_pod_and_waits_until_it_is_ready(lab, at_v1, tmp_path):
    region = REGIONS[1]
    c = lab[region]
    pod = f"icn-super-node-{region}-0"
    before = c.core.read_namespaced_pod(pod, NS)
    node = before.spec.node_name
    try:
        run = run_playbook("playbooks/drain_node.yml", "inventories/local", "-e", f"region={region}",
                           "-e", f"node={node}", tmp_path=tmp_path)
        assert run.rc == 0, run.output[-4000:]
        after = c.core.read_namespaced_pod(pod, NS)
        assert after.metadata.uid != before.metadata.uid and is_ready(after)
        assert after.spec.node_name != node
        assert f"{node} is drained and stays cordoned" in run.output
        assert f"{pod} on {after.spec.node_name}" in run.output
        assert c.core.read_node(node).spec.unschedulable
    finally:
        run = run_playbook("playbooks/drain_node.yml", "inventories/local", "-e", f"region={region}",
                           "-e", f"node={node}", "-e", "drain_node_uncordon=true", tmp_path=tmp_path)
        assert run.rc == 0, run.output[-3000:]
    assert not c.core.read_node(node).spec.unschedulable
