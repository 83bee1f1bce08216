"""The roles' inventory filters (plugins/filter/regions.py), on plain host variables (no lab)."""
from __future__ import annotations

import sys

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.filter.regions import (  # noqa: E402
    cluster_hosts, host_regions, region_targets)

# Two regions share one cluster (single-cluster topology), one has its own, one names its region.
HOSTVARS = {
    "a": {"super_node_kube_context": "shared", "super_node_kubeconfig": "k"},
    "b": {"super_node_kube_context": "own", "super_node_kubeconfig": "k"},
    "c": {"super_node_kube_context": "shared", "super_node_kubeconfig": "k",
          "super_node_region": "eu-west"},
    "d": {},  # no context at all
}


def test_cluster_hosts_are_the_hosts_of_one_context_in_order():
    assert cluster_hosts(["a", "b", "c", "d"], HOSTVARS, "shared") == ["a", "c"]
    assert cluster_hosts(["c", "a"], HOSTVARS, "shared") == ["c", "a"]
    assert cluster_hosts(["a", "b", "c", "d"], HOSTVARS, "own") == ["b"]
    assert cluster_hosts(["a", "b", "c", "d"], HOSTVARS, "nowhere") == []


def test_host_regions_and_region_targets():
    assert host_regions(["a", "c"], HOSTVARS) == ["a", "eu-west"]
    hosts = ["a", "b", "c"]
    assert region_targets([HOSTVARS[h] for h in hosts], hosts) == [
        {"kubeconfig": "k", "context": "shared", "regions": ["a", "eu-west"]},
        {"kubeconfig": "k", "context": "own", "regions": ["b"]},
    ]
