#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: validate_inventory
short_description: Check every Super-Node region of the inventory before any cluster is touched
description:
  - Runs on the controller (an action plugin) and reads, for each host of the play, the region's
    variables; reports every problem at once, each naming the region, the variable and what is allowed.
  - Region names come from the region catalogue (O(catalogue)), the storage-size and multiaddr
    patterns from the chart's values.schema.json.
  - Checks that each host's kube context exists in its kubeconfig file, but does not contact any cluster.
  - Staking keys are only checked for presence and form; their values never appear in the result.
version_added: "0.1.0"
author: ICN infrastructure team
options:
  schema:
    description: Path to the chart's values.schema.json.
    type: path
    required: true
  catalogue:
    description: Path to the region catalogue (default, C(regions.yaml) next to O(schema)).
    type: path
  hosts:
    description: Hosts to validate (default, every host of the play).
    type: list
    elements: str
  helm_binary:
    description:
      - The helm binary the roles will run. When given, it must be on the controller's PATH (or a
        path) and report at least O(min_helm_version); a problem is reported with the others.
    type: str
  min_helm_version:
    description: Oldest helm accepted with O(helm_binary).
    type: str
    default: "3.0.0"
  defaults:
    description:
      - The value of each variable read (see the notes) that a host's inventory leaves out, as the
        roles will use it; the preflight role passes the super_node role's defaults
        (its option C(preflight_super_node_defaults)).
      - Without it, a variable the inventory leaves out is reported missing.
    type: dict
    default: {}
notes:
  - "Variables read per host: super_node_region (default the host name), super_node_kube_context,
    super_node_kubeconfig, super_node_cloud, super_node_replicas, super_node_storage_size,
    super_node_bootstrap_nodes, super_node_image_tag, super_node_environment, super_node_staking_keys."
"""

EXAMPLES = r"""
- name: Validate the whole inventory once
  icn.super_node.validate_inventory:
    schema: "{{ playbook_dir }}/charts/super-node/values.schema.json"
  run_once: true
"""

RETURN = r"""
regions:
  description: The regions checked, in inventory order.
  type: list
  elements: str
  returned: always
errors:
  description: One sentence per problem.
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(schema=dict(type="path", required=True),
                                              catalogue=dict(type="path"),
                                              hosts=dict(type="list", elements="str"),
                                              helm_binary=dict(type="str"),
                                              min_helm_version=dict(type="str", default="3.0.0"),
                                              defaults=dict(type="dict", default={})))
    module.fail_json(msg="validate_inventory runs on the controller as an action plugin; "
                         "call it as icn.super_node.validate_inventory")


if __name__ == "__main__":
    main()
