"""region_health's judgement on API objects that the lab cannot easily produce (a lagging
controller, a Pending volume, a scaled StatefulSet, image references with ports and digests).
No cluster: judge_region works on the API's JSON as plain dicts."""
from __future__ import annotations

import copy
import sys

import pytest

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.region_health import (  # noqa: E402
    Expectations, Snapshot, image_tag, judge_region)

REGION = "eu-west"
NAME = f"icn-super-node-{REGION}"
REV = f"{NAME}-abc123"


def healthy_objects(replicas: int = 2) -> dict:
    pods = [{"metadata": {"name": f"{NAME}-{i}", "labels": {"controller-revision-hash": REV}},
             "spec": {"nodeName": f"node-{i}", "containers": [
                 {"name": "super-node", "image": "reg:5000/icn/super-node:v1.0.0"},
                 {"name": "istio-proxy", "image": "istio/proxyv2:1.24.0"}]},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
            for i in range(replicas)]
    return dict(
        statefulsets={NAME: {
            "metadata": {"name": NAME, "generation": 4},
            "spec": {"replicas": replicas,
                     "template": {"spec": {"containers": [
                         {"name": "super-node", "image": "reg:5000/icn/super-node:v1.0.0"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}}]},
            "status": {"observedGeneration": 4, "replicas": replicas, "readyReplicas": replicas,
                       "updatedReplicas": replicas, "availableReplicas": replicas,
                       "currentRevision": REV, "updateRevision": REV}}},
        pods={REGION: pods},
        pvcs={f"data-{p['metadata']['name']}": {"metadata": {"name": f"data-{p['metadata']['name']}"},
                                                 "status": {"phase": "Bound"}} for p in pods},
        pdbs={NAME: {"metadata": {"name": NAME}, "spec": {"minAvailable": 1},
                     "status": {"currentHealthy": replicas, "desiredHealthy": 1,
                                "disruptionsAllowed": replicas - 1}}},
        hpas={NAME: {"metadata": {"name": NAME}, "spec": {"minReplicas": 2, "maxReplicas": 8},
                     "status": {"currentReplicas": replicas, "desiredReplicas": replicas}}},
        configmaps=frozenset({f"{NAME}-bootstrap", "kube-root-ca.crt"}),
        secret_keys=frozenset({f"{REGION}-staking-key"}),
    )


def judge(objects: dict, **expect) -> dict:
    return judge_region(REGION, Snapshot(**objects), Expectations(**expect))


def test_the_healthy_baseline_has_no_problem():
    report = judge(healthy_objects())
    assert report["healthy"] is True and report["problems"] == []
    assert report["image_tag"] == "v1.0.0"
    assert [p["image"] for p in report["pods"]] == ["reg:5000/icn/super-node:v1.0.0"] * 2


def test_a_generation_the_controller_has_not_seen_is_not_healthy():
    objects = healthy_objects()
    objects["statefulsets"][NAME]["metadata"]["generation"] = 5
    report = judge(objects)
    assert report["problems"] == [
        f"StatefulSet {NAME}: generation 5 not yet observed by the controller (observed 4)"]
    assert report["statefulset"]["rollout_complete"] is False


def test_a_fresh_statefulset_below_the_hpa_minimum_is_not_healthy():
    objects = healthy_objects(replicas=1)
    report = judge(objects)
    assert report["statefulset"]["desired"] == 2
    assert report["statefulset"]["rollout_complete"] is True  # its own spec is met
    assert report["problems"] == [f"StatefulSet {NAME}: 1/2 replicas Ready",
                                  f"StatefulSet {NAME}: 1/2 replicas on revision {REV}"]

    without_hpa = healthy_objects(replicas=1)
    without_hpa["hpas"] = {}
    report = judge(without_hpa, expect_hpa=False)
    assert report["statefulset"]["desired"] == 1 and report["healthy"] is True


def test_pods_are_ordered_by_ordinal_and_retained_volumes_are_counted():
    objects = healthy_objects(replicas=11)
    objects["pvcs"][f"data-{NAME}-11"] = {"metadata": {"name": f"data-{NAME}-11"},
                                          "status": {"phase": "Bound"}}
    objects["pvcs"][f"data-{NAME}-other-0"] = {"metadata": {"name": f"data-{NAME}-other-0"},
                                               "status": {"phase": "Bound"}}
    report = judge(objects)
    assert [p["name"] for p in report["pods"]][-2:] == [f"{NAME}-9", f"{NAME}-10"]
    assert report["pvcs"]["total"] == 12 and report["pvcs"]["names"][-1] == f"data-{NAME}-11"
    assert report["healthy"] is True


def test_volumes_that_are_pending_or_gone_are_named():
    objects = healthy_objects()
    objects["pvcs"][f"data-{NAME}-0"]["status"]["phase"] = "Pending"
    del objects["pvcs"][f"data-{NAME}-1"]
    report = judge(objects)
    assert report["problems"] == [f"PVC data-{NAME}-0 is Pending", f"PVC data-{NAME}-1 is missing"]
    assert report["pvcs"] == {"total": 1, "bound": 0, "names": [f"data-{NAME}-0"]}


def test_an_unready_pod_gives_the_most_specific_reason():
    objects = healthy_objects()
    pod = objects["pods"][REGION][1]
    pod["status"] = {"phase": "Running",
                     "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                     "containerStatuses": [{"name": "super-node",
                                            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
    objects["pods"][REGION].append(copy.deepcopy(pod))
    unscheduled = objects["pods"][REGION][2]
    unscheduled["metadata"]["name"] = f"{NAME}-2"
    unscheduled["status"] = {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    objects["pvcs"][f"data-{NAME}-2"] = {"metadata": {"name": f"data-{NAME}-2"},
                                         "status": {"phase": "Bound"}}
    problems = judge(objects)["problems"]
    assert f"pod {NAME}-1 (v1.0.0) is not Ready: CrashLoopBackOff" in problems
    assert f"pod {NAME}-2 (v1.0.0) is not Ready: Unschedulable" in problems


def test_a_missing_secret_is_told_apart_from_a_missing_key():
    objects = healthy_objects()
    objects["secret_keys"] = None
    assert judge(objects)["problems"] == ["Secret icn-staking-keys is missing"]
    objects["secret_keys"] = frozenset({"apac-staking-key"})
    assert judge(objects, secret_name="keys")["problems"] == [
        f"Secret keys has no key {REGION}-staking-key"]


def test_a_missing_statefulset_is_reported_with_the_volumes_it_left():
    objects = healthy_objects()
    objects["statefulsets"] = {}
    objects["pods"] = {REGION: []}
    report = judge(objects)
    assert report["problems"] == [f"StatefulSet {NAME} is missing"]
    assert report["statefulset"]["exists"] is False and report["image"] is None
    assert report["pvcs"]["total"] == 2


@pytest.mark.parametrize("image, tag", [
    ("registry.example:5000/icn/super-node:v1.2.0", "v1.2.0"),
    ("registry.example:5000/icn/super-node:v1.2.0@sha256:" + "a" * 64, "v1.2.0"),
    ("registry.example:5000/icn/super-node@sha256:" + "a" * 64, None),
    ("super-node", None),
])
def test_image_tag(image, tag):
    assert image_tag(image) == tag
