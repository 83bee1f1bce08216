# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action of icn.super_node.rollout_lock (documented in plugins/modules): the module runs in the
worker, and the lock follows the life of the process that runs the playbook, the worker's parent."""
from __future__ import annotations

import os

from ansible_collections.icn.super_node.plugins.plugin_utils.in_worker import InWorkerModule


class ActionModule(InWorkerModule):
    def run(self, tmp=None, task_vars=None):
        if "owner_pid" not in self._task.args:
            self._task.args = dict(self._task.args, owner_pid=os.getppid())
        return super().run(tmp, task_vars)
