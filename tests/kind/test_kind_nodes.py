"""The Super-Nodes on real nodes: kind clusters built on this machine (docs/kind.md), where the
kubelet runs real containers (the Super-Node stand-in, images/super-node-standin), probes them, and
the data lives on a real volume. The module starts the kind scenario's clusters (molecule create and
converge -s kind: three regions, two workers each) and destroys them at the end. A real Prometheus
(lab/kind/prometheus.py) scrapes the stand-in's own /metrics through the clusters' API servers.

Run alone: python -m pytest tests/kind -m kind (make test runs them after the lab's tests)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from labkit import ROOT, Cluster, is_ready, wait_for
from playbook import run_playbook

pytestmark = pytest.mark.kind

KIND_DIR = ROOT / ".kind-molecule"
REGIONS = ["na-west", "na-east", "eu-west"]   # molecule/default/inventory/hosts.yml, in order
NS = "icn"              # super_node_namespace (roles/region)
BASE_TAG = "v1.0.0"      # inventories/local (workload.yml), the stand-in's first tag
BROKEN_TAG = "v1.1.0-broken"
GIB = 1 << 30


def kind_env() -> dict:
    return {"ICN_LAB_DIR": str(KIND_DIR), "KUBECONFIG": str(KIND_DIR / "kubeconfig"),
            "DOCKER_HOST": f"unix://{ROOT}/.kind/docker/docker.sock",
            "PATH": f"{ROOT}/.kind/bin:{os.environ['PATH']}",
            "KIND_EXPERIMENTAL_DOCKER_NETWORK": "icn-kind"}


def molecule(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["molecule", *args, "-s", "kind"], cwd=ROOT, text=True, capture_output=True,
                          timeout=timeout, env=dict(os.environ, **kind_env()))


def kind_playbook(playbook: str, *args: str, tmp_path: Path, timeout: float = 1200):
    """A playbook on the kind scenario's inventory (the default scenario's hosts, the stand-in image)."""
    inventory = ["-i", str(ROOT / "molecule/default/inventory/hosts.yml"), "-i", str(ROOT / "molecule/kind/inventory")]
    return run_playbook(playbook, inventory[1], *inventory[2:], *args, tmp_path=tmp_path, timeout=timeout,
                        env=kind_env())


@pytest.fixture(scope="module")
def kind():
    """{region: Cluster} of the kind scenario, deployed at BASE_TAG."""
    if not os.environ.get("ICN_KIND_KEEP") or not (KIND_DIR / "kubeconfig").exists():
        proc = molecule("create")
        assert proc.returncode == 0, f"molecule create -s kind failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        proc = molecule("converge")
        assert proc.returncode == 0, f"molecule converge -s kind failed:\n{proc.stdout[-6000:]}"
    yield {r: Cluster(f"icn-{r}", KIND_DIR / "kubeconfig") for r in REGIONS}
    if not os.environ.get("ICN_KIND_KEEP"):
        proc = molecule("destroy")
        assert proc.returncode == 0, proc.stdout[-3000:]


def exec_in(cluster: Cluster, pod: str, *command: str) -> str:
    proc = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "--context", cluster.context,
                           "-n", NS, "exec", pod, "-c", "super-node", "--", *command],
                          text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, f"exec {command} in {pod}: {proc.stderr}"
    return proc.stdout


def wait_ready(cluster: Cluster, pod: str, timeout: float = 300, old_uid: str | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            p = cluster.core.read_namespaced_pod(pod, NS)
            if is_ready(p) and p.metadata.uid != old_uid:
                return p
        except Exception:  # noqa: BLE001  (the pod is being recreated)
            pass
        time.sleep(2)
    raise AssertionError(f"{cluster.context}/{pod} not Ready in {timeout} s")


def image_of(cluster: Cluster, region: str) -> str:
    sts = cluster.apps.read_namespaced_stateful_set(f"icn-super-node-{region}", NS)
    return sts.spec.template.spec.containers[0].image


def ready_count(cluster: Cluster, region: str) -> int:
    return sum(1 for p in cluster.pods(NS) if p.metadata.name.startswith(f"icn-super-node-{region}-") and is_ready(p))


class ReadyWatch(threading.Thread):
    """Samples a region's Ready pods every second until stopped; min_ready is the lowest seen."""

    def __init__(self, cluster: Cluster, region: str):
        super().__init__(daemon=True)
        self.cluster, self.region = cluster, region
        self.min_ready, self.samples = 99, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            try:
                pods = self.cluster.pods(NS)
                n = sum(1 for p in pods if p.metadata.name.startswith(f"icn-super-node-{self.region}-") and is_ready(p))
                self.min_ready, self.samples = min(self.min_ready, n), self.samples + 1
            except Exception:  # noqa: BLE001  (a sample the API server did not answer is not a sample)
                pass
            self.halt.wait(1)

    def stop(self) -> int:
        self.halt.set()
        self.join(10)
        return self.min_ready


def test_the_stand_in_runs_on_real_nodes_and_answers_its_probes(kind):
    for region, c in kind.items():
        pods = [c.core.read_namespaced_pod(f"icn-super-node-{region}-{i}", NS) for i in (0, 1)]
        assert all(is_ready(p) for p in pods), region
        assert len({p.spec.node_name for p in pods}) == 2, "two pods, two nodes"
        assert image_of(c, region) == f"icn/super-node-standin:{BASE_TAG}"
        # a real container: its process wrote its heartbeat to the volume
        assert int(exec_in(c, pods[0].metadata.name, "/super-node-standin", "size", "/data/standin-heartbeat")) > 0
        # pod to pod across the two nodes, on the P2P port (the ptp CNI and the routes of lab/kind/cni.sh)
        assert exec_in(c, pods[0].metadata.name, "/super-node-standin", "dial", f"{pods[1].status.pod_ip}:9000").strip() == "65536"


@pytest.fixture
def prometheus(kind):
    """The lab's Prometheus on the kind clusters (lab/kind/prometheus.py: each pod's /metrics through
    its API server, targets from the chart's ServiceMonitors, rules from its PrometheusRules), fresh
    for the test and stopped after it, by its pids: its URL."""
    def helper(command: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "lab/kind/prometheus.py"), command], text=True,
                              capture_output=True, timeout=600, env=dict(os.environ, **kind_env()))
    try:
        proc = helper("start")
        assert proc.returncode == 0, f"lab/kind/prometheus.py start:\n{proc.stderr[-3000:]}"
        yield proc.stdout.split()[-1]
    finally:
        proc = helper("stop")
        assert proc.returncode == 0, proc.stderr[-3000:]


def promql(url: str, query: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}",
                                timeout=10) as resp:
        return json.load(resp)["data"]["result"]


def wait_value(read, ok, timeout: float, what: str):
    """wait_for(ok(read())), failing with read()'s last value; returns a last read."""
    try:
        wait_for(lambda: ok(read()), timeout, what, interval=1)
    except AssertionError as err:
        raise AssertionError(f"{err}; last: {read()}") from None
    return read()


def test_prometheus_scrapes_the_stand_ins_own_metrics(kind, prometheus):
    """Every Super-Node pod of every region is up under its ServiceMonitor's job (the headless
    Service's name, as prometheus-operator names it and as the alerts and upgrade.yml's analysis
    select), the stand-in's own series come back with the pod's labels, its byte counter rises with
    real traffic, and the chart's alerts are evaluated on these series."""
    want = {(f"icn-super-node-{r}-headless", f"icn-super-node-{r}-{i}"): r for r in REGIONS for i in (0, 1)}

    def up() -> dict:
        return {(s["metric"]["job"], s["metric"]["pod"]): s["value"][1]
                for s in promql(prometheus, f'up{{namespace="{NS}"}}')}
    wait_value(up, lambda v: v == {k: "1" for k in want}, 60, "every Super-Node pod up in Prometheus")
    resyncing = promql(prometheus, f'icn_super_node_shards_resyncing{{namespace="{NS}"}}')
    assert len(resyncing) == len(want), resyncing
    for series in resyncing:
        labels = series["metric"]
        assert want[(labels["job"], labels["pod"])] == labels["region"], labels
        assert labels["service"] == labels["job"] and labels["endpoint"] == "metrics", labels
        assert series["value"][1] == "0", labels
    info = promql(prometheus, f'icn_super_node_standin_info{{namespace="{NS}"}}')
    assert sorted((s["metric"]["pod"], s["metric"]["tag"]) for s in info) == sorted(
        (pod, BASE_TAG) for _, pod in want), "the stand-in reports its image's tag: its own series"

    def rx() -> dict:
        return {s["metric"]["pod"]: float(s["value"][1]) for s in promql(
            prometheus, f'icn_super_node_network_bytes_total{{namespace="{NS}", direction="rx"}}')}
    before = wait_value(rx, lambda v: len(v) == len(want), 30, "every pod's byte counter")
    for region, c in kind.items():   # 64 KiB from pod 0 to pod 1's P2P port, which counts it
        ip = c.core.read_namespaced_pod(f"icn-super-node-{region}-1", NS).status.pod_ip
        exec_in(c, f"icn-super-node-{region}-0", "/super-node-standin", "dial", f"{ip}:9000")
    receivers = [f"icn-super-node-{r}-1" for r in REGIONS]
    wait_value(rx, lambda v: all(v.get(p, 0) >= before[p] + 65536 for p in receivers), 30,
               f"the receivers' byte counters up by 64 KiB in Prometheus (before: {before})")

    # The chart's PrometheusRule, as deployed, in Prometheus: each alert evaluated without error on
    # these series, SuperNodeRegionNotScraped (absent(up{job=...} == 1)) not pending nor firing.
    names = {f"{NS}/icn-super-node-{r}/icn-super-node-{r}" for r in REGIONS}

    def rules() -> dict:
        with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as resp:
            return {g["name"]: {r["name"]: (r["health"], r["state"], r["lastEvaluation"][:4])
                                for r in g["rules"]} for g in json.load(resp)["data"]["groups"]}
    groups = wait_value(rules, lambda v: names <= set(v) and all(
        health == "ok" and year != "0001" and (alert != "SuperNodeRegionNotScraped" or state == "inactive")
        for n in names for alert, (health, state, year) in v[n].items()), 30,
        "the chart's alerts loaded and evaluated, SuperNodeRegionNotScraped inactive")
    assert all(len(groups[n]) == 5 for n in names), groups


def test_a_gigabyte_on_data_survives_the_pods_deletion(kind):
    region = REGIONS[0]
    c = kind[region]
    pod = f"icn-super-node-{region}-0"
    exec_in(c, pod, "/super-node-standin", "fill", "/data/seed-test.bin", str(GIB))
    assert int(exec_in(c, pod, "/super-node-standin", "size", "/data/seed-test.bin")) == GIB
    before = c.core.read_namespaced_pod(pod, NS)
    c.core.delete_namespaced_pod(pod, NS)
    after = wait_ready(c, pod, old_uid=before.metadata.uid)
    assert after.spec.node_name == before.spec.node_name, "the volume is pinned to its zone's node"
    assert int(exec_in(c, pod, "/super-node-standin", "size", "/data/seed-test.bin")) == GIB
    exec_in(c, pod, "/super-node-standin", "fill", "/data/seed-test.bin", "0")


def test_an_upgrade_to_a_broken_tag_fails_on_the_kubelets_probe_and_is_rolled_back(kind, tmp_path):
    first, second = REGIONS[0], REGIONS[1]
    second_image = image_of(kind[second], second)
    watch = ReadyWatch(kind[first], first)
    watch.start()
    try:
        # the kubelet's readiness probe fails for good: 90 s is enough to see it (the default is 600)
        run = kind_playbook("upgrade.yml", "-e", f"super_node_image_tag={BROKEN_TAG}", "-e", "rollout_timeout=90",
                            tmp_path=tmp_path, timeout=1500)
    finally:
        min_ready = watch.stop()
    assert run.rc != 0, "an upgrade to a tag that never turns Ready must fail"
    assert image_of(kind[first], first) == f"icn/super-node-standin:{BASE_TAG}", "rolled back"
    for i in (0, 1):
        wait_ready(kind[first], f"icn-super-node-{first}-{i}")
    assert min_ready >= 1, "the region kept a Ready replica throughout"
    assert image_of(kind[second], second) == second_image, "the next region is untouched"
    assert ready_count(kind[second], second) == 2


def test_a_drain_of_a_node_keeps_a_ready_replica_throughout(kind, tmp_path):
    """drain_node.yml on a worker that hosts a Super-Node. Each zone has one worker here and the
    pod's volume is pinned to its zone, so the evicted pod has nowhere to go until the node is
    uncordoned: the playbook says so when its wait runs out. What matters on real nodes: the eviction
    goes through the PDB, the other replica stays Ready throughout (sampled every second), a second
    drain (of the other worker) is refused while the first pod is away, and after the uncordon the
    pod is Ready again on its node."""
    region = REGIONS[2]
    c = kind[region]
    pod, other = f"icn-super-node-{region}-0", f"icn-super-node-{region}-1"
    before = c.core.read_namespaced_pod(pod, NS)
    node = before.spec.node_name
    other_node = c.core.read_namespaced_pod(other, NS).spec.node_name
    watch = ReadyWatch(c, region)
    watch.start()
    try:
        run = kind_playbook("playbooks/drain_node.yml", "-e", f"region={region}", "-e", f"node={node}",
                            "-e", "drain_node_timeout=60", tmp_path=tmp_path)
        assert c.core.read_node(node).spec.unschedulable, run.output[-3000:]
        evicted = [p for p in c.pods(NS) if p.metadata.name == pod]
        assert not evicted or evicted[0].metadata.uid != before.metadata.uid, "the pod was evicted"
        refused = kind_playbook("playbooks/drain_node.yml", "-e", f"region={region}", "-e", f"node={other_node}",
                                tmp_path=tmp_path)
        assert refused.rc != 0 and f"Refusing to drain {other_node}" in refused.output, refused.output[-3000:]
        assert not c.core.read_node(other_node).spec.unschedulable, "a refused drain must not cordon"
    finally:
        undo = kind_playbook("playbooks/drain_node.yml", "-e", f"region={region}", "-e", f"node={node}",
                             "-e", "drain_node_uncordon=true", tmp_path=tmp_path)
        back = wait_ready(c, pod, timeout=300, old_uid=before.metadata.uid)
        min_ready = watch.stop()
    assert undo.rc == 0, undo.output[-3000:]
    assert not c.core.read_node(node).spec.unschedulable
    assert back.spec.node_name == node
    assert watch.samples > 30 and min_ready >= 1, f"Ready replicas fell to {min_ready}"
