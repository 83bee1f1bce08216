"""The chart's alerts in a live Prometheus: the lab's (icnlab.py up --prometheus).

The chart is installed with helm into a fresh namespace of one region's cluster, with the alerts'
`for` shortened to 5 s. The lab's exporter (lab/exporter.py) turns that cluster's PrometheusRule, as
deployed, into Prometheus rules and its ServiceMonitor into scrape targets, and serves the series a
real region would have: kube-state-metrics' and the kubelet's from the objects in the cluster, the
pods' own from values the tests set in kube-system/lab-metrics. Each test stages the series of one
fault, waits until Prometheus reports the alert firing for that region and namespace, undoes the
fault and waits until the alert resolves. tests/alerts/test_alerts.py checks the same rules with
promtool, minute by minute; here the rule engine, the scrapes and the objects are real.
"""
from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
import uuid

import pytest
from kubernetes import client

from chartkit import CHART, lab_versions, tool
from labkit import LAB_DIR, icnlab, is_ready, lab_state, wait_for

pytestmark = pytest.mark.multi
RELEASE = "alerts"
TAG = "alerts-live"  # the pods' image tag, so that a lab fault (never Ready) touches only them
FOR = "5s"
FIRE_TIMEOUT = 90  # scrape 5 s + evaluation 5 s + for 5 s, and the exporter's 2 s snapshots
HELM = tool("helm", f"helm-{lab_versions()['HELM_VERSION']}", env="HELM")


def prometheus_url() -> str:
    url = (lab_state() or {}).get("prometheus_url")
    assert url, "the lab runs no Prometheus: start it with `icnlab.py up --prometheus` (make lab-up)"
    return url


def query(path: str, **params) -> dict:
    url = f"{prometheus_url()}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def alerts(namespace: str, name: str) -> list[dict]:
    return [a for a in query("/api/v1/alerts")["alerts"]
            if a["labels"].get("alertname") == name and a["labels"].get("namespace") == namespace]


def firing(namespace: str, name: str) -> list[dict]:
    return [a for a in alerts(namespace, name) if a["state"] == "firing"]


def fires_then_resolves(region: str, ns: str, name: str, stage, undo, **labels) -> None:
    assert not alerts(ns, name), f"{name} already pending or firing before its fault was staged"
    stage()
    fired = wait_for(lambda: firing(ns, name), FIRE_TIMEOUT, f"{name} to fire in {region}/{ns}")
    for alert in fired:
        assert alert["labels"]["region"] == region, alert
        for key, value in labels.items():
            assert alert["labels"].get(key) == value, (key, alert)
        assert alert["annotations"]["runbook_url"].endswith(f"/{name}.md"), alert
    undo()
    wait_for(lambda: not alerts(ns, name), FIRE_TIMEOUT, f"{name} to resolve in {region}/{ns}")


def helm(context: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([HELM, "--kubeconfig", str(LAB_DIR / "kubeconfig"), "--kube-context", context,
                           *args], text=True, capture_output=True, timeout=400)
    assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def release(lab):
    """The chart in a fresh namespace of the lab's last region: (region, cluster, namespace)."""
    region = list(lab)[-1]
    context, cluster = f"icn-{region}", lab[region]
    ns = f"t-{uuid.uuid4().hex[:8]}"
    cluster.create_namespace(ns)
    try:
        cluster.core.create_namespaced_secret(ns, client.V1Secret(
            metadata=client.V1ObjectMeta(name="icn-staking-keys"),
            string_data={f"{region}-staking-key": f"lab-test-key-{uuid.uuid4().hex}"}))
        sets = [f"global.regions={{{region}}}", f"image.tag={TAG}",
                "metrics.prometheusRule.alerts.regionBelowMinReady.minReady=2",
                # The HPA test scales up at once (the chart's default waits 60 s).
                "autoscaling.behavior.scaleUp.stabilizationWindowSeconds=0"]
        sets += [f"metrics.prometheusRule.alerts.{a}.for={FOR}"
                 for a in ("regionBelowMinReady", "podNotReady", "volumeFull", "hpaAtMax", "notScraped")]
        helm(context, "install", RELEASE, str(CHART), "-n", ns, "--wait", "--timeout", "5m",
             *(a for s in sets for a in ("--set", s)))
        name = f"icn-super-node-{region}"
        # Scraped: every pod target up, which also shows the ServiceMonitor was turned into targets.
        wait_for(lambda: len([r for r in query("/api/v1/query", query=f'up{{namespace="{ns}"}}')["result"]
                              if r["value"][1] == "1"]) == 2, FIRE_TIMEOUT,
                 f"Prometheus to scrape the 2 pods of {name} in {ns}")
        wait_for(lambda: any(g["name"].startswith(f"{ns}/") for g in query("/api/v1/rules")["groups"]),
                 FIRE_TIMEOUT, f"the PrometheusRule of {ns} loaded as rules")
        yield region, cluster, ns
    finally:
        icnlab("fault", region, "--clear")
        cluster.set_pod_metrics({k: None for k in (cluster.core.read_namespaced_config_map(
            "lab-metrics", "kube-system").data or {}) if k.startswith(f"{ns}.")})
        subprocess.run([HELM, "--kubeconfig", str(LAB_DIR / "kubeconfig"), "--kube-context", context,
                        "uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "2m"],
                       capture_output=True, timeout=200)
        cluster.delete_namespace(ns)


def test_rules_and_targets_come_from_the_deployed_objects(release):
    region, _, ns = release
    name = f"icn-super-node-{region}"
    group = next(g for g in query("/api/v1/rules")["groups"] if g["name"] == f"{ns}/{name}/{name}")
    assert sorted(r["name"] for r in group["rules"]) == sorted([
        "SuperNodeRegionBelowMinReady", "SuperNodePodNotReady", "SuperNodeVolumeFillingUp",
        "SuperNodeHPAAtMaximum", "SuperNodeRegionNotScraped"])
    assert all(r["health"] == "ok" for r in group["rules"]), group["rules"]
    targets = [t for t in query("/api/v1/targets", state="active")["activeTargets"]
               if t["labels"].get("namespace") == ns]
    assert sorted(t["labels"]["pod"] for t in targets) == [f"{name}-0", f"{name}-1"]
    assert {t["labels"]["job"] for t in targets} == {f"{name}-headless"}
    assert {t["labels"]["region"] for t in targets} == {region}


def test_volume_filling_up_fires_and_resolves(release):
    region, cluster, ns = release
    claim = f"data-icn-super-node-{region}-0"
    key = f"{ns}.{claim}.kubelet_volume_stats_used_bytes"
    fires_then_resolves(region, ns, "SuperNodeVolumeFillingUp",
                        lambda: cluster.set_pod_metrics({key: "95%"}),
                        lambda: cluster.set_pod_metrics({key: None}),
                        persistentvolumeclaim=claim)


def test_region_not_scraped_fires_and_resolves(release):
    region, cluster, ns = release
    key = f"{ns}.icn-super-node-{region}.up"  # every pod of the StatefulSet fails its scrape
    fires_then_resolves(region, ns, "SuperNodeRegionNotScraped",
                        lambda: cluster.set_pod_metrics({key: "0"}),
                        lambda: cluster.set_pod_metrics({key: None}))


def test_pod_not_ready_and_region_below_min_ready_fire_and_resolve(release):
    """A pod that never turns Ready again (the lab's fault on the release's image tag): that pod is
    not Ready, and the region has 1 Ready pod of its minimum of 2 (minReady=2)."""
    region, cluster, ns = release
    pod = f"icn-super-node-{region}-1"
    both = ("SuperNodePodNotReady", "SuperNodeRegionBelowMinReady")

    def recreate(ready: bool) -> None:
        old = cluster.core.read_namespaced_pod(pod, ns).metadata.uid

        def done():
            now = [p for p in cluster.pods(ns) if p.metadata.name == pod]
            return now and now[0].metadata.uid != old and now[0].status.phase == "Running" \
                and is_ready(now[0]) == ready
        cluster.core.delete_namespaced_pod(pod, ns, grace_period_seconds=0)
        wait_for(done, 120, f"{pod} recreated, {'Ready' if ready else 'not Ready'}")

    for name in both:
        assert not alerts(ns, name), f"{name} already pending or firing"
    assert icnlab("fault", region, "--tag", TAG).returncode == 0
    recreate(ready=False)
    for name in both:
        fired = wait_for(lambda: firing(ns, name), FIRE_TIMEOUT, f"{name} to fire in {region}/{ns}")
        assert [a["labels"]["region"] for a in fired] == [region], fired
    assert [a["labels"]["pod"] for a in firing(ns, "SuperNodePodNotReady")] == [pod]
    assert icnlab("fault", region, "--clear").returncode == 0
    recreate(ready=True)
    for name in both:
        wait_for(lambda: not alerts(ns, name), FIRE_TIMEOUT, f"{name} to resolve in {region}/{ns}")


def test_hpa_at_maximum_fires_and_resolves(release):
    """The real HPA driven to its maximum: 95% CPU on every pod (the lab's metrics API, against the
    80% target) with maxReplicas lowered to 3, so it scales 2 -> 3 and stays there; maxReplicas
    back up resolves it. (CPU, not bandwidth: before deploy.yml has run in the lab, its adapter
    has no bandwidth rule yet; tests/autoscaling drive the HPA on bandwidth through it.)"""
    region, cluster, ns = release
    name = f"icn-super-node-{region}"
    key = f"{ns}.{name}.cpu"
    hpa = cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, ns)
    assert hpa.status.current_replicas == 2 and hpa.spec.max_replicas > 3, hpa

    def stage():
        cluster.autoscaling.patch_namespaced_horizontal_pod_autoscaler(name, ns, {"spec": {"maxReplicas": 3}})
        cluster.set_pod_metrics({key: "95%"})
        wait_for(lambda: cluster.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, ns)
                 .status.current_replicas == 3, 120, f"the HPA of {name} at 3 replicas")

    def undo():
        cluster.set_pod_metrics({key: None})
        cluster.autoscaling.patch_namespaced_horizontal_pod_autoscaler(
            name, ns, {"spec": {"maxReplicas": hpa.spec.max_replicas}})

    fires_then_resolves(region, ns, "SuperNodeHPAAtMaximum", stage, undo, horizontalpodautoscaler=name)
