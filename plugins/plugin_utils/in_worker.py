# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Run the collection's controller-side modules inside the Ansible worker.

Every module of this collection talks to a Kubernetes API (or runs helm) from the controller:
the inventories use ``ansible_connection: local`` and the playbook's own Python. Ansible would
still start each one as a new Python process (AnsiballZ: a temporary directory, the zipped
module, an interpreter that imports ansible.module_utils again): about 0.75 s of CPU per call,
which with seven regions in parallel on a two-core controller was most of a deploy's wall time.

Here the worker, already forked with Python and Ansible loaded, runs the module's ``main()``
itself. The module's arguments take the same road as out of process: ``_update_module_args``
adds the internal ones (check mode, diff, no_log, verbosity), they are serialised with the
module encoder and read back by ``AnsibleModule``; the result printed by ``exit_json`` or
``fail_json`` is parsed by ``_parse_returned_data`` and cleaned like any module result. So the
module cannot tell the difference, and argument validation, no_log masking and check mode are
Ansible's own. ansible.netcommon does the same for network modules ("direct execution"), through
the hook ansible-core keeps for it.

The module runs in the controller's Python, the one the inventories name anyway
(``ansible_python_interpreter: "{{ ansible_playbook_python }}"``). Out of process as usual when the connection is not local (the module must then run where the
connection leads), for ``async`` tasks, or when ICN_MODULES_IN_WORKER=0 (for debugging).

A task's ``environment:`` (K8S_AUTH_KUBECONFIG, HTTPS_PROXY, an exec plugin's AWS_PROFILE...)
is what Ansible puts in front of the module's command line. Here it is set in ``os.environ``
while ``main()`` runs, and the worker's own values are put back after: the worker is a process
forked for this one task, and nothing else runs in it meanwhile.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import io
import json
import multiprocessing
import os

from ansible.module_utils import basic
from ansible.module_utils.common.json import Direction, get_module_encoder
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible.utils.display import Display
from ansible.vars.clean import remove_internal_keys

display = Display()

# The profile of modules that declare no metadata (every module here).
PROFILE = "legacy"

# This collection's modules, whose main() runs in the worker.
MODULES_PACKAGE = "ansible_collections.icn.super_node.plugins.modules"


def preload_modules() -> list:
    """Import every module of the collection, and so what they import (urllib3, ssl, the API
    client), in the process that runs the playbook, so that each worker forked after it starts with
    them imported. Imported in each worker, they cost 0.15 s to 0.4 s per worker and task with seven
    regions on two cores: several seconds of a run that changes nothing. In a worker (forked
    from that process) nothing is done. A module that cannot be imported here is left to fail in
    its own task, with its own message. The names imported are returned."""
    if multiprocessing.parent_process() is not None:
        return []
    loaded = []
    try:
        package = importlib.import_module(MODULES_PACKAGE)
    except ImportError:
        return loaded
    for directory in getattr(package, "__path__", []):
        for name in sorted(os.listdir(directory)):
            if name.endswith(".py") and not name.startswith("_"):
                try:
                    importlib.import_module("%s.%s" % (MODULES_PACKAGE, name[:-3]))
                except Exception:  # pylint: disable=broad-except
                    continue
                loaded.append(name[:-3])
    return loaded


def freeze_for_workers() -> bool:
    """In the process that runs the playbook (not in a worker): move every object it holds now (the
    playbook, the inventory, Ansible's and these modules' code) out of the garbage collector's
    reach (gc.freeze, Python's recipe for a process that forks without exec). A forked worker's
    collections then no longer walk, nor write to, the parent's objects, whose pages each write
    copied into the worker: measured on a no-op deploy.yml with Istio on, 7 regions, 2 cores,
    about 12 % of the controller's CPU (18 s, not 20.5 s) and 1.5 s of wall time. Objects frozen
    are never collected: the playbook's process is short-lived, and what it holds at this point
    lives until its end anyway. Returns whether it froze."""
    if multiprocessing.parent_process() is not None:
        return False
    gc.freeze()
    return True


# The strategy imports an action's class in the playbook's process before it forks a task's
# workers: the actions of this collection that have their own name (validate_inventory, the first
# task of every play that reaches a cluster; rollout_lock) import this module there.
PRELOADED = preload_modules()
FROZEN = freeze_for_workers()


@contextlib.contextmanager
def environment_of_task(variables: dict):
    """os.environ with the task's variables set (as strings, like the shell prefix that an
    out-of-process module gets), restored on the way out, whatever happens."""
    saved = {name: os.environ.get(name) for name in variables}
    try:
        os.environ.update({str(name): str(value) for name, value in variables.items()})
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class InWorkerModule(NormalAction):
    """The action of a controller-side module: ``main()`` runs in this worker process."""

    def _in_worker(self, wrap_async: bool) -> bool:
        return (not wrap_async
                and getattr(self._connection, "transport", None) == "local"
                and os.environ.get("ICN_MODULES_IN_WORKER", "1") != "0")

    def _execute_module(self, module_name=None, module_args=None, tmp=None, task_vars=None,
                        persist_files=False, delete_remote_tmp=None, wrap_async=False,
                        ignore_unknown_opts: bool = False):
        if not self._in_worker(wrap_async):
            return super()._execute_module(module_name, module_args, tmp, task_vars, persist_files,
                                           delete_remote_tmp, wrap_async, ignore_unknown_opts)
        module_name = module_name or self._task.action
        # A copy: the internal arguments added below are not the task's.
        module_args = dict(self._task.args if module_args is None else module_args)
        self._update_module_args(module_name, module_args, task_vars or {},
                                 ignore_unknown_opts=ignore_unknown_opts)
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(
            module_name, collection_list=self._task.collections)
        if not found.resolved:
            return dict(failed=True, msg="module %s not found" % module_name)
        display.vvv("running %s in the worker (pid %d)" % (found.resolved_fqcn, os.getpid()),
                    host=self._play_context.remote_addr)

        environment: dict = {}
        self._compute_environment_string(environment)  # the task's environment:, templated

        encoder = get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": module_args}, cls=encoder).encode()
        basic._ANSIBLE_PROFILE = PROFILE
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), environment_of_task(environment):
                importlib.import_module(found.plugin_resolved_name).main()
        except SystemExit:
            pass  # exit_json and fail_json end with sys.exit once the result is printed
        # Any other exception (a module bug, the task's timeout) goes up to the task executor,
        # which fails the task with its message, as a module's traceback would.
        finally:
            basic._ANSIBLE_ARGS = basic._ANSIBLE_PROFILE = None

        data = self._parse_returned_data({"stdout": printed.getvalue(), "stderr": "", "rc": 0},
                                         PROFILE)
        remove_internal_keys(data)
        return data
