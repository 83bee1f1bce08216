# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
name: installed_version
author: ICN infrastructure team
version_added: "0.1.0"
short_description: The version of an Ansible collection or a Python package on the controller
description:
  - For each term, the version installed where this Ansible run finds it, or an empty string when it
    is not installed.
  - A collection is found as the run resolves it (collections_path, then the Python path) and its
    version read from its MANIFEST.json (an installed collection) or galaxy.yml (a source checkout).
  - A Python package is found in the controller's Python, the one the inventories run modules with.
options:
  _terms:
    description: Collection names (C(kubernetes.core)) or, with O(type=python), Python distribution names.
    required: true
    type: list
    elements: str
  type:
    description: What the terms name.
    type: str
    choices: [collection, python]
    default: collection
"""

EXAMPLES = r"""
- name: kubernetes.core is recent enough
  ansible.builtin.assert:
    that: lookup('icn.super_node.installed_version', 'kubernetes.core') is version('6.0.0', '>=')
"""

RETURN = r"""
_raw:
  description: One version per term; empty when not installed.
  type: list
  elements: str
"""

import importlib
import json
import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase


def collection_version(name: str) -> str:
    try:
        package = importlib.import_module("ansible_collections." + name)
    except ImportError:
        return ""
    for path in package.__path__:
        manifest = os.path.join(path, "MANIFEST.json")
        if os.path.isfile(manifest):
            with open(manifest) as handle:
                return str(json.load(handle)["collection_info"]["version"])
        galaxy = os.path.join(path, "galaxy.yml")
        if os.path.isfile(galaxy):
            import yaml  # ships with ansible-core

            with open(galaxy) as handle:
                return str((yaml.safe_load(handle) or {}).get("version") or "")
    return ""


def python_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        kind = self.get_option("type")
        if kind not in ("collection", "python"):
            raise AnsibleLookupError("type must be collection or python, not %r" % (kind,))
        read = collection_version if kind == "collection" else python_version
        return [read(str(term)) for term in terms]
