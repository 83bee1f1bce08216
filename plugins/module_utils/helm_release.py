# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Helm release logic of icn.super_node.helm_release, kept apart from the module's I/O.

A release is compared by what Helm would really apply: the manifest and the user values of a
server-side dry run against the live release's. Changing a template without bumping the chart
version is a change; rendering the same objects again is not, and makes no new revision.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import difflib
import json
import os
import re
import subprocess
import tempfile


class HelmError(Exception):
    pass


class Helm:
    """Runs the helm binary against one kubeconfig context, every call bounded in time."""

    def __init__(self, binary, kubeconfig=None, context=None, timeout=120):
        self.binary = binary
        self.base = []
        if kubeconfig:
            self.base += ["--kubeconfig", kubeconfig]
        if context:
            self.base += ["--kube-context", context]
        self.timeout = timeout

    def run(self, args, allow_fail=False, timeout=None):
        cmd = [self.binary] + list(args) + self.base
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise HelmError("helm %s did not answer within %ss" % (args[0], timeout or self.timeout))
        if proc.returncode != 0 and not allow_fail:
            raise HelmError("helm %s failed: %s" % (" ".join(args[:2]), proc.stderr.strip()))
        return proc

    def current(self, name, namespace):
        """The deployed release: {revision, status, manifest, values}, or None."""
        proc = self.run(["status", name, "--namespace", namespace, "--output", "json"],
                        allow_fail=True)
        if proc.returncode != 0:
            if "not found" in proc.stderr:
                return None
            raise HelmError("helm status %s failed: %s" % (name, proc.stderr.strip()))
        status = json.loads(proc.stdout)
        return {
            "revision": status["version"],
            "status": status["info"]["status"],
            "manifest": status.get("manifest", ""),
            "values": status.get("config") or {},
        }

    def history(self, name, namespace, max_entries=20):
        proc = self.run(["history", name, "--namespace", namespace, "--max", str(max_entries),
                         "--output", "json"], allow_fail=True)
        if proc.returncode != 0:
            return []
        return json.loads(proc.stdout)

    def _values_file(self, values):
        fd, path = tempfile.mkstemp(prefix="icn-values-", suffix=".json")
        with os.fdopen(fd, "w") as handle:
            json.dump(values, handle)
        return path

    def upgrade(self, name, namespace, chart, values, dry_run=False, create_namespace=False,
                history_max=10, wait_seconds=None):
        """helm upgrade --install; returns the release JSON (manifest, config, version)."""
        path = self._values_file(values)
        try:
            args = ["upgrade", name, chart, "--install", "--namespace", namespace,
                    "--values", path, "--reset-values", "--history-max", str(history_max),
                    "--output", "json"]
            if create_namespace:
                args.append("--create-namespace")
            if dry_run:
                args.append("--dry-run=server")
            if wait_seconds:
                args += ["--wait", "--timeout", "%ds" % wait_seconds]
            proc = self.run(args, timeout=(wait_seconds or 0) + self.timeout)
        finally:
            os.unlink(path)
        return json.loads(proc.stdout)

    def template(self, name, namespace, chart, values, kube_version, api_versions):
        """The chart rendered locally, as an upgrade of the release would render it, with the
        cluster's version and APIs standing in for a server's Capabilities."""
        path = self._values_file(values)
        try:
            args = ["template", name, chart, "--namespace", namespace, "--values", path,
                    "--is-upgrade", "--kube-version", kube_version]
            for api in api_versions:
                args += ["--api-versions", api]
            return self.run(args).stdout
        finally:
            os.unlink(path)

    def rollback(self, name, namespace, revision, wait_seconds=None):
        args = ["rollback", name, str(revision), "--namespace", namespace]
        if wait_seconds:
            args += ["--wait", "--timeout", "%ds" % wait_seconds]
        self.run(args, timeout=(wait_seconds or 0) + self.timeout)


AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def cluster_capabilities(kube):
    """(kube version, API versions as Helm's Capabilities lists them: every group/version and
    group/version/Kind), from the aggregated discovery of /api and /apis: two requests. None when
    the cluster does not serve aggregated discovery v2 (Kubernetes before 1.30)."""
    version = kube.get("/version", "reading the cluster's version")["gitVersion"]
    apis = []
    for path in ("/api", "/apis"):
        doc = kube.request("GET", path, "reading the cluster's APIs", accept=AGGREGATED_DISCOVERY)
        if not isinstance(doc, dict) or doc.get("kind") != "APIGroupDiscoveryList":
            return None
        for group in doc.get("items") or []:
            prefix = group.get("metadata", {}).get("name", "")
            for ver in group.get("versions") or []:
                gv = "%s/%s" % (prefix, ver["version"]) if prefix else ver["version"]
                apis.append(gv)
                for res in ver.get("resources") or []:
                    kind = (res.get("responseKind") or {}).get("kind")
                    if kind:
                        apis.append("%s/%s" % (gv, kind))
    return version, sorted(set(apis))


def chart_metadata(chart):
    """A chart directory's Chart.yaml, as Helm's release JSON holds it under chart.metadata."""
    import yaml  # ships with ansible-core
    with open(os.path.join(chart, "Chart.yaml")) as handle:
        return yaml.safe_load(handle) or {}


def chart_uses_lookup(chart):
    """Whether any template calls lookup: its output depends on live objects that only a server
    side render sees."""
    for root, _dirs, files in os.walk(os.path.join(chart, "templates")):
        for name in files:
            with open(os.path.join(root, name), errors="replace") as handle:
                if re.search(r"\blookup\b", handle.read()):
                    return True
    return False


_SOURCE = re.compile(r"^# Source: (.+)$", re.MULTILINE)


def split_manifest(manifest):
    """{'<template path> #<n>': document} so a diff lines up object by object."""
    docs = {}
    for doc in re.split(r"^---\s*$", manifest or "", flags=re.MULTILINE):
        doc = doc.strip()
        if not doc:
            continue
        match = _SOURCE.search(doc)
        key = match.group(1) if match else "(no source)"
        n = 1
        while "%s #%d" % (key, n) in docs:
            n += 1
        docs["%s #%d" % (key, n)] = doc
    return docs


def normalise_manifest(manifest):
    docs = split_manifest(manifest)
    return "\n---\n".join(docs[k] for k in sorted(docs)) + "\n" if docs else ""


def manifest_diff(before, after, name):
    """A unified diff of two manifests, object by object, for Ansible's --diff."""
    lines = difflib.unified_diff(
        normalise_manifest(before).splitlines(True), normalise_manifest(after).splitlines(True),
        fromfile="%s (deployed)" % name, tofile="%s (desired)" % name, n=3)
    return "".join(lines)


def values_diff(before, after, name):
    dump = lambda v: json.dumps(v or {}, indent=2, sort_keys=True).splitlines(True)  # noqa: E731
    return "".join(difflib.unified_diff(dump(before), dump(after),
                                        fromfile="%s values (deployed)" % name,
                                        tofile="%s values (desired)" % name, n=2))


def plan(current, desired):
    """What an upgrade would do: (changed, reasons). desired: the dry run's release, or only
    {"config": values} when the values alone already decide."""
    if current is None:
        return True, ["release is not installed"]
    reasons = []
    if current["status"] != "deployed":
        reasons.append("release status is %s" % current["status"])
    if "manifest" in desired and (normalise_manifest(current["manifest"])
                                  != normalise_manifest(desired["manifest"])):
        reasons.append("rendered objects differ")
    if (current["values"] or {}) != (desired.get("config") or {}):
        reasons.append("values differ")
    return bool(reasons), reasons
