# -*- coding: utf-8 -*-
# Copyright: ICN infrastructure team
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters of the istio role: the remote kubeconfig a cluster gives the others, and the remote
secrets a cluster holds, as `istioctl create-remote-secret` writes them (no Jinja loops)."""
from __future__ import annotations

DOCUMENTATION = r"""
name: istio_remote_kubeconfig
short_description: The kubeconfig through which the other clusters' istiod read this cluster
description:
  - One cluster, one user with the token of this cluster's istio-reader ServiceAccount, one context,
    all named after the cluster, as YAML text (C(to_nice_yaml) with an indent of 2).
  - The filter istio_remote_secrets of this file turns such kubeconfigs into the remote Secrets of a cluster.
positional: server, ca_data, token
options:
  _input:
    description: The cluster's name in the mesh (its first region).
    type: str
    required: true
  server:
    description: The API server URL as the other clusters reach it.
    type: str
    required: true
  ca_data:
    description: The cluster's CA, base64 (the token Secret's C(ca.crt)).
    type: str
    required: true
  token:
    description: The reader's token, base64 (the token Secret's C(token)).
    type: str
    required: true
"""

EXAMPLES = r"""
kubeconfig: "{{ 'eu-west' | icn.super_node.istio_remote_kubeconfig(server, secret.data['ca.crt'], secret.data.token) }}"
secrets: "{{ [{'cluster': 'eu-west', 'kubeconfig': kubeconfig}] | icn.super_node.istio_remote_secrets('istio-system') }}"
"""

RETURN = r"""
_value:
  description: The kubeconfig, YAML text.
  type: str
"""

from ansible.plugins.filter.core import b64decode, b64encode, to_nice_yaml


def istio_remote_kubeconfig(cluster, server, ca_data, token):
    return to_nice_yaml({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": ca_data}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": cluster}}],
        "current-context": cluster, "preferences": {},
        "users": [{"name": cluster, "user": {"token": b64decode(token)}}],
    }, indent=2)


def istio_remote_secrets(remotes, namespace):
    """[{cluster, kubeconfig}] -> the Secret istio-remote-secret-<cluster> of each, in order."""
    return [{
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "istio-remote-secret-" + remote["cluster"], "namespace": namespace,
                     "labels": {"istio/multiCluster": "true"},
                     "annotations": {"networking.istio.io/cluster": remote["cluster"]}},
        "data": {remote["cluster"]: b64encode(remote["kubeconfig"])},
    } for remote in remotes]


def istio_reader_token_ready(found, account):
    """Whether a k8s_info result holds the reader's token Secret as the token controller fills it
    in: annotated with the ServiceAccount, with a token and the cluster's CA."""
    resources = (found or {}).get("resources") or []
    if not resources:
        return False
    secret = resources[0]
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    data = secret.get("data") or {}
    return (annotations.get("kubernetes.io/service-account.name") == account
            and bool(data.get("token")) and bool(data.get("ca.crt")))


class FilterModule(object):
    def filters(self):
        return {"istio_remote_kubeconfig": istio_remote_kubeconfig,
                "istio_remote_secrets": istio_remote_secrets,
                "istio_reader_token_ready": istio_reader_token_ready}
