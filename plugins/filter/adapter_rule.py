# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters for the monitoring role."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: adapter_config_with_rule
short_description: A prometheus-adapter config.yaml with one rule put in
description:
  - Parses a prometheus-adapter C(config.yaml), replaces the rule of C(rules) whose C(name.as) is the
    given rule's C(name.as) (keeping its place), or appends the rule, and returns the config as YAML.
    Every other rule and section is kept. Applied to its own output it returns the same text.
positional: rule
options:
  _input:
    description: The current C(config.yaml) (empty when there is none).
    type: str
    required: true
  rule:
    description: The rule, a dict with C(seriesQuery), C(resources), C(name) and C(metricsQuery).
    type: dict
    required: true
"""

EXAMPLES = r"""
config: "{{ current | icn.super_node.adapter_config_with_rule(rule) }}"
"""

RETURN = r"""
_value:
  description: The config, as YAML.
  type: str
"""

import json

import yaml

from ansible.errors import AnsibleFilterError


def adapter_config_with_rule(config, rule):
    try:
        data = yaml.safe_load(config or "") or {}
    except yaml.YAMLError as err:
        raise AnsibleFilterError(f"the adapter's config.yaml is not YAML: {err}")
    if not isinstance(data, dict) or not isinstance(data.get("rules") or [], list):
        raise AnsibleFilterError("the adapter's config.yaml is not a mapping with a list of rules")
    # Plain types (Ansible hands over tagged str subclasses, which the YAML dumper refuses).
    rule = json.loads(json.dumps(dict(rule)))
    name = (rule.get("name") or {}).get("as")
    if not name:
        raise AnsibleFilterError("the rule needs name.as, the metric it serves")
    rules = list(data.get("rules") or [])
    for i, existing in enumerate(rules):
        if isinstance(existing, dict) and (existing.get("name") or {}).get("as") == name:
            rules[i] = rule
            break
    else:
        rules.append(rule)
    data["rules"] = rules
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


class FilterModule(object):
    def filters(self):
        return {"adapter_config_with_rule": adapter_config_with_rule}
