"""The HPA the chart renders (helm template; no lab): bandwidth and CPU by default, CPU only with
autoscaling.bandwidth.enabled=false, and the behaviour values."""
from __future__ import annotations

from chartkit import of_kind, render, render_error


def hpa(*args: str) -> dict:
    (out,) = of_kind(render("--set", "global.regions={eu-west}", *args, release="r"),
                     "HorizontalPodAutoscaler")
    return out


def test_default_hpa_scales_on_bandwidth_at_80_percent_of_1_gbps_and_on_cpu():
    spec = hpa()["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 8)
    assert spec["metrics"][0]["resource"]["name"] == "cpu"
    pods = spec["metrics"][1]["pods"]
    assert pods["metric"]["name"] == "network_bandwidth_utilization"
    assert pods["target"] == {"type": "AverageValue", "averageValue": "800M"}  # bit/s
    up, down = spec["behavior"]["scaleUp"], spec["behavior"]["scaleDown"]
    assert up["stabilizationWindowSeconds"] == 60 and down["stabilizationWindowSeconds"] == 600
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]


def test_bandwidth_disabled_leaves_cpu_only():
    metrics = hpa("--set", "autoscaling.bandwidth.enabled=false")["spec"]["metrics"]
    assert metrics == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]


def test_the_schema_refuses_a_non_boolean():
    stderr = render_error("--set-string", "autoscaling.bandwidth.enabled=maybe")
    assert "/autoscaling/bandwidth/enabled': got string, want boolean" in stderr
