"""k8s_info, the in-worker read the istio role makes on every run: the kind's resource from
discovery, one object or a filtered list, a missing object or an unserved kind read as nothing, and
every other error named. The lab's Istio tests read real clusters through it (tests/istio)."""
from __future__ import annotations

import sys
from urllib.parse import parse_qs, urlsplit

import pytest

from fakeapi import FakeAPI
from labkit import ROOT
from test_kube_client import write_kubeconfig

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.kube import (  # noqa: E402
    KubeClient, KubeError)
from ansible_collections.icn.super_node.plugins.modules.k8s_info import (  # noqa: E402
    find_resource, group_path, read)

CORE = {"resources": [
    {"name": "namespaces", "kind": "Namespace", "namespaced": False},
    {"name": "secrets", "kind": "Secret", "namespaced": True},
    {"name": "pods/log", "kind": "Pod", "namespaced": True},
]}
SECRET = {"metadata": {"name": "reader", "namespace": "istio-system"}, "data": {"token": "dA=="}}


def params(**given):
    return {"api_version": "v1", "name": None, "namespace": None, "label_selectors": [], **given}


@pytest.fixture
def kube(tmp_path):
    def remote_secrets(record):
        selector = parse_qs(urlsplit(record["path"]).query).get("labelSelector", [""])[0]
        items = [SECRET] if selector == "istio/multiCluster=true" else []
        return {"kind": "SecretList", "items": [dict(i) for i in items]}

    routes = {
        "/api/v1": CORE,
        "/api/v1/namespaces/istio-system/secrets/reader": SECRET,
        "/api/v1/namespaces/istio-system/secrets": remote_secrets,
        "/api/v1/namespaces": {"items": [{"metadata": {"name": "icn-super-node"}}]},
    }
    with FakeAPI(routes) as fake:
        config = write_kubeconfig(tmp_path / "kubeconfig", fake.url)
        with KubeClient(str(config), None, 5, 2) as client:
            client.fake = fake
            yield client


def test_paths_of_group_versions():
    assert group_path("v1") == "/api/v1"
    assert group_path("apps/v1") == "/apis/apps/v1"
    with pytest.raises(KubeError, match="api_version 'a/b/c'"):
        group_path("a/b/c")


def test_the_resource_comes_from_discovery_not_a_subresource():
    assert find_resource(CORE, "Secret") == ("secrets", True)
    assert find_resource(CORE, "Namespace") == ("namespaces", False)
    assert find_resource(CORE, "Pod") is None  # only pods/log was listed
    assert find_resource(None, "Secret") is None


def test_one_object_by_name(kube):
    found, resources = read(kube, params(kind="Secret", namespace="istio-system", name="reader"))
    assert found and resources == [SECRET]


def test_a_missing_object_is_no_resource(kube):
    assert read(kube, params(kind="Secret", namespace="istio-system", name="gone")) == (True, [])


def test_a_list_by_label_selector_carries_kind_and_api_version(kube):
    found, resources = read(kube, params(kind="Secret", namespace="istio-system",
                                         label_selectors=["istio/multiCluster=true"]))
    assert [r["metadata"]["name"] for r in resources] == ["reader"]
    assert resources[0]["kind"] == "Secret" and resources[0]["apiVersion"] == "v1"
    assert "labelSelector=istio%2FmultiCluster%3Dtrue" in kube.fake.requests[-1]["path"]
    assert read(kube, params(kind="Secret", namespace="istio-system",
                             label_selectors=["other=1"]))[1] == []


def test_a_cluster_scoped_kind_ignores_the_namespace(kube):
    found, resources = read(kube, params(kind="Namespace", namespace="ignored"))
    assert [r["metadata"]["name"] for r in resources] == ["icn-super-node"]
    assert kube.fake.requests[-1]["path"] == "/api/v1/namespaces"


def test_a_kind_the_cluster_does_not_serve_is_no_resource(kube):
    assert read(kube, params(kind="Gateway", api_version="networking.istio.io/v1")) == (False, [])
    assert read(kube, params(kind="Widget")) == (False, [])


def test_a_namespaced_object_by_name_needs_its_namespace(kube):
    with pytest.raises(KubeError, match="Secret is namespaced: reading Secret reader needs namespace"):
        read(kube, params(kind="Secret", name="reader"))


def test_other_errors_fail_naming_the_read(kube):
    kube.fake.routes["/api/v1/namespaces/istio-system/secrets/reader"] = lambda r: (403, {
        "kind": "Status", "message": "secrets is forbidden"})
    with pytest.raises(KubeError, match="reading Secret istio-system/reader failed: HTTP 403: secrets is forbidden"):
        read(kube, params(kind="Secret", namespace="istio-system", name="reader"))
