# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin behind icn.super_node.validate_inventory (documented in plugins/modules)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import subprocess

from ansible.errors import AnsibleUndefinedVariable
from ansible.plugins.action import ActionBase

from ansible_collections.icn.super_node.plugins.module_utils.inventory_validation import (
    CatalogueError, Rules, staking_key_state, validate)
# Imported in the playbook's process (the first task of a play that reaches a cluster), it imports
# the collection's modules there once for all the workers forked after it.
from ansible_collections.icn.super_node.plugins.plugin_utils import in_worker  # noqa: F401 pylint: disable=unused-import

# result key -> the inventory variable it is read from
FIELDS = {
    "context": "super_node_kube_context",
    "kubeconfig": "super_node_kubeconfig",
    "cloud": "super_node_cloud",
    "replicas": "super_node_replicas",
    "storage_size": "super_node_storage_size",
    "bootstrap_nodes": "super_node_bootstrap_nodes",
    "image_tag": "super_node_image_tag",
    "environment": "super_node_environment",
}
MISSING = object()


def _read(hostvars, var):
    try:
        return hostvars[var] if var in hostvars else MISSING
    except AnsibleUndefinedVariable:
        return MISSING


def helm_problems(binary: str, minimum: str) -> list:
    """Whether the helm the roles will run is there and new enough: [] or one sentence."""
    from ansible.module_utils.compat.version import LooseVersion

    path = shutil.which(os.path.expanduser(binary))
    if path is None:
        return ["controller: helm binary %r (preflight_helm_binary) is not on the PATH; "
                "allowed: helm >= %s" % (binary, minimum)]
    try:
        proc = subprocess.run([path, "version", "--template", "{{ .Version }}"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return ["controller: %s (preflight_helm_binary) cannot run: %s" % (path, err)]
    version = proc.stdout.strip().lstrip("v")
    if proc.returncode != 0 or not version[:1].isdigit():
        return ["controller: %s version failed: %s" % (path, (proc.stderr or proc.stdout).strip()[:200])]
    if LooseVersion(version) < LooseVersion(minimum):
        return ["controller: %s is helm %s; allowed: helm >= %s (preflight_min_helm_version)"
                % (path, version, minimum)]
    return []


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("schema", "catalogue", "hosts", "helm_binary", "min_helm_version", "defaults"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        args = self._task.args
        hosts = args.get("hosts") or task_vars["ansible_play_hosts_all"]
        try:
            rules = Rules(args["schema"], args.get("catalogue"))
        except CatalogueError as err:
            result.update(failed=True, changed=False, errors=[str(err)],
                          msg="The inventory has 1 problem(s); nothing was changed in any cluster:\n  - %s" % err)
            return result
        # The values the roles use where the inventory leaves a variable out (the preflight role
        # passes the super_node role's defaults), so the values checked are the values used.
        defaults = args.get("defaults") or {}
        records = []
        for host in hosts:
            hostvars = task_vars["hostvars"][host]
            record = {"host": host}
            for key, var in FIELDS.items():
                value = _read(hostvars, var)
                if value is MISSING and var in defaults:
                    value = self._templar.copy_with_new_env(
                        available_variables=hostvars).template(defaults[var])
                record[key] = None if value is MISSING else value
            region = _read(hostvars, "super_node_region")
            record["region"] = host if region is MISSING else region
            keys = _read(hostvars, "super_node_staking_keys")
            # Only whether the key is there and well formed leaves this line, never the key.
            record["staking_key_state"] = staking_key_state(None if keys is MISSING else keys,
                                                            record["region"])
            records.append(record)
        errors = validate(records, rules)
        if args.get("helm_binary"):
            errors += helm_problems(args["helm_binary"], args.get("min_helm_version") or "3.0.0")
        result["changed"] = False
        result["regions"] = [r["region"] for r in records]
        result["errors"] = errors
        if errors:
            result["failed"] = True
            result["msg"] = ("The inventory has %d problem(s); nothing was changed in any cluster:\n  - %s"
                             % (len(errors), "\n  - ".join(errors)))
        else:
            result["msg"] = "%d region(s) valid: %s" % (len(records), ", ".join(result["regions"]))
        return result
