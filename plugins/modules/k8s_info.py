#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: k8s_info
short_description: Read Kubernetes objects of one kind, by name or label selector, in the worker
version_added: "0.2.0"
description:
  - Reads one object (O(name)) or lists the objects of a kind (optionally in O(namespace), filtered
    by O(label_selectors)) with the collection's small REST client, and returns them as
    C(resources), the way M(kubernetes.core.k8s_info) does, for the reads the roles make on every
    run. It runs in the Ansible worker (no module process, no import of the kubernetes Python
    client), so a read costs milliseconds instead of about a second of a small controller's CPU.
  - The kind's resource name comes from the API server's discovery of O(api_version), so any
    served kind can be read, custom resources included.
  - Reads retry connection errors, timeouts, 429 and 5xx for O(api_grace) seconds. A kind the
    cluster does not serve, or a missing namespace or object, gives C(resources=[]), as
    M(kubernetes.core.k8s_info) does; any other error fails the task, naming the context.
  - Read-only. Use C(no_log) when the objects hold secrets: the module returns them as read.
author: ICN infrastructure team
extends_documentation_fragment:
  - icn.super_node.kube
options:
  api_version:
    description: The group/version of the kind, C(v1) or C(apps/v1) say.
    type: str
    default: v1
  kind:
    description: The kind, as in a manifest (C(Secret), C(Namespace), C(StatefulSet)).
    type: str
    required: true
  name:
    description: Read only the object of this name.
    type: str
  namespace:
    description: The namespace of a namespaced kind; all namespaces when left out. Ignored for a
      cluster-scoped kind.
    type: str
  label_selectors:
    description: Label selectors, joined with commas (C(app=x), C(tier!=y), C(istio/multiCluster=true)).
    type: list
    elements: str
    default: []
  request_timeout:
    description: Seconds one attempt of an API request may take (see O(api_grace) for retries).
    type: float
    default: 10
"""

EXAMPLES = r"""
- name: Read the remote secrets of the mesh
  icn.super_node.k8s_info:
    context: icn-eu-west
    kind: Secret
    namespace: istio-system
    label_selectors: ["istio/multiCluster=true"]
  register: remote_secrets
  no_log: true
"""

RETURN = r"""
resources:
  description: The objects read (empty when there is none, or the kind is not served).
  type: list
  elements: dict
  returned: success
api_found:
  description: Whether the cluster serves the kind at O(api_version).
  type: bool
  returned: success
"""

from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    KUBE_ARGUMENT_SPEC, KubeClient, KubeError, describe_context)


def group_path(api_version: str) -> str:
    """The API path of a group/version: /api/v1 for the core group, /apis/<group>/<version> else."""
    if not api_version or api_version.count("/") > 1:
        raise KubeError(f"api_version {api_version!r} is not a group/version (v1, apps/v1, ...)")
    return "/api/" + api_version if "/" not in api_version else "/apis/" + api_version


def find_resource(discovery: dict | None, kind: str):
    """(resource name, namespaced) of kind in a discovery answer, or None (subresources skipped)."""
    for resource in (discovery or {}).get("resources") or []:
        if resource.get("kind") == kind and "/" not in resource.get("name", ""):
            return resource["name"], bool(resource.get("namespaced"))
    return None


def object_path(prefix: str, resource: str, namespaced: bool, namespace: str | None,
                name: str | None) -> str:
    path = prefix
    if namespaced and namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{resource}"
    if name:
        path += f"/{quote(name, safe='')}"
    return path


def read(kube: KubeClient, params: dict) -> tuple[bool, list]:
    kind, api_version = params["kind"], params["api_version"]
    prefix = group_path(api_version)
    found = find_resource(kube.get(prefix, f"discovering {api_version}", missing_ok=True), kind)
    if found is None:
        return False, []
    resource, namespaced = found
    if params["name"] and namespaced and not params["namespace"]:
        raise KubeError(f"{kind} is namespaced: reading {kind} {params['name']} needs namespace")
    path = object_path(prefix, resource, namespaced, params["namespace"], params["name"])
    where = f"{kind} {params['namespace'] + '/' if namespaced and params['namespace'] else ''}"
    if params["name"]:
        obj = kube.get(path, f"reading {where}{params['name']}", missing_ok=True)
        return True, [] if obj is None else [obj]
    query = {"labelSelector": ",".join(params["label_selectors"])} if params["label_selectors"] else None
    listed = kube.get(path, f"listing {where.strip()}s", query=query, missing_ok=True)
    items = (listed or {}).get("items") or []
    for item in items:  # a list's items carry neither, kubernetes.core's resources do
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
    return True, items


def main():
    module = AnsibleModule(
        argument_spec=dict(
            KUBE_ARGUMENT_SPEC,
            api_version=dict(type="str", default="v1"),
            kind=dict(type="str", required=True),
            name=dict(type="str"),
            namespace=dict(type="str"),
            label_selectors=dict(type="list", elements="str", default=[]),
            request_timeout=dict(type="float", default=10.0),
        ),
        mutually_exclusive=[("name", "label_selectors")],
        supports_check_mode=True,
    )
    params = module.params
    try:
        with KubeClient(params["kubeconfig"], params["context"], params["request_timeout"],
                        params["api_grace"]) as kube:
            api_found, resources = read(kube, params)
    except KubeError as err:
        module.fail_json(msg=f"{describe_context(params['context'])}: {err}")
    module.exit_json(changed=False, api_found=api_found, resources=resources)


if __name__ == "__main__":
    main()
