"""The lab behaves as Kubernetes does where this project depends on it: StatefulSets with
volumes and anti-affinity, PDB-guarded evictions during drains, stable pod identity, and a
clean shutdown. Everything here talks to the lab's real API servers."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from labkit import Cluster, icnlab, is_ready, lab_state, wait_for

pytestmark = pytest.mark.multi
APP = "lab-probe"


def statefulset(replicas: int = 2) -> dict:
    labels = {"app": APP}
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": APP},
        "spec": {
            "serviceName": APP, "replicas": replicas, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": labels},
                         "topologyKey": "kubernetes.io/hostname"}]}},
                    "containers": [{"name": "main", "image": "registry.invalid/probe:v1",
                                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                },
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd",
                         "resources": {"requests": {"storage": "10Ti"}}},
            }],
        },
    }


@pytest.fixture
def cluster(lab) -> Cluster:
    return next(iter(lab.values()))


@pytest.fixture
def probe(cluster, namespace_in):
    """A 2-replica StatefulSet with volumes and required anti-affinity, all Ready."""
    ns = namespace_in(cluster)
    cluster.apps.create_namespaced_stateful_set(ns, statefulset())
    wait_for(lambda: len(cluster.ready_pods(ns, f"app={APP}")) == 2, 90,
             "2 Ready pods of the probe StatefulSet")
    return ns


def test_statefulset_gets_ready_pods_on_distinct_nodes_with_bound_volumes(cluster, probe):
    pods = cluster.ready_pods(probe, f"app={APP}")
    assert sorted(p.metadata.name for p in pods) == [f"{APP}-0", f"{APP}-1"]
    assert len({p.spec.node_name for p in pods}) == 2, "anti-affinity must keep the pods apart"
    pvcs = cluster.core.list_namespaced_persistent_volume_claim(probe).items
    assert sorted(c.metadata.name for c in pvcs) == [f"data-{APP}-0", f"data-{APP}-1"]
    assert all(c.status.phase == "Bound" for c in pvcs)
    # A bound volume lies in the zone of the node that runs its pod, as a cloud disk would.
    nodes = {n.metadata.name: n for n in cluster.core.list_node().items}
    for pod in pods:
        pvc = next(c for c in pvcs if c.metadata.name == f"data-{pod.metadata.name}")
        pv = cluster.core.read_persistent_volume(pvc.spec.volume_name)
        assert pv.spec.capacity["storage"] == "10Ti"
        zone = nodes[pod.spec.node_name].metadata.labels["topology.kubernetes.io/zone"]
        assert pv.metadata.labels["topology.kubernetes.io/zone"] == zone


def test_deleted_pod_returns_with_same_name_and_volume(cluster, probe):
    before = cluster.core.read_namespaced_pod(f"{APP}-0", probe)
    volume = cluster.core.read_namespaced_persistent_volume_claim(f"data-{APP}-0", probe).spec.volume_name
    cluster.core.delete_namespaced_pod(f"{APP}-0", probe)

    def replaced():
        pod = cluster.core.read_namespaced_pod(f"{APP}-0", probe)
        return pod.metadata.uid != before.metadata.uid and is_ready(pod) and pod

    pod = wait_for(replaced, 60, "pod -0 to come back Ready")
    claim = next(v for v in pod.spec.volumes if v.name == "data").persistent_volume_claim
    assert claim.claim_name == f"data-{APP}-0"
    pvc = cluster.core.read_namespaced_persistent_volume_claim(f"data-{APP}-0", probe)
    assert pvc.status.phase == "Bound" and pvc.spec.volume_name == volume


def evict(cluster: Cluster, ns: str, name: str) -> int:
    """Asks the eviction API to evict a pod; returns the HTTP status (201 granted, 429 refused)."""
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
    try:
        cluster.core.create_namespaced_pod_eviction(name, ns, body)
        return 201
    except ApiException as err:
        return err.status


def drain(cluster: Cluster, ns: str, node: str, log: list, timeout: float = 120) -> None:
    """kubectl drain's loop: cordon, then evict every pod on the node, retrying refusals."""
    cluster.core.patch_node(node, {"spec": {"unschedulable": True}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = [p for p in cluster.pods(ns) if p.spec.node_name == node
                and p.metadata.deletion_timestamp is None]
        if not pods:
            return
        for pod in pods:
            log.append((time.monotonic(), node, pod.metadata.name, evict(cluster, ns, pod.metadata.name)))
        time.sleep(0.5)
    raise AssertionError(f"drain of {node} did not finish in {timeout}s")


def test_pdb_holds_a_second_eviction_until_the_first_replacement_is_ready(cluster, probe):
    cluster.policy.create_namespaced_pod_disruption_budget(probe, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": APP},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": APP}}}})
    wait_for(lambda: (cluster.policy.read_namespaced_pod_disruption_budget(APP, probe)
                      .status.disruptions_allowed == 1), 30, "the PDB to allow one disruption")
    nodes = sorted({p.spec.node_name for p in cluster.pods(probe, f"app={APP}")})
    assert len(nodes) == 2

    samples: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(len(cluster.ready_pods(probe, f"app={APP}")))
            time.sleep(0.25)

    log: list = []
    errors: list = []

    def drain_safely(node):
        try:
            drain(cluster, probe, node, log)
        except BaseException as err:  # surfaced below
            errors.append(err)

    sampler = threading.Thread(target=sample)
    sampler.start()
    drains = [threading.Thread(target=drain_safely, args=(n,)) for n in nodes]
    try:
        for t in drains:
            t.start()
        for t in drains:
            t.join(180)
    finally:
        stop.set()
        sampler.join()
        for n in nodes:
            cluster.core.patch_node(n, {"spec": {"unschedulable": False}})
    assert not errors, errors
    refused = [entry for entry in log if entry[3] == 429]
    granted = [entry for entry in log if entry[3] == 201]
    assert len(granted) == 2, f"both pods must be evicted in the end: {log}"
    assert refused, f"the PDB must refuse the second eviction while the first pod is replaced: {log}"
    assert min(samples) >= 1, f"a sample saw no Ready pod: {samples}"
    # The second eviction was granted only after the first replacement was Ready again.
    assert granted[1][0] > refused[0][0]
    pods = wait_for(lambda: len(cluster.ready_pods(probe, f"app={APP}")) == 2
                    and cluster.ready_pods(probe, f"app={APP}"), 60, "both pods Ready again")
    assert not {p.spec.node_name for p in pods} & set(nodes), "pods must have left the drained nodes"


def listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def running(pid: int) -> bool:
    """Any thread of the process left? A zombie leader whose other threads are still exiting
    still holds the process's sockets, so it counts as running."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" or len(list(Path(f"/proc/{pid}/task").iterdir())) > 1
    except OSError:
        return False


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError):
            pass
    return out


def test_lab_down_leaves_no_process_and_no_listening_port(tmp_path):
    """A one-region lab of its own, in its own folder, with Prometheus, started and stopped."""
    lab_dir = tmp_path / "lab"
    proc = icnlab("up", "--regions", "1", "--prometheus", lab_dir=lab_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = lab_state(lab_dir)
    pids = [pid for comp in state["pids"].values() for pid in comp.values()]
    assert len(pids) >= 5, f"etcd, apiserver, controller-manager, scheduler, kwok: {state['pids']}"
    pids.append(state["metrics_api_pid"])  # the lab's metrics API (lab/metrics_api.py)
    metrics_port = json.loads((lab_dir / "metrics-api.ports.json").read_text())["icn-na-west"]
    assert metrics_port in listening_ports()
    # Prometheus, the exporter, and lab/adapter.py with the prometheus-adapter it runs.
    pids += [state["prometheus_pid"], state["exporter_pid"], state["adapter_pid"]]
    adapters = children(state["adapter_pid"])
    assert len(adapters) == 1, f"one prometheus-adapter for the one cluster: {adapters}"
    pids += adapters
    adapter_port = json.loads((lab_dir / "prometheus/adapter/ports.json").read_text())["icn-na-west"]
    prometheus_port = int(state["prometheus_url"].rsplit(":", 1)[1])
    assert {adapter_port, prometheus_port} <= listening_ports()
    server = next(iter((Cluster("icn-na-west", lab_dir / "kubeconfig").api.configuration.host,)))
    port = int(server.rsplit(":", 1)[1])
    assert port in listening_ports()

    proc = icnlab("down", lab_dir=lab_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    alive = [pid for pid in pids if running(pid)]
    assert not alive, f"lab processes still running after down: {alive}"
    assert not {port, metrics_port, adapter_port, prometheus_port} & listening_ports()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not lab_dir.exists()
