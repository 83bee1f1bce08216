#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: helm_release
short_description: Install, upgrade or roll back one Helm release, changing nothing when nothing would change
description:
  - Renders the chart with a server-side dry run and compares the rendered objects and the user values with
    the deployed release. Only a real difference makes a new revision, so a second run reports no change.
  - The release is read from Helm's Secret storage in-process (two requests, no helm process); with another
    C(HELM_DRIVER), with C(helm status).
  - Each revision it makes records a digest of what rendered it (every file of the chart, the values, the
    release's name and namespace, the cluster's version and APIs, the helm binary) in the release label
    C(icn.io/render-inputs). A rerun with the same inputs is unchanged without rendering anything.
  - Otherwise, on a rerun with the same values it renders the chart locally (C(helm template)) with the
    cluster's version and APIs from its aggregated discovery (two requests); when that gives the deployed
    manifest exactly, the release is unchanged without a server-side dry run. Any difference, a chart that
    calls C(lookup), or a cluster without aggregated discovery falls back to the dry run.
  - Unlike C(kubernetes.core.helm) without the helm-diff plugin, a changed template under an unchanged chart
    version is detected, and C(--check --diff) shows the object-by-object manifest diff and the values diff.
  - With O(rollback_to), rolls the release back to that revision instead.
version_added: "0.1.0"
author: ICN infrastructure team
extends_documentation_fragment:
  - icn.super_node.kube
options:
  name:
    description: Release name.
    type: str
    required: true
  namespace:
    description: Release namespace.
    type: str
    required: true
  chart_ref:
    description: Path to the chart. Required unless O(rollback_to) is set.
    type: path
  values:
    description: Values for the release (the complete set; values of earlier revisions are not reused).
    type: dict
    default: {}
  create_namespace:
    description: Create the namespace if it does not exist.
    type: bool
    default: false
  history_max:
    description: Revisions Helm keeps for the release.
    type: int
    default: 10
  rollback_to:
    description: Roll back to this revision (an int), or to the one before the deployed one (V(previous)).
    type: str
  wait_timeout:
    description: Seconds to let Helm wait for the release's resources (0 means do not wait; the roles wait with
      icn.super_node.region_health, which knows what Ready means for a Super-Node region).
    type: int
    default: 0
  initial_replicas:
    description:
      - On install only, start each StatefulSet of the release that the chart leaves without C(spec.replicas)
        (because an HPA owns the count) at this many replicas instead of Kubernetes' default of one.
      - The HPA would raise it to its minimum anyway, but only at its first sync (15 s by default), so a new
        region would wait for it. Never lowers a count and never touches a release that already exists.
    type: int
  plan:
    description:
      - Also render the desired release when its values changed (locally with C(helm template) where
        that is faithful, else with a server-side dry run) and return RV(changes), what the upgrade
        would change. Meant for check mode, where C(upgrade.yml) and C(deploy.yml) plan every region
        before the first one changes.
    type: bool
    default: false
  check_rollback:
    description:
      - When the release would change, also return RV(rollback), whether the revision deployed now
        could be rolled back to once the upgrade has replaced it, and RV(changes) as far as the
        values and the chart versions tell them without a render (with O(plan), every object).
    type: bool
    default: false
  binary_path:
    description: The helm binary.
    type: path
    default: helm
  timeout:
    description: Seconds any single helm call may take before the task fails.
    type: int
    default: 120
notes:
  - Supports check mode and diff mode.
"""

EXAMPLES = r"""
- name: Install or upgrade the Super-Node release of a region
  icn.super_node.helm_release:
    name: icn-super-node-eu-west
    namespace: icn
    chart_ref: "{{ playbook_dir }}/charts/super-node"
    values:
      global:
        regions: [eu-west]
    kubeconfig: ~/.kube/config
    context: prod-eu-west

- name: Roll the region back to the revision before the current one
  icn.super_node.helm_release:
    name: icn-super-node-eu-west
    namespace: icn
    rollback_to: previous
    context: prod-eu-west
"""

RETURN = r"""
revision:
  description: Release revision deployed after the task (the current one in check mode).
  type: int
  returned: always
previous_revision:
  description: Release revision before the task (null if the release did not exist); also returned on failure.
  type: int
  returned: always
action:
  description: What was done, or would be done in check mode.
  type: str
  returned: always
  sample: upgraded
reasons:
  description: Why the release changes (empty when it does not).
  type: list
  elements: str
  returned: always
chart:
  description: Chart name-version of the release rendered or installed (null when neither was needed).
  type: str
  returned: always
decided_by:
  description:
    - What told whether the release changes. V(not installed); V(values) (they differ, nothing rendered);
      V(recorded inputs) (the deployed revision was rendered from the same inputs, nothing rendered);
      V(local render); V(server dry run).
  type: str
  returned: unless O(rollback_to) is set
  sample: recorded inputs
changes:
  description:
    - What the upgrade changes (all empty when the release is unchanged). V(objects), V(restarts)
      and V(image_tag) are null, and V(rendered) false, when the chart was not rendered.
    - After a real upgrade of an existing release, what it did change, from the release it made.
    - V(restarts) lists the workloads whose pod template changes, so whose pods are replaced; a
      change that restarts no pod (HPA bounds, PDB, ServiceMonitor, alerts, routing) leaves it empty.
    - V(values) holds only the paths of the changed values, never a value.
  type: dict
  returned: with O(plan) or O(check_rollback), and after an upgrade of an existing release
  sample:
    chart: {from: icn-super-node-0.1.0, to: icn-super-node-0.2.0}
    image_tag: {from: v1.0.0, to: v1.1.0}
    values: [image.tag, resources.requests.memory]
    objects: [ConfigMap/icn-super-node-eu-west-bootstrap, StatefulSet/icn-super-node-eu-west]
    restarts: [StatefulSet/icn-super-node-eu-west]
analysis_verdict:
  description:
    - The metric analysis' verdict that upgrade.yml recorded on the deployed revision (the annotation
      C(icn.io/analysis) of its Secret), or null. V(verdict) V(pending) means the revision was rolled out
      but its soak was cut short, so upgrade.yml judges it on its next run; V(revision_before) and
      V(tag_before) are what a failed judgement rolls back to.
    - Null where Helm stores releases elsewhere than in Secrets (C(HELM_DRIVER)).
  type: dict
  returned: unless O(rollback_to) is set
  sample: {verdict: pending, revision_before: 3, tag_before: v1.0.0, gate_at: 1796600000.0}
rollback:
  description:
    - Whether the revision deployed now can be rolled back to after the upgrade. V(problems) is empty
      when it can; V(apis_checked) is false when the cluster's APIs could not be read (no aggregated
      discovery) and only the history was checked.
  type: dict
  returned: with O(check_rollback) (only a release that would change is checked)
  sample: {revision: 3, apis_checked: true, problems: []}
"""

import binascii
import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    KUBE_ARGUMENT_SPEC, KubeClient, KubeError, load_yaml_all, resolve_target)

from ansible_collections.icn.super_node.plugins.module_utils.helm_release import (
    INPUTS_LABEL, Helm, HelmError, chart_metadata, chart_uses_lookup, classify, cluster_capabilities,
    cluster_version, inputs_label, manifest_diff, normalise_manifest, plan, render_inputs_digest, rollback_problems,
    revision_verdict, stored_head, stored_release, values_diff)


def chart_of(release):
    """name-version of a release's chart, when the release JSON at hand has it."""
    meta = (release.get("chart") or {}).get("metadata") or {}
    return "%s-%s" % (meta["name"], meta["version"]) if meta.get("name") else None


def local_chart(params):
    """name-version of the chart directory being deployed (chart_ref), from its Chart.yaml."""
    return chart_of({"chart": {"metadata": chart_metadata(params["chart_ref"])}})


def rollback(module, helm, current):
    params = module.params
    if current is None:
        module.fail_json(msg="release %s does not exist in namespace %s: nothing to roll back"
                         % (params["name"], params["namespace"]))
    target = params["rollback_to"]
    if target == "previous":
        older = [h for h in helm.history(params["name"], params["namespace"])
                 if h["revision"] < current["revision"]]
        if not older:
            module.fail_json(msg="release %s has no revision before %d"
                             % (params["name"], current["revision"]))
        target = older[-1]["revision"]
    try:
        target = int(target)
    except ValueError:
        module.fail_json(msg="rollback_to must be a revision number or 'previous', not %r" % target)
    if target == current["revision"] and current["status"] == "deployed":
        # The upgrade never replaced this revision: there is nothing to return to.
        module.exit_json(changed=False, action="unchanged", previous_revision=target, revision=target,
                         reasons=[], chart=None, rolled_back_to=None)
    result = dict(changed=True, action="rolled back", previous_revision=current["revision"],
                  revision=current["revision"], reasons=["rollback to revision %d" % target],
                  chart=None, rolled_back_to=target)
    if not module.check_mode:
        helm.rollback(params["name"], params["namespace"], target, params["wait_timeout"])
        result["revision"] = helm.current(params["name"], params["namespace"])["revision"]
    module.exit_json(**result)


def unscaled_statefulsets(manifest):
    """Names of the manifest's StatefulSets that have no spec.replicas."""
    names = []
    for doc in load_yaml_all(manifest or ""):
        if (isinstance(doc, dict) and doc.get("kind") == "StatefulSet"
                and "replicas" not in (doc.get("spec") or {})):
            names.append(doc["metadata"]["name"])
    return names


def start_at(module, kube, release, namespace, replicas):
    """Raise each fresh StatefulSet of the release to `replicas` through its scale subresource."""
    scaled = []
    try:
        for name in unscaled_statefulsets(release.get("manifest")):
            path = "/apis/apps/v1/namespaces/%s/statefulsets/%s/scale" % (namespace, name)
            scale = kube().get(path, "reading the scale of StatefulSet %s" % name)
            if scale["spec"].get("replicas", 0) < replicas:
                kube().request("PATCH", path, "scaling StatefulSet %s" % name,
                               body={"spec": {"replicas": replicas}},
                               content_type="application/merge-patch+json")
                scaled.append(name)
    except KubeError as err:
        module.fail_json(msg="release %s is installed, but %s" % (release.get("name"), err),
                         previous_revision=None, revision=release.get("version"))
    return scaled


NO_CHANGES = dict(chart=None, image_tag=None, values=[], objects=[], restarts=[])


class Lazy:
    """A value computed on first use, then kept."""

    def __init__(self, compute):
        self._compute, self._done, self._value = compute, False, None

    def __call__(self):
        if not self._done:
            self._value, self._done = self._compute(), True
        return self._value

    @property
    def done(self):
        return self._done


def capabilities(kube):
    """The cluster's (version, API versions), or None where they cannot be read cheaply."""
    try:
        return cluster_capabilities(kube())
    except (KubeError, KeyError, ValueError):
        return None


def digest_capabilities(kube, caps):
    """For render_inputs_digest: given whether the chart names .Capabilities, (version, APIs) from
    caps (two discovery requests more), else (version, None) from /version alone (or from caps when
    already read). None where they cannot be read."""
    def read(with_apis):
        if with_apis or caps.done:
            return caps()
        try:
            return cluster_version(kube()), None
        except (KubeError, KeyError, TypeError):
            return None
    return read


def read_head(module, kube):
    """The last revision's labels from Helm's Secret storage (stored_head), None when there is no
    revision, False where Helm stores releases elsewhere (HELM_DRIVER)."""
    if os.environ.get("HELM_DRIVER", "") not in ("", "secret", "secrets"):
        return False
    return stored_head(kube(), module.params["name"], module.params["namespace"])


def read_current(module, helm, kube, head):
    """The release's last revision (Helm.current's shape): decoded in-process from the Secret
    read_head found, or with helm status where Helm stores releases elsewhere or the Secret cannot
    be decoded."""
    if head is None:
        return None
    if head is not False:
        try:
            return stored_release(kube(), module.params["namespace"], head)
        except (ValueError, KeyError, TypeError, binascii.Error, OSError):
            pass  # not what Helm 3's Secret driver writes: let helm read it
    return helm.current(module.params["name"], module.params["namespace"])


def rendered_from_these_inputs(head, digest):
    """Whether the last revision is deployed and records the inputs at hand (values included), so
    that a render now would give its manifest again: the release is unchanged, with nothing
    rendered and no release decoded."""
    return bool(head and head["status"] == "deployed" and digest()
                and head["labels"].get(INPUTS_LABEL) == inputs_label(head["revision"], digest()))


def read_verdict(module, head):
    """The metric verdict recorded on the head revision (revision_verdict), failing on a value that
    upgrade.yml did not write."""
    try:
        return revision_verdict(head)
    except ValueError as err:
        module.fail_json(msg="release %s: %s" % (module.params["name"], err))


def exit_unchanged(module, head, verdict):
    """The result of a release that the recorded inputs tell unchanged."""
    params = module.params
    revision = head["revision"]
    result = dict(changed=False, reasons=[], decided_by="recorded inputs", action="unchanged",
                  previous_revision=revision, revision=revision,
                  chart=local_chart(params), analysis_verdict=verdict)
    if params["plan"] or params["check_rollback"]:
        result["changes"] = dict(NO_CHANGES)
    if params["check_rollback"]:  # only a release that changes is checked
        result["rollback"] = dict(revision=revision, apis_checked=False, problems=[])
    module.exit_json(**result)


def inputs_digest(module, values, caps):
    """The digest of the release's render inputs, or None when they cannot tell: the chart calls
    lookup, or the cluster's version (and APIs, for a chart that names .Capabilities) could not be
    read. caps: digest_capabilities()."""
    params = module.params
    if chart_uses_lookup(params["chart_ref"]):
        return None
    return render_inputs_digest(params["chart_ref"], params["name"], params["namespace"], values,
                                caps, params["binary_path"])


def local_render(module, helm, caps):
    """The chart rendered locally (helm template) with the cluster's version and APIs standing in
    for a server's, or None when only a server-side dry run can tell: the chart calls lookup, or
    the cluster's APIs could not be read. caps: the Lazy capabilities."""
    params = module.params
    if chart_uses_lookup(params["chart_ref"]) or caps() is None:
        return None
    caps = caps()
    try:
        return helm.template(params["name"], params["namespace"], params["chart_ref"],
                             params["values"], caps[0], caps[1])
    except HelmError:
        return None


def desired_release(module, helm, current, values, caps, digest):
    """The release an upgrade would make, {config, and the manifest and chart when known}, and
    what told it (RV(decided_by)).

    (A revision that records the same render inputs never gets here: main() tells it unchanged.)
    A rerun with the same values is unchanged when the local render gives exactly the deployed
    manifest; any other difference is
    confirmed by a server-side dry run, so a change is never reported that Helm would not make.
    New values change the release whatever the chart renders: they are rendered only to plan
    (O(plan), --diff), locally where that is faithful."""
    params = module.params
    if current is None and not (params["plan"] or module._diff):
        return {"config": values}, "not installed"
    same_values = current is not None and current["values"] == values
    if not (same_values or params["plan"] or module._diff):
        return {"config": values}, "values"
    rendered = local_render(module, helm, caps)
    if rendered is not None and (not same_values or (
            current["status"] == "deployed"
            and normalise_manifest(rendered) == normalise_manifest(current["manifest"]))):
        return {"config": values, "manifest": rendered,
                "chart": {"metadata": chart_metadata(params["chart_ref"])}}, "local render"
    return helm.upgrade(params["name"], params["namespace"], params["chart_ref"], params["values"],
                        dry_run=True, history_max=params["history_max"]), "server dry run"


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGUMENT_SPEC,
            name=dict(type="str", required=True),
            namespace=dict(type="str", required=True),
            chart_ref=dict(type="path"),
            values=dict(type="dict", default={}),
            create_namespace=dict(type="bool", default=False),
            history_max=dict(type="int", default=10),
            rollback_to=dict(type="str"),
            initial_replicas=dict(type="int"),
            wait_timeout=dict(type="int", default=0),
            plan=dict(type="bool", default=False),
            check_rollback=dict(type="bool", default=False),
            binary_path=dict(type="path", default="helm"),
            timeout=dict(type="int", default=120),
        ),
        required_one_of=[("chart_ref", "rollback_to")],
        mutually_exclusive=[("chart_ref", "rollback_to")],
        supports_check_mode=True,
    )
    params = module.params
    binary = module.get_bin_path(params["binary_path"], required=True)
    # K8S_AUTH_KUBECONFIG/K8S_AUTH_CONTEXT as kubernetes.core reads them, for helm as for our client.
    params["kubeconfig"], params["context"] = resolve_target(params["kubeconfig"], params["context"])
    params["binary_path"] = binary
    helm = Helm(binary, params["kubeconfig"], params["context"], params["timeout"])
    name, namespace = params["name"], params["namespace"]
    current = None
    # One API client for the module's reads (the release, the cluster's APIs, a new StatefulSet's scale).
    kube = Lazy(lambda: KubeClient(params["kubeconfig"], params["context"], grace=params["api_grace"]))
    try:
        head = read_head(module, kube)
        if params["rollback_to"]:
            rollback(module, helm, read_current(module, helm, kube, head))
        values = json.loads(json.dumps(params["values"]))  # as Helm stores them
        caps = Lazy(lambda: capabilities(kube))
        digest = Lazy(lambda: inputs_digest(module, values, digest_capabilities(kube, caps)))
        verdict = read_verdict(module, head)
        if rendered_from_these_inputs(head, digest):
            exit_unchanged(module, head, verdict)
        current = read_current(module, helm, kube, head)
        desired, decided_by = desired_release(module, helm, current, values, caps, digest)
        changed, reasons = plan(current, desired)
        result = dict(changed=changed, reasons=reasons, decided_by=decided_by,
                      previous_revision=current["revision"] if current else None,
                      revision=current["revision"] if current else None,
                      chart=chart_of(desired), analysis_verdict=verdict,
                      action="unchanged" if not changed else
                      ("installed" if current is None else "upgraded"))
        if params["plan"] or params["check_rollback"]:
            # The history tells the deployed chart and whether the rollback can run: needed only
            # for a release that changes (a no-op plan skips one helm process per region).
            history = helm.history(name, namespace) if current and changed else []
            deployed = next((h.get("chart") for h in history if h.get("revision") == current["revision"]),
                            None) if current else None
            result["changes"] = (classify(current, desired, deployed, chart_of(desired)) if changed
                                 else dict(NO_CHANGES))
            if changed and "manifest" not in desired:
                # Not rendered (a real upgrade.yml plans without a render: the upgrade itself tells
                # the objects it changed): the values and the chart versions are known, not the
                # objects, nor the image of the pods.
                local = local_chart(params)
                result["changes"].update(objects=None, restarts=None, image_tag=None, rendered=False,
                                         chart={"from": deployed, "to": local}
                                         if local and deployed != local else None)
            if params["check_rollback"]:  # only a release that changes is checked
                apis = caps() and caps()[1] if changed else None
                result["rollback"] = dict(revision=current["revision"] if current else None,
                                          apis_checked=apis is not None,
                                          problems=rollback_problems(current, history, apis)
                                          if changed else [])
        if changed and module._diff:
            before = current["manifest"] if current else ""
            result["diff"] = [
                dict(prepared=manifest_diff(before, desired.get("manifest", ""), name)),
                dict(prepared=values_diff(current["values"] if current else {},
                                          desired.get("config"), name)),
            ]
        if changed and not module.check_mode:
            # The deployed revision's chart (helm status does not tell it, Helm's Secret does), for
            # the changes below.
            prior = None
            if current and current.get("chart"):
                prior = chart_of({"chart": {"metadata": current["chart"]}})
            elif current:
                prior = (helm.history(name, namespace, max_entries=1) or [{}])[-1].get("chart")
            # The new revision records what rendered it, for the next run (Helm numbers it after
            # the last one).
            labels = ({INPUTS_LABEL: inputs_label((current["revision"] if current else 0) + 1, digest())}
                      if digest() else None)
            release = helm.upgrade(name, namespace, params["chart_ref"], params["values"],
                                   create_namespace=params["create_namespace"],
                                   history_max=params["history_max"],
                                   wait_seconds=params["wait_timeout"], labels=labels)
            result["revision"] = release["version"]
            result["chart"] = chart_of(release)
            if current is not None:
                # What the upgrade did change, from the release it made (its manifest is in helm's
                # answer): the summary reports this, not a forecast.
                result["changes"] = classify(current, {"config": values, "manifest": release.get("manifest", "")},
                                             prior, result["chart"])
            if current is None and params["initial_replicas"]:
                result["scaled"] = start_at(module, kube, release, namespace, params["initial_replicas"])
    except (HelmError, KubeError) as err:
        # The revision the release had before, so a caller can roll back to it.
        module.fail_json(msg="%s (release %s, context %s)" % (err, name, params["context"]),
                         previous_revision=current["revision"] if current else None)
    finally:
        if kube.done and kube() is not None:
            kube().close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
