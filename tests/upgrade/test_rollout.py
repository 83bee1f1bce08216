"""upgrade.yml rolls out any change, the way an operator runs it (#11): the target from the
inventory or from -e, a values-only change region by region, deploy.yml refusing to restart
several running regions at once, --check --diff as a plan, the fleet's rollout lock, and API
servers that stop answering mid-rollout. Seven lab regions, real API servers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client

from apifreeze import freeze_for
from labkit import NS, REGIONS, ROOT, Watcher, region_tags, release_revision, snapshot, wait_for
from playbook import ansible_env, local_inventory, run_playbook

pytestmark = pytest.mark.multi
LEASE, LEASE_NS = "icn-super-node-rollout", "kube-system"
# The weather tests roll out the first three regions only: what they show happens at the second.
FIRST3 = ",".join(REGIONS[:3])
BASE_TAG = "v2.0.0"


def memory_of(lab) -> dict[str, set]:
    return {r: {p.spec.containers[0].resources.requests["memory"]
                for p in c.pods(NS, f"icn.network/region={r}")} for r, c in lab.items()}


def chart_values(memory: str) -> dict:
    """The lab inventory's super_node_chart_values with another memory request."""
    return {"minReadySeconds": 1,
            "resources": {"requests": {"cpu": "100m", "memory": memory},
                          "limits": {"cpu": "500m", "memory": "512Mi"}}}


def said(run) -> str:
    """The run's output with its line wrapping undone (the callback folds long messages)."""
    return " ".join(run.output.split())


def results(run) -> dict:
    return {r: v.get("result") for r, v in run.summary["regions"].items()}


def recap_rescued(run) -> int:
    return sum(v["rescued"] for v in run.recap.values())


def leases(lab) -> dict:
    out = {}
    for region, c in lab.items():
        try:
            out[region] = client.CoordinationV1Api(c.api).read_namespaced_lease(LEASE, LEASE_NS)
        except client.ApiException as err:
            assert err.status == 404, err
    return out


def no_lease_left(lab) -> bool:
    return not leases(lab)


@pytest.fixture(scope="module")
def fleet(lab, tmp_path_factory):
    """Every region at BASE_TAG with the lab's values, deployed in parallel (restarting running
    regions together is what this setup wants, so it says so)."""
    run = run_playbook("deploy.yml", "inventories/local", "-e", f"super_node_image_tag={BASE_TAG}",
                       "-e", "super_node_parallel_restart=true", tmp_path=tmp_path_factory.mktemp("fleet"))
    assert run.rc == 0, run.output[-5000:]
    wait_for(lambda: no_lease_left(lab), 10, "the deploy's lock given back")
    return lab


def test_the_target_from_the_inventory_and_from_e_roll_out_alike(fleet, tmp_path):
    lab = fleet
    # The operator's road: the tag in group_vars, no -e.
    inventory = local_inventory(tmp_path, group_vars={"super_node_image_tag": "v2.1.0"})
    run = run_playbook("upgrade.yml", inventory, tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert results(run) == {r: "upgraded" for r in lab}
    assert {r: v["image"] for r, v in run.summary["regions"].items()} == {r: f"{BASE_TAG} -> v2.1.0" for r in lab}
    assert all(t == {"v2.1.0"} for t in region_tags(lab).values())
    assert recap_rescued(run) == 0 and "Recursive loop" not in said(run)
    revisions = {r: release_revision(c, r) for r, c in lab.items()}

    again = run_playbook("upgrade.yml", inventory, tmp_path=tmp_path)
    assert again.rc == 0, again.output[-5000:]
    assert results(again) == {r: "skipped" for r in lab}
    assert again.changed() == 0 and recap_rescued(again) == 0
    assert {r: release_revision(c, r) for r, c in lab.items()} == revisions, "a skipped region gets no revision"

    # The same with -e: the same result, and a rerun of it skips every region too.
    run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.2.0", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert results(run) == {r: "upgraded" for r in lab}
    assert {r: v["image"] for r, v in run.summary["regions"].items()} == {r: "v2.1.0 -> v2.2.0" for r in lab}
    assert {r: v["values"] for r, v in run.summary["regions"].items()} == {r: "image.tag" for r in lab}
    again = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.2.0", tmp_path=tmp_path)
    assert again.rc == 0 and results(again) == {r: "skipped" for r in lab}, again.output[-3000:]
    assert again.changed() == 0 and recap_rescued(again) == 0
    wait_for(lambda: no_lease_left(lab), 10, "the lock given back at the end")


def test_a_values_only_change_is_refused_by_deploy_and_goes_region_by_region_with_upgrade(fleet, tmp_path):
    lab = fleet
    tag = sorted(next(iter(region_tags(lab).values())))[0]
    inventory = local_inventory(tmp_path, group_vars={"super_node_image_tag": tag,
                                                      "super_node_chart_values": chart_values("192Mi")})
    state = snapshot(lab)

    # deploy.yml would restart every running region at once: refused before any change.
    run = run_playbook("deploy.yml", inventory, tmp_path=tmp_path)
    assert run.rc != 0
    assert f"would restart the Super-Nodes of {len(lab)} running regions at once" in said(run)
    assert all(f"{r}: values resources.requests.memory" in said(run) for r in lab)
    assert "upgrade.yml" in said(run) and "super_node_parallel_restart=true" in said(run)
    assert snapshot(lab) == state, "a refused deploy changes nothing"

    # --check --diff: the plan, and nothing written (no lock either).
    run = run_playbook("upgrade.yml", inventory, "--check", "--diff", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert snapshot(lab) == state, "--check changes nothing"
    assert no_lease_left(lab), "--check takes no lock"
    assert "Order: " + ", ".join(lab) in said(run)
    assert "-              memory: 128Mi" in run.output and "+              memory: 192Mi" in run.output
    assert {r: v["plan"] for r, v in run.summary["regions"].items()} == {r: "change" for r in lab}
    assert {r: v["pods"] for r, v in run.summary["regions"].items()} == {r: "replaced" for r in lab}

    with Watcher(lab) as watcher:
        run = run_playbook("upgrade.yml", inventory, tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert len(watcher.samples) >= run.seconds, "the watcher must sample about twice a second"
    for _, sample in watcher.samples:
        assert all(s["ready"] >= 1 for s in sample.values()), f"a region had no Ready replica: {sample}"
        mixed = [r for r, s in sample.items() if len(s["revisions"]) > 1]
        assert len(mixed) <= 1, f"more than one region mid-rollout at once: {mixed}"
    assert all(m == {"192Mi"} for m in memory_of(lab).values())
    assert results(run) == {r: "upgraded" for r in lab}
    assert {r: v["values"] for r, v in run.summary["regions"].items()} == {r: "resources.requests.memory" for r in lab}

    again = run_playbook("upgrade.yml", inventory, tmp_path=tmp_path)
    assert again.rc == 0 and results(again) == {r: "skipped" for r in lab}, again.output[-3000:]
    assert again.changed() == 0

    # The operator says restarting together is fine: deploy.yml lets it through.
    inventory = local_inventory(tmp_path, group_vars={"super_node_image_tag": tag,
                                                      "super_node_chart_values": chart_values("128Mi")})
    run = run_playbook("deploy.yml", inventory, "-e", "super_node_parallel_restart=true", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert all(m == {"128Mi"} for m in memory_of(lab).values())


def test_a_change_that_restarts_no_pod_deploys_in_parallel(fleet, tmp_path):
    lab = fleet
    tag = sorted(next(iter(region_tags(lab).values())))[0]
    pods = {r: sorted(p.metadata.uid for p in c.pods(NS)) for r, c in lab.items()}
    inventory = local_inventory(tmp_path, group_vars={"super_node_image_tag": tag, "super_node_max_replicas": 9})
    run = run_playbook("deploy.yml", inventory, tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert {r: v["pods"] for r, v in run.summary["regions"].items()} == {r: "kept" for r in lab}
    for r, c in lab.items():
        assert c.autoscaling.read_namespaced_horizontal_pod_autoscaler(f"icn-super-node-{r}", NS).spec.max_replicas == 9
    assert {r: sorted(p.metadata.uid for p in c.pods(NS)) for r, c in lab.items()} == pods, "no pod replaced"
    run = run_playbook("deploy.yml", "inventories/local", "-e", f"super_node_image_tag={tag}", tmp_path=tmp_path)
    assert run.rc == 0, run.output[-3000:]


def hand_made_lease(c, holder: dict, renewed_ago: float, duration: int):
    """A Lease as another run would have left it."""
    renewed = (datetime.now(timezone.utc) - timedelta(seconds=renewed_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": LEASE_NS,
                         "annotations": {"icn.network/rollout-holder": json.dumps(holder)}},
            "spec": {"holderIdentity": holder["identity"], "leaseDurationSeconds": duration,
                     "acquireTime": renewed, "renewTime": renewed}}
    client.CoordinationV1Api(c.api).create_namespaced_lease(LEASE_NS, body)


def delete_lease(c):
    try:
        client.CoordinationV1Api(c.api).delete_namespaced_lease(LEASE, LEASE_NS)
    except client.ApiException as err:
        assert err.status == 404


def test_a_lock_held_by_a_live_run_is_refused_and_broken_on_request(fleet, tmp_path):
    lab = fleet
    third = REGIONS[2]
    holder = {"identity": "alice@other-laptop:4242", "user": "alice", "host": "other-laptop", "pid": 4242,
              "playbook": "upgrade.yml", "target": "image v9.9.9", "started": "2026-12-01T09:00:00Z"}
    hand_made_lease(lab[third], holder, renewed_ago=1, duration=600)
    try:
        state = snapshot(lab)
        run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.5.0", tmp_path=tmp_path)
        assert run.rc != 0
        assert f"region {third} (context icn-{third}: another rollout holds the lock: alice@other-laptop:4242" in said(run)
        assert "running upgrade.yml (image v9.9.9) since 2026-12-01T09:00:00Z" in said(run)
        assert snapshot(lab) == state, "a refused run changes nothing"
        assert set(leases(lab)) == {third}, "the leases this run had taken are given back"
        # --check takes no lock, so a held one does not stop a plan.
        plan = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.5.0", "--check",
                            tmp_path=tmp_path)
        assert plan.rc == 0, plan.output[-3000:]

        run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.5.0",
                           "-e", "rollout_break_lock=true", "--limit", third, tmp_path=tmp_path)
        assert run.rc == 0, run.output[-5000:]
        assert "broke the rollout lock held by alice@other-laptop:4242" in said(run)
        assert region_tags(lab)[third] == {"v2.5.0"}
        wait_for(lambda: no_lease_left(lab), 10, "the lock given back")
    finally:
        delete_lease(lab[third])


def test_a_lock_whose_holder_stopped_renewing_is_taken_over_after_its_lease(fleet, tmp_path):
    lab = fleet
    first = REGIONS[0]
    holder = {"identity": "bob@lost-laptop:77", "user": "bob", "host": "lost-laptop", "pid": 77,
              "playbook": "upgrade.yml", "target": "image v2.5.0", "started": "2026-12-01T08:00:00Z"}
    hand_made_lease(lab[first], holder, renewed_ago=0, duration=8)
    try:
        run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.5.0",
                           "--limit", first, tmp_path=tmp_path)
        assert run.rc != 0 and "another rollout holds the lock: bob@lost-laptop:77" in said(run)
        time.sleep(9)
        run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.5.0",
                           "--limit", first, tmp_path=tmp_path)
        assert run.rc == 0, run.output[-5000:]
        assert "took over the rollout lock of bob@lost-laptop:77" in said(run)
        assert "it stopped renewing it" in said(run)
    finally:
        delete_lease(lab[first])


def test_two_rollouts_at_once_and_a_killed_run(fleet, tmp_path):
    """A second run refuses at once naming the first; the first, killed with its renewer (the
    controller is gone), leaves its Leases; the next run on this controller takes them over."""
    lab = fleet
    first = REGIONS[0]
    cmd = ["ansible-playbook", "upgrade.yml", "-i", "inventories/local", "-e", "super_node_image_tag=v2.6.0",
           "-e", "rollout_soak_seconds=20"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ansible_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        renewed = "icn.network/rollout-renewer-pid"
        wait_for(lambda: [l for l in leases(lab).values() if renewed in (l.metadata.annotations or {})]
                 .__len__() == len(lab), 60, "the first run's lock, with its renewer, in every cluster")
        lease = leases(lab)[first]
        assert lease.spec.holder_identity.endswith(f":{proc.pid}")
        started = time.monotonic()
        second = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.7.0",
                              tmp_path=tmp_path)
        assert second.rc != 0
        assert f"another rollout holds the lock: {lease.spec.holder_identity} running upgrade.yml" in said(second)
        assert time.monotonic() - started < 60
        renewer = int(lease.metadata.annotations[renewed])
        os.killpg(proc.pid, signal.SIGKILL)  # the controller and its workers
        os.kill(renewer, signal.SIGKILL)  # and the renewer: nobody gives the lock back
        proc.wait(30)
        time.sleep(1)
        assert len(leases(lab)) == len(lab), "a killed run's Leases stay until taken over"
        third = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.6.0",
                             "-e", "rollout_timeout=120", tmp_path=tmp_path)
        assert third.rc == 0, third.output[-5000:]
        assert "that process has ended on this controller without giving it back" in said(third)
        assert all(t == {"v2.6.0"} for t in region_tags(lab).values())
        wait_for(lambda: no_lease_left(lab), 10, "the lock given back")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def helm_done(c, region, before: int):
    """helm has recorded a new deployed revision: its upgrade is over, and the run now waits for
    the region's rollout (region_health), which is what a freeze should hit."""
    secrets = c.core.list_namespaced_secret(
        NS, label_selector=f"owner=helm,name=icn-super-node-{region},status=deployed", _request_timeout=2).items
    return any(int(s.metadata.labels["version"]) > before for s in secrets)


def test_an_api_server_that_stops_answering_for_a_few_seconds_does_not_roll_the_region_back(fleet, tmp_path):
    lab = fleet
    second = REGIONS[1]
    revision = release_revision(lab[second], second)
    thaw = freeze_for(f"icn-{second}", 5, when=lambda: helm_done(lab[second], second, revision), poll=0.1)
    run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.8.0",
                       "--limit", FIRST3, tmp_path=tmp_path)
    thaw.join()
    assert thaw.frozen_at is not None, "the API server was never frozen"
    assert run.rc == 0, run.output[-5000:]
    assert results(run) == {r: "upgraded" for r in REGIONS[:3]}
    assert all(region_tags(lab)[r] == {"v2.8.0"} for r in REGIONS[:3])


def test_an_api_server_frozen_past_the_grace_gets_its_region_rolled_back(fleet, tmp_path):
    lab = fleet
    second, later = REGIONS[1], REGIONS[2:3]
    before = {r: release_revision(lab[r], r) for r in later}
    revision = release_revision(lab[second], second)
    thaw = freeze_for(f"icn-{second}", 7, when=lambda: helm_done(lab[second], second, revision), poll=0.1)
    run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.9.0",
                       "-e", "rollout_api_grace=2", "-e", "rollout_request_timeout=2", "--limit", FIRST3,
                       tmp_path=tmp_path)
    thaw.join()
    assert thaw.frozen_at is not None
    assert run.rc != 0
    assert f"Region {second} failed its upgrade (image v2.8.0 -> v2.9.0" in said(run)
    assert results(run)[second] == "rolled back"
    assert region_tags(lab)[second] == {"v2.8.0"}
    assert {r: release_revision(lab[r], r) for r in later} == before, "no further region touched"
    wait_for(lambda: no_lease_left(lab), 10, "a failed run gives the lock back too")
    # Resume: the same command with the default grace.
    run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v2.9.0",
                       "--limit", FIRST3, tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert results(run) == {REGIONS[0]: "skipped", REGIONS[1]: "upgraded", REGIONS[2]: "upgraded"}


def test_a_region_that_could_not_be_rolled_back_stops_the_rollout_before_any_change(fleet, tmp_path):
    lab = fleet
    fourth = REGIONS[3]
    release = f"icn-super-node-{fourth}"
    helm = ["helm", "--kubeconfig", str(lab[fourth].kubeconfig), "--kube-context", f"icn-{fourth}", "-n", NS]
    deployed = release_revision(lab[fourth], fourth)
    # A manual upgrade that failed (a StatefulSet's volume size cannot change): the release is
    # left 'failed', and a rollback of an upgrade on top of it would not return to a good state.
    failed = subprocess.run([*helm, "upgrade", release, "charts/super-node", "--reuse-values",
                             "--set", "persistence.size=20Ti"], cwd=ROOT,
                            capture_output=True, text=True)
    assert failed.returncode != 0, failed.stdout
    try:
        state = snapshot(lab)
        run = run_playbook("upgrade.yml", "inventories/local", "-e", "super_node_image_tag=v3.0.0", tmp_path=tmp_path)
        assert run.rc != 0
        assert f"region {fourth} could not be rolled back if its upgrade failed: revision {deployed + 1} is failed" in said(run)
        assert snapshot(lab) == state, "nothing may change when a region could not be rolled back"
    finally:
        fix = subprocess.run([*helm, "rollback", release, str(deployed)], capture_output=True, text=True)
        assert fix.returncode == 0, fix.stderr
