# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action of icn.super_node.metrics_api_info (documented in plugins/modules): the module runs in the worker."""
from __future__ import annotations

from ansible_collections.icn.super_node.plugins.plugin_utils.in_worker import InWorkerModule


class ActionModule(InWorkerModule):
    pass
