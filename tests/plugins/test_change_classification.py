"""What a change does, as upgrade.yml and deploy.yml plan it (#11): which value paths replace the
Super-Nodes' pods, computed from real renders of the chart (helm template, no cluster); the value
paths named, never a value; whether a release could be rolled back; the one-line descriptions
the summary and the messages use; and the lock's decisions over a Lease."""
from __future__ import annotations

import json
import sys

import pytest

from chartkit import template
from labkit import ROOT

sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.icn.super_node.plugins.filter.rollout import (  # noqa: E402
    change_columns, changing_regions, describe_change, restarting_regions)
from ansible_collections.icn.super_node.plugins.module_utils.helm_release import (  # noqa: E402
    changed_value_paths, classify, rollback_problems)
from ansible_collections.icn.super_node.plugins.module_utils.lease import decide, describe  # noqa: E402

REGION = "eu-west"
STS = f"StatefulSet/icn-super-node-{REGION}"
BASE = {"global": {"regions": [REGION], "environment": "lab"},
        "image": {"tag": "v1.0.0"},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "autoscaling": {"minReplicas": 2, "maxReplicas": 8},
        "p2p": {"bootstrapNodes": ["/dns4/boot1.icn.network/tcp/9000/p2p/"
                                   "12D3KooWSmcJzTUMH1JT5iTCSEhtvSM4bg3hiCB9jDdVmStx8XUu"]},
        "podDisruptionBudget": {"minAvailable": 1}}


def merged(base: dict, change: dict) -> dict:
    out = json.loads(json.dumps(base))
    for path, value in change.items():
        node = out
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def rendered(values: dict, tmp_path) -> str:
    path = tmp_path / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.json"
    path.write_text(json.dumps(values))
    proc = template("-f", str(path), "--is-upgrade", release=f"icn-super-node-{REGION}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def release(values: dict, tmp_path, revision: int = 3, status: str = "deployed") -> dict:
    return {"revision": revision, "status": status, "manifest": rendered(values, tmp_path), "values": values}


@pytest.mark.parametrize("change, restarts", [
    ({"image.tag": "v1.1.0"}, True),
    ({"resources.requests.memory": "192Mi"}, True),
    ({"p2p.bootstrapNodes": ["/dns4/boot9.icn.network/tcp/9000/p2p/"
                             "12D3KooWPJKUjGNVEZd3bdKQFnnQqfmSFj5bf2bKxVQBViafU9cA"]}, True),  # the checksum
    ({"autoscaling.maxReplicas": 9}, False),
    ({"autoscaling.minReplicas": 3}, False),
    ({"podDisruptionBudget.minAvailable": 0}, False),
])
def test_which_value_paths_replace_the_pods(tmp_path, change, restarts):
    before = release(BASE, tmp_path)
    after_values = merged(BASE, change)
    desired = {"config": after_values, "manifest": rendered(after_values, tmp_path)}
    changes = classify(before, desired, "icn-super-node-0.1.0", "icn-super-node-0.1.0")
    assert changes["values"] == list(change), "exactly the changed paths"
    assert changes["objects"], "some object changes"
    assert changes["restarts"] == ([STS] if restarts else [])
    assert changes["chart"] is None
    if "image.tag" in change:
        assert changes["image_tag"] == {"from": "v1.0.0", "to": "v1.1.0"}
    else:
        assert changes["image_tag"] is None


def test_a_new_chart_version_and_a_new_release(tmp_path):
    before = release(BASE, tmp_path)
    desired = {"config": BASE, "manifest": before["manifest"]}
    changes = classify(before, desired, "icn-super-node-0.1.0", "icn-super-node-0.2.0")
    assert changes["chart"] == {"from": "icn-super-node-0.1.0", "to": "icn-super-node-0.2.0"}
    assert changes["restarts"] == [] and changes["values"] == []
    fresh = classify(None, desired, None, "icn-super-node-0.2.0")
    assert fresh["restarts"] == [], "a new region's pods are new, not replaced"
    assert fresh["image_tag"] == {"from": None, "to": "v1.0.0"}


def test_value_paths_name_the_path_never_the_value():
    before = {"staking": {"key": "s3cret-old"}, "a": [1, 2], "b": {"c": 1}}
    after = {"staking": {"key": "s3cret-new"}, "a": [1, 3], "d": 2, "b": {"c": 1}}
    paths = changed_value_paths(before, after)
    assert paths == ["a", "d", "staking.key"]
    assert "s3cret" not in json.dumps(paths)


def test_what_stops_a_rollback(tmp_path):
    current = release(BASE, tmp_path, revision=4)
    history = [{"revision": 3}, {"revision": 4}]
    served = ["apps/v1/StatefulSet", "v1/Service", "v1/ConfigMap", "policy/v1/PodDisruptionBudget",
              "autoscaling/v2/HorizontalPodAutoscaler", "networking.k8s.io/v1/NetworkPolicy",
              "v1/ServiceAccount"]
    assert rollback_problems(current, history, served) == []
    assert rollback_problems(current, history, None) == [], "APIs not readable: only the history is checked"
    assert rollback_problems(None, [], served) == [
        "the release is not installed: a new region has nothing to roll back to"]
    failed = dict(current, status="failed")
    assert rollback_problems(failed, history, served) == ["revision 4 is failed, not deployed"]
    assert rollback_problems(current, [{"revision": 3}], served) == ["revision 4 is not in the release's history"]
    gone = rollback_problems(current, history, [a for a in served if "PodDisruptionBudget" not in a])
    assert gone == ["the cluster no longer serves policy/v1/PodDisruptionBudget, which revision 4 holds"]


PLAN = {"changed": True, "previous_revision": 3, "revision": 3, "reasons": ["values differ"],
        "changes": {"chart": {"from": "icn-super-node-0.1.0", "to": "icn-super-node-0.2.0"},
                    "image_tag": {"from": "v1.0.0", "to": "v1.1.0"},
                    "values": ["image.tag", "resources.requests.memory"], "objects": [STS], "restarts": [STS]}}
UNCHANGED = {"changed": False, "previous_revision": 3, "revision": 3,
             "changes": {"chart": None, "image_tag": None, "values": [], "objects": [], "restarts": []}}
HPA_ONLY = {"changed": True, "previous_revision": 3, "revision": 3,
            "changes": {"chart": None, "image_tag": None, "values": ["autoscaling.maxReplicas"],
                        "objects": ["HorizontalPodAutoscaler/x"], "restarts": []}}
NEW = {"changed": True, "previous_revision": None, "revision": None,
       "changes": {"chart": {"from": None, "to": "icn-super-node-0.1.0"}, "image_tag": {"from": None, "to": "v1"},
                   "values": ["global"], "objects": [STS], "restarts": []}}


def test_descriptions_and_summary_columns():
    assert describe_change(PLAN) == ("chart icn-super-node-0.1.0 -> icn-super-node-0.2.0; image v1.0.0 -> v1.1.0; "
                                     f"values image.tag, resources.requests.memory; restarts {STS}")
    assert describe_change({"region": "eu-west", "plan": UNCHANGED}) == "eu-west: no change"
    assert describe_change(NEW) == "new release"
    assert change_columns(PLAN) == {"chart": "icn-super-node-0.1.0 -> icn-super-node-0.2.0",
                                    "image": "v1.0.0 -> v1.1.0",
                                    "values": "image.tag,resources.requests.memory", "pods": "replaced"}
    assert change_columns(UNCHANGED) == {"chart": "-", "image": "-", "values": "-", "pods": "kept"}
    assert change_columns(HPA_ONLY)["pods"] == "kept"
    assert change_columns(NEW)["pods"] == "new"


def test_which_regions_deploy_would_restart_together():
    hosts = ["a", "b", "c", "d"]
    plans = [PLAN, UNCHANGED, HPA_ONLY, NEW]
    assert [r["region"] for r in restarting_regions(plans, hosts)] == ["a"], \
        "only a running region whose pods are replaced counts (not unchanged, HPA-only or new ones)"
    unknown = dict(PLAN, changes=dict(PLAN["changes"], objects=None, restarts=None))
    assert [r["region"] for r in restarting_regions([unknown], ["x"])] == ["x"], "unknown counts as a restart"
    assert changing_regions(plans, hosts) == ["a", "c", "d"]


def lease(identity, renewed, duration=60, host="laptop", pid=42):
    return {"metadata": {"annotations": {"icn.network/rollout-holder": json.dumps(
                {"identity": identity, "host": host, "pid": pid, "playbook": "upgrade.yml",
                 "target": "image v1.1.0", "started": "2026-12-01T10:00:00Z"})}},
            "spec": {"holderIdentity": identity, "renewTime": renewed, "leaseDurationSeconds": duration}}


NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
STAMP = "2027-01-15T08:00:00.000000Z"


def test_the_locks_decisions():
    me = "me@ctl:1"
    assert decide(None, me, False, NOW) == ("create", None)
    assert decide(lease(me, STAMP), me, False, NOW + 5) == ("renew", None)
    held = lease("alice@laptop:42", STAMP)
    action, why = decide(held, me, False, NOW + 10)
    assert action == "refuse"
    assert "alice@laptop:42 running upgrade.yml (image v1.1.0) since 2026-12-01T10:00:00Z" in why
    assert "rollout_break_lock=true" in why
    action, why = decide(held, me, False, NOW + 61)
    assert action == "take" and "stopped renewing it (last renewal 61s ago, lease 60s)" in why
    action, why = decide(held, me, True, NOW + 1)
    assert action == "take" and why.startswith("broke the rollout lock held by alice@laptop:42")
    # A holder on this controller whose process has ended is taken over at once; a live one is not.
    assert decide(held, me, False, NOW + 1, host="laptop", alive=lambda pid: False)[0] == "take"
    assert decide(held, me, False, NOW + 1, host="laptop", alive=lambda pid: True)[0] == "refuse"
    assert decide(held, me, False, NOW + 1, host="other", alive=lambda pid: False)[0] == "refuse"
    assert describe({"identity": "x@y:1"}) == "x@y:1"


def test_a_plan_made_without_a_render_says_what_it_knows_and_no_more():
    """upgrade.yml plans a real rollout from the values and the chart versions only (the upgrade
    reports what it changed): no restart is guessed, and the summary does not claim one."""
    unrendered = {"changed": True, "previous_revision": 3, "revision": 3,
                  "changes": {"chart": None, "image_tag": None, "values": ["resources.requests.memory"],
                              "objects": None, "restarts": None, "rendered": False}}
    assert describe_change(unrendered) == "values resources.requests.memory"
    assert change_columns(unrendered) == {"chart": "-", "image": "-", "values": "resources.requests.memory",
                                          "pods": "not rendered"}
    # deploy.yml's guard never sees such a plan (it renders), but if it did, it would count it as a restart
    assert [r["region"] for r in restarting_regions([unrendered], ["x"])] == ["x"]
