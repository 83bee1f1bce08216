"""Autoscaling on bandwidth, end to end, against the multi-cluster lab with Prometheus.

The bandwidth the HPA reads is computed as in production: the pods' byte counters
(icn_super_node_network_bytes_total, served by lab/exporter.py at the rate a test sets in the
ConfigMap kube-system/lab-metrics of a region) are scraped by the lab's Prometheus, and the real
prometheus-adapter (run by lab/adapter.py) serves custom.metrics.k8s.io with the rule the
monitoring role writes into its config: the per-pod rate of the counter, in bits/s, over the lab's
20 s window (inventories/local; production 2m). kube-controller-manager's real HPA controller reads
it through the aggregator and scales the region's StatefulSet. Pod CPU still comes from the lab's
metrics API (metrics.k8s.io). The Super-Nodes are deployed by deploy.yml, as an operator would,
with short HPA periods so that a scale-down does not take ten minutes.

What the lab cannot show: no traffic flows; the counters grow at the rate the tests say.
"""
from __future__ import annotations

import time

import pytest
import yaml
from kubernetes.client.rest import ApiException

from labkit import ROOT, wait_for
from playbook import local_inventory, run_playbook

pytestmark = pytest.mark.multi
NS = "icn"
METRIC = "network_bandwidth_utilization"  # the adapter's name for it (monitoring role)
COUNTER = "icn_super_node_network_bytes_total"
# Short HPA periods for the tests: scale up at once, at most 2 pods per 20 s; scale down 20 s
# after the load dropped, all the way at once. (The chart's defaults: 60 s / 600 s windows.)
SCALE_DOWN_WINDOW = 20
BEHAVIOR = {"scaleUp": {"stabilizationWindowSeconds": 0, "podsPerPeriod": 2, "periodSeconds": 20},
            "scaleDown": {"stabilizationWindowSeconds": SCALE_DOWN_WINDOW, "podsPerPeriod": 8,
                          "periodSeconds": 15}}


def inventory(tmp_path, lab):
    """inventories/local for the lab's regions, with the tests' HPA behaviour."""
    values = {}
    for f in sorted((ROOT / "inventories/local/group_vars/super_nodes").glob("*.yml")):
        values.update((yaml.safe_load(f.read_text()) or {}).get("super_node_chart_values") or {})
    values = {**values, "autoscaling": {"behavior": BEHAVIOR}}
    return local_inventory(tmp_path, regions=list(lab),
                           group_vars={"super_node_chart_values": values})


@pytest.fixture(scope="module")
def deployed(lab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autoscaling")
    inv = inventory(tmp, lab)
    for c in lab.values():  # every pod at the lab's defaults (100M, 10% CPU)
        reset_metrics(c)
    run = run_playbook("deploy.yml", inv, tmp_path=tmp)
    print(f"\ndeploy.yml on {len(lab)} regions: {run.seconds:.1f}s")
    assert run.rc == 0, run.output[-6000:]
    yield inv, run
    # Leave the regions as deploy.yml makes them: 2 pods, 2 volumes, default values.
    for region, c in lab.items():
        reset_metrics(c)
        name = f"icn-super-node-{region}"
        wait_for(lambda: len(c.pods(NS, f"icn.network/region={region}")) == 2, 120,
                 f"{region} back to 2 pods")
        keep = {f"data-{name}-0", f"data-{name}-1"}
        for pvc in c.core.list_namespaced_persistent_volume_claim(NS).items:
            if pvc.metadata.name not in keep:
                c.core.delete_namespaced_persistent_volume_claim(pvc.metadata.name, NS)
        wait_for(lambda: len(c.core.list_namespaced_persistent_volume_claim(NS).items) == 2, 60,
                 f"{region}: extra volume claims gone")

        def recycled():
            c.recycle_volumes(NS)
            return not [pv for pv in c.core.list_persistent_volume().items
                        if pv.status.phase == "Released"]
        wait_for(recycled, 60, f"{region}: the released volumes back in the pool")

def reset_metrics(c) -> None:
    """Removes every value a test set; the lab's defaults remain."""
    cm = c.core.read_namespaced_config_map("lab-metrics", "kube-system")
    extra = {k: None for k in (cm.data or {}) if k not in ("cpu", "memory", METRIC)}
    if extra:
        c.set_pod_metrics(extra)


def set_bandwidth(c, region: str, mbit: int | None) -> None:
    """Every pod of the region's StatefulSet counts bytes at `mbit` Mbit/s from now on (None: the
    exporter's default, 100 Mbit/s)."""
    c.set_pod_metrics({f"{NS}.icn-super-node-{region}.{COUNTER}": None if mbit is None else f"{mbit / 8}M"})


def current_bandwidth(c, region: str) -> float | None:
    """The HPA's current average of the Pods metric, in bits/s."""
    for m in hpa(c, region).status.current_metrics or []:
        if m.type == "Pods" and m.pods.current and m.pods.current.average_value:
            return parse_quantity(m.pods.current.average_value)
    return None


def parse_quantity(text: str) -> float:
    suffix = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    return float(text[:-1]) * suffix[text[-1]] if text[-1] in suffix else float(text)


def replicas(c, region: str) -> int:
    return c.apps.read_namespaced_stateful_set(f"icn-super-node-{region}", NS).spec.replicas


def ready_with_bound_volumes(c, region: str, count: int) -> bool:
    pods = c.ready_pods(NS, f"icn.network/region={region}")
    pvcs = {p.metadata.name: p.status.phase
            for p in c.core.list_namespaced_persistent_volume_claim(NS).items}
    return (replicas(c, region) == count and len(pods) == count
            and all(pvcs.get(f"data-{p.metadata.name}") == "Bound" for p in pods))


def hpa(c, region: str):
    return c.autoscaling.read_namespaced_horizontal_pod_autoscaler(f"icn-super-node-{region}", NS)


def test_the_hpa_reads_bandwidth_from_prometheus_adapter(lab, deployed):
    """Every region's HPA gets its bandwidth from prometheus-adapter (the pods' counters at the
    exporter's default 100 Mbit/s, as PromQL computes it) against 800M, and CPU 10%."""
    for region, c in lab.items():
        services = {a["metadata"]["name"]: a["spec"]["service"]
                    for a in apiservices(c, "custom.metrics.k8s.io")}
        assert services and all((s["namespace"], s["name"]) == ("monitoring", "prometheus-adapter")
                                for s in services.values()), services
        rules = yaml.safe_load(c.core.read_namespaced_config_map(
            "prometheus-adapter", "monitoring").data["config.yaml"])["rules"]
        assert any(r["name"]["as"] == METRIC and "[20s]" in r["metricsQuery"] for r in rules), rules

        # Until the adapter has relisted the new pods' series (every 15 s) and Prometheus holds two
        # samples of each, the HPA lists the Pods metric with no value; then, for one rate window
        # (20 s), rate() reads a young series low (29M, 54M, 79M, then 100M in the lab), as it
        # would in production. So: wait for the HPA to read 100M (within 5%) from the adapter.
        def current():
            metrics = {m.type: m for m in hpa(c, region).status.current_metrics or []}
            value = current_bandwidth(c, region)
            return metrics if ({"Pods", "Resource"} <= set(metrics) and value
                               and abs(value - 100e6) <= 5e6) else None
        metrics = wait_for(current, 120, f"{region}: the HPA reading 100M (within 5%) from the adapter")
        assert metrics["Pods"].pods.metric.name == METRIC
        assert metrics["Resource"].resource.current.average_utilization == 10
        spec = hpa(c, region).spec
        assert spec.metrics[1].pods.target.average_value == "800M", "80% of 1 Gbps"
        assert (spec.min_replicas, spec.max_replicas) == (2, 8)
        assert deployed[1].summary["regions"][region]["autoscaling"] == "bandwidth+cpu"


def test_bandwidth_scales_one_region_up_to_4_then_8_and_back_to_2_keeping_volumes(lab, deployed):
    region, *others = list(lab)
    c = lab[region]
    before = {r: lab[r].apps.read_namespaced_stateful_set(f"icn-super-node-{r}", NS).metadata.generation
              for r in others}
    assert replicas(c, region) == 2
    try:
        # 900 Mbit/s per pod, over the 800M target: the HPA adds pods (at most 2 per period; a new
        # pod counts as idle until Prometheus has two samples of it), so it gets to 4 first.
        set_bandwidth(c, region, 900)
        started = time.monotonic()
        seen = wait_for(lambda: current_bandwidth(c, region) if replicas(c, region) >= 4 else None,
                        120, f"{region} scaled to 4")
        up_seconds = time.monotonic() - started
        assert seen > 800e6, f"the HPA scaled on {seen / 1e6:.0f}M from the adapter"
        # 800 Mbit/s per pod, the target: the HPA keeps 4, also while a new pod is not Running yet.
        set_bandwidth(c, region, 800)
        assert replicas(c, region) == 4, "at most 2 pods per scale-up period"
        wait_for(lambda: ready_with_bound_volumes(c, region, 4), 60, "4 Ready pods, volumes Bound")
        wait_for(lambda: abs((current_bandwidth(c, region) or 0) - 800e6) < 20e6, 60, "800M at the HPA")
        time.sleep(12)  # two more HPA syncs
        assert replicas(c, region) == 4 and hpa(c, region).status.desired_replicas == 4

        # More load: 1.6 Gbit/s per pod wants 8 pods, the maximum (8 nodes per region).
        set_bandwidth(c, region, 1600)
        wait_for(lambda: ready_with_bound_volumes(c, region, 8), 180, "8 Ready pods, volumes Bound")
        time.sleep(6)
        assert replicas(c, region) == 8 and hpa(c, region).status.desired_replicas == 8
        limited = {x.type: x for x in hpa(c, region).status.conditions}["ScalingLimited"]
        assert limited.status == "True" and limited.reason == "TooManyReplicas"

        # Back to 100 Mbit/s: 2 pods, but not before the scale-down stabilization window.
        set_bandwidth(c, region, 100)
        dropped = time.monotonic()
        wait_for(lambda: replicas(c, region) < 8, SCALE_DOWN_WINDOW + 60, "the scale-down")
        down_after = time.monotonic() - dropped
        wait_for(lambda: ready_with_bound_volumes(c, region, 2), 60, "2 Ready pods")
        wait_for(lambda: len(c.pods(NS, f"icn.network/region={region}")) == 2, 60, "2 pods left")
    finally:
        set_bandwidth(c, region, None)
    print(f"\n{region}: 2 -> 4 in {up_seconds:.1f}s; scale-down began {down_after:.1f}s after "
          f"the load dropped (window {SCALE_DOWN_WINDOW}s, rate window 20s)")
    # The rate over 20 s falls below the scale-down point some seconds after the drop; the window
    # starts then. The last high recommendation can be one HPA sync (5 s) older than the drop.
    assert down_after >= SCALE_DOWN_WINDOW - 5, "scaled down before the stabilization window"
    name = f"icn-super-node-{region}"
    pvcs = {p.metadata.name: p.status.phase
            for p in c.core.list_namespaced_persistent_volume_claim(NS).items}
    assert pvcs == {f"data-{name}-{i}": "Bound" for i in range(8)}, \
        "the volumes of the removed pods are kept"
    after = {r: lab[r].apps.read_namespaced_stateful_set(f"icn-super-node-{r}", NS).metadata.generation
             for r in others}
    assert after == before, "the other regions' StatefulSets were never scaled"
    assert all(replicas(lab[r], r) == 2 for r in others)


def apiservices(c, group: str) -> list[dict]:
    items = c.custom.list_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices")["items"]
    return [a for a in items if a["spec"].get("group") == group]


def test_without_custom_metrics_api_the_hpa_falls_back_to_cpu(lab, deployed, tmp_path):
    """A region whose cluster serves no custom.metrics.k8s.io gets a CPU-only HPA, and the run
    says so; once the API is back, the next run scales on bandwidth again."""
    region = list(lab)[-1]
    c = lab[region]
    inv = deployed[0]
    saved = apiservices(c, "custom.metrics.k8s.io")
    assert len(saved) == 2
    for svc in saved:
        c.custom.delete_cluster_custom_object("apiregistration.k8s.io", "v1", "apiservices",
                                              svc["metadata"]["name"])
    try:
        run = run_playbook("deploy.yml", inv, "--limit", region, tmp_path=tmp_path)
        assert run.rc == 0, run.output[-5000:]
        assert f"icn-{region} serves no custom.metrics.k8s.io" in run.output
        assert run.summary["regions"][region]["autoscaling"] == "cpu only: no custom metrics API"
        metrics = hpa(c, region).spec.metrics
        assert [(m.type, m.resource.name) for m in metrics if m.resource] == [("Resource", "cpu")]
        assert len(metrics) == 1
        # The CPU-only HPA works: 95% CPU on every pod scales the region up.
        c.set_pod_metrics({f"{NS}.icn-super-node-{region}.cpu": "95%"})
        wait_for(lambda: replicas(c, region) > 2, 60, f"{region} scaled up on CPU")
    finally:
        reset_metrics(c)
        for svc in saved:
            body = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                    "metadata": {"name": svc["metadata"]["name"],
                                 "labels": svc["metadata"].get("labels") or {}},
                    "spec": svc["spec"]}
            try:
                c.custom.create_cluster_custom_object("apiregistration.k8s.io", "v1",
                                                      "apiservices", body)
            except ApiException as err:
                if err.status != 409:
                    raise
    wait_for(lambda: all(any(x["type"] == "Available" and x["status"] == "True"
                             for x in (a.get("status") or {}).get("conditions") or [])
                         for a in apiservices(c, "custom.metrics.k8s.io")), 60,
             "custom.metrics.k8s.io Available again")
    run = run_playbook("deploy.yml", inv, "--limit", region, tmp_path=tmp_path)
    assert run.rc == 0, run.output[-5000:]
    assert run.summary["regions"][region]["autoscaling"] == "bandwidth+cpu"
    assert [m.type for m in hpa(c, region).spec.metrics] == ["Resource", "Pods"]
