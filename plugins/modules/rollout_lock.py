#!/usr/bin/python
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: rollout_lock
short_description: Take or give back the fleet's rollout lock, a Lease in every cluster of the run
version_added: "0.2.0"
description:
  - Takes the C(coordination.k8s.io/v1) Lease O(name) in O(namespace) of every cluster in
    O(clusters), all or none. If a live run holds one of them, the ones already taken are given back
    and the task fails, naming the holder (user, host, pid, playbook, target) and when it started.
  - A Lease whose holder stopped renewing it for longer than its duration (a killed controller, a
    lost laptop) is taken over with a warning; O(break_lock) takes a held one at once.
  - Once taken, a detached process renews the Leases every third of O(duration) for as long as the
    process running the playbook (O(owner_pid)) lives; when that process ends, for whatever reason,
    it gives them back. O(state=released) gives them back at once.
  - In check mode nothing is taken or given back, and nothing is read.
author:
  - ICN infrastructure team
options:
  state:
    description: Take the lock (V(acquired)) or give it back (V(released)).
    type: str
    choices: [acquired, released]
    default: acquired
  clusters:
    description: The clusters of the run, one entry each (several regions of one cluster share its Lease).
    type: list
    elements: dict
    required: true
    suboptions:
      kubeconfig:
        description: Path of the kubeconfig file.
        type: path
      context:
        description: The kubeconfig context.
        type: str
      regions:
        description: The regions of that cluster, for messages.
        type: list
        elements: str
        default: []
  namespace:
    description: Namespace of the Lease.
    type: str
    default: kube-system
  name:
    description: Name of the Lease.
    type: str
    default: icn-super-node-rollout
  duration:
    description: Seconds the Lease stays valid after its last renewal.
    type: int
    default: 60
  break_lock:
    description: Take the Lease even from a holder that is still renewing it.
    type: bool
    default: false
  playbook:
    description: What the holder runs, shown to a run that is refused.
    type: str
    default: ansible-playbook
  target:
    description: What the run rolls out, shown to a run that is refused.
    type: str
    default: ""
  owner_pid:
    description:
      - The process whose life the lock follows. Set by the module's action to the process that runs
        the playbook.
    type: int
  request_timeout:
    description: Seconds one API call may take.
    type: float
    default: 10
attributes:
  check_mode:
    support: full
"""

EXAMPLES = r"""
- name: Take the fleet's rollout lock
  icn.super_node.rollout_lock:
    clusters: "{{ ansible_play_hosts_all | map('extract', hostvars) | icn.super_node.region_targets(ansible_play_hosts_all) }}"
    playbook: upgrade.yml
    target: super_node_image_tag=v1.1.0
  run_once: true
"""

RETURN = r"""
identity:
  description: The holder identity the run's Leases carry (user@host:pid).
  type: str
  returned: always
  sample: alice@laptop:41234
taken_over:
  description: Leases taken over from a holder that stopped renewing, or broken (also warned).
  type: list
  elements: str
  returned: always
renewer_pid:
  description: Pid of the process that renews the Leases (state=acquired).
  type: int
  returned: when taken
"""

import getpass
import os
import socket
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.icn.super_node.plugins.module_utils.kube import KubeError
from ansible_collections.icn.super_node.plugins.module_utils.lease import (
    ClusterLease, LockHeld, in_parallel, start_renewer)


def region_names(cluster: dict) -> str:
    return ", ".join(cluster.get("regions") or []) or cluster.get("context") or "the current context"


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", choices=["acquired", "released"], default="acquired"),
            clusters=dict(type="list", elements="dict", required=True, options=dict(
                kubeconfig=dict(type="path"), context=dict(type="str"),
                regions=dict(type="list", elements="str", default=[]))),
            namespace=dict(type="str", default="kube-system"),
            name=dict(type="str", default="icn-super-node-rollout"),
            duration=dict(type="int", default=60),
            break_lock=dict(type="bool", default=False),
            playbook=dict(type="str", default="ansible-playbook"),
            target=dict(type="str", default=""),
            owner_pid=dict(type="int"),
            request_timeout=dict(type="float", default=10.0),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["duration"] < 5:
        module.fail_json(msg=f"duration must be at least 5 seconds, not {params['duration']}")
    owner = params["owner_pid"] or os.getppid()
    identity = f"{getpass.getuser()}@{socket.gethostname()}:{owner}"
    result = dict(changed=False, identity=identity, taken_over=[])
    if module.check_mode:
        module.exit_json(**result)
    leases = [ClusterLease(c, params["namespace"], params["name"], params["request_timeout"])
              for c in params["clusters"]]

    if params["state"] == "released":
        outcomes = in_parallel(lambda lease: lease.release(identity), leases)
        errors = [f"{region_names(c)}: {o}" for c, o in zip(params["clusters"], outcomes)
                  if isinstance(o, Exception)]
        for pid in {o for o in outcomes if isinstance(o, str) and o.isdigit()}:
            try:
                os.kill(int(pid), 15)  # the renewer of this run: nothing left to renew
            except OSError:
                pass
        if errors:
            module.fail_json(msg="could not give back the rollout lock (it expires "
                                 f"{params['duration']}s after its last renewal): " + "; ".join(errors),
                             **result)
        result["changed"] = any(o is not None for o in outcomes)
        module.exit_json(**result)

    holder = dict(identity=identity, user=getpass.getuser(), host=socket.gethostname(), pid=owner,
                  playbook=params["playbook"], target=params["target"],
                  started=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    outcomes = in_parallel(lambda lease: lease.acquire(identity, holder, params["duration"],
                                                       params["break_lock"]), leases)
    failures = [(c, o) for c, o in zip(params["clusters"], outcomes) if isinstance(o, Exception)]
    if failures:
        in_parallel(lambda lease: lease.release(identity),
                    [lease for lease, o in zip(leases, outcomes) if not isinstance(o, Exception)])
        held = [f"region {region_names(c)} ({o})" for c, o in failures if isinstance(o, LockHeld)]
        other = [f"region {region_names(c)}: {o}" for c, o in failures if not isinstance(o, LockHeld)]
        module.fail_json(msg="Nothing was changed: " + "; ".join(
            (["the rollout lock is held: " + "; ".join(held)] if held else [])
            + (["the rollout lock could not be taken: " + "; ".join(other)] if other else [])),
            **result)
    try:
        result["renewer_pid"] = start_renewer(dict(
            clusters=params["clusters"], namespace=params["namespace"], name=params["name"],
            identity=identity, owner_pid=owner, duration=params["duration"],
            request_timeout=params["request_timeout"]))
        # Record the renewer on the Leases, so that releasing stops it (and tests can find it).
        in_parallel(lambda lease: lease.acquire(identity, holder, params["duration"], False,
                                                renewer_pid=result["renewer_pid"]), leases)
    except KubeError as err:
        in_parallel(lambda lease: lease.release(identity), leases)
        module.fail_json(msg=f"Nothing was changed: {err}", **result)
    result["taken_over"] = [f"region {region_names(c)}: {o['warning']}"
                          for c, o in zip(params["clusters"], outcomes) if o.get("warning")]
    for warning in result["taken_over"]:
        module.warn(warning)
    result["changed"] = True
    module.exit_json(**result)


if __name__ == "__main__":
    main()
