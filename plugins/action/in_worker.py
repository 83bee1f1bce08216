# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The action of every controller-side module of this collection: the module's main() runs in the
worker (plugins/plugin_utils/in_worker.py). meta/runtime.yml routes each module here
(plugin_routing: modules: <name>: action_plugin: icn.super_node.in_worker)."""
from __future__ import annotations

from ansible_collections.icn.super_node.plugins.plugin_utils.in_worker import InWorkerModule


class ActionModule(InWorkerModule):
    pass
