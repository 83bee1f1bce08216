"""meta/runtime.yml kept honest: the action group `cluster` holds exactly the modules that take the
connection options (kubeconfig, context), the in-worker routing names every module that runs in the
worker and only modules that exist, and requires_ansible is what the playbooks check."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from labkit import ROOT

RUNTIME = yaml.safe_load((ROOT / "meta/runtime.yml").read_text())
MODULES = {p.stem: p for p in (ROOT / "plugins/modules").glob("*.py") if p.stem != "__init__"}
ACTIONS = {p.stem for p in (ROOT / "plugins/action").glob("*.py")}


def documented_options(path: Path) -> set[str]:
    """The options of a module's DOCUMENTATION, with those of its doc fragments."""
    tree = ast.parse(path.read_text())
    doc = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
               and getattr(node.targets[0], "id", None) == "DOCUMENTATION")
    doc = yaml.safe_load(doc)
    options = set(doc.get("options") or {})
    for fragment in doc.get("extends_documentation_fragment") or []:
        name = fragment.removeprefix("icn.super_node.")
        source = (ROOT / "plugins/doc_fragments" / f"{name}.py").read_text()
        text = re.search(r'DOCUMENTATION = r"""(.*?)"""', source, re.S).group(1)
        options |= set(yaml.safe_load(text).get("options") or {})
    return options


def test_the_cluster_group_holds_every_module_that_takes_the_connection_options():
    group = RUNTIME["action_groups"]["cluster"]
    connected = sorted(name for name, path in MODULES.items()
                       if {"kubeconfig", "context"} <= documented_options(path))
    assert sorted(group) == connected, "meta/runtime.yml action_groups.cluster must list exactly these"
    assert len(group) == len(set(group))


def test_every_action_group_entry_is_a_module():
    for name, entries in RUNTIME["action_groups"].items():
        for entry in entries:
            assert isinstance(entry, str) and entry in MODULES, f"group {name}: {entry} is not a module"


def test_modules_routed_to_an_action_plugin_exist_and_so_does_the_plugin():
    routing = RUNTIME["plugin_routing"]["modules"]
    for module, route in routing.items():
        assert module in MODULES, f"plugin_routing names {module}, which is not a module"
        action = route["action_plugin"]
        assert action.startswith("icn.super_node."), action
        assert action.removeprefix("icn.super_node.") in ACTIONS, f"{module}: no action plugin {action}"
    # a module is routed, or has its own action plugin of the same name (validate_inventory), not both
    assert not set(routing) & ACTIONS


def test_the_in_worker_modules_are_the_controller_side_modules():
    """Every module that reaches a cluster runs in the worker, and rollout_analysis, which reaches
    Prometheus from the controller (no cluster options, so not in the group)."""
    routed = {m for m, r in RUNTIME["plugin_routing"]["modules"].items()
              if r["action_plugin"] == "icn.super_node.in_worker"}
    assert routed == set(RUNTIME["action_groups"]["cluster"]) | {"rollout_analysis"}


def test_requires_ansible_is_what_the_version_playbook_checks():
    floor = re.fullmatch(r">=(\d+\.\d+\.\d+)", RUNTIME["requires_ansible"]).group(1)
    play = yaml.safe_load((ROOT / "playbooks/ansible_version.yml").read_text())[0]
    assert play["vars"]["__version_min_ansible_core"] == floor
