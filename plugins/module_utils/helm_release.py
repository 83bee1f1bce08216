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

import base64
import difflib
import gzip
import hashlib
import json
import os
import re
import subprocess
import tempfile

from ansible_collections.icn.super_node.plugins.module_utils.kube import load_yaml
from ansible_collections.icn.super_node.plugins.module_utils.region_health import image_tag


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
        """The release's last revision: {revision, status, manifest, values, labels, chart}, or None.
        helm status tells neither the release's labels nor its chart: both are None here."""
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
            "labels": None,
            "chart": None,
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
                history_max=10, wait_seconds=None, labels=None):
        """helm upgrade --install; returns the release JSON (manifest, config, version). labels:
        release labels to set (Helm merges them over the last revision's)."""
        path = self._values_file(values)
        try:
            # --disable-openapi-validation: on a cluster that takes the fieldValidation parameter
            # (every Kubernetes from 1.27, preflight_min_kube_version), Helm's "OpenAPI validation"
            # validates nothing on the client: it downloads and parses the OpenAPI v3 document of
            # every group-version of the manifest only to learn that the server would validate, and
            # then sends the objects exactly as without it (kubectl's paramVerifyingSchema). Those
            # documents cost the API server most where it is busiest: the first read after new CRDs
            # (Istio's, the Prometheus operator's) builds their schemas.
            args = ["upgrade", name, chart, "--install", "--namespace", namespace,
                    "--values", path, "--reset-values", "--history-max", str(history_max),
                    "--output", "json", "--disable-openapi-validation"]
            if create_namespace:
                args.append("--create-namespace")
            if dry_run:
                args.append("--dry-run=server")
            if wait_seconds:
                args += ["--wait", "--timeout", "%ds" % wait_seconds]
            if labels:
                args += ["--labels", ",".join("%s=%s" % kv for kv in sorted(labels.items()))]
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


# --------------------------------------------------------------------------- Helm's storage, read in-process

# Labels Helm's Secret driver sets itself on a release's Secret; the others are the release's own.
SYSTEM_LABELS = ("name", "owner", "status", "version", "createdAt", "modifiedAt")
RELEASE_SECRET_TYPE = "helm.sh/release.v1"
PARTIAL_METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


def decode_release(data):
    """A release as Helm's Secret driver stores it: the Secret's data.release is the API's base64
    of Helm's base64 of the gzipped release JSON."""
    raw = base64.b64decode(base64.b64decode(data))
    if raw[:3] == b"\x1f\x8b\x08":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def stored_head(kube, name, namespace):
    """The release's last revision, the one helm status shows, as Helm's Secret storage labels it:
    {revision, status, labels (the release's own), annotations (the Secret's), secret}, from one
    list of metadata only (no release is decoded, no helm process). None when the release has no
    revision."""
    listing = kube.request("GET", "/api/v1/namespaces/%s/secrets" % namespace,
                           "listing the revisions of Helm release %s" % name,
                           query={"labelSelector": "owner=helm,name=%s" % name},
                           accept=PARTIAL_METADATA_LIST)
    revisions = [item["metadata"] for item in (listing or {}).get("items") or []
                 if ((item.get("metadata") or {}).get("labels") or {}).get("version", "").isdigit()]
    if not revisions:
        return None
    last = max(revisions, key=lambda meta: int(meta["labels"]["version"]))
    return {"revision": int(last["labels"]["version"]), "status": last["labels"].get("status"),
            "labels": {k: v for k, v in last["labels"].items() if k not in SYSTEM_LABELS},
            "annotations": last.get("annotations") or {},
            "secret": last["name"]}


# The annotation of a revision's Secret in which upgrade.yml records its metric analysis' verdict on
# that revision: JSON {"verdict": pending|passed|unjudged, ...} (roles/rollout/tasks/verdict.yml).
# A new revision (an upgrade, a rollback, a helm command by hand) starts without one.
VERDICT_ANNOTATION = "icn.io/analysis"
VERDICTS = ("pending", "passed", "unjudged")


def revision_verdict(head):
    """The verdict recorded on the head revision (stored_head's result), or None. A value that is not
    what upgrade.yml writes raises ValueError naming the Secret, the annotation and what is allowed."""
    raw = ((head or {}).get("annotations") or {}).get(VERDICT_ANNOTATION)
    if raw is None:
        return None
    try:
        verdict = json.loads(raw)
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict) or verdict.get("verdict") not in VERDICTS:
        raise ValueError("Secret %s: annotation %s is %r; allowed: the JSON upgrade.yml writes, with verdict "
                         "one of %s (remove it with kubectl annotate secret %s %s-)"
                         % (head["secret"], VERDICT_ANNOTATION, raw[:200], ", ".join(VERDICTS),
                            head["secret"], VERDICT_ANNOTATION))
    return verdict


def stored_release(kube, namespace, head):
    """The revision stored_head() found, decoded: the shape of Helm.current(), with the release's
    labels and its chart's metadata too."""
    secret = kube.get("/api/v1/namespaces/%s/secrets/%s" % (namespace, head["secret"]),
                      "reading Helm release revision %s" % head["secret"])
    if secret.get("type") != RELEASE_SECRET_TYPE or "release" not in (secret.get("data") or {}):
        raise ValueError("Secret %s/%s is not a Helm release" % (namespace, head["secret"]))
    release = decode_release(secret["data"]["release"])
    return {
        "revision": release["version"],
        "status": release["info"]["status"],
        "manifest": release.get("manifest", ""),
        "values": release.get("config") or {},
        "labels": {k: v for k, v in (secret["metadata"].get("labels") or {}).items()
                   if k not in SYSTEM_LABELS},
        "chart": (release.get("chart") or {}).get("metadata"),
    }


# The release label that records what rendered a revision: "<revision>.<digest of the inputs>".
INPUTS_LABEL = "icn.io/render-inputs"


def render_inputs_digest(chart, name, namespace, values, caps, helm_binary):
    """A digest of everything a render of the release depends on, apart from live objects (a chart
    that calls lookup is never judged by it): every file of the chart directory, the release's
    name, namespace and values, the cluster's version, the helm binary itself, and the cluster's
    APIs when a file of the chart names .Capabilities (templates reach the APIs only through it:
    Istio's charts do not, and a chart that installs CRDs would otherwise never match the revision
    it made, whose render saw the APIs before its CRDs). The values are in it: a revision that
    records the same digest has the same values.

    caps: (kube version, API versions), or a callable given whether the APIs are needed that returns
    (kube version, API versions or None), so that the APIs are read only for a chart that names
    .Capabilities; None (or a callable's None): the digest cannot tell, None."""
    digest = hashlib.sha256()
    reads_capabilities = False
    for root, dirs, files in os.walk(chart, followlinks=True):
        dirs.sort()
        for fname in sorted(files):
            path = os.path.join(root, fname)
            with open(path, "rb") as handle:
                content = handle.read()
            reads_capabilities = reads_capabilities or b"Capabilities" in content
            digest.update(b"\0%s\0" % os.path.relpath(path, chart).encode())
            digest.update(content)
    if callable(caps):
        caps = caps(reads_capabilities)
    if caps is None or (reads_capabilities and caps[1] is None):
        return None
    stat = os.stat(helm_binary)
    digest.update(json.dumps({"name": name, "namespace": namespace, "values": values,
                              "kube": caps[0], "apis": caps[1] if reads_capabilities else None,
                              "helm": [os.path.realpath(helm_binary), stat.st_size, stat.st_mtime_ns]},
                             sort_keys=True).encode())
    return digest.hexdigest()[:40]


def inputs_label(revision, digest):
    """The label's value for the revision those inputs rendered. The revision is in it because
    Helm carries a release's labels over to the next revision: one another tool made from other
    inputs must not look like ours."""
    return "%d.%s" % (revision, digest)


AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def cluster_capabilities(kube):
    """(kube version, API versions as Helm's Capabilities lists them: every group/version and
    group/version/Kind), from the aggregated discovery of /api and /apis: two requests. None when
    the cluster does not serve aggregated discovery v2 (Kubernetes before 1.30)."""
    version = cluster_version(kube)
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


def cluster_version(kube):
    """The cluster's version (gitVersion), one request."""
    return kube.get("/version", "reading the cluster's version")["gitVersion"]


def chart_metadata(chart):
    """A chart directory's Chart.yaml, as Helm's release JSON holds it under chart.metadata."""
    with open(os.path.join(chart, "Chart.yaml")) as handle:
        return load_yaml(handle) or {}


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


# --------------------------------------------------------------------------- what a change does

# Workloads whose spec.template is a pod template: a change there replaces their pods.
POD_TEMPLATE_KINDS = ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet")


def manifest_objects(manifest):
    """{'Kind/name': object} of a rendered manifest (namespaced names are unique per release)."""
    objects = {}
    for doc in split_manifest(manifest).values():
        obj = load_yaml(doc)
        if isinstance(obj, dict) and obj.get("kind"):
            objects["%s/%s" % (obj["kind"], (obj.get("metadata") or {}).get("name"))] = obj
    return objects


def changed_value_paths(before, after, prefix=""):
    """The dotted paths of the values that differ (a list counts as one value). Only paths: a
    value itself may be a secret and never leaves this function."""
    if isinstance(before, dict) and isinstance(after, dict):
        paths = []
        for key in sorted(set(before) | set(after), key=str):
            path = "%s.%s" % (prefix, key) if prefix else str(key)
            if key not in before or key not in after:
                paths.append(path)
            else:
                paths += changed_value_paths(before[key], after[key], path)
        return paths
    return [] if before == after else [prefix or "(all values)"]


def _pod_template_tags(objects):
    tags = set()
    for key, obj in objects.items():
        if obj["kind"] in POD_TEMPLATE_KINDS:
            containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
            if containers:
                tags.add(image_tag(containers[0].get("image")) or "?")
    return ",".join(sorted(tags)) or None


def classify(current, desired, current_chart, desired_chart):
    """What going from the deployed release to the desired one changes:
    {chart, image_tag: {from, to} or None; values: changed value paths; objects: Kind/name of
    every object added, removed or changed; restarts: the workloads that exist in both and whose
    pod template changes, i.e. whose pods are replaced}. `desired` needs its manifest."""
    before = manifest_objects(current["manifest"]) if current else {}
    after = manifest_objects(desired.get("manifest", ""))
    objects = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    restarts = sorted(k for k in objects if k in before and k in after
                      and after[k]["kind"] in POD_TEMPLATE_KINDS
                      and (before[k].get("spec") or {}).get("template")
                      != (after[k].get("spec") or {}).get("template"))
    tag_from, tag_to = _pod_template_tags(before), _pod_template_tags(after)
    return dict(
        chart=({"from": current_chart, "to": desired_chart}
               if desired_chart and current_chart != desired_chart else None),
        image_tag={"from": tag_from, "to": tag_to} if tag_from != tag_to else None,
        values=changed_value_paths(current["values"] if current else {}, desired.get("config") or {}),
        objects=objects,
        restarts=restarts,
    )


def rollback_problems(current, history, api_versions):
    """Why the release could not be rolled back to the revision it runs now, once an upgrade has
    replaced it: that revision must be deployed and still in Helm's history, and every object of
    its manifest must be of an API the cluster still serves (a rollback re-applies that manifest
    as it is). An empty list when it can."""
    if current is None:
        return ["the release is not installed: a new region has nothing to roll back to"]
    problems = []
    if current["status"] != "deployed":
        problems.append("revision %d is %s, not deployed" % (current["revision"], current["status"]))
    if current["revision"] not in [h.get("revision") for h in history]:
        problems.append("revision %d is not in the release's history" % current["revision"])
    if api_versions is None:
        return problems
    served = set(api_versions)
    missing = sorted({"%s/%s" % (obj.get("apiVersion"), obj["kind"])
                      for obj in manifest_objects(current["manifest"]).values()
                      if "%s/%s" % (obj.get("apiVersion"), obj["kind"]) not in served})
    if missing:
        problems.append("the cluster no longer serves %s, which revision %d holds"
                        % (", ".join(missing), current["revision"]))
    return problems
