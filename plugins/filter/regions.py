# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters for the Super-Node roles."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: host_regions
short_description: The region of each inventory host
description:
  - Maps inventory host names to their regions, C(super_node_region) where the host sets it, else the host name.
positional: hostvars
options:
  _input:
    description: Inventory host names.
    type: list
    elements: str
    required: true
  hostvars:
    description: The C(hostvars) magic variable.
    type: dict
    required: true
"""

EXAMPLES = r"""
regions: "{{ ansible_play_hosts_all | icn.super_node.host_regions(hostvars) }}"
"""

RETURN = r"""
_value:
  description: One region per host, in the same order.
  type: list
  elements: str
"""


def _region(host, vars_):
    return vars_["super_node_region"] if "super_node_region" in vars_ else host


def region_targets(hosts_vars, hosts):
    """Group regions by the cluster that holds them: [{kubeconfig, context, regions}]."""
    targets = []
    index = {}
    for host, vars_ in zip(hosts, hosts_vars):
        key = (vars_["super_node_kubeconfig"], vars_["super_node_kube_context"])
        if key not in index:
            index[key] = len(targets)
            targets.append({"kubeconfig": key[0], "context": key[1], "regions": []})
        targets[index[key]]["regions"].append(_region(host, vars_))
    return targets


# What the roles read of every other host: read once per run into super_node_fleet (fleet_vars),
# since each hostvars[host] builds that host's whole variable set again.
FLEET_VARS = ("super_node_region", "super_node_kube_context", "super_node_kubeconfig", "super_node_prometheus_url")


def fleet_vars(hosts, hostvars):
    """{host: its FLEET_VARS that are set}: what the filters below read of other hosts, from one
    hostvars[host] per host. The filters take this map or hostvars itself."""
    fleet = {}
    for host in hosts:
        vars_ = hostvars[host]
        fleet[host] = {var: vars_[var] for var in FLEET_VARS if var in vars_}
    return fleet


def _vars(source, host):
    return source[host] if host in source else {}


def cluster_hosts(hosts, hostvars, context):
    """The hosts, of these, whose kube context is `context`, in their order: the regions that share
    that cluster (several in the single-cluster topology). The first of them acts for the cluster.
    hostvars: hostvars or super_node_fleet (fleet_vars)."""
    found = []
    for host in hosts:
        vars_ = _vars(hostvars, host)
        if "super_node_kube_context" in vars_ and vars_["super_node_kube_context"] == context:
            found.append(host)
    return found


def cluster_owners(hosts, hostvars):
    """The first host of each kube context among these, in their order: one per cluster."""
    owners, seen = [], set()
    for host in hosts:
        vars_ = _vars(hostvars, host)
        context = vars_["super_node_kube_context"] if "super_node_kube_context" in vars_ else None
        if context not in seen:
            seen.add(context)
            owners.append(host)
    return owners


def host_regions(hosts, hostvars):
    return [_region(host, _vars(hostvars, host)) for host in hosts]


def analysis_targets(hosts, hostvars, namespace):
    """What the metric analysis reads of each region (icn.super_node.rollout_analysis's region and
    peers): its Prometheus (super_node_prometheus_url, empty where unset), and the names by which the
    chart's StatefulSet, its pods and its ServiceMonitor's job appear in the series."""
    from ansible_collections.icn.super_node.plugins.module_utils.region_health import object_name

    targets = []
    for host in hosts:
        vars_ = hostvars[host]
        region = _region(host, vars_)
        name = object_name(region)
        targets.append({"name": region, "host": host, "namespace": namespace, "statefulset": name,
                        "job": name + "-headless", "pods": name + "-[0-9]+",
                        "url": vars_["super_node_prometheus_url"] if "super_node_prometheus_url" in vars_ else ""})
    return targets


def analysis_peers(targets, host, hostvars):
    """The targets after `host` (in the play's order) whose plan changes: still on the old release."""
    hosts = [t["host"] for t in targets]
    later = targets[hosts.index(host) + 1:] if host in hosts else []
    return [t for t in later if t["url"] and (hostvars[t["host"]].get("super_node_plan") or {}).get("changed")]


class FilterModule(object):
    def filters(self):
        return {"host_regions": host_regions, "region_targets": region_targets, "fleet_vars": fleet_vars,
                "cluster_hosts": cluster_hosts, "cluster_owners": cluster_owners, "analysis_targets": analysis_targets,
                "analysis_peers": analysis_peers}
