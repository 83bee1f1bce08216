# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters over the plans of the super_node role (helm_release results with plan=true)."""
from __future__ import annotations

DOCUMENTATION = r"""
name: describe_change
short_description: One line saying what a region's planned release change is
description:
  - From a helm_release result with C(changes) (the super_node role's C(super_node_plan)), or an item
    of M(icn.super_node.restarting_regions), says what changes - chart version from and to, image
    tag from and to, the changed value paths, the workloads whose pods are replaced - or V(no change).
  - Only value paths are named, never a value.
options:
  _input:
    description: A plan, or a C({region, plan}) item.
    type: dict
    required: true
"""

EXAMPLES = r"""
msg: "{{ inventory_hostname }}: {{ super_node_plan | icn.super_node.describe_change }}"
"""

RETURN = r"""
_value:
  description: The change in one line.
  type: str
"""


def change_parts(changes: dict | None) -> list[str]:
    changes = changes or {}
    parts = []
    if changes.get("chart"):
        parts.append(f"chart {changes['chart']['from'] or 'none'} -> {changes['chart']['to']}")
    if changes.get("image_tag"):
        parts.append(f"image {changes['image_tag']['from'] or 'none'} -> {changes['image_tag']['to']}")
    if changes.get("values"):
        parts.append("values " + ", ".join(changes["values"]))
    if changes.get("restarts"):
        parts.append("restarts " + ", ".join(changes["restarts"]))
    elif changes.get("restarts") is None and changes.get("values") and changes.get("rendered") is not False:
        parts.append("restarts unknown")
    return parts


def describe_change(plan: dict) -> str:
    """'eu-west: image v1.0.0 -> v1.1.0; values image.tag; restarts StatefulSet/...'."""
    prefix = f"{plan['region']}: " if "region" in plan else ""
    plan = plan.get("plan", plan)
    if not plan.get("changed"):
        return prefix + "no change"
    if plan.get("previous_revision") is None:
        return prefix + "new release"
    return prefix + ("; ".join(change_parts(plan.get("changes"))) or "; ".join(plan.get("reasons") or []))


def change_columns(plan: dict) -> dict:
    """The summary's columns of a region's change: chart, image, values, pods."""
    changes = plan.get("changes") or {}
    chart, image = changes.get("chart"), changes.get("image_tag")
    restarts = changes.get("restarts")
    return {
        "chart": f"{chart['from'] or 'none'} -> {chart['to']}" if chart else "-",
        "image": f"{image['from'] or 'none'} -> {image['to']}" if image else "-",
        "values": ",".join(changes.get("values") or []) or "-",
        "pods": ("new" if plan.get("changed") and plan.get("previous_revision") is None
                 else "replaced" if restarts else "kept" if restarts is not None
                 else "not rendered" if changes.get("rendered") is False else "unknown"),
    }


def restarting_regions(plans: list, hosts: list) -> list[dict]:
    """The regions, of these plans (one per host, in the same order), whose release exists and
    whose change replaces pods (a pod template changes, or cannot be told): [{region, plan}]."""
    out = []
    for host, plan in zip(hosts, plans):
        changes = (plan or {}).get("changes") or {}
        if (plan or {}).get("changed") and plan.get("previous_revision") is not None \
                and (changes.get("restarts") is None or changes.get("restarts")):
            out.append({"region": host, "plan": plan})
    return out


def changing_regions(plans: list, hosts: list) -> list[str]:
    """The hosts, of these, whose plan changes their release."""
    return [host for host, plan in zip(hosts, plans) if (plan or {}).get("changed")]


def pending_regions(plans: list, hosts: list) -> list[str]:
    """The hosts, of these, whose release matches but whose deployed revision still awaits the metric
    analysis' verdict (helm_release's analysis_verdict: its soak was cut short)."""
    return [host for host, plan in zip(hosts, plans)
            if not (plan or {}).get("changed") and ((plan or {}).get("analysis_verdict") or {}).get("verdict") == "pending"]


def analysis_column(result: dict) -> str:
    """The summary's analysis column, from an icn.super_node.rollout_analysis result (or a skipped task)."""
    if not result or result.get("skipped") and "checks" not in result:
        return "-"
    if result.get("stopped"):
        return "stopped: Prometheus unreadable"
    if result.get("skipped"):
        return "unjudged: Prometheus unreadable (on_error=pass)"
    checks = result.get("checks") or []
    if result.get("failed"):
        bad = [c["name"] for c in checks if c["samples"] and not c["samples"][-1]["passed"]]
        return "failed: " + (", ".join(bad) if bad else "alert firing" if result.get("alerts_firing") else "timeout")
    if checks and all("samples" in c and c["passed"] for c in checks):
        return "passed %d checks (%d samples)" % (len(checks), sum(len(c["samples"]) for c in checks))
    return "%d checks" % len(checks)


def describe_check(check: dict) -> str:
    """'bandwidth-per-pod: <query> > 0.8 * baseline (baseline: peers na-east, eu-west)'."""
    peers = check.get("peer_regions") or []
    base = "" if check.get("baseline") in (None, "none") else (
        " (baseline: median of %s)" % ", ".join(peers) if peers else
        " (baseline: the region itself before its upgrade, no peer left)")
    return "%s: %s %s%s; %d samples" % (check["name"], check["query"], check["condition"], base,
                                       check.get("samples_needed", 0))


class FilterModule(object):
    def filters(self):
        return {"describe_change": describe_change, "restarting_regions": restarting_regions,
                "change_columns": change_columns,
                "changing_regions": changing_regions, "pending_regions": pending_regions,
                "analysis_column": analysis_column,
                "describe_check": describe_check}
