# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
from __future__ import annotations


class ModuleDocFragment:
    # How the collection's Kubernetes modules reach a cluster (module_utils/kube.py).
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path of the kubeconfig file.
      - Defaults to the E(KUBECONFIG) environment variable, else C(~/.kube/config).
    type: path
  context:
    description:
      - The kubeconfig context of the region's cluster, for example C(icn-eu-west).
      - Defaults to the kubeconfig's current context.
    type: str
"""
