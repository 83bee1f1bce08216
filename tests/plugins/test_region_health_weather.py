"""region_health's wait, hold and gate through an API server's bad weather, without a lab: the
check (module_utils/region_health.py) reads a fake API server on 127.0.0.1 (fakeapi) that serves
one healthy region, then has outages (503, dropped connections) shorter or longer than api_grace."""
from __future__ import annotations

import copy
import sys
import threading
import time

import pytest
import yaml

from fakeapi import FakeAPI
from labkit import ROOT
from test_region_health_judge import NAME, REGION, healthy_objects

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.region_health import (  # noqa: E402
    ARGUMENT_SPEC, REGION_LABEL, RegionHealthError, check_clusters, check_region_health)

NS = "icn"


def routes(objects: dict) -> dict:
    def items(objs):
        return {"items": list(objs)}

    pods = copy.deepcopy(objects["pods"][REGION])
    for pod in pods:
        pod["metadata"]["labels"][REGION_LABEL] = REGION
    return {
        f"/api/v1/namespaces/{NS}/pods": items(pods),
        f"/apis/apps/v1/namespaces/{NS}/statefulsets": items(objects["statefulsets"].values()),
        f"/api/v1/namespaces/{NS}/persistentvolumeclaims": items(objects["pvcs"].values()),
        f"/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets": items(objects["pdbs"].values()),
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers": items(objects["hpas"].values()),
        f"/api/v1/namespaces/{NS}/configmaps": items({"metadata": {"name": n}} for n in objects["configmaps"]),
        f"/api/v1/namespaces/{NS}/secrets/icn-staking-keys": {
            "data": {k: "c2VjcmV0" for k in objects["secret_keys"]}},
    }


@pytest.fixture
def region():
    """A fake API server whose namespace holds one healthy region."""
    with FakeAPI(routes(healthy_objects())) as api:
        yield api


def kubeconfig_for(tmp_path, api: FakeAPI, context: str = "icn-fake") -> str:
    path = tmp_path / f"kubeconfig-{context}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": api.url}}],
        "users": [{"name": context, "user": {"token": "t"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}]}))
    return str(path)


def params(kubeconfig: str, **options) -> dict:
    out = {name: spec.get("default") for name, spec in ARGUMENT_SPEC.items()}
    out.update(kubeconfig=kubeconfig, context="icn-fake", namespace=NS, regions=[REGION],
               poll_interval=0.2, request_timeout=1)
    out.update(options)
    return out


def test_the_fake_region_is_healthy(region, tmp_path):
    result = check_region_health(params(kubeconfig_for(tmp_path, region)))
    assert result["healthy"] is True, result["problems"]


@pytest.mark.parametrize("fault", [("status", 503), ("drop",), ("status", 429, {"Retry-After": "1"})])
def test_an_outage_shorter_than_the_grace_during_the_hold_is_not_a_failure(region, tmp_path, fault):
    kubeconfig = kubeconfig_for(tmp_path, region)
    started = time.monotonic()
    region.outage(0)  # healthy at first

    def outage_soon():
        time.sleep(0.7)
        region.outage(2, fault)

    threading.Thread(target=outage_soon, daemon=True).start()
    result = check_region_health(params(kubeconfig, hold_seconds=3, api_grace=6))
    assert result["healthy"] is True and result["problems"] == []
    assert 3 <= time.monotonic() - started < 8
    assert any(r["at"] - started > 1 and r["at"] - started < 2.6 for r in region.requests)


def test_an_outage_longer_than_the_grace_ends_the_hold_naming_the_error(region, tmp_path):
    kubeconfig = kubeconfig_for(tmp_path, region)
    started = time.monotonic()
    threading.Timer(0.5, region.outage, (60,)).start()
    with pytest.raises(RegionHealthError) as failed:
        check_region_health(params(kubeconfig, hold_seconds=30, api_grace=1.5))
    took = time.monotonic() - started
    assert "failed: HTTP 503: fault 503 (tried" in str(failed.value)
    assert 2 <= took < 5, took


def test_the_wait_rides_out_an_outage_and_sees_the_region_get_healthy(region, tmp_path):
    kubeconfig = kubeconfig_for(tmp_path, region)
    sts_path = f"/apis/apps/v1/namespaces/{NS}/statefulsets"
    healthy = region.routes[sts_path]
    rolling = copy.deepcopy(healthy)
    rolling["items"][0]["status"]["readyReplicas"] = 1
    region.routes[sts_path] = rolling
    region.outage(1.5, ("drop",))

    threading.Timer(2.5, region.routes.__setitem__, (sts_path, healthy)).start()
    result = check_region_health(params(kubeconfig, wait=True, wait_timeout=20, api_grace=5))
    assert result["healthy"] is True and result["elapsed"] >= 2.5


def test_the_wait_deadline_ends_the_retries(region, tmp_path):
    region.outage(60)
    started = time.monotonic()
    with pytest.raises(RegionHealthError, match="HTTP 503"):
        check_region_health(params(kubeconfig_for(tmp_path, region), wait=True, wait_timeout=1.5,
                                   api_grace=30))
    assert time.monotonic() - started < 4


def test_a_readable_unhealthy_region_still_ends_the_hold_at_once(region, tmp_path):
    kubeconfig = kubeconfig_for(tmp_path, region)
    sts_path = f"/apis/apps/v1/namespaces/{NS}/statefulsets"
    broken = copy.deepcopy(region.routes[sts_path])
    broken["items"][0]["status"]["readyReplicas"] = 1
    threading.Timer(0.6, region.routes.__setitem__, (sts_path, broken)).start()
    started = time.monotonic()
    result = check_region_health(params(kubeconfig, hold_seconds=30, api_grace=30))
    assert result["healthy"] is False
    assert f"{REGION}: StatefulSet {NAME}: 1/2 replicas Ready" in result["problems"]
    assert time.monotonic() - started < 3


def test_the_gate_of_several_clusters_retries_each(region, tmp_path):
    region.outage(1, ("drop",))
    refused = tmp_path / "refused"
    refused.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "icn-gone", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "icn-gone", "user": {}}],
        "contexts": [{"name": "icn-gone", "context": {"cluster": "icn-gone", "user": "icn-gone"}}]}))
    started = time.monotonic()
    result = check_clusters(params(None, context=None, regions=None, api_grace=3, clusters=[
        {"kubeconfig": kubeconfig_for(tmp_path, region), "context": "icn-fake", "regions": [REGION]},
        {"kubeconfig": str(refused), "context": "icn-gone", "regions": ["latam"]}]))
    assert result["regions"][REGION]["healthy"] is True
    gone = result["regions"]["latam"]
    assert gone["healthy"] is False and gone["reachable"] is False
    assert gone["problems"][0].startswith("cannot be read (context icn-gone): listing pods in "
                                          "namespace icn failed: ")
    assert "Connection refused" in gone["problems"][0] and "(tried" in gone["problems"][0]
    assert 3 <= time.monotonic() - started < 6


def test_api_grace_must_not_be_negative(region, tmp_path):
    with pytest.raises(RegionHealthError, match="api_grace must be 0 or more seconds"):
        check_region_health(params(kubeconfig_for(tmp_path, region), api_grace=-1))
