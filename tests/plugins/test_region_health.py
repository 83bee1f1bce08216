"""icn.super_node.region_health against a real lab API server: the module runs as Ansible runs it
(an `ansible` subprocess), on a workload these tests build themselves in a throwaway namespace, so
they do not depend on the chart."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from apifreeze import freeze_for
from labkit import ROOT, Cluster, is_ready, wait_for
from playbook import module_command, module_env, module_result

pytestmark = pytest.mark.multi

IMAGE = "registry.invalid/icn/super-node"
GOOD_TAG = "v1.0.0"
BROKEN_TAG = "v1.1.0-broken"  # the lab runs these pods but never makes them Ready
SECRET = "icn-staking-keys"


def ansible_command(args: dict, *extra: str) -> list[str]:
    return module_command("icn.super_node.region_health", args, *extra)


def run_region_health(args: dict, *extra: str, json_output: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(ansible_command(args, *extra), env=module_env(json_output), cwd=ROOT,
                          text=True, capture_output=True, timeout=180)


def region_health(args: dict, *extra: str) -> dict:
    """The module's result, read from the json stdout callback."""
    return module_result(run_region_health(args, *extra, json_output=True))


@dataclass
class Workload:
    cluster: Cluster
    namespace: str
    region: str
    secret_values: dict

    @property
    def name(self) -> str:
        return f"icn-super-node-{self.region}"

    def args(self, **options) -> dict:
        return dict(kubeconfig=str(self.cluster.kubeconfig), context=self.cluster.context,
                    namespace=self.namespace, regions=[self.region], **options)

    def statefulset(self):
        return self.cluster.apps.read_namespaced_stateful_set(self.name, self.namespace)

    def set_image_tag(self, tag: str) -> None:
        self.cluster.apps.patch_namespaced_stateful_set(self.name, self.namespace, {"spec": {"template": {
            "spec": {"containers": [{"name": "super-node", "image": f"{IMAGE}:{tag}"}]}}}})

    def pods(self) -> list:
        return sorted(self.cluster.pods(self.namespace, f"icn.network/region={self.region}"),
                      key=lambda p: p.metadata.name)


def create_workload(cluster: Cluster, namespace: str, region: str, secret_values: dict) -> None:
    """What the chart makes for one region, built by hand: StatefulSet (with a 10Ti claim on
    fast-ssd and no spec.replicas, so the HPA raises it to its minimum), PDB, HPA, ConfigMap,
    and the staking-keys Secret."""
    name = f"icn-super-node-{region}"
    labels = {"app.kubernetes.io/name": "icn-super-node", "app.kubernetes.io/instance": name,
              "icn.network/region": region}
    cluster.apps.create_namespaced_stateful_set(namespace, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceName": f"{name}-headless", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": labels},
                     "topologyKey": "kubernetes.io/hostname"}]}},
                "containers": [{"name": "super-node", "image": f"{IMAGE}:{GOOD_TAG}",
                                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd",
                "resources": {"requests": {"storage": "10Ti"}}}}],
        }})
    cluster.policy.create_namespaced_pod_disruption_budget(namespace, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": labels}}})
    cluster.autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name},
                 "minReplicas": 2, "maxReplicas": 8,
                 "metrics": [{"type": "Resource", "resource": {
                     "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}})
    cluster.core.create_namespaced_config_map(namespace, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{name}-bootstrap"},
        "data": {"BOOTSTRAP_NODES": f"/dns4/{name}-0.{name}-headless/tcp/4001"}})
    cluster.core.create_namespaced_secret(namespace, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET},
        "stringData": secret_values})


def settled(workload: Workload, replicas: int) -> bool:
    """Every controller has caught up: pods Ready on one revision, PDB and HPA counted them."""
    sts = workload.statefulset()
    pods = workload.pods()
    pdb = workload.cluster.policy.read_namespaced_pod_disruption_budget(workload.name, workload.namespace)
    hpa = workload.cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(
        workload.name, workload.namespace)
    return (sts.status.observed_generation == sts.metadata.generation
            and sts.status.ready_replicas == replicas and sts.status.updated_replicas == replicas
            and sts.status.current_revision == sts.status.update_revision
            and len(pods) == replicas and all(is_ready(p) for p in pods)
            and pdb.status.current_healthy == replicas and hpa.status.current_replicas == replicas)


@pytest.fixture
def lab_region(lab) -> tuple[str, Cluster]:
    region = list(lab)[-1]  # the last region: the lab tests use the first
    return region, lab[region]


@pytest.fixture
def workload(lab_region, namespace_in) -> Workload:
    """One region's workload, healthy: 2 Ready pods (the HPA's minimum) with Bound volumes."""
    region, cluster = lab_region
    secret_values = {f"{region}-staking-key": f"staking-{uuid.uuid4().hex}",
                     "other-staking-key": f"staking-{uuid.uuid4().hex}"}
    created = Workload(cluster, namespace_in(cluster), region, secret_values)
    create_workload(cluster, created.namespace, region, secret_values)
    wait_for(lambda: settled(created, 2), 120, f"the workload in {created.namespace} to settle")
    return created


@pytest.fixture
def broken_upgrade(workload) -> Workload:
    """The workload after an upgrade to a tag whose pods never get Ready: the controller replaced
    pod -1 (Parallel policy) and waits for it forever."""
    workload.set_image_tag(BROKEN_TAG)

    def stuck():
        pod = workload.cluster.core.read_namespaced_pod(f"{workload.name}-1", workload.namespace)
        pdb = workload.cluster.policy.read_namespaced_pod_disruption_budget(
            workload.name, workload.namespace)
        return (pod.spec.containers[0].image.endswith(BROKEN_TAG)
                and any(c.type == "Ready" and c.status == "False" for c in pod.status.conditions or [])
                and pdb.status.current_healthy == 1 and workload.statefulset().status.updated_replicas == 1)

    wait_for(stuck, 90, "pod -1 to run the broken tag, not Ready")
    return workload


def test_healthy_region_is_reported_with_exact_counts(workload):
    result = region_health(workload.args(expect_image_tag=GOOD_TAG, require_disruption_allowed=True))

    assert result["healthy"] is True and result["changed"] is False
    assert result["problems"] == []
    report = result["regions"][workload.region]
    sts = workload.statefulset()
    revision = sts.status.update_revision
    assert report["statefulset"] == {
        "exists": True, "desired": 2, "replicas": 2, "ready": 2, "updated": 2, "available": 2,
        "current_revision": revision, "update_revision": revision,
        "generation": sts.metadata.generation, "observed_generation": sts.metadata.generation,
        "rollout_complete": True}
    assert report["image"] == f"{IMAGE}:{GOOD_TAG}" and report["image_tag"] == GOOD_TAG
    assert report["pods"] == [
        {"name": p.metadata.name, "node": p.spec.node_name, "ready": True, "revision": revision,
         "image": f"{IMAGE}:{GOOD_TAG}"} for p in workload.pods()]
    assert [p["name"] for p in report["pods"]] == [f"{workload.name}-0", f"{workload.name}-1"]
    assert report["pvcs"] == {"total": 2, "bound": 2,
                              "names": [f"data-{workload.name}-0", f"data-{workload.name}-1"]}
    assert report["pdb"] == {"exists": True, "min_available": 1, "current_healthy": 2,
                             "desired_healthy": 1, "disruptions_allowed": 1}
    assert report["hpa"] == {"exists": True, "min": 2, "max": 8, "current": 2, "desired": 2}
    assert report["configmap"] is True and report["secret_key"] is True
    assert report["healthy"] is True and report["problems"] == []
    assert 0 < result["elapsed"] < 5

    checked = region_health(workload.args(), "--check")
    assert checked["healthy"] is True and checked["changed"] is False


def test_image_tag_mismatch_names_the_template_and_every_pod(workload):
    failed = region_health(workload.args(expect_image_tag="v1.1.0"))

    expected = [f"{workload.region}: StatefulSet {workload.name} template is on {GOOD_TAG}, expected v1.1.0",
                f"{workload.region}: pod {workload.name}-0 runs {GOOD_TAG}, expected v1.1.0",
                f"{workload.region}: pod {workload.name}-1 runs {GOOD_TAG}, expected v1.1.0"]
    assert failed["failed"] is True and failed["healthy"] is False
    assert failed["problems"] == expected
    assert all(problem in failed["msg"] for problem in expected)
    assert f"context {workload.cluster.context}" in failed["msg"]

    reported = region_health(workload.args(expect_image_tag="v1.1.0", fail_on_unhealthy=False))
    assert not reported.get("failed")
    assert reported["healthy"] is False and reported["problems"] == expected


def test_broken_upgrade_is_unhealthy_and_names_the_unready_pod(broken_upgrade):
    workload = broken_upgrade
    sts = workload.statefulset()
    result = region_health(workload.args(require_disruption_allowed=True))

    name, region = workload.name, workload.region
    assert result["failed"] is True and result["healthy"] is False
    assert sorted(result["problems"]) == sorted([
        f"{region}: StatefulSet {name}: 1/2 replicas Ready",
        f"{region}: StatefulSet {name}: 1/2 replicas on revision {sts.status.update_revision}",
        f"{region}: StatefulSet {name}: rollout from revision {sts.status.current_revision} "
        f"to {sts.status.update_revision} not complete",
        f"{region}: pod {name}-1 ({BROKEN_TAG}) is not Ready: ReadinessProbeFailed",
        f"{region}: PDB {name} allows 0 disruptions",
    ])
    report = result["regions"][region]
    assert report["image_tag"] == BROKEN_TAG
    assert report["statefulset"]["rollout_complete"] is False
    assert [(p["ready"], p["revision"]) for p in report["pods"]] == [
        (True, sts.status.current_revision), (False, sts.status.update_revision)]
    assert report["pdb"]["disruptions_allowed"] == 0


def test_missing_pdb_and_staking_key_are_named_and_no_secret_value_is_shown(workload):
    cluster, ns = workload.cluster, workload.namespace
    cluster.policy.delete_namespaced_pod_disruption_budget(workload.name, ns)
    others = {k: v for k, v in workload.secret_values.items() if not k.startswith(workload.region)}
    cluster.core.replace_namespaced_secret(SECRET, ns, {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "stringData": others})

    expected = [f"{workload.region}: PDB {workload.name} is missing",
                f"{workload.region}: Secret {SECRET} has no key {workload.region}-staking-key"]
    result = region_health(workload.args())
    assert result["failed"] is True and result["problems"] == expected
    report = result["regions"][workload.region]
    assert report["pdb"]["exists"] is False and report["secret_key"] is False

    verbose = run_region_health(workload.args(), "-vvv")
    output = verbose.stdout + verbose.stderr
    assert verbose.returncode != 0 and all(problem in output for problem in expected)
    assert "Traceback" not in output
    for value in workload.secret_values.values():
        assert value not in output, "a staking key value leaked into the output"


def region_health_meanwhile(args: dict, after: float, change) -> dict:
    """Runs the module in the background, makes `change` once it has polled for `after` seconds
    (asserting it is still running then), and returns its result."""
    proc = subprocess.Popen(ansible_command(args), env=module_env(), cwd=ROOT,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(after)
        assert proc.poll() is None, f"the module returned within {after}s: {proc.communicate()}"
        change()
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        proc.kill()
    return module_result(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))


def test_wait_returns_once_the_pods_turn_ready(broken_upgrade):
    workload = broken_upgrade
    # Rolled back while the module waits: pod -1 is replaced and turns Ready.
    result = region_health_meanwhile(workload.args(wait=True, wait_timeout=120, poll_interval=0.5),
                                     6, lambda: workload.set_image_tag(GOOD_TAG))

    assert result["healthy"] is True and result["problems"] == []
    report = result["regions"][workload.region]
    assert report["image_tag"] == GOOD_TAG and report["statefulset"]["rollout_complete"] is True
    assert [p["ready"] for p in report["pods"]] == [True, True]
    # One poll takes a fraction of a second; the replaced pod needs the lab's 2 s to turn Ready.
    assert result["elapsed"] > 2


def test_hold_keeps_polling_and_fails_at_the_first_unhealthy_poll(workload):
    # Healthy all along: the module returns healthy, after the hold.
    held = region_health(workload.args(hold_seconds=3, poll_interval=0.5))
    assert held["healthy"] is True and not held.get("failed")
    assert held["elapsed"] >= 3

    # Broken during the hold: the module fails well before the hold ends, naming what broke.
    result = region_health_meanwhile(
        workload.args(expect_image_tag=GOOD_TAG, hold_seconds=120, poll_interval=0.5),
        4, lambda: workload.set_image_tag(BROKEN_TAG))
    assert result["failed"] is True and result["healthy"] is False
    assert "120s hold" in result["msg"]
    # The first unhealthy poll may come before the StatefulSet controller has touched a pod, so
    # what it must name is the template; a pod it names can only be -1, where the rollout starts.
    assert any(f"StatefulSet {workload.name} template is on {BROKEN_TAG}, expected {GOOD_TAG}" in problem
               for problem in result["problems"]), result["problems"]
    pods_named = {m for problem in result["problems"]
                  for m in re.findall(rf"\bpod ({re.escape(workload.name)}-\d+) ", problem)}
    assert pods_named <= {f"{workload.name}-1"}, result["problems"]
    assert result["elapsed"] < 100


@pytest.fixture
def frozen_port():
    """A port that accepts TCP connections (the kernel's backlog) and never answers: a hung
    API server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("fault, says", [("refused", "Connection refused"), ("frozen", "timed out"),
                                         ("unknown context", "icn-nowhere")])
def test_unreachable_cluster_fails_fast_naming_the_context(lab_region, frozen_port, tmp_path,
                                                          fault, says):
    region, cluster = lab_region
    kubeconfig = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    context = cluster.context
    if fault == "unknown context":
        context = "icn-nowhere"
    else:
        port = 1 if fault == "refused" else frozen_port
        for entry in kubeconfig["clusters"]:
            if entry["name"] == cluster.context:
                entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))

    started = time.monotonic()
    # Waiting does not turn an unreachable cluster into a region that may still get healthy: it
    # fails once the API server has not answered for api_grace, well before wait_timeout.
    result = region_health(dict(kubeconfig=str(path), context=context, regions=[region],
                                request_timeout=2, wait=True, wait_timeout=120, api_grace=3))
    took = time.monotonic() - started

    assert result["failed"] is True and result["changed"] is False
    assert f"context {context}" in result["msg"] and says in result["msg"], result["msg"]
    if fault != "unknown context":
        assert "(tried " in result["msg"], result["msg"]  # retried for the grace, then failed
    assert "regions" not in result
    assert took < 20, f"an unreachable cluster took {took:.0f}s to fail"


def test_an_api_server_frozen_for_less_than_the_grace_does_not_end_the_hold(workload):
    """The region's kube-apiserver is stopped (SIGSTOP) for 5 s in the middle of a 12 s hold: the
    polls of those seconds are retried until it answers again, and the region stays healthy."""
    thaws = []
    result = region_health_meanwhile(
        workload.args(hold_seconds=12, poll_interval=0.5, api_grace=15, request_timeout=2), 3,
        lambda: thaws.append(freeze_for(workload.cluster.context, 5)))
    thaws[0].join()
    assert not result.get("failed"), result.get("msg")
    assert result["healthy"] is True and result["problems"] == []
    assert result["elapsed"] >= 12


def test_an_api_server_frozen_past_the_grace_ends_the_hold_naming_the_timeout(workload):
    thaws = []
    result = region_health_meanwhile(
        workload.args(hold_seconds=60, poll_interval=0.5, api_grace=2, request_timeout=1), 3,
        lambda: thaws.append(freeze_for(workload.cluster.context, 6)))
    thaws[0].join()
    assert result["failed"] is True
    assert f"context {workload.cluster.context}" in result["msg"]
    assert "timed out" in result["msg"] and "(tried " in result["msg"], result["msg"]
    assert "regions" not in result
    assert result.get("elapsed") is None  # a failed read, not a verdict
