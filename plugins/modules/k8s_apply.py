#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_apply
short_description: Server-side apply a few cluster objects, in one light call
version_added: "0.1.0"
description:
  - Applies each object with Kubernetes server-side apply under a field manager of its own, so
    several writers (one per region, say) can own different keys of one object.
  - Reports a change only when the API server changed the object (its resourceVersion moved); in
    check mode the apply is a server dry run compared with the live object.
  - Refuses, before writing, an object whose immutable fields differ from the live ones
    (O(immutable_fields)), and a Secret whose protected keys hold other values (O(protect_data_keys))
    unless O(force_conflicts) is set. The values of a Secret never appear in the result or a message.
  - Uses the collection's small REST client (no kubernetes Python client import), so that seven
    regions in parallel do not pay a second of start-up per task each.
author: ICN infrastructure team
extends_documentation_fragment:
  - icn.super_node.kube
options:
  definitions:
    description: The objects, in order. Kinds known to this module are Namespace, Secret,
      ConfigMap, StorageClass, Deployment,
      and Istio's PeerAuthentication (security.istio.io/v1) and Gateway (networking.istio.io/v1).
    type: list
    elements: dict
    required: true
  field_manager:
    description: Server-side apply field manager.
    type: str
    required: true
  force_conflicts:
    description: Take over fields owned by other managers, and change protected Secret keys.
    type: bool
    default: false
  immutable_fields:
    description: Top-level fields that cannot change in place (for a StorageClass, its provisioner,
      parameters, reclaimPolicy and volumeBindingMode); a live object with other values fails the task.
    type: list
    elements: str
    default: []
  protect_data_keys:
    description: Keys of a Secret's data that must not be replaced by a different value unless
      O(force_conflicts) is true.
    type: list
    elements: str
    default: []
  sensitive:
    description: Leave the objects out of the diff and the result (set it for Secrets).
    type: bool
    default: false
  request_timeout:
    description: Seconds one attempt of an API request may take (see O(api_grace) for retries).
    type: float
    default: 20
notes:
  - Supports check mode and diff mode.
"""

EXAMPLES = r"""
- name: The namespace and the region's key exist
  icn.super_node.k8s_apply:
    context: icn-eu-west
    field_manager: icn-staking-key-eu-west
    protect_data_keys: [eu-west-staking-key]
    sensitive: true
    definitions:
      - {apiVersion: v1, kind: Namespace, metadata: {name: icn}}
      - apiVersion: v1
        kind: Secret
        metadata: {name: icn-staking-keys, namespace: icn}
        data:
          eu-west-staking-key: "{{ key | b64encode }}"
  no_log: true
"""

RETURN = r"""
objects:
  description: One entry per definition.
  type: list
  elements: dict
  returned: always
  sample: [{"kind": "StorageClass", "name": "fast-ssd", "namespace": null, "action": "unchanged"}]
"""

import json

import yaml
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    KUBE_ARGUMENT_SPEC, KubeClient, KubeError, describe_context)

# kind -> (API path prefix, resource, namespaced)
KINDS = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Secret": ("/api/v1", "secrets", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "StorageClass": ("/apis/storage.k8s.io/v1", "storageclasses", False),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "PeerAuthentication": ("/apis/security.istio.io/v1", "peerauthentications", True),
    "Gateway": ("/apis/networking.istio.io/v1", "gateways", True),
}
# Fields the server fills in or bumps, left out when comparing.
VOLATILE = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid")


def path_of(obj: dict) -> tuple[str, str]:
    kind = obj.get("kind")
    if kind not in KINDS:
        raise KubeError(f"kind {kind!r} is not handled by k8s_apply (allowed: {', '.join(KINDS)})")
    prefix, resource, namespaced = KINDS[kind]
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise KubeError(f"a {kind} without metadata.name")
    where = f"{kind} {name}"
    if namespaced:
        if not meta.get("namespace"):
            raise KubeError(f"{where} needs metadata.namespace")
        where = f"{kind} {meta['namespace']}/{name}"
        return f"{prefix}/namespaces/{meta['namespace']}/{resource}/{name}", where
    return f"{prefix}/{resource}/{name}", where


def comparable(obj: dict | None) -> dict | None:
    if obj is None:
        return None
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in VOLATILE}
    return out


def dump(obj: dict | None) -> str:
    return "" if obj is None else yaml.safe_dump(comparable(obj), sort_keys=True)


def check_guards(module, live: dict, want: dict, where: str) -> None:
    params = module.params
    differing = [f for f in params["immutable_fields"] if live.get(f) != want.get(f)]
    if differing:
        detail = "; ".join(f"{f}: live {json.dumps(live.get(f))}, wanted {json.dumps(want.get(f))}"
                           for f in differing)
        module.fail_json(msg=f"{where} exists with other immutable settings ({detail}). They cannot "
                             "be changed in place: use another name, or move the data and recreate it.")
    if not params["force_conflicts"]:
        live_data, want_data = live.get("data") or {}, want.get("data") or {}
        replaced = [k for k in params["protect_data_keys"]
                    if k in live_data and k in want_data and live_data[k] != want_data[k]]
        if replaced:
            module.fail_json(msg=f"{where} holds a different {', '.join(replaced)} than the one "
                                 "given (values not shown). Nothing was changed; set force_conflicts "
                                 "to replace it.")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGUMENT_SPEC,
            definitions=dict(type="list", elements="dict", required=True),
            field_manager=dict(type="str", required=True),
            force_conflicts=dict(type="bool", default=False),
            immutable_fields=dict(type="list", elements="str", default=[]),
            protect_data_keys=dict(type="list", elements="str", default=[], no_log=False),
            sensitive=dict(type="bool", default=False),
            request_timeout=dict(type="float", default=20.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    results, changed, before_docs, after_docs = [], False, [], []
    try:
        with KubeClient(params["kubeconfig"], params["context"], params["request_timeout"],
                        params["api_grace"]) as kube:
            planned_namespaces = set()  # namespaces a check-mode run would create
            for want in params["definitions"]:
                path, where = path_of(want)
                meta = want["metadata"]
                if module.check_mode and meta.get("namespace") in planned_namespaces:
                    # A dry run cannot create in a namespace that does not exist yet.
                    results.append(dict(kind=want["kind"], name=meta["name"],
                                        namespace=meta["namespace"], action="created"))
                    changed = True
                    continue
                live = kube.get(path, f"reading {where}", missing_ok=True)
                if live is not None:
                    check_guards(module, live, want, where)
                query = {"fieldManager": params["field_manager"],
                         "force": "true" if params["force_conflicts"] else "false"}
                if module.check_mode:
                    query["dryRun"] = "All"
                # A server-side apply gives the same object however often it is sent: it is
                # retried through the weather like a read (api_grace).
                applied = kube.request("PATCH", path, f"applying {where}", query=query, body=want,
                                       content_type="application/apply-patch+yaml", idempotent=True)
                if live is None:
                    action = "created"
                    if want["kind"] == "Namespace":
                        planned_namespaces.add(meta["name"])
                elif module.check_mode:
                    action = "updated" if comparable(live) != comparable(applied) else "unchanged"
                else:
                    moved = live["metadata"]["resourceVersion"] != applied["metadata"]["resourceVersion"]
                    action = "updated" if moved else "unchanged"
                changed = changed or action != "unchanged"
                results.append(dict(kind=want["kind"], name=meta["name"],
                                    namespace=meta.get("namespace"), action=action))
                if action != "unchanged" and not params["sensitive"]:
                    before_docs.append(dump(live))
                    after_docs.append(dump(applied))
    except KubeError as err:
        module.fail_json(msg=f"{describe_context(params['context'])}: {err}", objects=results)
    result = dict(changed=changed, objects=results)
    if module._diff and before_docs:
        result["diff"] = dict(before="---\n".join(before_docs), after="---\n".join(after_docs))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
