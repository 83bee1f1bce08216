# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: region_summary
type: aggregate
short_description: One row per region at the end of a deploy or upgrade run, also written as JSON
version_added: "0.1.0"
description:
  - At the end of the run, prints a table with one row per region (inventory host) and writes the
    same data as JSON.
  - For each host it records the seconds from its first task to its last in the last play it ran
    in (its region's deploy or upgrade, not the preflight), the number of changed tasks, the number of skipped tasks, and whether it failed or was unreachable, with the first
    failure's task name and message (one line, at most 200 characters). A host that is in a play
    but never ran a task of the last play (a region a stopped rollout did not reach) is reported as C(not reached).
  - Playbooks add their own columns with M(ansible.builtin.set_stats), C(per_host=true), data key
    C(super_node_summary), a dict of column name to value for that host (for example C(replicas),
    C(pvcs), C(image), C(revision), C(result)). Columns appear in the order they are first seen. The
    names C(region), C(status), C(changed_tasks), C(skipped_tasks), C(seconds) and C(reason) are
    the plugin's own and are ignored there. Set them in an C(always) section, so that a failed
    region gets its columns too.
  - Two run-wide stats (C(per_host=false) and C(aggregate=false), or a repeated string would be
    concatenated) are read too - C(super_node_summary_path), where to write the JSON (it wins over
    O(path)), and C(super_node_summary_title), the title of the table and of the JSON.
  - Only these fields are shown. Task results and variables are never printed, so nothing that
    could hold a secret leaves the run through this plugin. The message of a failed C(no_log) task
    is the one Ansible leaves after censoring it.
  - 'The JSON has the form C({"title": str, "generated_at": ISO 8601 UTC, "ok": bool, "regions":
    {host: {<columns>..., "status": "ok|changed|FAILED|UNREACHABLE|not reached", "changed_tasks":
    int, "skipped_tasks": int, "seconds": float|null, "reason": str|null}}}); C(ok) is true when every
    region is C(ok) or C(changed).'
author:
  - ICN infrastructure team
requirements:
  - Enabled in C(callbacks_enabled) (C([defaults]) of C(ansible.cfg)) or in
    E(ANSIBLE_CALLBACKS_ENABLED), as C(icn.super_node.region_summary).
options:
  path:
    description:
      - Where to write the JSON summary. A relative path in C(ansible.cfg) is relative to that
        file's folder; elsewhere to the current folder.
      - A run-wide C(super_node_summary_path) set with M(ansible.builtin.set_stats) wins.
    type: path
    default: super-node-summary.json
    env:
      - name: ICN_SUMMARY_PATH
    ini:
      - section: callback_region_summary
        key: path
"""

EXAMPLES = r"""
# ansible.cfg
# [defaults]
# callbacks_enabled = icn.super_node.region_summary
# [callback_region_summary]
# path = build/super-node-summary.json

# In a playbook, per region (host), in an always: section so failed regions get their columns too
- name: Hand this region's outcome to the run summary
  ansible.builtin.set_stats:
    per_host: true
    data:
      super_node_summary:
        replicas: "{{ health.statefulset.ready }}/{{ health.statefulset.desired }}"
        image: "{{ health.image_tag }}"
        result: upgraded
  vars:
    health: "{{ __upgrade_health.regions[inventory_hostname] }}"  # registered from region_health

# Once per run
- name: Name the summary and say where it goes
  ansible.builtin.set_stats:
    per_host: false
    aggregate: false
    data:
      super_node_summary_title: "upgrade to {{ super_node_image_tag }}"
      super_node_summary_path: "{{ playbook_dir }}/build/upgrade-summary.json"
"""

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

SUMMARY_KEY = "super_node_summary"
PATH_KEY = "super_node_summary_path"
TITLE_KEY = "super_node_summary_title"
OWN_FIELDS = ("region", "status", "changed_tasks", "skipped_tasks", "seconds", "reason")
MESSAGE_LIMIT = 200  # a failure's message
COLUMN_LIMIT = 60  # a set_stats column's value in the table (the JSON keeps it whole)
STATUS_COLORS = {"ok": C.COLOR_OK, "changed": C.COLOR_CHANGED, "FAILED": C.COLOR_ERROR,
                 "UNREACHABLE": C.COLOR_UNREACHABLE, "not reached": C.COLOR_SKIP}


@dataclass
class HostRecord:
    first_seen: float | None = None  # time.monotonic() when its first task started
    last_seen: float | None = None  # ... and when its last task ended
    failure: str | None = None  # "<task>: <message>" of its first failure that was not ignored
    plays: set = field(default_factory=set)  # plays (by uuid) in which it ran a task

    def touch(self) -> None:
        self.last_seen = time.monotonic()
        if self.first_seen is None:
            self.first_seen = self.last_seen


def one_line(text, limit: int = MESSAGE_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def failure_message(result: Mapping) -> str:
    """The message of a failed or unreachable result; for a no_log task, Ansible's censored
    notice (the rest of that result is never looked at)."""
    if "censored" in result:
        return result["censored"]
    return result.get("msg") or "failed without a message"


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "icn.super_node.region_summary"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._playbook = "run"
        self._hosts: dict[str, HostRecord] = {}  # every play's inventory hosts, first-seen order
        self._play: str | None = None  # uuid of the play running now (the same for each serial batch)
        self._play_hosts: set = set()  # inventory hosts of that play

    # ---- what happens during the run
    def v2_playbook_on_start(self, playbook):
        self._playbook = os.path.basename(playbook._file_name)

    def v2_playbook_on_play_start(self, play):
        variables = play.get_variable_manager().get_vars(play=play)
        inventory = set(variables["groups"]["all"])  # leaves out the implicit localhost
        hosts = [h for h in variables["ansible_play_hosts_all"] if h in inventory]
        for host in hosts:
            self._hosts.setdefault(host, HostRecord())
        if hosts:  # a localhost-only play (a version check) does not define who was reached
            self._play, self._play_hosts = play._uuid, set(hosts)

    def _touch(self, host: str) -> HostRecord | None:
        record = self._hosts.get(host)
        if record is not None:
            if self._play not in record.plays:
                # SECONDS is the host's time in the last play it ran in (its region's deploy or
                # upgrade), not in the preflight before it.
                record.first_seen = None
            record.touch()
            record.plays.add(self._play)
        return record

    def _fail(self, result) -> None:
        record = self._touch(result.host.get_name())
        if record is not None and record.failure is None:
            record.failure = f"{result.task_name}: {one_line(failure_message(result.result))}"

    def v2_runner_on_start(self, host, task):
        self._touch(host.get_name())

    def v2_runner_on_ok(self, result):
        self._touch(result.host.get_name())

    def v2_runner_on_skipped(self, result):
        self._touch(result.host.get_name())

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if ignore_errors:
            self._touch(result.host.get_name())
        else:
            self._fail(result)

    def v2_runner_on_unreachable(self, result):
        self._fail(result)

    # ---- the summary
    def v2_playbook_on_stats(self, stats):
        run = stats.custom.get("_run", {})
        title = run.get(TITLE_KEY) or f"ICN Super-Node {self._playbook}"
        regions = {host: self._region(host, record, stats) for host, record in self._hosts.items()}
        summary = {"title": title,
                   "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "ok": all(r["status"] in ("ok", "changed") for r in regions.values()),
                   "regions": regions}
        self._print(title, regions)
        self._write(os.path.expanduser(run.get(PATH_KEY) or self.get_option("path")), summary)

    def _region(self, host: str, record: HostRecord, stats) -> dict:
        columns = stats.custom.get(host, {}).get(SUMMARY_KEY) or {}
        if not isinstance(columns, Mapping):
            self._display.warning(f"region_summary: {SUMMARY_KEY} of {host} is not a dict; ignored")
            columns = {}
        counts = stats.summarize(host)
        # A host of the last play that ran none of its tasks (a later region of a rollout that
        # stopped, say) was not reached, whatever it did in the plays before (the preflight).
        if host not in stats.processed or (host in self._play_hosts and self._play not in record.plays):
            status = "not reached"
        elif counts["unreachable"]:
            status = "UNREACHABLE"
        elif counts["failures"]:
            status = "FAILED"
        else:
            status = "changed" if counts["changed"] else "ok"
        seconds = (round(record.last_seen - record.first_seen, 1)
                   if record.first_seen is not None else None)
        return {**{k: v for k, v in columns.items() if k not in OWN_FIELDS},
                "status": status, "changed_tasks": counts["changed"],
                "skipped_tasks": counts["skipped"], "seconds": seconds,
                "reason": record.failure if status in ("FAILED", "UNREACHABLE") else None}

    def _print(self, title: str, regions: dict) -> None:
        columns = []
        for region in regions.values():
            columns += [k for k in region if k not in OWN_FIELDS and k not in columns]
        fields = [*columns, "changed_tasks", "seconds", "status"]
        headers = ["REGION", *(c.upper() for c in columns), "CHANGED", "SECONDS", "STATUS"]
        with_reason = any(r["reason"] for r in regions.values())
        if with_reason:
            headers.append("REASON")
        rows = [[host, *(cell(region.get(f)) for f in fields),
                 *([region["reason"] or "-"] if with_reason else [])]
                for host, region in regions.items()]
        widths = [max(len(x) for x in column) for column in zip(headers, *rows)]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        self._display.banner(f"SUMMARY [{title}]")
        self._display.display(line(headers))
        for row, region in zip(rows, regions.values()):
            self._display.display(line(row), color=STATUS_COLORS[region["status"]])

    def _write(self, path: str, summary: dict) -> None:
        try:
            text = json.dumps(summary, indent=2) + "\n"  # a set_stats value may not be JSON
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            partial = f"{path}.partial"
            with open(partial, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(partial, path)  # readers never see half a file
        except (OSError, TypeError, ValueError) as err:
            self._display.warning(f"region_summary: cannot write {path}: {err}")
            return
        self._display.display(f"summary written to {path}")


def cell(value) -> str:
    """A table cell of a column: one line, at most COLUMN_LIMIT characters."""
    return "-" if value is None else one_line(value, COLUMN_LIMIT)
