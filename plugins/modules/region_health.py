#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: region_health
short_description: Judge the health of the ICN Super-Node workload of one or more regions
version_added: "0.1.0"
description:
  - Reads, in one call, everything that makes a region's Super-Node workload healthy (the
    StatefulSet C(icn-super-node-<region>), its pods and their PVCs, the PDB, the HPA, the
    bootstrap ConfigMap and the region's staking key) and returns a report per region with a
    verdict and a short sentence for every problem found.
  - Replaces a series of M(kubernetes.core.k8s_info) tasks in the verify step of C(deploy.yml) and
    in the gates of C(upgrade.yml). Each poll makes seven API calls, however many regions it judges.
  - With O(wait=true) it polls until every region is healthy or O(wait_timeout) passes.
  - Every API call is bounded by O(request_timeout), so a frozen API server fails the task instead
    of hanging it. A call that fails with a connection error, a timeout, HTTP 429 or 5xx is tried
    again for O(api_grace) seconds (when O(wait=true), not past O(wait_timeout)); a region whose
    API server stops answering for less than that, during a wait, the hold or a gate, is judged as
    if it had not. Past the grace, or at once for any other API error, the check ends, waiting or
    not, and the task fails with a message that names the context.
  - Of the staking-keys Secret only the key names are read; no secret value is ever returned or
    logged.
  - Read-only; never reports a change.
author:
  - ICN infrastructure team
requirements:
  - python >= 3.9
  - PyYAML and urllib3 (both come with ansible-core)
extends_documentation_fragment:
  - icn.super_node.kube
options:
  namespace:
    description: Namespace of the Super-Node workload.
    type: str
    default: icn
  regions:
    description:
      - Names of the regions whose workload lives in this cluster; one in the multi-cluster
        topology, all of them in the single-cluster one.
      - Objects are expected as C(icn-super-node-<region>) (StatefulSet, PDB, HPA), the ConfigMap
        as C(icn-super-node-<region>-bootstrap), pods with the labels
        C(app.kubernetes.io/name=icn-super-node) and C(icn.network/region=<region>).
      - One of O(regions) and O(clusters) is required.
    type: list
    elements: str
  clusters:
    description:
      - Several clusters judged at once, each read in its own thread (the gate of a rollout, which
        must see every region). Instead of O(regions); O(kubeconfig) and O(context), which a play's
        C(module_defaults) may set for every module, are then ignored, since each cluster names its own.
      - A cluster that cannot be read (for O(api_grace) seconds) makes each of its regions
        unhealthy, with the error as its problem, instead of failing the task.
    type: list
    elements: dict
    suboptions:
      kubeconfig:
        description: Path of the kubeconfig file.
        type: path
      context:
        description: The kubeconfig context.
        type: str
      regions:
        description: Regions whose workload lives in that cluster.
        type: list
        elements: str
        required: true
  secret_name:
    description:
      - Secret that must hold the key C(<region>-staking-key) for every region.
      - Only the presence of the key is checked.
    type: str
    default: icn-staking-keys
  expect_image_tag:
    description:
      - When set, the StatefulSet's pod template and every pod must run this image tag.
    type: str
  expect_hpa:
    description:
      - Whether each region must have its HPA C(icn-super-node-<region>).
      - When an HPA exists, the desired replica count is the larger of the StatefulSet's
        C(spec.replicas) and the HPA's C(minReplicas), whatever this option says.
    type: bool
    default: true
  require_disruption_allowed:
    description:
      - Also require each region's PDB to allow at least one disruption (the pre-upgrade gate).
    type: bool
    default: false
  wait:
    description: Poll until every region is healthy, at most O(wait_timeout) seconds.
    type: bool
    default: false
  wait_timeout:
    description: How long to wait for health, in seconds, when O(wait=true).
    type: float
    default: 300
  poll_interval:
    description: Seconds between two polls when O(wait=true).
    type: float
    default: 1.0
  hold_seconds:
    description:
      - Once the regions are healthy, keep polling them for this many seconds (a soak); the first poll
        that finds a region unhealthy ends the check, unhealthy. V(0) checks once.
      - A poll whose API server does not answer is not unhealthy; its calls are retried for
        O(api_grace) seconds (even past the end of the hold), and only then fail the task.
    type: float
    default: 0
  request_timeout:
    description:
      - Seconds one attempt of an API call may take (connect and read together); see O(api_grace)
        for retries.
    type: float
    default: 10
  fail_on_unhealthy:
    description:
      - Fail the task, listing the problems, when a region is not healthy (after waiting, when
        O(wait=true)).
      - With V(false) the verdict is only returned, in RV(healthy) and RV(problems).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
notes:
  - A region is healthy when its StatefulSet exists, the controller has observed its latest
    generation, as many replicas are Ready and updated as desired, the current revision is the
    update revision, every pod is Ready, every PVC of its pods is Bound, the PDB exists with at
    least as many healthy pods as it requires, the HPA exists (with O(expect_hpa)), the bootstrap
    ConfigMap and the staking key exist; and, when asked, the image tag matches and the PDB allows
    a disruption.
  - It reads the kubeconfig with the collection's small REST client (tokens, client certificates,
    exec plugins, proxies), not the kubernetes Python client, whose import alone costs about a
    second per task.
  - Needs get/list on statefulsets, pods, persistentvolumeclaims, poddisruptionbudgets,
    horizontalpodautoscalers and configmaps, and get on the one Secret, in the namespace.
seealso:
  - module: kubernetes.core.k8s_info
"""

EXAMPLES = r"""
- name: Check that the region's Super-Node workload is healthy (deploy.yml verify step)
  icn.super_node.region_health:
    kubeconfig: "{{ kubeconfig }}"
    context: "{{ kube_context }}"
    regions: ["{{ inventory_hostname }}"]
    wait: true
    wait_timeout: 600
  timeout: 660

- name: Gate before upgrading a region - healthy and able to lose a pod
  icn.super_node.region_health:
    kubeconfig: "{{ kubeconfig }}"
    context: "{{ kube_context }}"
    regions: ["{{ inventory_hostname }}"]
    require_disruption_allowed: true
  timeout: 60

- name: Gate after the upgrade - every pod on the new tag and Ready
  icn.super_node.region_health:
    kubeconfig: "{{ kubeconfig }}"
    context: "{{ kube_context }}"
    regions: ["{{ inventory_hostname }}"]
    expect_image_tag: "{{ super_node_image_tag }}"
    wait: true
    wait_timeout: 900
  timeout: 960

- name: Read the verdict of every region of a single-cluster lab without failing
  icn.super_node.region_health:
    context: icn-single
    regions: [na-west, na-east, eu-west, eu-east, apac, latam, mena]
    fail_on_unhealthy: false
  register: __verify_health

- name: Hand the counts to the run summary
  ansible.builtin.set_stats:
    per_host: true
    data:
      super_node_summary:
        replicas: "{{ r.statefulset.ready }}/{{ r.statefulset.desired }}"
        pvcs: "{{ r.pvcs.bound }}/{{ r.pvcs.total }}"
        image: "{{ r.image_tag }}"
  vars:
    r: "{{ __verify_health.regions[inventory_hostname] }}"
"""

RETURN = r"""
healthy:
  description: Whether every region is healthy.
  returned: success
  type: bool
  sample: false
problems:
  description: Every problem found, each prefixed by its region.
  returned: success
  type: list
  elements: str
  sample:
    - "eu-west: StatefulSet icn-super-node-eu-west: 1/2 replicas Ready"
    - "eu-west: pod icn-super-node-eu-west-1 (v1.1.0-broken) is not Ready: ReadinessProbeFailed"
    - "eu-west: PDB icn-super-node-eu-west allows 0 disruptions"
elapsed:
  description: Seconds the check took, waiting included.
  returned: success
  type: float
  sample: 0.42
regions:
  description: The report of each region, by region name.
  returned: success
  type: dict
  contains:
    healthy:
      description: Whether this region is healthy.
      type: bool
    problems:
      description: Short sentences, each naming the object and what is wrong.
      type: list
      elements: str
      sample: ["pod icn-super-node-eu-west-1 runs v1.0.0, expected v1.1.0"]
    statefulset:
      description: >-
        The StatefulSet. Counts and revisions are null when it does not exist. V(desired) is
        C(spec.replicas), or with an HPA the larger of that and the HPA's C(minReplicas).
        V(rollout_complete) says the controller has observed the latest generation and every one of
        its C(spec.replicas) pods is updated and Ready on the update revision.
      type: dict
      sample:
        exists: true
        desired: 2
        replicas: 2
        ready: 2
        updated: 2
        available: 2
        current_revision: icn-super-node-eu-west-6d5f8b7c9
        update_revision: icn-super-node-eu-west-6d5f8b7c9
        generation: 3
        observed_generation: 3
        rollout_complete: true
    image:
      description: Image of the pod template's first container; null without a StatefulSet.
      type: str
      sample: registry.example/icn/super-node:v1.1.0
    image_tag:
      description: Tag of RV(regions.image).
      type: str
      sample: v1.1.0
    pods:
      description: The region's pods by ordinal; V(revision) is their C(controller-revision-hash).
      type: list
      elements: dict
      sample:
        - name: icn-super-node-eu-west-0
          node: eu-west-node-3
          ready: true
          revision: icn-super-node-eu-west-6d5f8b7c9
          image: registry.example/icn/super-node:v1.1.0
    pvcs:
      description: >-
        The PVCs made from the StatefulSet's claim templates (retained ones of removed ordinals
        included): how many, how many Bound, and their names.
      type: dict
      sample: {total: 2, bound: 2, names: [data-icn-super-node-eu-west-0, data-icn-super-node-eu-west-1]}
    pdb:
      description: The PodDisruptionBudget; its fields are null when it does not exist.
      type: dict
      sample: {exists: true, min_available: 1, current_healthy: 2, desired_healthy: 1, disruptions_allowed: 1}
    hpa:
      description: The HorizontalPodAutoscaler; its fields are null when it does not exist.
      type: dict
      sample: {exists: true, min: 2, max: 8, current: 2, desired: 2}
    configmap:
      description: Whether the bootstrap ConfigMap C(icn-super-node-<region>-bootstrap) exists.
      type: bool
    secret_key:
      description: Whether the Secret holds the key C(<region>-staking-key). Never the value.
      type: bool
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.region_health import (
    ARGUMENT_SPEC,
    RegionHealthError,
    check_clusters,
    check_region_health,
)
from ansible_collections.icn.super_node.plugins.module_utils.kube import describe_context


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_one_of=[("regions", "clusters")],
                           # kubeconfig and context may come with clusters from a play's
                           # module_defaults (group cluster): each cluster names its own instead.
                           mutually_exclusive=[("clusters", "regions")])

    params = module.params
    if params["clusters"]:
        where = f"{len(params['clusters'])} cluster(s)"
    else:
        where = describe_context(params["context"])
    try:
        result = check_clusters(params) if params["clusters"] else check_region_health(params)
    except RegionHealthError as err:
        module.fail_json(msg=f"{where}: {err}", changed=False)

    if params["fail_on_unhealthy"] and not result["healthy"]:
        waited = f" after waiting up to {params['wait_timeout']:g}s" if params["wait"] else ""
        if params["hold_seconds"]:
            waited += f"{' or' if params['wait'] else ''} within the {params['hold_seconds']:g}s hold"
        module.fail_json(msg=f"{where}: not healthy{waited}: " + "; ".join(result["problems"]),
                         changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
