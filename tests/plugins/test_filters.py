"""The roles' inventory filters (plugins/filter/regions.py), on plain host variables (no lab)."""
from __future__ import annotations

import sys

from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.filter.regions import (  # noqa: E402
    FLEET_VARS, cluster_hosts, cluster_owners, fleet_vars, host_regions, region_targets)

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


class CountingHostvars(dict):
    """hostvars as Ansible gives it: each [host] builds that host's variables again (counted)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads = 0

    def __getitem__(self, host):
        self.reads += 1
        return dict(super().__getitem__(host), unrelated="x")


def test_the_fleet_is_read_with_one_hostvars_read_per_host_and_answers_as_hostvars_does():
    hostvars = CountingHostvars(HOSTVARS)
    fleet = fleet_vars(["a", "b", "c", "d"], hostvars)
    assert hostvars.reads == 4
    assert fleet["c"] == HOSTVARS["c"] and fleet["d"] == {} and "unrelated" not in fleet["a"]
    assert set(FLEET_VARS) >= {"super_node_region", "super_node_kube_context", "super_node_kubeconfig"}
    for hosts in (["a", "b", "c", "d"], ["c", "a"]):
        for context in ("shared", "own", "nowhere"):
            assert cluster_hosts(hosts, fleet, context) == cluster_hosts(hosts, HOSTVARS, context)
        assert host_regions(hosts, fleet) == host_regions(hosts, HOSTVARS)
    # a host the fleet does not hold (outside the group) has no context and its own name as region
    assert cluster_hosts(["a", "z"], fleet, "shared") == ["a"] and host_regions(["z"], fleet) == ["z"]


def test_cluster_owners_are_the_first_host_of_each_context():
    assert cluster_owners(["a", "b", "c", "d"], HOSTVARS) == ["a", "b", "d"]
    assert cluster_owners(["c", "a", "b"], HOSTVARS) == ["c", "b"]


def test_host_regions_and_region_targets():
    assert host_regions(["a", "c"], HOSTVARS) == ["a", "eu-west"]
    hosts = ["a", "b", "c"]
    assert region_targets([HOSTVARS[h] for h in hosts], hosts) == [
        {"kubeconfig": "k", "context": "shared", "regions": ["a", "eu-west"]},
        {"kubeconfig": "k", "context": "own", "regions": ["b"]},
    ]
