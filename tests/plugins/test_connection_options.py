"""The connection options are said once per play: every play that runs a module of the collection's
`cluster` action group (directly or through a role) sets module_defaults for the group, and no task
repeats kubeconfig or context to such a module (roles/rollout and playbooks/upgrade_regions.yml are
being rewritten apart and are not checked yet)."""
from __future__ import annotations

import pytest
import yaml

from labkit import ROOT

CLUSTER = {f"icn.super_node.{m}" for m in
           yaml.safe_load((ROOT / "meta/runtime.yml").read_text())["action_groups"]["cluster"]}
PLAYBOOKS = sorted(p.relative_to(ROOT).as_posix() for pattern in ("*.yml", "playbooks/*.yml", "molecule/*/*.yml")
                   for p in ROOT.glob(pattern)
                   if p.name not in ("molecule.yml",) and isinstance(yaml.safe_load(p.read_text()), list))
TASK_FILES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("roles/*/tasks/*.yml"))


def tasks_of(items):
    """Every task of a list of tasks, blocks walked."""
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from tasks_of(task.get(key))


def cluster_tasks(items):
    return [(t.get("name"), t[m]) for t in tasks_of(items) for m in t if m in CLUSTER]


@pytest.mark.parametrize("path", PLAYBOOKS + TASK_FILES)
def test_no_task_repeats_the_connection_options(path):
    data = yaml.safe_load((ROOT / path).read_text()) or []
    tasks = [t for play in data for key in ("pre_tasks", "tasks", "post_tasks", "handlers")
             for t in (play.get(key) or [])] if path in PLAYBOOKS else data
    for name, args in cluster_tasks(tasks):
        assert not {"kubeconfig", "context"} & set(args or {}), (
            f"{path}: task {name!r} sets kubeconfig/context; the play's module_defaults for "
            "group/icn.super_node.cluster say them once")


def role_uses_the_cluster_group(role: str, tasks_from: str | None = None) -> bool:
    """Whether the role (or its entry point tasks_from) runs a module of the group; an entry point
    counts the task files it imports or includes."""
    tasks = ROOT / "roles" / role.removeprefix("icn.super_node.") / "tasks"
    if not role.startswith("icn.super_node."):
        return False
    if tasks_from is None:
        return any(cluster_tasks(yaml.safe_load(f.read_text())) for f in tasks.glob("*.yml"))
    items = yaml.safe_load((tasks / (tasks_from if tasks_from.endswith(".yml") else tasks_from + ".yml")).read_text()) or []
    imported = [t[k] if isinstance(t[k], str) else t[k].get("file") for t in tasks_of(items)
                for k in ("ansible.builtin.import_tasks", "ansible.builtin.include_tasks") if k in t]
    nested = [(t[k]["name"], t[k].get("tasks_from")) for t in tasks_of(items)
              for k in ("ansible.builtin.include_role", "ansible.builtin.import_role") if k in t]
    return (bool(cluster_tasks(items)) or any(role_uses_the_cluster_group(role, f) for f in imported)
            or any(role_uses_the_cluster_group(*n) for n in nested))


def play_uses_the_cluster_group(play) -> bool:
    roles = [(r if isinstance(r, str) else r.get("role") or r.get("name"), None) for r in play.get("roles") or []]
    tasks = [t for key in ("pre_tasks", "tasks", "post_tasks", "handlers") for t in play.get(key) or []]
    roles += [(t[k]["name"], t[k].get("tasks_from")) for t in tasks_of(tasks)
              for k in ("ansible.builtin.include_role", "ansible.builtin.import_role") if k in t]
    return bool(cluster_tasks(tasks)) or any(role_uses_the_cluster_group(str(r), f) for r, f in roles)


@pytest.mark.parametrize("path", PLAYBOOKS)
def test_every_play_that_reaches_a_cluster_sets_the_group_defaults(path):
    for play in yaml.safe_load((ROOT / path).read_text()):
        if "hosts" not in play or not play_uses_the_cluster_group(play):
            continue
        defaults = (play.get("module_defaults") or {}).get("group/icn.super_node.cluster") or {}
        assert {"kubeconfig", "context"} <= set(defaults), (
            f"{path}: play {play.get('name')!r} reaches a cluster without module_defaults "
            "group/icn.super_node.cluster: {kubeconfig, context}")
