#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: metrics_api_info
short_description: Whether a cluster serves the custom and resource metrics APIs, and its prometheus-adapter
version_added: "0.1.0"
description:
  - Reads the cluster's APIServices of C(custom.metrics.k8s.io) and C(metrics.k8s.io) and reports
    whether one version of each is Available (its C(Available) condition is C(True)), with the
    reason and message of those that are not.
  - Reads the prometheus-adapter Deployment O(adapter_name) in O(adapter_namespace) and its config
    ConfigMap O(adapter_configmap), if they exist.
  - Read-only, with the collection's small REST client.
author: ICN infrastructure team
extends_documentation_fragment:
  - icn.super_node.kube
options:
  adapter_namespace:
    description: Namespace of prometheus-adapter.
    type: str
    default: monitoring
  adapter_name:
    description: Name of prometheus-adapter's Deployment.
    type: str
    default: prometheus-adapter
  adapter_configmap:
    description: Name of the ConfigMap that holds the adapter's C(config.yaml); default O(adapter_name).
    type: str
  metric:
    description: A Pods metric to look for in the preferred Available version of
      C(custom.metrics.k8s.io) (C(custom_metrics.metric_listed)).
    type: str
    default: network_bandwidth_utilization
  request_timeout:
    description: Seconds one attempt of an API request may take (see O(api_grace) for retries).
    type: float
    default: 10
"""

EXAMPLES = r"""
- name: What metrics APIs the region serves
  icn.super_node.metrics_api_info:
    context: icn-eu-west
  register: metrics_apis
"""

RETURN = r"""
custom_metrics:
  description: C(available) (bool), C(versions) (the Available versions, preferred first),
    C(apiservices) (name, available, reason, message of each APIService of the group) and
    C(metric_listed) (the API lists pods/O(metric)).
  type: dict
  returned: success
resource_metrics:
  description: The same for C(metrics.k8s.io) (pod CPU and memory).
  type: dict
  returned: success
adapter:
  description: C(present) (the Deployment exists), C(ready_replicas), C(configmap_present), C(config)
    (the ConfigMap's C(config.yaml), empty when missing).
  type: dict
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.kube import (
    KUBE_ARGUMENT_SPEC, KubeClient, KubeError, describe_context)


def group_status(apiservices: list[dict], group: str) -> dict:
    entries = []
    for svc in apiservices:
        spec = svc.get("spec") or {}
        if spec.get("group") != group:
            continue
        cond = next((c for c in (svc.get("status") or {}).get("conditions") or []
                     if c.get("type") == "Available"), {})
        entries.append(dict(name=svc["metadata"]["name"], version=spec.get("version"),
                            priority=spec.get("versionPriority", 0),
                            available=cond.get("status") == "True",
                            reason=cond.get("reason", ""), message=cond.get("message", "")))
    entries.sort(key=lambda e: -e["priority"])
    versions = [e["version"] for e in entries if e["available"]]
    return dict(available=bool(versions), versions=versions, apiservices=entries)


def main():
    module = AnsibleModule(
        argument_spec=dict(KUBE_ARGUMENT_SPEC,
                           adapter_namespace=dict(type="str", default="monitoring"),
                           adapter_name=dict(type="str", default="prometheus-adapter"),
                           adapter_configmap=dict(type="str"),
                           metric=dict(type="str", default="network_bandwidth_utilization"),
                           request_timeout=dict(type="float", default=10.0)),
        supports_check_mode=True,
    )
    params = module.params
    ns, name = params["adapter_namespace"], params["adapter_name"]
    cm_name = params["adapter_configmap"] or name
    try:
        with KubeClient(params["kubeconfig"], params["context"], params["request_timeout"],
                        params["api_grace"]) as kube:
            apiservices = kube.get("/apis/apiregistration.k8s.io/v1/apiservices",
                                   "listing the APIServices").get("items") or []
            deployment = kube.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                                  f"reading Deployment {ns}/{name}", missing_ok=True)
            configmap = kube.get(f"/api/v1/namespaces/{ns}/configmaps/{cm_name}",
                                 f"reading ConfigMap {ns}/{cm_name}", missing_ok=True)
            custom = group_status(apiservices, "custom.metrics.k8s.io")
            custom["metric_listed"] = False
            if custom["versions"]:
                try:
                    listed = kube.get(f"/apis/custom.metrics.k8s.io/{custom['versions'][0]}",
                                      "listing the custom metrics") or {}
                except KubeError as err:  # Available a moment ago; report, do not fail
                    listed = {}
                    custom["list_error"] = str(err)
                names = {r.get("name") for r in listed.get("resources") or []}
                custom["metric_listed"] = f"pods/{params['metric']}" in names
    except KubeError as err:
        module.fail_json(msg=f"{describe_context(params['context'])}: {err}")
    adapter = dict(present=deployment is not None, namespace=ns, name=name, configmap=cm_name,
                   ready_replicas=((deployment or {}).get("status") or {}).get("readyReplicas", 0),
                   configmap_present=configmap is not None,
                   config=((configmap or {}).get("data") or {}).get("config.yaml", ""))
    module.exit_json(changed=False,
                     custom_metrics=custom,
                     resource_metrics=group_status(apiservices, "metrics.k8s.io"),
                     adapter=adapter)


if __name__ == "__main__":
    main()
