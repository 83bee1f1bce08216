"""Runs the project's playbooks as an operator would, and reads what they report."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labkit import LAB_DIR, ROOT

RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                   r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.MULTILINE)


@dataclass
class Run:
    rc: int
    output: str
    seconds: float
    recap: dict = field(default_factory=dict)
    summary: dict | None = None

    def changed(self, hosts=None) -> int:
        return sum(v["changed"] for h, v in self.recap.items() if hosts is None or h in hosts)

    def failed_hosts(self) -> list[str]:
        return [h for h, v in self.recap.items() if v["failed"] or v["unreachable"]]


def module_command(module: str, args: dict, *extra: str) -> list[str]:
    """`ansible localhost -m MODULE -a ARGS`: one module run as Ansible runs it."""
    # No -a for no arguments: ansible takes '{}' for raw parameters.
    return [str(Path(sys.executable).with_name("ansible")), "localhost", "-m", module,
            *(["-a", json.dumps(args)] if args else []), *extra]


def module_env(json_output: bool = True) -> dict:
    """ansible_env, with the json stdout callback when the result is to be read back."""
    return ansible_env({"ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"}
                       if json_output else None)


def module_result(proc: subprocess.CompletedProcess) -> dict:
    """The module's result, read from the json stdout callback of a module_command run."""
    out = proc.stdout
    # Other enabled callbacks (profile_tasks) print around the json callback's document.
    start = 0 if out.startswith("{") else out.index("\n{\n") + 1
    document = json.JSONDecoder().raw_decode(out, start)[0]
    result = document["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert "Traceback" not in json.dumps(result), f"the module raised:\n{result.get('exception')}"
    assert result.get("failed", False) == (proc.returncode != 0), proc.stderr
    return result


def ansible_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_NOCOLOR": "1",
        "PY_COLORS": "0",
    })
    env.update(extra or {})
    return env


def run_playbook(playbook: str, inventory: str | Path, *args: str, tmp_path: Path | None = None,
                 timeout: float = 1200, env: dict | None = None) -> Run:
    summary_path = (tmp_path or Path("/tmp")) / f"summary-{time.monotonic_ns()}.json"
    cmd = ["ansible-playbook", str(ROOT / playbook), "-i", str(inventory), *args]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, env=ansible_env({"ICN_SUMMARY_PATH": str(summary_path),
                                                            **(env or {})}))
    run = Run(proc.returncode, proc.stdout, time.monotonic() - started)
    for m in RECAP.finditer(proc.stdout):
        keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
        run.recap[m.group(1)] = dict(zip(keys, map(int, m.groups()[1:])))
    if summary_path.exists():
        run.summary = json.loads(summary_path.read_text())
        summary_path.unlink()
    return run


def local_inventory(tmp_path: Path, regions: list[str] | None = None, host_vars: dict | None = None,
                    group_vars: dict | None = None, kubeconfig: Path | None = None) -> Path:
    """A copy of inventories/local with absolute paths, some regions and some variables changed.

    host_vars: {host: {var: value}} (a host not in the lab's regions is added as is);
    a value of None removes the variable.
    """
    source = yaml.safe_load((ROOT / "inventories/local/hosts.yml").read_text())
    hosts = source["super_nodes"]["hosts"]
    if regions is not None:
        hosts = {h: v for h, v in hosts.items() if h in regions}
    gvars = {}
    for f in sorted((ROOT / "inventories/local/group_vars/super_nodes").glob("*.yml")):
        gvars.update(yaml.safe_load(f.read_text()) or {})
    gvars["super_node_kubeconfig"] = str(kubeconfig or LAB_DIR / "kubeconfig")
    gvars["super_node_staking_keys"] = json.loads((LAB_DIR / "staking-keys.json").read_text())
    gvars["super_node_prometheus_url"] = json.loads((LAB_DIR / "lab.json").read_text()).get("prometheus_url") or ""
    for key, value in (group_vars or {}).items():
        if value is None:
            gvars.pop(key, None)
        else:
            gvars[key] = value
    for host, values in (host_vars or {}).items():
        entry = dict(hosts.get(host) or {})
        for key, value in values.items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        hosts[host] = entry
    inventory = {"super_nodes": {"hosts": hosts, "vars": gvars}}
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return path
