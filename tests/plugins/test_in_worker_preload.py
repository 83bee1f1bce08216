"""The playbook's process imports the collection's modules once (plugins/plugin_utils/in_worker.py),
for the workers it forks; a worker imports nothing more. Run in a fresh interpreter, as
ansible-playbook's process is."""
from __future__ import annotations

import json
import subprocess
import sys

from labkit import ROOT

MODULES = sorted(p.stem for p in (ROOT / "plugins/modules").glob("*.py") if not p.stem.startswith("_"))

PROBE = r"""
import gc, json, multiprocessing, sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.icn.super_node.plugins.plugin_utils import in_worker
from ansible_collections.icn.super_node.plugins.action import validate_inventory  # noqa: F401

def child(queue):
    queue.put([in_worker.preload_modules(), in_worker.freeze_for_workers()])

ctx = multiprocessing.get_context("fork")
queue = ctx.Queue()
worker = ctx.Process(target=child, args=(queue,))
worker.start()
in_child, frozen_in_child = queue.get(timeout=60)
worker.join()
print(json.dumps({
    "preloaded": in_worker.PRELOADED,
    "imported": sorted(name.rsplit(".", 1)[1] for name in sys.modules
                       if name.startswith(in_worker.MODULES_PACKAGE + ".")),
    "in_child": in_child,
    "frozen": in_worker.FROZEN, "frozen_objects": gc.get_freeze_count(), "frozen_in_child": frozen_in_child,
}))
"""


def test_the_playbooks_process_imports_every_module_and_a_worker_none():
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "collections")], text=True,
                         capture_output=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["preloaded"] == MODULES
    assert result["imported"] == MODULES
    assert result["in_child"] == []


def test_the_playbooks_process_freezes_what_it_holds_for_its_workers_and_a_worker_does_not():
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "collections")], text=True,
                         capture_output=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["frozen"] is True and result["frozen_objects"] > 10000, result
    assert result["frozen_in_child"] is False
