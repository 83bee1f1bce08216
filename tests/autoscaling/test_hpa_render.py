"""The HPA the chart renders (helm template; no lab): bandwidth and CPU by default, CPU only with
autoscaling.bandwidth.enabled=false, and the behaviour values."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "super-node"
KUBE_VERSION = re.search(r"^K8S_VERSION=(\S+)", (ROOT / "lab/versions.env").read_text(), re.M).group(1)


def hpa(*args: str) -> dict:
    helm = os.environ.get("HELM") or shutil.which("helm")
    assert helm, "helm not found: set HELM or put helm on PATH"
    proc = subprocess.run([helm, "template", "r", str(CHART), "--namespace", "icn",
                           "--kube-version", KUBE_VERSION, "--set", "global.regions={eu-west}", *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (out,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
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
    helm = os.environ.get("HELM") or shutil.which("helm")
    proc = subprocess.run([helm, "template", "r", str(CHART), "--kube-version", KUBE_VERSION,
                           "--set-string", "autoscaling.bandwidth.enabled=maybe"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "/autoscaling/bandwidth/enabled': got string, want boolean" in proc.stderr
