"""Issue 3: the chart installed into the single-cluster lab (icn-single, 28 fake nodes over the
seven regions, zonal 10Ti volumes of class fast-ssd), through the real helm and the lab's real
API server.

  1. `helm install --dry-run=server` succeeds and creates nothing; the rendered objects are
     then sent to the API server as a server-side dry run, so admission validates every one.
  2. A real `helm install ... --set global.regions=all` (module-scoped, shared by the checks
     below): 14 pods Ready within 5 minutes, stable names, volumes, placement, PDB/HPA/ConfigMap.
     With autoscaling on (the default) the StatefulSets carry no spec.replicas: each starts at 1
     and the HPA raises it to minReplicas 2 (without metrics), which this checks really happens.
  3. `helm upgrade --reuse-values --set image.tag=v1.1.0 --wait` while a sampler checks, about
     twice a second, that every region keeps at least one Ready pod.
  4. `helm uninstall` keeps the 14 PVCs (persistentVolumeClaimRetentionPolicy Retain). Last.

Run with helm and kubectl on PATH (else the tools cache is used), e.g.
    ICN_LAB_DIR=/tmp/icn-single-lab PATH=<helm dir>:<kubectl dir>:$PATH \
        .venv/bin/python -m pytest tests/chart/test_lab_install.py -q
The measured times are printed to the terminal even under -q.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from chartkit import lab_versions, tool
from labkit import LAB_DIR, REGIONS, Cluster, is_ready, wait_for

pytestmark = pytest.mark.single

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "super-node"
CONTEXT = "icn-single"
RELEASE = "icn-super-nodes"
APP = "app.kubernetes.io/name=icn-super-node"
SECRET = "icn-staking-keys"
OLD_TAG, NEW_TAG = "v1.0.0", "v1.1.0"
PODS_PER_REGION = 2  # autoscaling.minReplicas
READY_TIMEOUT = 300  # issue 3: 14 Ready pods within 5 minutes
OPTIONAL_KINDS = {"ServiceMonitor", "DestinationRule", "VirtualService"}


def sts_name(region: str) -> str:
    return f"icn-super-node-{region}"


EXPECTED_PODS = sorted(f"{sts_name(r)}-{i}" for r in REGIONS for i in range(PODS_PER_REGION))
EXPECTED_PVCS = sorted(f"data-{p}" for p in EXPECTED_PODS)


# --------------------------------------------------------------------------- tools

_V = lab_versions()
HELM = tool("helm", f"helm-{_V['HELM_VERSION']}", env="HELM")
KUBECTL = tool("kubectl", f"kubernetes-{_V['K8S_VERSION']}")
KUBECONFIG = LAB_DIR / "kubeconfig"


def _run(cmd: list[str], stdin: str | None, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=stdin, text=True, capture_output=True, timeout=timeout,
                          cwd=REPO)


def helm(*args: str, check: bool = True, timeout: float = 400) -> subprocess.CompletedProcess:
    proc = _run([HELM, "--kubeconfig", str(KUBECONFIG), "--kube-context", CONTEXT, *args],
                None, timeout)
    if check:
        assert proc.returncode == 0, f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def kubectl(*args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
    proc = _run([KUBECTL, "--kubeconfig", str(KUBECONFIG), "--context", CONTEXT,
                 "--request-timeout=30s", *args], stdin, timeout)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def report(capsys, line: str) -> None:
    """Prints to the terminal even when pytest captures output (-q)."""
    with capsys.disabled():
        print(f"\n[lab-install] {line}", flush=True)


# --------------------------------------------------------------------------- reads

def chart_pods(cluster: Cluster, ns: str) -> list:
    return cluster.pods(ns, APP)


def running_ready(pod) -> bool:
    return pod.status.phase == "Running" and is_ready(pod)


def region_of(pod) -> str:
    return pod.metadata.labels["icn.network/region"]


def image_tag(pod) -> str:
    return pod.spec.containers[0].image.rsplit(":", 1)[1]


def served_groups(cluster: Cluster) -> set[str]:
    return {g.name for g in client.ApisApi(cluster.api).get_api_versions().groups}


def manifest_kinds(manifest: str) -> Counter:
    return Counter(d["kind"] for d in yaml.safe_load_all(manifest) if d)


def diagnose(cluster: Cluster, ns: str) -> str:
    """What stands between the release and 14 Ready pods: pods, StatefulSets, HPAs, warnings."""
    lines = []
    for p in chart_pods(cluster, ns):
        if not running_ready(p):
            conds = {c.type: f"{c.status}:{c.reason or ''}" for c in p.status.conditions or []}
            lines.append(f"pod {p.metadata.name}: phase={p.status.phase} node={p.spec.node_name} {conds}")
    for s in cluster.apps.list_namespaced_stateful_set(ns).items:
        lines.append(f"sts {s.metadata.name}: spec.replicas={s.spec.replicas} "
                     f"ready={s.status.ready_replicas} current={s.status.current_replicas}")
    for h in cluster.autoscaling.list_namespaced_horizontal_pod_autoscaler(ns).items:
        conds = "; ".join(f"{c.type}={c.status} {c.reason}: {c.message}" for c in h.status.conditions or [])
        lines.append(f"hpa {h.metadata.name}: current={h.status.current_replicas} "
                     f"desired={h.status.desired_replicas} {conds}")
    for e in cluster.core.list_namespaced_event(ns).items:
        if e.type == "Warning" or e.involved_object.kind == "HorizontalPodAutoscaler":
            lines.append(f"event {e.involved_object.kind}/{e.involved_object.name} "
                         f"{e.reason}: {e.message}")
    return "\n".join(lines[-80:])


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cluster(lab_manager) -> Cluster:
    return lab_manager.ensure("single")[CONTEXT]


@pytest.fixture(scope="module")
def release(cluster):
    """The chart installed once for the module: yields (namespace, seconds to 14 Ready pods).

    Teardown uninstalls (if test 4 has not) and deletes the namespace, which hands the lab
    volumes back to the pool."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(ns)
    try:
        # Throwaway test keys; in production Ansible writes this Secret from Vault.
        cluster.core.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET),
            string_data={f"{r}-staking-key": f"lab-test-key-{r}-{uuid.uuid4().hex}" for r in REGIONS}))
        started = time.monotonic()
        helm("install", RELEASE, str(CHART), "--namespace", ns, "--create-namespace",
             "--set", "global.regions=all")
        try:
            wait_for(lambda: sorted(p.metadata.name for p in chart_pods(cluster, ns)
                                    if running_ready(p)) == EXPECTED_PODS,
                     READY_TIMEOUT, "the 14 super-node pods to be Running and Ready")
        except AssertionError as err:
            raise AssertionError(f"{err}\n{diagnose(cluster, ns)}") from None
        yield ns, time.monotonic() - started
    finally:
        if helm("status", RELEASE, "-n", ns, check=False).returncode == 0:
            helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "2m", check=False)
        cluster.delete_namespace(ns)


# --------------------------------------------------------------------------- 1. dry run

def test_dry_run_server_validates_everything_and_creates_nothing(single_lab, namespace_in):
    cluster = single_lab
    ns = namespace_in(cluster)
    before = {p.metadata.name for p in cluster.core.list_persistent_volume_claim_for_all_namespaces().items}

    proc = helm("install", RELEASE, str(CHART), "--namespace", ns, "--create-namespace",
                "--set", "global.regions=all", "--dry-run=server", "-o", "json")
    rel = json.loads(proc.stdout)
    assert rel["info"]["status"] == "pending-install", rel["info"]
    kinds = manifest_kinds(rel["manifest"])
    for kind in ("StatefulSet", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap",
                 "ServiceAccount", "NetworkPolicy"):
        assert kinds[kind] == len(REGIONS), (kind, kinds)
    assert kinds["Service"] == 2 * len(REGIONS) + 1, kinds  # headless + client per region, mesh
    # No prometheus-operator or Istio in the lab: "auto" leaves their objects out.
    groups = served_groups(cluster)
    assert not {"monitoring.coreos.com", "networking.istio.io"} & groups
    assert not OPTIONAL_KINDS & set(kinds), kinds

    # helm's dry run validates against the server's OpenAPI schema but never submits the
    # objects; a server-side dry run puts every one through the API server's validation and
    # admission (strict field validation), still without persisting anything.
    created = kubectl("create", "--dry-run=server", "--validate=strict", "-n", ns, "-o", "name",
                      "-f", "-", stdin=rel["manifest"])
    assert len(created.stdout.split()) == sum(kinds.values()), created.stdout

    # Nothing was created: no release record, no chart object, no claim.
    assert helm("status", RELEASE, "-n", ns, check=False).returncode != 0
    assert cluster.core.list_namespaced_secret(ns, label_selector="owner=helm").items == []
    left = kubectl("get", "statefulsets,services,configmaps,serviceaccounts,pdb,hpa,networkpolicies",
                   "-n", ns, "-l", APP, "-o", "name").stdout.split()
    assert left == [], left
    after = {p.metadata.name for p in cluster.core.list_persistent_volume_claim_for_all_namespaces().items}
    assert after == before


# --------------------------------------------------------------------------- 2. install

def test_install_gets_14_ready_pods_within_5_minutes(cluster, release, capsys):
    ns, seconds = release
    report(capsys, f"helm install -> 14 pods Running and Ready in {seconds:.1f}s")
    assert seconds < READY_TIMEOUT
    pods = chart_pods(cluster, ns)
    assert sorted(p.metadata.name for p in pods) == EXPECTED_PODS
    assert all(running_ready(p) and image_tag(p) == OLD_TAG for p in pods)
    status = json.loads(helm("status", RELEASE, "-n", ns, "-o", "json").stdout)
    assert status["info"]["status"] == "deployed"


def test_optional_istio_and_prometheus_objects_are_skipped(cluster, release):
    ns, _ = release
    groups = served_groups(cluster)
    assert not {"monitoring.coreos.com", "networking.istio.io"} & groups, groups
    manifest = helm("get", "manifest", RELEASE, "-n", ns).stdout
    kinds = manifest_kinds(manifest)
    assert not OPTIONAL_KINDS & set(kinds), kinds
    # The mesh Service is rendered without Istio (only its VirtualService needs the mesh).
    assert cluster.core.read_namespaced_service("super-node", ns).spec.selector[
        "app.kubernetes.io/name"] == "icn-super-node"
    notes = helm("get", "notes", RELEASE, "-n", ns).stdout
    assert "Istio objects were not rendered" in notes


def test_seven_statefulsets_scaled_to_two_by_their_hpa(cluster, release):
    ns, _ = release
    sets = {s.metadata.name: s for s in cluster.apps.list_namespaced_stateful_set(ns, label_selector=APP).items}
    assert sorted(sets) == sorted(sts_name(r) for r in REGIONS)
    manifest = [d for d in yaml.safe_load_all(helm("get", "manifest", RELEASE, "-n", ns).stdout) if d]
    for doc in manifest:
        if doc["kind"] == "StatefulSet":  # autoscaling on: the chart leaves the count to the HPA
            assert "replicas" not in doc["spec"], doc["metadata"]["name"]
    wait_for(lambda: all(s.status.ready_replicas == PODS_PER_REGION for s in
                         cluster.apps.list_namespaced_stateful_set(ns, label_selector=APP).items),
             30, "every StatefulSet to report 2 ready replicas")
    for region in REGIONS:
        s = sets[sts_name(region)]
        assert s.spec.replicas == PODS_PER_REGION, (s.metadata.name, s.spec.replicas)
        # The count was written through the scale subresource by the HPA controller, not by helm.
        owners = [(m.manager, m.subresource) for m in s.metadata.managed_fields
                  if "f:replicas" in (m.fields_v1 or {}).get("f:spec", {})]
        assert owners == [("kube-controller-manager", "scale")], (s.metadata.name, owners)
        assert s.spec.persistent_volume_claim_retention_policy.when_deleted == "Retain"
        assert s.spec.persistent_volume_claim_retention_policy.when_scaled == "Retain"
    # ... because it was below minReplicas: the HPA scales up to its minimum without any metrics.
    rescaled = {e.involved_object.name for e in cluster.core.list_namespaced_event(ns).items
                if e.involved_object.kind == "HorizontalPodAutoscaler" and e.reason == "SuccessfulRescale"
                and "below Spec.MinReplicas" in (e.message or "")}
    assert rescaled == set(sets), rescaled


def test_pvcs_bound_10ti_fast_ssd_in_the_pods_zone(cluster, release):
    ns, _ = release
    pvcs = {c.metadata.name: c for c in cluster.core.list_namespaced_persistent_volume_claim(ns).items}
    assert sorted(pvcs) == EXPECTED_PVCS
    nodes = {n.metadata.name: n.metadata.labels for n in cluster.core.list_node().items}
    pods = {p.metadata.name: p for p in chart_pods(cluster, ns)}
    for name, pvc in pvcs.items():
        assert pvc.status.phase == "Bound", (name, pvc.status.phase)
        assert pvc.spec.storage_class_name == "fast-ssd"
        assert pvc.spec.resources.requests["storage"] == "10Ti"
        assert pvc.status.capacity["storage"] == "10Ti"
        pv = cluster.core.read_persistent_volume(pvc.spec.volume_name)
        node = pods[name.removeprefix("data-")].spec.node_name
        assert pv.metadata.labels["topology.kubernetes.io/zone"] == nodes[node]["topology.kubernetes.io/zone"]


def test_each_regions_pods_on_distinct_nodes_of_that_region(cluster, release):
    ns, _ = release
    nodes = {n.metadata.name: n.metadata.labels for n in cluster.core.list_node().items}
    by_region = defaultdict(list)
    for p in chart_pods(cluster, ns):
        by_region[region_of(p)].append(p.spec.node_name)
    assert sorted(by_region) == sorted(REGIONS)
    for region, placed in by_region.items():
        assert len(placed) == PODS_PER_REGION and len(set(placed)) == PODS_PER_REGION, (region, placed)
        wrong = {n: nodes[n].get("topology.kubernetes.io/region") for n in placed
                 if nodes[n].get("topology.kubernetes.io/region") != region}
        assert not wrong, f"{region} pods on nodes of another region: {wrong}"


def test_seven_pdbs_hpas_and_configmaps(cluster, release):
    ns, _ = release
    expected = sorted(sts_name(r) for r in REGIONS)
    pdbs = {p.metadata.name: p for p in cluster.policy.list_namespaced_pod_disruption_budget(ns, label_selector=APP).items}
    assert sorted(pdbs) == expected
    for region in REGIONS:
        pdb = pdbs[sts_name(region)]
        assert pdb.spec.min_available == 1
        assert pdb.spec.selector.match_labels["icn.network/region"] == region
    # Each PDB selects its region's two Ready pods, so one may be disrupted (status may lag).
    wait_for(lambda: all((p.status.current_healthy, p.status.disruptions_allowed) == (2, 1)
                         for p in cluster.policy.list_namespaced_pod_disruption_budget(
                             ns, label_selector=APP).items), 30,
             "every PDB to count 2 healthy pods and allow 1 disruption")
    hpas = {h.metadata.name: h for h in cluster.autoscaling.list_namespaced_horizontal_pod_autoscaler(ns, label_selector=APP).items}
    assert sorted(hpas) == expected
    for name, hpa in hpas.items():
        assert (hpa.spec.scale_target_ref.kind, hpa.spec.scale_target_ref.name) == ("StatefulSet", name)
        assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 8)
    # The HPA writes currentReplicas on its next sync (5 s in the lab) after the scale-up.
    wait_for(lambda: all(
        (h.status.current_replicas, h.status.desired_replicas) == (PODS_PER_REGION, PODS_PER_REGION)
        and any(c.type == "AbleToScale" and c.status == "True" for c in h.status.conditions or [])
        for h in cluster.autoscaling.list_namespaced_horizontal_pod_autoscaler(ns, label_selector=APP).items),
        30, "every HPA to report 2 current and desired replicas and AbleToScale")
    cms = {c.metadata.name: c for c in cluster.core.list_namespaced_config_map(ns, label_selector=APP).items}
    assert sorted(cms) == sorted(f"{sts_name(r)}-bootstrap" for r in REGIONS)
    for cm in cms.values():
        assert cm.data["BOOTSTRAP_NODES"].startswith("/dns4/")


# --------------------------------------------------------------------------- 3. upgrade

class ReadySampler(threading.Thread):
    """Polls every region's Ready pods about twice a second until stopped."""

    def __init__(self, ns: str, interval: float = 0.5):
        super().__init__(daemon=True)
        self.ns, self.interval = ns, interval
        self.cluster = Cluster(CONTEXT)  # its own API client: not shared with the test thread
        self.samples: list[tuple[float, dict[str, int], set[str]]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.stop.is_set():
            try:
                pods = self.cluster.pods(self.ns, APP)
            except (ApiException, OSError) as err:
                self.errors.append(str(err)[:200])
            else:
                ready = Counter(region_of(p) for p in pods if is_ready(p))
                tags = {image_tag(p) for p in pods}
                self.samples.append((time.monotonic() - t0, {r: ready[r] for r in REGIONS}, tags))
            self.stop.wait(self.interval)


def test_upgrade_keeps_a_ready_pod_per_region(cluster, release, capsys):
    ns, _ = release
    old_uids = {p.metadata.name: p.metadata.uid for p in chart_pods(cluster, ns)}
    sampler = ReadySampler(ns)
    sampler.start()
    wait_for(lambda: sampler.samples, 10, "the first readiness sample")
    started = time.monotonic()
    try:
        proc = helm("upgrade", RELEASE, str(CHART), "--namespace", ns, "--reuse-values",
                    "--set", f"image.tag={NEW_TAG}", "--wait", "--timeout", "5m", check=False)
        rollout = time.monotonic() - started
    finally:
        sampler.stop.set()
        sampler.join(10)
    report(capsys, f"helm upgrade --wait to {NEW_TAG}: rollout {rollout:.1f}s, "
                   f"{len(sampler.samples)} readiness samples, {len(sampler.errors)} sample errors")
    assert proc.returncode == 0, proc.stderr

    # Every sample: each region had a Ready pod.
    gaps = [(round(t, 1), r) for t, ready, _ in sampler.samples for r in REGIONS if ready[r] < 1]
    assert not gaps, f"regions without a Ready pod during the rollout (t, region): {gaps[:20]}"
    assert len(sampler.samples) >= rollout, "fewer than one sample per second of rollout"
    assert len(sampler.errors) <= len(sampler.samples) // 10, sampler.errors
    # The sampler really watched the rollout: some samples saw old and new pods side by side.
    assert any(tags == {OLD_TAG, NEW_TAG} for _, _, tags in sampler.samples)
    # ... and was fine-grained enough to catch the one-pod dips of a one-at-a-time rollout.
    assert any(min(ready.values()) == 1 for _, ready, _ in sampler.samples)

    pods = chart_pods(cluster, ns)
    assert sorted(p.metadata.name for p in pods) == EXPECTED_PODS  # HPA count not reset
    for p in pods:
        assert running_ready(p), p.metadata.name
        assert image_tag(p) == NEW_TAG, (p.metadata.name, p.spec.containers[0].image)
        assert [s.image.rsplit(":", 1)[1] for s in p.status.container_statuses] == [NEW_TAG]
        assert p.metadata.uid != old_uids[p.metadata.name], f"{p.metadata.name} was not replaced"
    for s in cluster.apps.list_namespaced_stateful_set(ns, label_selector=APP).items:
        assert s.status.current_revision == s.status.update_revision, s.metadata.name


# --------------------------------------------------------------------------- 4. uninstall (last)

def test_uninstall_keeps_the_14_pvcs(cluster, release):
    ns, _ = release
    volumes = {c.metadata.name: c.spec.volume_name
               for c in cluster.core.list_namespaced_persistent_volume_claim(ns).items}
    assert sorted(volumes) == EXPECTED_PVCS
    helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "2m")
    wait_for(lambda: not chart_pods(cluster, ns), 60, "the super-node pods to go away")
    assert cluster.apps.list_namespaced_stateful_set(ns).items == []
    pvcs = {c.metadata.name: c for c in cluster.core.list_namespaced_persistent_volume_claim(ns).items}
    assert sorted(pvcs) == EXPECTED_PVCS
    for name, pvc in pvcs.items():
        assert pvc.metadata.deletion_timestamp is None, f"{name} is being deleted"
        assert pvc.status.phase == "Bound" and pvc.spec.volume_name == volumes[name], name
