# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Rules an inventory of Super-Node regions must meet before any cluster is touched.

The region names are read from the catalogue (the chart's regions.yaml, or the fleet's own:
super_node_catalogue), the environments, the storage-size and the multiaddr patterns from the
chart's values.schema.json, so the inventory and the chart can never disagree about them. The clouds are
defined here (the storage_class role's classes and argument spec must list the same:
tests/test_one_source.py). Every
message names the region, the variable and what is allowed; a key's value is never quoted.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re

CLOUDS = ("aws", "gcp", "azure", "local")
STAKING_KEY = re.compile(r"^[0-9a-f]{64}$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
MIN_REPLICAS = 2


class CatalogueError(Exception):
    pass


def catalogue_regions(path):
    """The region names of a catalogue file (`regions: [{name: ..., neighbours: [...]}, ...]`)."""
    import yaml  # PyYAML ships with ansible-core

    try:
        with open(os.path.expanduser(path)) as handle:
            catalogue = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as err:
        raise CatalogueError("super_node_catalogue: %s cannot be read (%s); allowed: a catalogue file "
                             "of the shape of the chart's regions.yaml" % (path, err))
    entries = catalogue.get("regions") if isinstance(catalogue, dict) else None
    if not isinstance(entries, list) or not entries or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries):
        raise CatalogueError("super_node_catalogue: %s has no list `regions` of entries with a `name`; "
                             "allowed: a catalogue file of the shape of the chart's regions.yaml" % path)
    return [e["name"] for e in entries]


class Rules:
    """Allowed values taken from the chart schema, and the regions from the catalogue."""

    def __init__(self, schema_path, catalogue_path=None):
        with open(schema_path) as handle:
            schema = json.load(handle)
        defs = schema.get("definitions") or schema.get("$defs") or {}
        catalogue_path = catalogue_path or os.path.join(os.path.dirname(schema_path), "regions.yaml")
        self.regions = catalogue_regions(catalogue_path)
        self.environments = list(schema["properties"]["global"]["properties"]["environment"]["enum"])
        self.storage_size = re.compile(defs["storageSize"]["pattern"])
        self.multiaddr = re.compile(defs["multiaddr"]["pattern"])
        autoscaling = schema["properties"].get("autoscaling", {}).get("properties", {})
        self.max_replicas = autoscaling.get("maxReplicas", {}).get("maximum", 100)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def kubeconfig_contexts(path):
    """Context names of a kubeconfig file, or None if it cannot be read."""
    import yaml  # PyYAML ships with ansible-core
    from ansible_collections.icn.super_node.plugins.module_utils.kube import load_yaml

    try:
        with open(os.path.expanduser(path)) as handle:
            config = load_yaml(handle) or {}
    except (OSError, yaml.YAMLError):
        return None
    return [c.get("name") for c in config.get("contexts") or []]


def validate(hosts, rules, contexts_of=kubeconfig_contexts):
    """hosts: list of dicts (one per inventory host) with the keys read below.

    Returns a list of error strings; empty when the inventory is good.
    """
    errors = []
    seen = {}
    context_cache = {}
    allowed_regions = ", ".join(rules.regions)
    for host in hosts:
        name = host["host"]
        region = host.get("region")
        where = "region %s" % name

        def err(field, problem, allowed):
            errors.append("%s: %s %s; allowed: %s" % (where, field, problem, allowed))

        if region not in rules.regions:
            err("super_node_region", "is %r, not a known region" % (region,), allowed_regions)
        elif region in seen:
            err("super_node_region", "%s is listed twice (also host %s)" % (region, seen[region]),
                "each region once")
        else:
            seen[region] = name

        environment = host.get("environment")
        if environment not in rules.environments:
            err("super_node_environment", "is %r" % (environment,), ", ".join(rules.environments))

        context = host.get("context")
        kubeconfig = host.get("kubeconfig")
        if not isinstance(context, str) or not context:
            err("super_node_kube_context", "is missing", "the name of a context in the kubeconfig")
        elif not isinstance(kubeconfig, str) or not kubeconfig:
            err("super_node_kubeconfig", "is missing", "a path to a kubeconfig file")
        else:
            if kubeconfig not in context_cache:
                context_cache[kubeconfig] = contexts_of(kubeconfig)
            contexts = context_cache[kubeconfig]
            if contexts is None:
                err("super_node_kubeconfig", "%s cannot be read" % kubeconfig,
                    "a readable kubeconfig file")
            elif context not in contexts:
                err("super_node_kube_context", "%r is not a context of %s" % (context, kubeconfig),
                    ", ".join(sorted(c for c in contexts if c)) or "(the file has no contexts)")

        cloud = host.get("cloud")
        if cloud not in CLOUDS:
            err("super_node_cloud", "is %r" % (cloud,), ", ".join(CLOUDS))

        replicas = host.get("replicas")
        if not _is_int(replicas) or not MIN_REPLICAS <= replicas <= rules.max_replicas:
            err("super_node_replicas", "is %r" % (replicas,),
                "a whole number from %d (the PodDisruptionBudget keeps one Ready) to %d"
                % (MIN_REPLICAS, rules.max_replicas))

        size = host.get("storage_size")
        if not isinstance(size, str) or not rules.storage_size.match(size):
            err("super_node_storage_size", "is %r, not a Kubernetes quantity" % (size,),
                "a size such as 10Ti or 500Gi")

        nodes = host.get("bootstrap_nodes")
        if not isinstance(nodes, list) or not nodes:
            err("super_node_bootstrap_nodes", "is empty or not a list", "a list of multiaddrs")
        else:
            for addr in nodes:
                if not isinstance(addr, str) or not rules.multiaddr.match(addr):
                    err("super_node_bootstrap_nodes", "has %r, which is not a multiaddr" % (addr,),
                        "/dns4|/dns6|/dns|/ip4|/ip6/<host>/tcp|udp/<port>/p2p/<peer id>")

        tag = host.get("image_tag")
        if not isinstance(tag, str) or not IMAGE_TAG.match(tag):
            err("super_node_image_tag", "is %r" % (tag,), "an image tag such as v1.1.0")
        elif tag == "latest" and environment == "prod":
            err("super_node_image_tag", "is 'latest' in prod, which cannot be rolled back or audited",
                "a pinned version such as v1.1.0")

        key_present, key_wellformed = host.get("staking_key_state", (False, False))
        key_field = "super_node_staking_keys[%s]" % (region,)
        if not key_present:
            err(key_field, "is missing (define it in the inventory's Ansible Vault file)",
                "64 hexadecimal characters (an ed25519 seed)")
        elif not key_wellformed:
            err(key_field, "is malformed (value not shown)",
                "64 hexadecimal characters (an ed25519 seed)")
    return errors


def staking_key_state(keys, region):
    """(present, well-formed) for a region's key, so the key itself never leaves this function."""
    if not isinstance(keys, dict) or region not in keys or keys[region] in (None, ""):
        return False, False
    return True, isinstance(keys[region], str) and bool(STAKING_KEY.match(keys[region]))
