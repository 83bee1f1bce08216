"""The rollout lock's Lease (plugins/module_utils/lease.py) given back while something else writes
it: the conditional delete against a throwaway API server (fakeapi) that checks the precondition's
resourceVersion as kube-apiserver does. The lab tests (tests/upgrade/test_rollout.py) run the lock
on real clusters; this is the race they cannot time: the run's own renewer renewing the Lease
between the read and the delete (seen in CI as HTTP 409 at the end of a healthy rollout)."""
from __future__ import annotations

import json
import sys

import pytest

from fakeapi import FakeAPI, status
from labkit import ROOT
from test_kube_client import write_kubeconfig

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.module_utils.kube import KubeError  # noqa: E402
from ansible_collections.icn.super_node.plugins.module_utils.lease import (  # noqa: E402
    LEASE_NAME, RENEWER_ANNOTATION, ClusterLease)

NS = "kube-system"
PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE_NAME}"
ME = "root@controller:4242"


class LeaseServer:
    """One Lease with a resourceVersion; `writes_after_read` renewals land after each of the next
    reads (as a renewer would, between our read and our delete)."""

    def __init__(self, holder: str = ME):
        self.rv, self.holder, self.exists = 7, holder, True
        self.writes_after_read = 0
        self.deletes: list[str] = []

    def body(self) -> dict:
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": NS, "resourceVersion": str(self.rv),
                             "annotations": {RENEWER_ANNOTATION: "5151"}},
                "spec": {"holderIdentity": self.holder, "leaseDurationSeconds": 60}}

    def __call__(self, request: dict):
        if not self.exists:
            return 404, status(404, "leases not found")
        if request["method"] == "GET":
            answer = self.body()
            if self.writes_after_read:
                self.writes_after_read -= 1
                self.rv += 1  # renewed after this answer left
            return answer
        if request["method"] == "DELETE":
            wanted = json.loads(request["body"])["preconditions"]["resourceVersion"]
            self.deletes.append(wanted)
            if wanted != str(self.rv):
                return 409, status(409, "the ResourceVersion in the precondition does not match")
            self.exists = False
            return status(200, "deleted") | {"status": "Success"}
        return 405, status(405, "method not allowed")


@pytest.fixture
def server():
    lease = LeaseServer()
    with FakeAPI(routes={PATH: lease}) as api:
        lease.api = api
        yield lease


def cluster_lease(server, tmp_path) -> ClusterLease:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", server.api.url)
    return ClusterLease({"kubeconfig": str(kubeconfig), "context": "icn-test"}, NS)


def test_a_renewal_between_the_read_and_the_delete_is_read_again_and_the_lease_given_back(server, tmp_path):
    server.writes_after_read = 2
    assert cluster_lease(server, tmp_path).release(ME) == "5151"
    assert not server.exists
    assert server.deletes == ["7", "8", "9"], "each delete is conditional on the version just read"


def test_a_lease_that_another_run_holds_is_not_deleted(server, tmp_path):
    server.holder = "someone@else:1"
    assert cluster_lease(server, tmp_path).release(ME) is None
    assert server.exists and server.deletes == []


def test_a_lease_already_gone_is_given_back(server, tmp_path):
    server.exists = False
    assert cluster_lease(server, tmp_path).release(ME) is None


def test_a_lease_that_never_stops_changing_fails_naming_the_cluster(server, tmp_path):
    server.writes_after_read = 100
    with pytest.raises(KubeError, match="context icn-test: Lease kube-system/icn-super-node-rollout "
                                        "kept changing"):
        cluster_lease(server, tmp_path).release(ME)
    assert server.exists and len(server.deletes) == 5
