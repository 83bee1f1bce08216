#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cluster_info
short_description: A cluster's Kubernetes version and served API group versions, in one light call
version_added: "0.1.0"
description:
  - Reads C(/version), C(/api) and C(/apis) of the cluster, each request bounded by O(request_timeout),
    with the collection's small REST client. A cluster that does not answer (or answers 429 or
    5xx) for O(api_grace) seconds fails the task, naming the context.
  - Read-only.
author: ICN infrastructure team
extends_documentation_fragment:
  - icn.super_node.kube
options:
  request_timeout:
    description: Seconds one attempt of an API request may take (see O(api_grace) for retries).
    type: float
    default: 10
"""

EXAMPLES = r"""
- name: The region's API server answers
  icn.super_node.cluster_info:
    context: icn-eu-west
  register: cluster
"""

RETURN = r"""
version:
  description: The server's version (C(gitVersion) without the leading v), e.g. 1.36.3.
  type: str
  returned: success
apis:
  description: Every served group/version, e.g. C(v1), C(apps/v1), C(policy/v1).
  type: list
  elements: str
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    KUBE_ARGUMENT_SPEC, KubeClient, KubeError, describe_context)


def main():
    module = AnsibleModule(
        argument_spec=dict(KUBE_ARGUMENT_SPEC, request_timeout=dict(type="float", default=10.0)),
        supports_check_mode=True,
    )
    params = module.params
    try:
        with KubeClient(params["kubeconfig"], params["context"], params["request_timeout"],
                        params["api_grace"]) as kube:
            version = kube.get("/version", "reading the server version")
            core = kube.get("/api", "listing the core API versions")
            groups = kube.get("/apis", "listing the API groups")
    except KubeError as err:
        module.fail_json(msg=f"{describe_context(params['context'])}: {err}")
    apis = list(core.get("versions") or [])
    for group in groups.get("groups") or []:
        apis += [v["groupVersion"] for v in group.get("versions") or []]
    module.exit_json(changed=False, version=version.get("gitVersion", "").lstrip("v"), apis=apis)


if __name__ == "__main__":
    main()
