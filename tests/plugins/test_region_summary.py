"""icn.super_node.region_summary in real ansible-playbook runs on three local hosts (no lab)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path


from labkit import ROOT

ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
CENSORED = "the output has been hidden due to the fact that 'no_log: true' was specified for this result"

INVENTORY = f"""\
regions:
  hosts:
    na-west:
    eu-west:
    apac:
  vars:
    ansible_connection: local
    ansible_python_interpreter: {sys.executable}
"""

# An upgrade shaped like upgrade.yml: one region at a time, stop at the first failure. eu-west's
# rollout fails, it is rolled back (rescue) and the run stops, so apac is never reached.
UPGRADE = """\
- name: Upgrade every region, one at a time
  hosts: regions
  gather_facts: false
  serial: 1
  max_fail_percentage: 0
  tasks:
    - name: Name the summary and say where it goes
      ansible.builtin.set_stats:
        per_host: false
        aggregate: false
        data:
          super_node_summary_title: upgrade to v1.1.0
          super_node_summary_path: "{{ summary_path }}"
      run_once: true

    - name: Probe an optional API (a failure here is ignored)
      ansible.builtin.command: "false"
      changed_when: false
      ignore_errors: true
      when: inventory_hostname == 'na-west'

    - name: Upgrade the region
      block:
        - name: Apply the chart
          ansible.builtin.command: "true"
          changed_when: true

        - name: Wait for the rollout
          ansible.builtin.command: sleep 1
          changed_when: false

        - name: Check the pods
          ansible.builtin.fail:
            msg: "{{ rollout_error }}"
          when: inventory_hostname == 'eu-west'

        - name: Report the upgrade
          ansible.builtin.set_stats:
            per_host: true
            data:
              super_node_summary: {replicas: 2/2, image: v1.1.0, result: upgraded}
      rescue:
        - name: Roll the region back
          ansible.builtin.command: "true"
          changed_when: true

        - name: Report the rollback
          ansible.builtin.set_stats:
            per_host: true
            data:
              super_node_summary: {replicas: 2/2, image: v1.0.0, result: rolled back}

        - name: Stop the rollout
          ansible.builtin.fail:
            msg: "{{ inventory_hostname }} was rolled back"
"""

NO_LOG = """\
- name: Prepare on the control node (not a region)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Say hello
      ansible.builtin.debug:
        msg: hello

- name: Store the staking keys
  hosts: regions
  gather_facts: false
  tasks:
    - name: Write the staking key
      ansible.builtin.fail:
        msg: "cannot store {{ staking_key }}"
      no_log: true
      when: inventory_hostname == 'eu-west'
"""


def run_playbook(tmp_path: Path, playbook: str, *extra: str, env: dict | None = None):
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    (tmp_path / "playbook.yml").write_text(playbook)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ICN_"))}
    full_env.update(ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                    ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
                    ANSIBLE_CALLBACKS_ENABLED="icn.super_node.region_summary",
                    ANSIBLE_NOCOLOR="1", **(env or {}))
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "inventory.yml", "playbook.yml", *extra],
                          cwd=tmp_path, env=full_env, text=True, capture_output=True, timeout=180)


def summary_table(stdout: str, title: str) -> list[list[str]]:
    """The rows of the printed table (header first), cells split on runs of 2+ spaces."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"SUMMARY [{title}] "))
    table = []
    for line in lines[start + 1:]:
        if not line.strip() or line.startswith("summary written to"):
            break
        table.append(re.split(r" {2,}", line))
    return table


def test_upgrade_run_summary_table_and_json(tmp_path):
    rollout_error = ("pods not Ready after 600s:\n" +
                     "icn-super-node-eu-west-1 ReadinessProbeFailed on v1.1.0-broken;\n" * 6)
    summary_path = tmp_path / "out" / "upgrade-summary.json"
    env_path = tmp_path / "from-env.json"
    proc = run_playbook(tmp_path, UPGRADE, "-e", json.dumps(
        {"summary_path": str(summary_path), "rollout_error": rollout_error}),
        env={"ICN_SUMMARY_PATH": str(env_path)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    flat = " ".join(rollout_error.split())
    reason = f"Check the pods: {flat[:197]}..."

    table = summary_table(proc.stdout, "upgrade to v1.1.0")
    assert table[0] == ["REGION", "REPLICAS", "IMAGE", "RESULT", "CHANGED", "SECONDS", "STATUS",
                        "REASON"]
    rows = {row[0]: row for row in table[1:]}
    assert list(rows) == ["na-west", "eu-west", "apac"]
    assert rows["na-west"][:5] + rows["na-west"][6:] == [
        "na-west", "2/2", "v1.1.0", "upgraded", "1", "changed", "-"]
    assert rows["eu-west"][:5] + rows["eu-west"][6:] == [
        "eu-west", "2/2", "v1.0.0", "rolled back", "2", "FAILED", reason]
    assert rows["apac"] == ["apac", "-", "-", "-", "0", "-", "not reached", "-"]
    assert float(rows["na-west"][5]) >= 1.0  # its tasks included a one-second wait

    assert f"summary written to {summary_path}" in proc.stdout
    assert not env_path.exists(), "the path set with set_stats wins over ICN_SUMMARY_PATH"
    summary = json.loads(summary_path.read_text())
    assert summary["title"] == "upgrade to v1.1.0" and summary["ok"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", summary["generated_at"])
    regions = summary["regions"]
    assert list(regions) == ["na-west", "eu-west", "apac"]
    assert regions["na-west"]["seconds"] >= 1.0
    assert {k: v for k, v in regions["na-west"].items() if k != "seconds"} == {
        "replicas": "2/2", "image": "v1.1.0", "result": "upgraded", "status": "changed",
        "changed_tasks": 1, "skipped_tasks": 1, "reason": None}
    assert {k: v for k, v in regions["eu-west"].items() if k != "seconds"} == {
        "replicas": "2/2", "image": "v1.0.0", "result": "rolled back", "status": "FAILED",
        "changed_tasks": 2, "skipped_tasks": 1, "reason": reason}
    assert regions["apac"] == {"status": "not reached", "changed_tasks": 0, "skipped_tasks": 0,
                               "seconds": None, "reason": None}


def test_no_log_failure_keeps_the_censored_message_and_no_secret(tmp_path):
    secret = f"staking-{uuid.uuid4().hex}"
    summary_path = tmp_path / "from-env.json"
    proc = run_playbook(tmp_path, NO_LOG, "-vvv", "-e", json.dumps({"staking_key": secret}),
                        env={"ICN_SUMMARY_PATH": str(summary_path)})
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr

    reason = f"Write the staking key: {CENSORED}"
    table = summary_table(proc.stdout, "ICN Super-Node playbook.yml")
    assert table[0] == ["REGION", "CHANGED", "SECONDS", "STATUS", "REASON"]
    rows = {row[0]: row for row in table[1:]}
    assert list(rows) == ["na-west", "eu-west", "apac"], "only inventory hosts, not localhost"
    assert [rows[h][3:] for h in rows] == [["ok", "-"], ["FAILED", reason], ["ok", "-"]]

    summary = json.loads(summary_path.read_text())
    assert summary["title"] == "ICN Super-Node playbook.yml"
    assert summary["regions"]["eu-west"]["reason"] == reason
    # What this plugin prints and writes. (ansible-core 2.19's own "[ERROR]: Task failed: ..." line
    # does show a no_log task's failure message: no_log tasks must keep secrets out of messages.)
    printed = proc.stdout[proc.stdout.index("SUMMARY ["):]
    assert secret not in printed and secret not in summary_path.read_text(), "the staking key leaked"


def test_a_summary_that_is_not_a_dict_is_ignored_and_the_json_goes_to_the_current_folder(tmp_path):
    playbook = """\
- name: Report badly
  hosts: regions
  gather_facts: false
  tasks:
    - name: Hand the summary a string
      ansible.builtin.set_stats:
        per_host: true
        data:
          super_node_summary: not a dict
"""
    proc = run_playbook(tmp_path, playbook)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "super_node_summary of na-west is not a dict; ignored" in proc.stdout + proc.stderr
    table = summary_table(proc.stdout, "ICN Super-Node playbook.yml")
    assert table[0] == ["REGION", "CHANGED", "SECONDS", "STATUS"]
    assert json.loads((tmp_path / "super-node-summary.json").read_text())["ok"] is True
